"""County hub benchmark: S simulated stations × E entries in one real SeaweedFS bucket,
caught up from zero by `custody hub sync`, then one incremental sync with 1 % more.

Every figure is measured next to its baseline, in the same run, on this machine:

1. Generation: `tests/stationsim.py` writes S stations of E real signed entries each
   (realistic ingest/probe/store/wipe/annotate/hold/delete payloads), exactly the objects a
   station's ledger mirror writes (tiles, entry bundles, ``checkpoints/<size>`` every 256
   entries, ``checkpoint``), one station per task in parallel processes, each PUT one
   request (`stationsim.BulkS3Store`).
2. Baselines over the same bucket, each in its own process: (a) the Ed25519 ceiling: raw
   PyNaCl ``crypto_sign_open`` of the first N entries' signatures (messages built before
   the clock starts), in one process and in two processes at once; (b) the fetch floor:
   plain boto3 ``get_object`` of every object the hub must read (every tile and entry
   bundle and each ``checkpoint``), 8 threads (the hub's I/O pool size), after a LIST
   that is not timed.
3. The hub: `custody hub init`, hub.toml with every station (`stationsim.
   hub_stations_toml`), then ``custody hub -c HUBCFG sync --json`` three times: from zero
   (catch-up), after every station grew by ``--increment-pct`` (incremental), and with
   nothing new. Each sync is one `custody` process started straight from this small parent
   (`subprocess.Popen`, no shell): entries/s, GETs and LISTs (the hub's own count, and
   SeaweedFS's request counters from its Prometheus endpoint for the same interval), CPU
   seconds, peak memory and catalog rows/s.
4. DuckDB (its iceberg extension from the pip package, `hub.catalog.duckdb_connect`)
   counts the table's rows by unit and month, in a fresh process.

Peak memory of the hub: ``ru_maxrss`` of the sync process from ``os.wait4`` on its pid
(a maximum over it and the children it reaps itself; the signature workers are children
of multiprocessing's forkserver, not of the hub), and, sampled every 0.2 s from /proc,
the peak VmHWM of the hub process itself, the peak sum of VmRSS over the hub and all its
descendants, and the descendants' CPU seconds. Linux keeps ``ru_maxrss`` across
``execve`` and starts a child's from its parent's pages, so ``ru_maxrss`` can never read
below this parent's own peak (VmHWM, reported beside it); that is why this parent stays
small and every heavy stage runs in a process of its own.

Run from the repository root::

    .venv/bin/python benchmarks/hub_bench.py                       # 200 × 50,000 = 10^7
    .venv/bin/python benchmarks/hub_bench.py --stations 4 --entries 5000   # a small run

Work files go under ``benchmarks/work/hub-<pid>/`` and are deleted when the run ends
(``--keep`` keeps them). Writes ``benchmarks/RESULTS-hub.md`` (``--out``).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from _common import cpu_model, load_average, shell  # noqa: E402

import tests.s3server as s3server  # noqa: E402
from tests.s3server import SeaweedFS, free_ports  # noqa: E402

WORK_ROOT = Path(__file__).resolve().parent / "work"
DEFAULT_OUT = Path(__file__).resolve().parent / "RESULTS-hub.md"
BUCKET = "county-evidence"
HUB_NAME = "witness.example/county-hub"
TARGET_RATE = 20_000  # entries/s verified, two cores


def log(what: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {what}", file=sys.stderr, flush=True)


def fmt(x: float, digits: int = 0) -> str:
    return f"{x:,.{digits}f}"


def vm_hwm_mb(pid: int | str = "self") -> float:
    """Peak resident memory of one process (its current image) in MB, 0 if gone."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def vm_rss_kb(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU of one process so far (0 if gone)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return 0.0


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{p}/task").iterdir():
                kids = (task / "children").read_text().split()
                out += [int(k) for k in kids]
                todo += [int(k) for k in kids]
    return out


# -- SeaweedFS with its Prometheus endpoint ------------------------------------------------


class MeteredSeaweedFS(SeaweedFS):
    """`tests.s3server.SeaweedFS` plus ``-metricsPort``, to read its request counters.

    tests.s3server has no parameter for extra flags (one there would make this wrapper
    unnecessary): `start` runs, for the length of the call, a two-line script that execs
    the same ``weed`` with the flag added."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.metrics_port = free_ports(1, grpc=False)[0]

    def start(self) -> MeteredSeaweedFS:
        real = s3server._weed
        script = self.folder / "weed-with-metrics"
        script.write_text(
            f'#!/bin/sh\nexec {shlex.quote(real())} "$@" -metricsPort={self.metrics_port}\n'
        )
        script.chmod(0o755)
        setattr(s3server, "_weed", lambda: str(script))  # noqa: B010
        try:
            super().start()
        finally:
            setattr(s3server, "_weed", real)  # noqa: B010
        return self

    def requests(self) -> dict[str, int]:
        """S3 requests answered so far for the bucket, by type (GET counts HEAD too)."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        text = urllib.request.urlopen(url, timeout=10).read().decode()
        out: dict[str, int] = {}
        for line in text.splitlines():
            if not line.startswith("SeaweedFS_s3_request_total{"):
                continue
            labels, _, value = line.rpartition(" ")
            if f'bucket="{BUCKET}"' not in labels:
                continue
            kind = labels.split('type="', 1)[1].split('"', 1)[0]
            out[kind] = out.get(kind, 0) + int(float(value))
        return out


def delta(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {k: b.get(k, 0) - a.get(k, 0) for k in sorted(set(a) | set(b))}


# -- stages that run in processes of their own -----------------------------------------------


def s3_settings(p: dict[str, Any]) -> Any:
    from archive.settings import S3Settings

    return S3Settings(bucket=p["bucket"], endpoint_url=p["endpoint"], concurrency=16)


def s3_client(endpoint: str) -> Any:
    """A plain boto3 client (credentials from the environment tests.s3server sets)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        config=Config(
            s3={"addressing_style": "path"},
            max_pool_connections=32,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )


def stage_generate(p: dict[str, Any]) -> dict[str, Any]:
    """Write (or grow, ``resume``) the county's stations; one station per task."""
    from tests.stationsim import BulkS3Store, county, generate

    specs = county(p["stations"], p["entries"])
    factory = functools.partial(BulkS3Store, s3_settings(p))
    done = [0]

    def progress(r: Any) -> None:
        done[0] += 1
        if done[0] % max(1, len(specs) // 10) == 0:
            log(f"  {done[0]}/{len(specs)} stations written")

    t0 = time.perf_counter()
    cpu0 = os.times()
    results = generate(
        specs,
        factory,
        processes=p["processes"],
        resume=p["resume"],
        checkpoint_every=p["checkpoint_every"],
        on_done=progress,
    )
    seconds = time.perf_counter() - t0
    cpu1 = os.times()
    return {
        "seconds": seconds,
        "cpu_s": (cpu1.children_user + cpu1.children_system)
        - (cpu0.children_user + cpu0.children_system),
        "entries": p["stations"] * p["entries"],
        "stations": [
            {"origin": r.origin, "vkey": r.vkey, "unit": r.unit, "size": r.size, "root": r.root}
            for r in results
        ],
        "station_seconds": sorted(r.seconds for r in results),
    }


def _bundle_keys(client: Any, bucket: str, origin: str) -> list[str]:
    keys = []
    pager = client.get_paginator("list_objects_v2")
    for page in pager.paginate(Bucket=bucket, Prefix=f"ledger/{origin}/tile/entries/"):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return keys


def _verify_loop(items: list[tuple[bytes, bytes]]) -> int:
    import nacl.bindings
    import nacl.exceptions

    bad = 0
    for signed, pk in items:
        try:
            nacl.bindings.crypto_sign_open(signed, pk)
        except nacl.exceptions.BadSignatureError:
            bad += 1
    return bad


def _verify_child(items: list[tuple[bytes, bytes]], start: Any, q: Any) -> None:
    start.wait()
    t0 = time.perf_counter()
    bad = _verify_loop(items)
    q.put((t0, time.perf_counter(), bad))


def stage_verify(p: dict[str, Any]) -> dict[str, Any]:
    """The Ed25519 ceiling: raw PyNaCl verification of real entries from the bucket."""
    import multiprocessing

    from ledger.entry import decode_entry
    from ledger.note import Verifier
    from ledger.tiles import decode_bundle

    client = s3_client(p["endpoint"])
    items: list[tuple[bytes, bytes]] = []
    for st in p["stations"]:
        pk = Verifier.parse(st["vkey"]).public_key
        for key in _bundle_keys(client, p["bucket"], st["origin"]):
            data = client.get_object(Bucket=p["bucket"], Key=key)["Body"].read()
            for leaf in decode_bundle(data):
                e = decode_entry(leaf)
                if e.type != "key":
                    items.append((e.signature + e.signed_message(), pk))
            if len(items) >= p["n"]:
                break
        if len(items) >= p["n"]:
            break
    items = items[: p["n"]]
    t0 = time.perf_counter()
    bad = _verify_loop(items)
    one = time.perf_counter() - t0
    ctx = multiprocessing.get_context("fork")
    start, q = ctx.Event(), ctx.Queue()
    half = len(items) // 2
    procs = [
        ctx.Process(target=_verify_child, args=(part, start, q))
        for part in (items[:half], items[half:])
    ]
    for pr in procs:
        pr.start()
    time.sleep(0.5)
    start.set()
    ends = [q.get() for _ in procs]
    for pr in procs:
        pr.join()
    two = max(e[1] for e in ends) - min(e[0] for e in ends)
    return {
        "n": len(items),
        "bad": bad + sum(e[2] for e in ends),
        "one_rate": len(items) / one,
        "two_rate": len(items) / two,
        "bytes_avg": sum(len(s) - 64 for s, _ in items) / max(1, len(items)),
    }


def stage_fetch(p: dict[str, Any]) -> dict[str, Any]:
    """The fetch floor: plain boto3 GETs of every object the hub must read."""
    from concurrent.futures import ThreadPoolExecutor

    client = s3_client(p["endpoint"])
    keys: list[str] = []
    t0 = time.perf_counter()
    for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=p["bucket"], Prefix="ledger/"
    ):
        for o in page.get("Contents", []):
            k = o["Key"]
            if "/tile/" in k or k.endswith("/checkpoint"):
                keys.append(k)
    list_s = time.perf_counter() - t0

    def get(k: str) -> int:
        return len(client.get_object(Bucket=p["bucket"], Key=k)["Body"].read())

    sample = keys[: min(len(keys), 2000)]
    t0 = time.perf_counter()
    for k in sample:
        get(k)
    one = time.perf_counter() - t0
    t0 = time.perf_counter()
    with ThreadPoolExecutor(p["threads"]) as ex:
        total = sum(ex.map(get, keys, chunksize=64))
    many = time.perf_counter() - t0
    return {
        "objects": len(keys),
        "bytes": total,
        "list_s": list_s,
        "one_thread_rate": len(sample) / one,
        "threads": p["threads"],
        "seconds": many,
        "rate": len(keys) / many,
    }


def stage_duckdb(p: dict[str, Any]) -> dict[str, Any]:
    """Count by unit and month over custody.entries, as a supervisor's first question."""
    from hub.catalog import CountyCatalog, duckdb_connect, duckdb_count_by_unit_month
    from hub.config import load_hub

    conf = load_hub(Path(p["config"]))
    t0 = time.perf_counter()
    cat = CountyCatalog.open(conf.catalog)
    con = duckdb_connect(conf.catalog)
    opened = time.perf_counter() - t0
    t0 = time.perf_counter()
    rows = duckdb_count_by_unit_month(con, cat.table)
    query = time.perf_counter() - t0
    t0 = time.perf_counter()
    rows2 = duckdb_count_by_unit_month(con, cat.table)
    again = time.perf_counter() - t0
    assert rows == rows2
    return {
        "open_s": opened,
        "query_s": query,
        "again_s": again,
        "groups": len(rows),
        "rows": sum(int(r[2]) for r in rows),
        "units": len({r[0] for r in rows if r[0] is not None}),
        "months": len({r[1] for r in rows}),
        "sample": [list(map(str, r)) for r in rows[:3]],
        "files": cat.table.inspect.files().num_rows,
    }


def stage_catalog(p: dict[str, Any]) -> dict[str, Any]:
    """Catalog writes alone: up to N rows read back from the hub's table, appended again
    with `CountyCatalog.append` (the hub's own commit: partitioning, Parquet files, one
    Iceberg commit per batch) into a fresh catalog, next to a plain `pyarrow.parquet.
    write_table` of the same batches (the floor)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from hub.catalog import CountyCatalog
    from hub.config import CatalogConfig, load_hub

    conf = load_hub(Path(p["config"]))
    rows = CountyCatalog.open(conf.catalog).table.scan(limit=p["n"]).to_arrow()
    work = Path(p["work"])
    fresh = CatalogConfig(f"sqlite:///{work / 'catalog.db'}", f"file://{work / 'warehouse'}")
    cat = CountyCatalog.open(fresh)
    batches = [rows.slice(i, p["batch"]) for i in range(0, rows.num_rows, p["batch"])]
    t0 = time.perf_counter()
    progress: dict[str, int] = {}  # never goes back: rows of a station span batches
    for b in batches:
        top = pa.TableGroupBy(b, "origin").aggregate([("leaf_index", "max")])
        for o, m in zip(
            top.column("origin").to_pylist(), top.column("leaf_index_max").to_pylist(), strict=True
        ):
            progress[str(o)] = max(progress.get(str(o), 0), int(m) + 1)
        cat.append(b, dict(progress))
    ours = time.perf_counter() - t0
    out = work / "parquet"
    out.mkdir()
    t0 = time.perf_counter()
    for i, b in enumerate(batches):
        pq.write_table(b, out / f"{i}.parquet")
    floor = time.perf_counter() - t0
    assert cat.count() == rows.num_rows and int(pc.count(rows.column("origin")).as_py()) > 0
    return {
        "rows": rows.num_rows,
        "batches": len(batches),
        "append_s": ours,
        "parquet_s": floor,
        "files": cat.table.inspect.files().num_rows,
    }


STAGES = {
    "generate": stage_generate,
    "verify": stage_verify,
    "fetch": stage_fetch,
    "duckdb": stage_duckdb,
    "catalog": stage_catalog,
}


def run_stage(stage: str, params: dict[str, Any]) -> dict[str, Any]:
    """One stage in a fresh process; its result is the last line of its output (JSON)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--stage", stage]
    p = subprocess.run(
        cmd, input=json.dumps(params), capture_output=True, text=True, env=os.environ
    )
    sys.stderr.write(p.stderr)
    if p.returncode != 0:
        raise RuntimeError(f"stage {stage} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(p.stdout.strip().splitlines()[-1])
    return result


# -- the hub, measured ---------------------------------------------------------------------


@dataclass
class Measured:
    cmd: list[str]
    rc: int
    wall_s: float
    cpu_s: float  # the hub process and the children it reaped (wait4)
    kids_cpu_s: float  # every descendant, sampled from /proc (the signature workers)
    ru_maxrss_mb: float
    hwm_mb: float  # the hub process's own peak (VmHWM), sampled
    tree_mb: float  # peak sum of VmRSS over the hub and its descendants, sampled
    stdout: str
    stderr: str
    requests: dict[str, int] = field(default_factory=dict)


def run_measured(cmd: list[str], out: Path, server: MeteredSeaweedFS) -> Measured:
    before = server.requests()
    with open(out.with_suffix(".out"), "wb") as fo, open(out.with_suffix(".err"), "wb") as fe:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=fo, stderr=fe, env=os.environ, cwd=REPO)
    peak = {"hwm": 0.0, "tree": 0}
    kid_cpu: dict[int, float] = {}  # descendant pid -> CPU seconds last seen
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.2):
            peak["hwm"] = max(peak["hwm"], vm_hwm_mb(proc.pid))
            kids = descendants(proc.pid)
            tree = vm_rss_kb(proc.pid) + sum(vm_rss_kb(k) for k in kids)
            peak["tree"] = max(peak["tree"], tree)
            for k in kids:
                kid_cpu[k] = max(kid_cpu.get(k, 0.0), cpu_seconds(k))

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    # wait4 on this pid (not RUSAGE_CHILDREN, which mixes every child this parent reaped).
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    stop.set()
    t.join()
    m = Measured(
        cmd,
        proc.returncode,
        wall,
        ru.ru_utime + ru.ru_stime,
        sum(kid_cpu.values()),
        ru.ru_maxrss / 1024,
        peak["hwm"],
        peak["tree"] / 1024,
        out.with_suffix(".out").read_text(),
        out.with_suffix(".err").read_text(),
    )
    m.requests = delta(before, server.requests())
    return m


IDLE = {"acquire", "wait", "poll", "select", "<method 'acquire' of '_thread.lock' objects>"}


def top_costs(path: Path, n: int = 15) -> tuple[float, list[tuple[str, int, float, float]]]:
    """Seconds spent waiting (locks, futures, sockets' select), and (function, calls, own
    seconds, cumulative seconds) of the rest by own time."""
    import pstats

    st = pstats.Stats(str(path))
    rows = []
    waiting = 0.0
    for (file, line, func), (_cc, nc, tt, ct, _callers) in st.stats.items():  # type: ignore[attr-defined]
        if func in IDLE or "acquire" in func:
            waiting += tt
            continue
        where = f"{Path(file).parent.name}/{Path(file).name}:{line}" if line else file
        rows.append((f"{func} ({where})", nc, tt, ct))
    rows.sort(key=lambda r: -r[2])
    return waiting, rows[:n]


def custody(*args: str) -> list[str]:
    return [sys.executable, "-m", "custody", *args]


@dataclass
class SyncFigures:
    label: str
    m: Measured
    result: dict[str, Any] | None  # the sync --json document
    error: str = ""

    @property
    def sync(self) -> dict[str, Any]:
        sync: dict[str, Any] = (self.result or {}).get("sync", {})
        return sync


def hub_sync(hub_conf: Path, label: str, work: Path, server: MeteredSeaweedFS) -> SyncFigures:
    log(f"hub sync ({label}) ...")
    m = run_measured(custody("hub", "-c", str(hub_conf), "sync", "--json"), work / label, server)
    doc = None
    err = ""
    try:
        doc = json.loads(m.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        err = f"exit {m.rc}; no JSON on stdout; stderr: {m.stderr.strip()[-1500:]}"
    if m.rc not in (0,) and not err:
        err = f"exit {m.rc}; stderr: {m.stderr.strip()[-1500:]}"
    s = (doc or {}).get("sync", {})
    log(
        f"  {label}: exit {m.rc}, {s.get('entries')} entries in {s.get('seconds')} s, "
        f"{s.get('gets')} GETs (server: {m.requests}), wall {m.wall_s:.1f} s, "
        f"ru_maxrss {m.ru_maxrss_mb:.0f} MB, tree {m.tree_mb:.0f} MB"
    )
    return SyncFigures(label, m, doc, err)


# -- the run ---------------------------------------------------------------------------------


@dataclass
class Run:
    args: argparse.Namespace
    machine: dict[str, str]
    gen: dict[str, Any] = field(default_factory=dict)
    grow: dict[str, Any] = field(default_factory=dict)
    gen_requests: dict[str, int] = field(default_factory=dict)
    verify: dict[str, Any] = field(default_factory=dict)
    fetch: dict[str, Any] = field(default_factory=dict)
    syncs: list[SyncFigures] = field(default_factory=list)
    status_ok: str = ""
    duck: dict[str, Any] = field(default_factory=dict)
    duck_error: str = ""
    catalog: dict[str, Any] = field(default_factory=dict)
    catalog_error: str = ""
    profile: dict[str, Any] = field(default_factory=dict)
    parent_hwm_mb: float = 0.0
    hub_error: str = ""


def run(args: argparse.Namespace, machine: dict[str, str], work: Path) -> Run:
    r = Run(args, machine)
    server = MeteredSeaweedFS(work / "seaweedfs").start()
    try:
        server.bucket(BUCKET, lock=True)
        p = {
            "endpoint": server.endpoint,
            "bucket": BUCKET,
            "stations": args.stations,
            "entries": args.entries,
            "processes": args.processes,
            "checkpoint_every": args.checkpoint_every,
            "resume": False,
        }
        log(f"generating {args.stations} stations × {args.entries:,} entries ...")
        before = server.requests()
        r.gen = run_stage("generate", p)
        r.gen_requests = delta(before, server.requests())
        log(f"  {r.gen['entries']:,} entries in {r.gen['seconds']:.1f} s")
        log("baseline: raw Ed25519 verification ...")
        r.verify = run_stage(
            "verify",
            {**p, "stations": r.gen["stations"], "n": min(args.baseline_entries, r.gen["entries"])},
        )
        log("baseline: plain boto3 GETs ...")
        r.fetch = run_stage("fetch", {**p, "threads": 8})
        if args.skip_hub:
            return r
        hub_dir = work / "hub"
        init = subprocess.run(
            custody("hub", "init", "--data", str(hub_dir), "--name", HUB_NAME),
            capture_output=True,
            text=True,
            cwd=REPO,
        )
        if init.returncode != 0:
            r.hub_error = f"custody hub init failed: {init.stderr.strip()[-1500:]}"
            log(r.hub_error)
            return r
        from tests.stationsim import hub_stations_toml

        hub_conf = hub_dir / "hub.toml"
        store = {"kind": "s3", "bucket": BUCKET, "endpoint_url": server.endpoint}
        stations = [(s["origin"], s["vkey"], s["unit"]) for s in r.gen["stations"]]
        with open(hub_conf, "a") as f:
            f.write("\n" + hub_stations_toml(stations, store))
        r.parent_hwm_mb = vm_hwm_mb()
        r.syncs.append(hub_sync(hub_conf, "catch-up", work, server))
        grow = max(1, args.entries * args.increment_pct // 100)
        log(f"growing every station by {grow:,} entries ...")
        r.grow = run_stage("generate", {**p, "entries": grow, "resume": True})
        r.syncs.append(hub_sync(hub_conf, "incremental", work, server))
        r.syncs.append(hub_sync(hub_conf, "nothing new", work, server))
        st = subprocess.run(
            custody("hub", "-c", str(hub_conf), "status", "--json"),
            capture_output=True,
            text=True,
            cwd=REPO,
        )
        r.status_ok = check_status(st.stdout, r.grow or r.gen)
        log(f"status: {r.status_ok}")
        try:
            r.duck = run_stage("duckdb", {"config": str(hub_conf)})
        except RuntimeError as e:
            r.duck_error = str(e).strip().splitlines()[-1][:500]
        if args.profile:
            r.profile = profile_catch_up(work, stations, store, server)
        (work / "catalog").mkdir()
        cp = {"config": str(hub_conf), "n": args.catalog_rows, "batch": 200_000}
        try:
            r.catalog = run_stage("catalog", {**cp, "work": str(work / "catalog")})
        except RuntimeError as e:
            r.catalog_error = str(e).strip().splitlines()[-1][:500]
        return r
    finally:
        server.stop()


def profile_catch_up(
    work: Path, stations: list[tuple[str, str, str]], store: dict[str, str], server: Any
) -> dict[str, Any]:
    """A second hub, from zero, whose sync runs under cProfile (the main process only:
    the signature workers are not profiled). Its timings are not the benchmark's."""
    from tests.stationsim import hub_stations_toml

    hub_dir = work / "hub-profiled"
    subprocess.run(
        custody("hub", "init", "--data", str(hub_dir), "--name", HUB_NAME + "-profiled"),
        check=True,
        capture_output=True,
        cwd=REPO,
    )
    conf = hub_dir / "hub.toml"
    with open(conf, "a") as f:
        f.write("\n" + hub_stations_toml(stations, store))
    prof = work / "catch-up.prof"
    cmd = [sys.executable, "-m", "cProfile", "-o", str(prof), "-m", "custody"]
    log("hub sync (catch-up, profiled, second hub) ...")
    m = run_measured([*cmd, "hub", "-c", str(conf), "sync", "--json"], work / "profiled", server)
    waiting, top = top_costs(prof) if prof.exists() else (0.0, [])
    return {"wall_s": m.wall_s, "rc": m.rc, "waiting_s": waiting, "top": top}


def check_status(text: str, gen: dict[str, Any]) -> str:
    """Whether the hub shows every station ok at the size the simulator wrote."""
    try:
        doc = json.loads(text)
    except ValueError:
        return "status --json gave no JSON"
    want = {s["origin"]: s["size"] for s in gen["stations"]}
    bad = [
        f"{s['origin']}: {s['state']} size {s['size']}"
        for s in doc.get("stations", [])
        if s["state"] != "ok" or s["size"] != want.get(s["origin"])
    ]
    if len(doc.get("stations", [])) != len(want):
        bad.append(f"{len(doc.get('stations', []))} stations shown, {len(want)} configured")
    if bad:
        return "NOT all ok: " + "; ".join(bad[:5])
    return f"all {len(want)} stations ok at their real size"


# -- the report ----------------------------------------------------------------------------


def report(r: Run, command: str) -> str:
    a, m = r.args, r.machine
    small = a.stations * a.entries < 10_000_000
    title = "# County hub benchmark results"
    if small:
        title += f" (small run: {a.stations} × {a.entries:,}, not the 10^7 target run)"
    lines = [
        title,
        "",
        f"- Date: {m['date']}; total runtime {m['minutes']} min",
        f"- Command: `{command}`",
        f"- Machine: {m['nproc']} cores (`nproc`), {m['cpu']}, Linux {m['kernel']}, {m['mem']} RAM",
        f"- Python {m['python']}, PyNaCl {m['nacl']}, SeaweedFS {m['weed']}",
        f"- Load average (1/5/15 min) at start: {m['load_start']}; at end: {m['load_end']}",
        "",
        "Everything ran on this machine over loopback: SeaweedFS, the hub and its signature "
        "workers share the same cores. Baselines ran in the same run, over the same bucket.",
        "",
    ]
    g = r.gen
    req = r.gen_requests
    lines += [
        "## Simulated county",
        "",
        "| stations | entries each | entries | generation s | entries/s | CPU s | PUTs | "
        "station task p50 / max s |",
        "|---:|---:|---:|---:|---:|---:|---:|---|",
        f"| {a.stations} | {a.entries:,} | {g['entries']:,} | {g['seconds']:.1f} | "
        f"{fmt(g['entries'] / g['seconds'])} | {g['cpu_s']:.0f} | {fmt(req.get('PUT', 0))} | "
        f"{g['station_seconds'][len(g['station_seconds']) // 2]:.1f} / "
        f"{g['station_seconds'][-1]:.1f} |",
        "",
        f"Generation ran in {a.processes or m['nproc']} processes (one station per task): "
        "signing each entry (Ed25519, PyNaCl), building the tree, and one PUT per object. "
        f"Checkpoints every {a.checkpoint_every} entries. At this rate 10^7 entries take "
        f"{10_000_000 / (g['entries'] / g['seconds']) / 60:.0f} min.",
        "",
    ]
    v, f = r.verify, r.fetch
    lines += [
        "## Baselines (same run, same bucket)",
        "",
        "| baseline | figure |",
        "|---|---:|",
        f"| (a) Ed25519 verify, raw PyNaCl, 1 process ({v['n']:,} real entries, "
        f"{v['bytes_avg']:.0f}-byte messages) | {fmt(v['one_rate'])} entries/s |",
        f"| (a) the same, 2 processes at once | {fmt(v['two_rate'])} entries/s |",
        f"| (b) boto3 GET, 1 thread (first {min(2000, f['objects']):,} objects) | "
        f"{fmt(f['one_thread_rate'])} objects/s |",
        f"| (b) boto3 GET, {f['threads']} threads, every tile, bundle and checkpoint "
        f"({fmt(f['objects'])} objects, {f['bytes'] / 1e6:,.0f} MB) | {fmt(f['rate'])} "
        f"objects/s, {f['seconds']:.1f} s |",
        f"| (b) as entries: all entries / that time | "
        f"{fmt(g['entries'] / f['seconds'])} entries/s |",
        "",
        f"Signatures that failed in the baseline: {v['bad']} (must be 0).",
        "",
    ]
    if v["two_rate"] < 1.5 * v["one_rate"]:
        lines += [
            "Two processes verified less than 1.5× one: other work competed for the two "
            "cores during this run (see the load average), so every rate here is below "
            "what an idle machine gives.",
            "",
        ]
    if r.hub_error:
        lines += ["## The hub", "", f"Not measured: {r.hub_error}", ""]
        return "\n".join(lines) + "\n"
    if not r.syncs:
        lines += ["## The hub", "", "Not run (--skip-hub).", ""]
        return "\n".join(lines) + "\n"
    ceiling = v["two_rate"]
    lines += [
        "## The hub: `custody hub sync --json`",
        "",
        "| sync | entries | hub s | wall s | entries/s (hub s) | ratio to 2-process "
        "verify | GETs (hub) | GETs (SeaweedFS, incl. HEAD) | LISTs (hub / SeaweedFS) | "
        "catalog rows | rows/s | CPU s hub / workers | ru_maxrss MB | hub VmHWM MB | "
        "hub+workers RSS MB | exit |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    for s in r.syncs:
        y = s.sync
        n = int(y.get("entries", 0) or 0)
        secs = float(y.get("seconds", 0) or 0)
        rate = n / secs if secs and n else 0.0
        rows = int(y.get("rows", 0) or 0)
        lines.append(
            f"| {s.label} | {n:,} | {secs:.1f} | {s.m.wall_s:.1f} | "
            f"{fmt(rate) if rate else '–'} | "
            f"{f'{rate / ceiling:.2f}×' if rate else '–'} | {y.get('gets', '–')} | "
            f"{s.m.requests.get('GET', 0):,} | {y.get('lists', '–')} / "
            f"{s.m.requests.get('LIST', 0):,} | {rows:,} | "
            f"{fmt(rows / secs) if rows and secs else '–'} | {s.m.cpu_s:.1f} / "
            f"{s.m.kids_cpu_s:.1f} | "
            f"{s.m.ru_maxrss_mb:.0f} | {s.m.hwm_mb:.0f} | {s.m.tree_mb:.0f} | {s.m.rc} |"
        )
    catch = r.syncs[0].sync
    n0 = int(catch.get("entries", 0) or 0)
    rate0 = n0 / float(catch.get("seconds") or 1)
    within = (
        "is within it"
        if ceiling >= TARGET_RATE
        else "is above what this machine's two cores can verify at all"
    )
    lines += [
        "",
        f"Target: ≥ {TARGET_RATE:,} entries/s verified on two cores: catch-up "
        f"{fmt(rate0)} entries/s, **{'met' if rate0 >= TARGET_RATE else 'missed'}**. The "
        f"Ed25519 ceiling measured here is {fmt(ceiling)} entries/s (two processes doing "
        f"nothing else), so the target {within}. Entries per GET in the catch-up: "
        f"{n0 / max(1, int(catch.get('gets') or 1)):.0f}.",
        "",
        f"Hub status after the syncs: {r.status_ok}.",
        "",
        "SeaweedFS counts a HEAD as a GET. What it counts beyond the hub's own GETs and "
        "LISTs comes from the cosignatures the hub writes back (`S3Store.put` asks with a "
        "HEAD before a write-once PUT and reads back with another after every PUT; a "
        "replaced `cosigned/.../checkpoint` lists its versions to drop the old one).",
        "",
        "Peak memory: `ru_maxrss` is from `os.wait4` on the sync process (the maximum "
        "over it and the children it reaped itself); Linux carries `ru_maxrss` over "
        "`execve` from the pages the child started with, so it cannot read below this "
        f"benchmark parent's own peak at the time, {r.parent_hwm_mb:.0f} MB (VmHWM): heavy "
        "stages ran in their own processes to keep that floor low. The signature workers "
        "are children of multiprocessing's forkserver, not of the hub, so neither "
        '`ru_maxrss` nor the hub\'s CPU column covers them: "hub+workers RSS" is the peak '
        "sum of VmRSS over the hub and every descendant, and the workers' CPU their "
        "utime + stime, both sampled every 0.2 s from /proc (a worker's last 0.2 s can be "
        'missed). "hub VmHWM" is the hub process\'s own peak. Flat in the number of '
        "entries means catch-up and incremental peaks of the same order.",
        "",
    ]
    for s in r.syncs:
        if s.error:
            lines.append(f"- {s.label}: {s.error}")
    if r.duck:
        d = r.duck
        lines += [
            "## DuckDB over `custody.entries`",
            "",
            "| query | groups | rows counted | units (not null) | months | data files | open s | "
            "first run s | second run s |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
            f"| count by unit and month (`hub.catalog.UNIT_MONTH_SQL`) | {d['groups']:,} | "
            f"{d['rows']:,} | {d['units']} | {d['months']} | {d['files']:,} | "
            f"{d['open_s']:.2f} | {d['query_s']:.2f} | {d['again_s']:.2f} |",
            "",
            f"Rows counted must equal every entry written: {d['rows']:,} counted, "
            f"{r.gen['entries'] + r.grow.get('entries', 0):,} written.",
            "",
        ]
    elif r.duck_error:
        lines += ["## DuckDB over `custody.entries`", "", f"Failed: {r.duck_error}", ""]
    if r.catalog:
        c = r.catalog
        lines += [
            "## Catalog writes alone",
            "",
            f"{c['rows']:,} rows read back from the hub's table, written again in "
            f"{c['batches']} batches of up to 200,000 rows (the hub's `batch_rows`), into a "
            "fresh catalog in the same run:",
            "",
            "| writer | seconds | rows/s | ratio to plain Parquet |",
            "|---|---:|---:|---:|",
            f"| `CountyCatalog.append` (partitioned Parquet + one Iceberg commit per batch; "
            f"{c['files']:,} data files) | {c['append_s']:.2f} | "
            f"{fmt(c['rows'] / c['append_s'])} | {c['parquet_s'] / c['append_s']:.2f}× |",
            f"| baseline: `pyarrow.parquet.write_table`, one file per batch | "
            f"{c['parquet_s']:.2f} | {fmt(c['rows'] / c['parquet_s'])} | 1.00× |",
            "",
        ]
    elif r.catalog_error:
        lines += ["## Catalog writes alone", "", f"Failed: {r.catalog_error}", ""]
    if r.profile:
        p = r.profile
        lines += [
            "## Where the catch-up's time goes (cProfile, `--profile`)",
            "",
            f"A second hub caught up from zero under cProfile (the hub process only, not its "
            f"signature workers; {p['wall_s']:.1f} s wall with the profiler's overhead, exit "
            f"{p['rc']}); {p['waiting_s']:.1f} s of it waiting on locks and futures (the "
            "workers, the I/O threads). Top functions by own time:",
            "",
            "| function | calls | own s | cumulative s |",
            "|---|---:|---:|---:|",
        ]
        lines += [f"| `{f}` | {n:,} | {tt:.2f} | {ct:.2f} |" for f, n, tt, ct in p["top"]]
        lines.append("")
    return "\n".join(lines) + "\n"


def machine_description() -> dict[str, str]:
    import nacl

    mem = "?"
    with contextlib.suppress(OSError):
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024 / 1024:.0f} GiB"
    weed = shell([str(Path(sys.executable).parent / "weed"), "version"]).split("\n")[0]
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": shell(["nproc"]),
        "cpu": cpu_model(),
        "kernel": platform.release(),
        "mem": mem,
        "python": sys.version.split()[0],
        "nacl": str(getattr(nacl, "__version__", "?")),
        "weed": weed.replace("version ", "").strip(),
        "load_start": load_average(),
    }


@contextlib.contextmanager
def workdir(keep: bool) -> Iterator[Path]:
    work = WORK_ROOT / f"hub-{os.getpid()}"
    work.mkdir(parents=True)
    try:
        yield work
    finally:
        if keep:
            log(f"work files kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
            with contextlib.suppress(OSError):
                WORK_ROOT.rmdir()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--stations", type=int, default=200, help="simulated stations (200)")
    ap.add_argument("--entries", type=int, default=50_000, help="entries per station (50,000)")
    ap.add_argument("--increment-pct", type=int, default=1, help="growth before the 2nd sync")
    ap.add_argument("--processes", type=int, default=None, help="generation processes (cores)")
    ap.add_argument("--checkpoint-every", type=int, default=256, help="entries per checkpoint")
    ap.add_argument(
        "--baseline-entries", type=int, default=100_000, help="entries the verify baseline checks"
    )
    ap.add_argument(
        "--catalog-rows", type=int, default=1_000_000, help="rows the catalog baseline writes"
    )
    ap.add_argument(
        "--profile", action="store_true", help="also profile a second hub's catch-up (cProfile)"
    )
    ap.add_argument("--skip-hub", action="store_true", help="generation and baselines only")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="Markdown results file")
    ap.add_argument("--stage", choices=sorted(STAGES), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.stage:
        params = json.loads(sys.stdin.read())
        print(json.dumps(STAGES[args.stage](params)))
        return 0
    command = f"cd {shlex.quote(os.getcwd())} && {shlex.join([sys.executable, *sys.argv])}"
    machine = machine_description()
    t0 = time.perf_counter()
    with workdir(args.keep) as work:
        r = run(args, machine, work)
    machine["minutes"] = f"{(time.perf_counter() - t0) / 60:.1f}"
    machine["load_end"] = load_average()
    text = report(r, command)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    log(f"wrote {args.out} in {machine['minutes']} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
