"""Ledger benchmarks: durable signed appends, proofs at 10^6 entries, full verify, memory.

Every figure is measured next to a baseline taken in the same run, on the same disk:

1. ``append``: durable signed appends/s of ~1 KB entries at batch sizes 1, 64 and 1024.
   (a) acknowledged: ``Ledger.append_entries`` alone (Ed25519 signature over RFC 8785 JSON
   per entry, one SQLite commit per batch with ``synchronous=FULL``); (b) integrated: the
   same plus ``Ledger.integrate()`` (tiles and bundles fsynced, checkpoint signed) after
   every max(batch, 64) entries; (c) acknowledged while the background integrator runs at
   a 1 s interval (the final drain at ``stop_integrator`` is reported separately).
   Each append workload runs three times, interleaved; the median run is reported.
   Baseline (``floor``): the I/O floor, pre-signed leaf bytes of the same size appended to
   a plain file with ``os.write`` + ``os.fdatasync`` once per batch of the same size.
2. ``build`` + ``proofs``: a log of 1,000,000 small entries (``{"n": i}``) built with
   ``append_entries`` in batches of 4096 and ``integrate()`` after each batch; then
   ``Ledger.proof(index)`` over random indexes and ``Ledger.consistency(old)`` over random
   old sizes through the ledger's tile reader (an LRU of 64 tiles kept per tree size).
   The proofs stage runs three times (fresh processes, different seeds); samples are pooled.
   Baseline: verifying each proof (``ledger.tree.verify_inclusion`` / ``verify_consistency``).
3. ``verify``: ``ledger.audit.verify_log`` over the whole log (every entry signature, leaf
   hash, tile and root). Baselines (``verify-floor``): ``sha256sum`` over every file under
   ``tile/``, and a pure-Python loop that only reads the bundles and hashes every leaf.
4. Memory: each workload runs in its own subprocess (this script with ``--stage``), which
   reports ``ru_maxrss`` at its end. ``verify`` runs against the signed checkpoint at
   250,000 entries and at 1,000,000 entries of the same folder, to show whether memory
   grows with the size of the log.

Run from the repository root::

    .venv/bin/python benchmarks/ledger_bench.py [--quick] [--out benchmarks/RESULTS-ledger.md]

``--quick`` is a smoke run (20,000-entry log, shorter append runs). Work files go under
``benchmarks/work/run-<pid>/`` and are deleted when the run ends, even on failure.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import resource
import shlex
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _common import cpu_model, load_average, percentile, shell

from ledger.entry import sign_entries
from ledger.log import Ledger
from ledger.note import Signer
from ledger.tiles import TILE_WIDTH, bundle_for_size, decode_bundle
from ledger.tree import leaf_hash, verify_consistency, verify_inclusion
from verify.folder import FolderSource
from verify.parallel import verify_log

ORIGIN = "bench.example/dock-01"
REPO = Path(__file__).resolve().parent.parent
WORK_ROOT = REPO / "benchmarks" / "work"
DEFAULT_OUT = Path(__file__).resolve().parent / "RESULTS-ledger.md"
BATCHES = (1, 64, 1024)
MODES = ("ack", "integrated", "background")
MAIN_KEY = {
    "floor": "rate",
    "ack": "rate",
    "integrated": "rate_all_integrated",
    "background": "rate",
}
BUILD_BATCH = 4096
INTEGRATE_EVERY_MIN = 64  # batch 1 integrates every 64 appends
BACKGROUND_INTERVAL = 1.0
TARGET_APPENDS = 20_000  # durable signed entries/s, in batches
TARGET_PROOF_MS = 1.0
FLOOR_DISTINCT_LEAVES = 1024
SHA256SUM_CHUNK = 1000  # files per sha256sum invocation
PROOF_SEED = 20240601

Result = dict[str, Any]


@dataclass(frozen=True)
class Plan:
    append_counts: dict[int, int]  # batch size -> entries appended per mode
    log_size: int
    mark: int  # the smaller checkpoint verified for the memory comparison
    samples: int  # random proofs of each kind
    repeats: int  # runs of every append workload; the median run is reported


FULL = Plan({1: 16_384, 64: 131_072, 1024: 131_072}, 1_000_000, 250_000, 2000, 3)
QUICK = Plan({1: 2_048, 64: 16_384, 1024: 16_384}, 20_000, 5_000, 1000, 1)


# -- helpers -----------------------------------------------------------------------------


def big_payload(i: int) -> dict[str, Any]:
    return {"text": "x" * 850, "operator": "bench", "n": i}


def folder_bytes(root: Path) -> tuple[int, int]:
    """(files, bytes) under ``root``."""
    files = total = 0
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            files += 1
            total += os.lstat(os.path.join(dirpath, name)).st_size
    return files, total


def batches(total: int, size: int, stops: tuple[int, ...] = ()) -> Iterator[tuple[int, int]]:
    """(start, count) chunks of ``size`` covering ``range(total)``, also cut at ``stops``."""
    start = 0
    while start < total:
        end = min(start + size, total)
        for s in stops:
            if start < s < end:
                end = s
        yield start, end - start
        start = end


def ledger_paths(work: Path) -> tuple[Path, Path]:
    return work / "ledger", work / "state"


def summarize_ms(values: list[float]) -> dict[str, float]:
    s = sorted(values)
    return {"median_ms": statistics.median(s), "p99_ms": percentile(s, 99), "max_ms": s[-1]}


def pool_proofs(runs: list[Result]) -> Result:
    """Summaries over the samples of every proofs run, plus each run's own p99."""
    out: Result = {k: runs[0][k] for k in ("size", "samples")}
    out["runs"] = len(runs)
    out["samples_total"] = sum(int(x["samples"]) for x in runs)
    out["mean_inclusion_hashes"] = statistics.fmean(x["mean_inclusion_hashes"] for x in runs)
    out["max_rss_mb"] = max(float(x["max_rss_mb"]) for x in runs)
    for kind in ("inclusion", "inclusion_verify", "consistency", "consistency_verify"):
        pooled: list[float] = [v for x in runs for v in x["ms"][kind]]
        out[kind] = summarize_ms(pooled)
        p99s = [percentile(sorted(x["ms"][kind]), 99) for x in runs]
        out[kind]["p99_runs"] = (min(p99s), max(p99s))
    return out


def median_run(runs: list[Result], key: str) -> Result:
    """The run with the median ``key`` (lower middle for an even count), plus the spread
    of ``key`` over all runs and the highest peak memory of any run."""
    ordered = sorted(runs, key=lambda x: float(x[key]))
    out = dict(ordered[(len(ordered) - 1) // 2])
    out["runs"] = len(runs)
    out["spread"] = (float(ordered[0][key]), float(ordered[-1][key]))
    out["max_rss_mb"] = max(float(x["max_rss_mb"]) for x in runs)
    return out


# -- stages (each runs in its own subprocess) --------------------------------------------


def stage_floor(work: Path, batch: int, count: int) -> Result:
    """I/O floor: framed leaf bytes appended to one file, fdatasync once per batch."""
    signer = Signer.generate(ORIGIN)
    n_leaves = min(FLOOR_DISTINCT_LEAVES, count)
    items = [("note", big_payload(i)) for i in range(n_leaves)]
    leaves = sign_entries(signer.bound(), ORIGIN, items, datetime.now(UTC))
    framed = [len(leaf).to_bytes(2, "big") + leaf for leaf in leaves]
    work.mkdir(parents=True, exist_ok=True)
    fd = os.open(work / "floor.bin", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        t0 = time.perf_counter()
        for start, n in batches(count, batch):
            view = memoryview(b"".join(framed[(start + j) % n_leaves] for j in range(n)))
            while view:
                view = view[os.write(fd, view) :]
            os.fdatasync(fd)
        elapsed = time.perf_counter() - t0
    finally:
        os.close(fd)
    return {
        "batch": batch,
        "count": count,
        "seconds": elapsed,
        "rate": count / elapsed,
        "leaf_bytes": sum(len(x) for x in leaves) / n_leaves,
    }


def stage_append(work: Path, batch: int, count: int, mode: str) -> Result:
    """Signed durable appends in one of the three modes (see the module docstring)."""
    signer = Signer.generate(ORIGIN)
    ledger_dir, state_dir = ledger_paths(work)
    every = max(batch, INTEGRATE_EVERY_MIN)
    out: Result = {"batch": batch, "count": count, "mode": mode}
    with Ledger(ledger_dir, state_dir, ORIGIN, signer) as lg:
        if mode == "background":
            lg.start_integrator(BACKGROUND_INTERVAL)
        integrate_seconds = 0.0
        t0 = time.perf_counter()
        for start, n in batches(count, batch):
            lg.append_entries([("note", big_payload(i)) for i in range(start, start + n)])
            if mode == "integrated" and (start + n) % every == 0:
                ti = time.perf_counter()
                lg.integrate()
                integrate_seconds += time.perf_counter() - ti
        if mode == "integrated":
            ti = time.perf_counter()
            lg.integrate()  # no-op when count is a multiple of `every`
            integrate_seconds += time.perf_counter() - ti
        acked = time.perf_counter()
        if mode == "background":
            out["backlog_at_stop"] = lg.pending_count()
            lg.stop_integrator()  # integrates what is still pending, then returns
            out["checkpoints_signed"] = len(lg.checkpoints(limit=1_000_000))
        done = time.perf_counter()
        out["seconds"] = acked - t0
        out["drain_seconds"] = done - acked
        out["integrate_seconds"] = integrate_seconds
        out["rate"] = count / (acked - t0)
        out["rate_all_integrated"] = count / (done - t0)
        out["entry_bytes"] = len(lg.entry(0))
        if lg.next_index() != count:
            raise RuntimeError(f"expected {count} entries, ledger has {lg.next_index()}")
        latest = lg.latest()
        out["integrated_size"] = latest.size if latest else 0
    if not 1000 <= out["entry_bytes"] <= 1100:
        raise RuntimeError(f"entry is {out['entry_bytes']} bytes, expected about 1 KB")
    # Context for the ratios: the CPU cost of signing alone (no I/O).
    sample = [("note", big_payload(i)) for i in range(min(count, 4096))]
    ts = time.perf_counter()
    sign_entries(signer.bound(), ORIGIN, sample, datetime.now(UTC))
    out["sign_only_rate"] = len(sample) / (time.perf_counter() - ts)
    return out


def stage_build(work: Path, size: int, mark: int) -> Result:
    """Build the big log: batches of 4096, integrate after each; keep the checkpoint at mark."""
    signer = Signer.generate(ORIGIN)
    ledger_dir, state_dir = ledger_paths(work)
    (work / "signer.key").write_text(signer.key_string())
    append_s = integrate_s = 0.0
    n_batches = 0
    t0 = time.perf_counter()
    with Ledger(ledger_dir, state_dir, ORIGIN, signer) as lg:
        for start, n in batches(size, BUILD_BATCH, stops=(mark,)):
            ta = time.perf_counter()
            lg.append_entries([("note", {"n": i}) for i in range(start, start + n)])
            ti = time.perf_counter()
            rec = lg.integrate()
            append_s += ti - ta
            integrate_s += time.perf_counter() - ti
            n_batches += 1
            if rec is not None and rec.size == mark:
                (work / f"checkpoint-{mark}").write_text(rec.note)
        elapsed = time.perf_counter() - t0
        latest = lg.latest()
        entry_bytes = len(lg.entry(0))
    if latest is None or latest.size != size:
        raise RuntimeError(f"built log has size {latest.size if latest else 0}, not {size}")
    files, tile_bytes = folder_bytes(ledger_dir)
    return {
        "size": size,
        "batches": n_batches,
        "seconds": elapsed,
        "append_seconds": append_s,
        "integrate_seconds": integrate_s,
        "rate": size / elapsed,
        "entry_bytes": entry_bytes,
        "files": files,
        "folder_bytes": tile_bytes,
        "sqlite_bytes": folder_bytes(state_dir)[1],
    }


def stage_proofs(work: Path, samples: int, seed: int) -> Result:
    """Time proof generation (the ledger's own tile reader, as in use) and verification."""
    ledger_dir, state_dir = ledger_paths(work)
    rng = random.Random(seed)
    gen_inc: list[float] = []
    ver_inc: list[float] = []
    gen_con: list[float] = []
    ver_con: list[float] = []
    with Ledger(ledger_dir, state_dir, ORIGIN) as lg:
        latest = lg.latest()
        assert latest is not None
        size, root = latest.size, latest.root
        proof_lengths = 0
        for _ in range(samples):
            index = rng.randrange(size)
            lh = leaf_hash(lg.entry(index))  # not timed: the verifier already has its entry
            t0 = time.perf_counter_ns()
            proof = lg.proof(index)
            t1 = time.perf_counter_ns()
            ok = verify_inclusion(index, size, lh, proof.hashes, root)
            t2 = time.perf_counter_ns()
            if not ok:
                raise RuntimeError(f"inclusion proof for {index} does not verify")
            gen_inc.append((t1 - t0) / 1e6)
            ver_inc.append((t2 - t1) / 1e6)
            proof_lengths += len(proof.hashes)
        for _ in range(samples):
            old = rng.randrange(1, size)
            t0 = time.perf_counter_ns()
            c = lg.consistency(old)
            t1 = time.perf_counter_ns()
            ok = verify_consistency(old, size, c["old_root"], c["new_root"], c["proof"])
            t2 = time.perf_counter_ns()
            if not ok or c["new_root"] != root:
                raise RuntimeError(f"consistency proof {old} -> {size} does not verify")
            gen_con.append((t1 - t0) / 1e6)
            ver_con.append((t2 - t1) / 1e6)

    return {
        "size": size,
        "samples": samples,
        "mean_inclusion_hashes": proof_lengths / samples,
        "ms": {
            "inclusion": gen_inc,
            "inclusion_verify": ver_inc,
            "consistency": gen_con,
            "consistency_verify": ver_con,
        },
    }


def stage_verify(work: Path, size: int) -> Result:
    """verify_log over the folder, against the signed checkpoint of ``size``."""
    ledger_dir, _ = ledger_paths(work)
    verifier = Signer.parse((work / "signer.key").read_text()).verifier()
    src = FolderSource(ledger_dir)
    marked = work / f"checkpoint-{size}"
    text = marked.read_bytes() if marked.exists() else src.read_checkpoint()
    t0 = time.perf_counter()
    rep = verify_log(src, text, [verifier])
    elapsed = time.perf_counter() - t0
    if not rep.ok or rep.size != size or rep.entries_checked != size:
        raise RuntimeError(f"verify_log failed at size {size}: {rep.lines()[:5]}")
    return {
        "size": size,
        "seconds": elapsed,
        "rate": rep.entries_checked / elapsed,
        "signatures_checked": rep.signatures_checked,
    }


def stage_verify_floor(work: Path, size: int) -> Result:
    """Baselines for verify: sha256sum over every tile file; hashing every leaf in Python."""
    ledger_dir, _ = ledger_paths(work)
    tile_dir = ledger_dir / "tile"
    paths = sorted(os.path.join(d, name) for d, _dirs, names in os.walk(tile_dir) for name in names)
    total_bytes = sum(os.path.getsize(p) for p in paths)
    t0 = time.perf_counter()
    for i in range(0, len(paths), SHA256SUM_CHUNK):
        subprocess.run(
            ["sha256sum", "--", *paths[i : i + SHA256SUM_CHUNK]],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    sha_s = time.perf_counter() - t0
    src = FolderSource(ledger_dir)
    hashed = 0
    t0 = time.perf_counter()
    for n in range((size + TILE_WIDTH - 1) // TILE_WIDTH):
        for leaf in decode_bundle(src.read_tile(bundle_for_size(n, size))):
            leaf_hash(leaf)
            hashed += 1
    leaf_s = time.perf_counter() - t0
    if hashed != size:
        raise RuntimeError(f"hashed {hashed} leaves, expected {size}")
    return {
        "size": size,
        "files": len(paths),
        "bytes": total_bytes,
        "sha256sum_seconds": sha_s,
        "sha256sum_rate": size / sha_s,
        "leaf_hash_seconds": leaf_s,
        "leaf_hash_rate": size / leaf_s,
    }


STAGES: dict[str, Callable[..., Result]] = {
    "floor": stage_floor,
    "append": stage_append,
    "build": stage_build,
    "proofs": stage_proofs,
    "verify": stage_verify,
    "verify-floor": stage_verify_floor,
}


def run_child(stage: str, work: Path, params: dict[str, Any]) -> None:
    work.mkdir(parents=True, exist_ok=True)
    result = STAGES[stage](work, **params)
    result["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


# -- orchestration -----------------------------------------------------------------------


def run_stage(stage: str, work: Path, **params: Any) -> Result:
    """Run one stage in a fresh interpreter; returns its JSON result."""
    label = " ".join(f"{k}={v}" for k, v in params.items())
    print(f"[{time.strftime('%H:%M:%S')}] {stage} {label}", file=sys.stderr, flush=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--stage", stage, "--work", str(work)]
    proc = subprocess.run(
        [*cmd, "--params", json.dumps(params)], stdout=subprocess.PIPE, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"stage {stage} {label} failed with exit code {proc.returncode}")
    result: Result = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


@dataclass
class Run:
    plan: Plan
    command: str
    started: datetime
    machine: dict[str, str]
    floor: dict[int, Result]
    appends: dict[tuple[int, str], Result]
    build: Result
    proofs: Result
    verify_mark: Result
    verify_full: Result
    verify_floor: Result
    seconds: float = 0.0
    load_end: str = ""


def execute(plan: Plan, work: Path, command: str) -> Run:
    started = datetime.now(UTC)
    machine = {
        "nproc": shell(["nproc"]),
        "free": shell(["free", "-g"]),
        "df": shell(["df", "-T", str(WORK_ROOT)]),
        "cpu": cpu_model(),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "sqlite": sqlite3.sqlite_version,
        "load_start": load_average(),
    }
    t0 = time.perf_counter()
    floor_runs: dict[int, list[Result]] = {b: [] for b in BATCHES}
    append_runs: dict[tuple[int, str], list[Result]] = {(b, m): [] for b in BATCHES for m in MODES}
    for _ in range(plan.repeats):  # round-robin, so slow drift affects every workload alike
        for batch in BATCHES:
            count = plan.append_counts[batch]
            d = work / f"floor-{batch}"
            floor_runs[batch].append(run_stage("floor", d, batch=batch, count=count))
            shutil.rmtree(d)
            for mode in MODES:
                d = work / f"append-{batch}-{mode}"
                res = run_stage("append", d, batch=batch, count=count, mode=mode)
                append_runs[batch, mode].append(res)
                shutil.rmtree(d)
    floor = {b: median_run(runs, MAIN_KEY["floor"]) for b, runs in floor_runs.items()}
    appends = {k: median_run(runs, MAIN_KEY[k[1]]) for k, runs in append_runs.items()}
    big = work / "log"
    build = run_stage("build", big, size=plan.log_size, mark=plan.mark)
    proofs = pool_proofs(
        [
            run_stage("proofs", big, samples=plan.samples, seed=PROOF_SEED + i)
            for i in range(plan.repeats)
        ]
    )
    verify_mark = run_stage("verify", big, size=plan.mark)
    verify_full = run_stage("verify", big, size=plan.log_size)
    verify_floor = run_stage("verify-floor", big, size=plan.log_size)
    return Run(
        plan,
        command,
        started,
        machine,
        floor,
        appends,
        build,
        proofs,
        verify_mark,
        verify_full,
        verify_floor,
        time.perf_counter() - t0,
        load_average(),
    )


# -- report ------------------------------------------------------------------------------


def rate(x: float) -> str:
    return f"{x:,.0f}"


def ratio(ours: float, base: float) -> str:
    return f"{ours / base:.2f}×" if base else "n/a"


def ms(x: float) -> str:
    return f"{x:.3f}"


def mb(x: float) -> str:
    return f"{x:,.0f}"


def yes_no(ok: bool) -> str:
    return "**met**" if ok else "**missed**"


def report(r: Run) -> str:
    p = r.plan
    quick = " (--quick smoke run: NOT the full benchmark)" if p is QUICK else ""
    lines = [
        f"# Ledger benchmark results{quick}",
        "",
        f"- Date: {r.started.strftime('%Y-%m-%d %H:%M UTC')}; total runtime "
        f"{r.seconds / 60:.1f} min",
        f"- Command: `{r.command}`",
        f"- Machine: {r.machine['nproc']} cores (`nproc`), {r.machine['cpu']}, "
        f"Linux {r.machine['kernel']}",
        f"- Python {r.machine['python']}, SQLite {r.machine['sqlite']}",
        f"- Load average (1/5/15 min) at start: {r.machine['load_start']}; at end: "
        f"{r.load_end} (the benchmark itself keeps about one core busy)",
        "",
        "```",
        "$ free -g",
        r.machine["free"],
        "$ df -T benchmarks/work",
        r.machine["df"],
        "```",
        "",
        "Ratios are ours / baseline, both measured in this run. Page cache was warm (the",
        "proof and verify stages read a log that the build stage had just written).",
        "",
    ]
    lines += report_appends(r)
    lines += report_proofs(r)
    lines += report_verify(r)
    lines += report_memory(r)
    return "\n".join(lines) + "\n"


def report_appends(r: Run) -> list[str]:
    p = r.plan
    entry_bytes = r.appends[BATCHES[0], "ack"]["entry_bytes"]
    lines = [
        "## 1. Durable signed appends (~1 KB entries)",
        "",
        f"Entry size `len(L.entry(0))` = {entry_bytes} bytes. Entries per run: "
        + ", ".join(f"batch {b}: {p.append_counts[b]:,}" for b in BATCHES)
        + f". Each run uses a fresh ledger; every workload ran {p.repeats} time(s), "
        "interleaved, and the median run is shown (spread below).",
        "",
        "| batch | I/O floor (write + fdatasync per batch) /s | (a) acknowledged /s | (a) ratio "
        "| (b) incl. integrate + checkpoint /s | (b) ratio | (c) ack. with 1 s integrator /s "
        "| (c) ratio |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for b in BATCHES:
        base = r.floor[b]["rate"]
        a = r.appends[b, "ack"]["rate"]
        i = r.appends[b, "integrated"]["rate_all_integrated"]
        c = r.appends[b, "background"]["rate"]
        lines.append(
            f"| {b} | {rate(base)} | {rate(a)} | {ratio(a, base)} | {rate(i)} | {ratio(i, base)} "
            f"| {rate(c)} | {ratio(c, base)} |"
        )
    lines += [
        "",
        "(b) integrates after every batch (batch 1: every 64 appends) and includes that time. "
        "Details:",
        "",
        "| batch | sign only (CPU, no I/O) /s | (b) time in integrate() | "
        "(c) checkpoints signed (per s) | (c) backlog at stop | (c) final drain s | "
        "(c) incl. drain /s |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for b in BATCHES:
        a = r.appends[b, "ack"]
        i = r.appends[b, "integrated"]
        c = r.appends[b, "background"]
        share = i["integrate_seconds"] / i["seconds"]
        per_s = c["checkpoints_signed"] / (c["seconds"] + c["drain_seconds"])
        lines.append(
            f"| {b} | {rate(a['sign_only_rate'])} | {share:.0%} "
            f"| {c['checkpoints_signed']} ({per_s:.1f}) "
            f"| {c['backlog_at_stop']:,} | {c['drain_seconds']:.2f} "
            f"| {rate(c['rate_all_integrated'])} |"
        )
    lines += [
        "",
        f"Spread over the {p.repeats} run(s), min – max entries/s:",
        "",
        "| batch | I/O floor | (a) | (b) | (c) |",
        "|---:|---:|---:|---:|---:|",
    ]
    for b in BATCHES:
        cells = [r.floor[b]] + [r.appends[b, m] for m in MODES]
        lines.append(
            f"| {b} | "
            + " | ".join(f"{rate(c['spread'][0])} – {rate(c['spread'][1])}" for c in cells)
            + " |"
        )
    batched = [b for b in BATCHES if b > 1]
    figures = (
        ("acknowledged (a)", "ack", "rate"),
        ("including integration (b)", "integrated", "rate_all_integrated"),
        ("acknowledged with the background integrator (c)", "background", "rate"),
    )
    verdicts = []
    for label, mode, key in figures:
        parts = []
        for b in batched:
            x = r.appends[b, mode][key]
            parts.append(f"batch {b}: {rate(x)} {yes_no(x >= TARGET_APPENDS)}")
        verdicts.append(f"- {label}: " + "; ".join(parts))
    sync_us = 1e6 / r.floor[1]["rate"]
    lines += [
        "",
        f"Target >= {TARGET_APPENDS:,} durable signed entries/s in batches:",
        "",
        *verdicts,
        "",
        f"One write + fdatasync of a single entry takes {sync_us:.0f} µs on this disk "
        "(the batch-1 floor), so absolute rates depend heavily on the storage.",
        "",
    ]
    return lines


def report_proofs(r: Run) -> list[str]:
    b, pr = r.build, r.proofs
    lines = [
        f"## 2. Proofs at {pr['size']:,} entries",
        "",
        f"Build: {b['size']:,} entries of {b['entry_bytes']} bytes in {b['batches']} "
        f"append_entries + integrate() rounds (batches of {BUILD_BATCH}) took "
        f"{b['seconds']:.1f} s ({rate(b['rate'])} entries/s; append {b['append_seconds']:.1f} s, "
        f"integrate {b['integrate_seconds']:.1f} s). Tile folder: {b['files']:,} files, "
        f"{b['folder_bytes'] / 2**20:,.0f} MiB; SQLite state: "
        f"{b['sqlite_bytes'] / 2**20:,.1f} MiB.",
        "",
        f"{pr['runs']} process(es) × {pr['samples']:,} random indexes and as many random old "
        "sizes (figures pooled over all "
        f"{pr['samples_total']:,} samples of each kind); every Ledger.proof / "
        "Ledger.consistency call goes through the ledger's tile reader, which is kept while the "
        "tree size stays the same: an LRU of 64 tiles, so upper tiles stay cached and most "
        "level-0 tiles are read from disk. "
        f"Mean inclusion proof length {pr['mean_inclusion_hashes']:.1f} hashes.",
        "",
        "| operation | median ms | p99 ms | p99 range over runs | max ms "
        "| baseline: verify median ms | verify p99 ms | ratio (median) "
        "| target < 1 ms: median / p99 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, key in (
        ("inclusion `L.proof(i)`", "inclusion"),
        ("consistency `L.consistency(old)`", "consistency"),
    ):
        g, v = pr[key], pr[f"{key}_verify"]
        lines.append(
            f"| {name} | {ms(g['median_ms'])} | {ms(g['p99_ms'])} "
            f"| {ms(g['p99_runs'][0])} – {ms(g['p99_runs'][1])} | {ms(g['max_ms'])} "
            f"| {ms(v['median_ms'])} | {ms(v['p99_ms'])} "
            f"| {ratio(g['median_ms'], v['median_ms'])} "
            f"| {yes_no(g['median_ms'] < TARGET_PROOF_MS)} / "
            f"{yes_no(g['p99_ms'] < TARGET_PROOF_MS)} |"
        )
    lines += [
        "",
        "Consistency proofs are between a random old size and the current size; the timed call "
        "also computes both roots from the tiles (Ledger.consistency returns them).",
        "",
    ]
    return lines


def report_verify(r: Run) -> list[str]:
    v, f = r.verify_full, r.verify_floor
    lines = [
        f"## 3. Full verification of the {v['size']:,}-entry log",
        "",
        f"Baselines read the same folder: `sha256sum` over all {f['files']:,} files under "
        f"`tile/` ({f['bytes'] / 2**20:,.0f} MiB, in chunks of {SHA256SUM_CHUNK} files per "
        "process), and a Python loop that reads every bundle and computes `leaf_hash` of every "
        "entry (no signature, tile or root checks).",
        "",
        "| method | seconds | entries/s | verify_log ratio |",
        "|---|---:|---:|---:|",
        f"| `verify_log` (signatures, leaf hashes, tiles, root) | {v['seconds']:.2f} "
        f"| {rate(v['rate'])} | 1.00× |",
        f"| baseline: `sha256sum` of every tile file | {f['sha256sum_seconds']:.2f} "
        f"| {rate(f['sha256sum_rate'])} | {ratio(v['rate'], f['sha256sum_rate'])} |",
        f"| baseline: Python loop, `leaf_hash` only | {f['leaf_hash_seconds']:.2f} "
        f"| {rate(f['leaf_hash_rate'])} | {ratio(v['rate'], f['leaf_hash_rate'])} |",
        "",
        f"verify_log checked {v['signatures_checked']:,} entry signatures. Against the "
        f"checkpoint at {r.verify_mark['size']:,} entries it ran at "
        f"{rate(r.verify_mark['rate'])} entries/s.",
        "",
    ]
    return lines


def report_memory(r: Run) -> list[str]:
    lines = [
        "## 4. Peak memory (ru_maxrss of each stage's own subprocess; highest of the repeats)",
        "",
        "| stage | peak RSS MB |",
        "|---|---:|",
    ]
    for b in BATCHES:
        lines.append(f"| I/O floor, batch {b} | {mb(r.floor[b]['max_rss_mb'])} |")
        for mode in MODES:
            lines.append(f"| append {mode}, batch {b} | {mb(r.appends[b, mode]['max_rss_mb'])} |")
    vm, vf = r.verify_mark, r.verify_full
    lines += [
        f"| build {r.build['size']:,} entries | {mb(r.build['max_rss_mb'])} |",
        f"| proofs ({r.proofs['samples']:,} + {r.proofs['samples']:,} per process) "
        f"| {mb(r.proofs['max_rss_mb'])} |",
        f"| verify_log, {vm['size']:,} entries | {mb(vm['max_rss_mb'])} |",
        f"| verify_log, {vf['size']:,} entries | {mb(vf['max_rss_mb'])} |",
        f"| verify baselines (sha256sum driver + leaf-hash loop) "
        f"| {mb(r.verify_floor['max_rss_mb'])} |",
        "",
        f"verify_log peak memory at {vf['size']:,} entries is "
        f"{vf['max_rss_mb'] / vm['max_rss_mb']:.2f}× that at {vm['size']:,} entries "
        f"({vf['size'] // vm['size']}× the entries).",
        "",
    ]
    return lines


# -- main --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="smoke run with a 20,000-entry log")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="Markdown results file")
    ap.add_argument("--stage", choices=sorted(STAGES), help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--params", default="{}", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.stage:
        run_child(args.stage, args.work, json.loads(args.params))
        return 0

    plan = QUICK if args.quick else FULL
    command = f"cd {shlex.quote(os.getcwd())} && {shlex.join([sys.executable, *sys.argv])}"
    work = WORK_ROOT / f"run-{os.getpid()}"
    work.mkdir(parents=True)
    try:
        run = execute(plan, work, command)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        with contextlib.suppress(OSError):
            WORK_ROOT.rmdir()  # only if nothing else is left there
    text = report(run)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    print(f"wrote {args.out} in {run.seconds / 60:.1f} min", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
