"""Review-site streaming benchmark: many clients playing access copies from `custody web`
over loopback, against the same files served by a static file server in the same run.

Workload (issue 16): a real station made as `tests.webfix.make_web_station` makes one (its
users, cases and three short recordings), plus ``--objects`` recordings of 30 to 60 s at
640x360 (H.264 + AAC from ffmpeg's lavfi sources, about 1 Mbit/s, so each access copy is a
few MB), captured by `custody ingest` and given access copies by `custody derive`. Then:

- ours: `custody web` (the real server process, `tests.webfix.start_web`). Each client
  logs in through the API once (``POST /api/login`` as the supervisor ``wang``, not timed)
  and GETs ``/api/objects/<sha>/access`` in 1 MiB ``Range`` requests, as a player does,
  until it has read the whole copy, then the next recording (client i starts at
  recording i), until ``--seconds`` have passed (or ``--rounds`` passes over every copy).
- baseline: the SAME files (the station's object files, by path) served by Starlette
  `StaticFiles` on uvicorn with the same uvicorn settings, by construction: the app is
  handed to `web.serve._run`, the function that runs `custody web`. The same stack minus
  our session check, item lookups, `access` entries and security headers.
- nginx, when installed (``apt-get install nginx-light``): the same files, two workers,
  ``sendfile on``; an extra row, not the target's baseline.

The load generator is one Python process (asyncio on uvloop, aiohttp: ``.venv/bin/pip
install aiohttp``), one keep-alive connection and one session per client. Time to first
byte is from sending a request to its status line and headers having arrived. Client,
servers and this parent share the machine's two cores (all pinned to CPUs 0-1); the
client's own CPU seconds are reported beside each run. Every (clients, server) run is
repeated ``--reps`` times, interleaved (the server order reversed every other rep), and
the median run by MB/s is shown. Before any run every copy is read whole through every
server and compared byte for byte (SHA-256) with its file.

Memory: VmRSS of the server (nginx: master + workers) sampled every 0.1 s from /proc
during each run (the peak is shown) and VmHWM at the end. Access entries: the ledger's
``access``/``play`` entries counted before and after each run of ours, against the
(session, recording) pairs the clients played (got a 206 for); at the end every
``access`` entry is checked signed and under a checkpoint (`tests.webfix.entries`).

When ours is below 0.8x the baseline's MB/s, or its time-to-first-byte p99 is more than
twice the baseline's (or with ``--profile``), two more 50-client runs are made with
py-spy (``.venv/bin/pip install py-spy``) sampling `custody web`, one for the GIL (CPU)
and one for every thread's wall time, and the costs of each part of a request are listed.

Run from the repository root::

    .venv/bin/python benchmarks/web_bench.py [--clients 50] [--seconds 20] [--reps 3]

Work files go under ``benchmarks/work/web-<pid>/`` and are deleted when the run ends
(``--keep`` keeps them); every server started is stopped. Writes
``benchmarks/RESULTS-web.md`` (``--out``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from _common import cpu_model, load_average, percentile, shell  # noqa: E402

WORK_ROOT = Path(__file__).resolve().parent / "work"
DEFAULT_OUT = Path(__file__).resolve().parent / "RESULTS-web.md"
RANGE = 1 << 20  # one player request
TARGET = 0.8  # ours / static MB/s
CPUS = {0, 1}
USER = "wang"  # the supervisor of every unit: may play every recording


def log(what: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {what}", file=sys.stderr, flush=True)


def pin() -> str:
    """Pin this process (and so every child) to CPUs 0-1: client and servers share them."""
    try:
        have = os.sched_getaffinity(0)
        os.sched_setaffinity(0, CPUS & have or have)
        return ",".join(str(c) for c in sorted(os.sched_getaffinity(0)))
    except OSError as e:
        return f"(not pinned: {e})"


# -- /proc ---------------------------------------------------------------------------------


def proc_status_kb(pid: int, key: str) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return 0.0


def children(pid: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            out += [int(k) for k in (task / "children").read_text().split()]
    return out


class RssSampler:
    """Peak of the summed VmRSS of some processes, sampled every 0.1 s in a thread."""

    def __init__(self, pids: Callable[[], list[int]]) -> None:
        self.pids = pids
        self.peak_kb = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            self.peak_kb = max(self.peak_kb, sum(proc_status_kb(p, "VmRSS") for p in self.pids()))
            if self._stop.wait(0.1):
                return

    def __enter__(self) -> RssSampler:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()


# -- the load generator (a stage in its own process) ---------------------------------------


async def _load(p: dict[str, Any]) -> dict[str, Any]:
    import aiohttp

    objects = p["objects"]  # [{"path", "size"}]
    cookies: list[str | None] = p["cookies"]  # one session per client (None: no login)
    rng = int(p["range"])
    seconds, rounds = float(p["seconds"]), int(p["rounds"])
    ttfb: list[float] = []
    whole: list[float] = []
    errors: Counter[str] = Counter()
    pairs: set[tuple[int, int]] = set()
    done = [0, 0]  # bytes, requests
    per_client = [0] * len(cookies)
    t0 = time.perf_counter()
    deadline = t0 + seconds
    timeout = aiohttp.ClientTimeout(total=120)

    async def client(ci: int) -> None:
        headers = {"Cookie": cookies[ci]} if cookies[ci] else {}
        conn = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(
            p["base"],
            connector=conn,
            timeout=timeout,
            auto_decompress=False,
            read_bufsize=1 << 18,
        ) as s:
            passes = 0
            k = ci % len(objects)
            while True:
                obj = objects[k]
                pos = 0
                while pos < obj["size"]:
                    if not rounds and time.perf_counter() >= deadline:
                        return
                    end = min(pos + rng, obj["size"]) - 1
                    h = {**headers, "Range": f"bytes={pos}-{end}"}
                    start = time.perf_counter()
                    try:
                        async with s.get(obj["path"], headers=h) as r:
                            first = time.perf_counter()
                            n = 0
                            async for chunk in r.content.iter_any():
                                n += len(chunk)
                            status = r.status
                    except (aiohttp.ClientError, TimeoutError) as e:
                        errors[f"{type(e).__name__}: {e}"[:120]] += 1
                        await asyncio.sleep(0.05)
                        continue
                    if status != 206 or n != end - pos + 1:
                        errors[f"status {status}, {n} bytes for {end - pos + 1}"] += 1
                        if status >= 400:
                            return
                    else:
                        ttfb.append(first - start)
                        whole.append(time.perf_counter() - start)
                        done[0] += n
                        done[1] += 1
                        pairs.add((ci, k))  # played: its entry was committed before the bytes
                        per_client[ci] += n
                    pos = end + 1
                k = (k + 1) % len(objects)
                if k == ci % len(objects):
                    passes += 1
                    if rounds and passes >= rounds:
                        return

    cpu0 = os.times()
    await asyncio.gather(*(client(i) for i in range(len(cookies))))
    elapsed = time.perf_counter() - t0
    cpu1 = os.times()
    ttfb.sort()
    whole.sort()

    def pct(v: list[float], q: float) -> float:
        return percentile(v, q) if v else 0.0

    return {
        "elapsed": elapsed,
        "bytes": done[0],
        "requests": done[1],
        "ttfb_p50": pct(ttfb, 50),
        "ttfb_p99": pct(ttfb, 99),
        "ttfb_max": ttfb[-1] if ttfb else 0.0,
        "req_p50": pct(whole, 50),
        "req_p99": pct(whole, 99),
        "errors": dict(errors.most_common(5)),
        "error_count": sum(errors.values()),
        "pairs": len(pairs),
        "client_min_mb": min(per_client) / 1e6,
        "client_max_mb": max(per_client) / 1e6,
        "client_cpu_s": (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system),
    }


def stage_load(p: dict[str, Any]) -> dict[str, Any]:
    try:
        import uvloop

        return uvloop.run(_load(p))
    except ImportError:
        return asyncio.run(_load(p))


def stage_static(p: dict[str, Any]) -> dict[str, Any]:
    """The baseline server: Starlette StaticFiles, run by the function that runs `custody
    web` (same uvicorn settings: loop, HTTP parser, keep-alive, no access log)."""
    from starlette.applications import Starlette
    from starlette.routing import Mount
    from starlette.staticfiles import StaticFiles

    from custody.config import WebSettings
    from web.serve import _run

    app = Starlette(routes=[Mount("/files", StaticFiles(directory=p["root"]))])
    _run(app, WebSettings(), ("127.0.0.1", int(p["port"])), "the static baseline")
    return {}


STAGES = {"load": stage_load, "static": stage_static}


def run_load(params: dict[str, Any]) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--stage", "load"]
    p = subprocess.run(cmd, input=json.dumps(params), capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"the load generator failed ({p.returncode}):\n{p.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(p.stdout.strip().splitlines()[-1])
    return result


# -- the station ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Copy:
    original: str  # the recording's SHA-256 (the API's name for it)
    path: Path  # the access copy's object file
    size: int
    sha256: str  # of the access copy


def make_clip(ff: str, out: Path, seconds: int, tone: int) -> None:
    """640x360 H.264 at about 1 Mbit/s + AAC: a few MB per half minute, like a 360p
    access copy of body-worn footage (light noise keeps the encoder from coasting)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    lavfi = [
        ("testsrc2", f"size=640x360:rate=25:duration={seconds}"),
        ("sine", f"frequency={tone}:duration={seconds}"),
    ]
    cmd = [ff, "-v", "error", "-y"]
    for src, opts in lavfi:
        cmd += ["-f", "lavfi", "-i", f"{src}={opts}"]
    cmd += ["-vf", "noise=alls=6:allf=t", "-c:v", "libx264", "-preset", "ultrafast"]
    cmd += ["-b:v", "900k", "-maxrate", "1200k", "-bufsize", "2M", "-c:a", "aac", "-shortest"]
    subprocess.run([*cmd, str(out)], check=True, timeout=600)


def make_station(work: Path, n: int, shortest: int, longest: int) -> tuple[Path, list[Copy]]:
    from custody.config import load
    from ingest.objects import LocalObjects
    from tests.conftest import run_cli
    from tests.webfix import ffmpeg_exe, make_web_station

    log("station: tests.webfix.make_web_station (users, cases, three short recordings) ...")
    conf, first = make_web_station(work)
    ff = ffmpeg_exe()
    slot = work / "dock" / "slot02"
    log(f"station: {n} recordings of {shortest}-{longest} s at 640x360 ...")
    for i in range(n):
        secs = shortest + (longest - shortest) * i // max(1, n - 1)
        # serial, officer, start as the station's file-name pattern reads them
        make_clip(ff, slot / f"BWC{i:04d}_020304_2024112709{i:02d}00.mp4", secs, 300 + 20 * i)
    run_cli("ingest", str(work / "dock"), "--settle-ms", "0", config=conf)
    rows = json.loads(run_cli("find", "--json", config=conf).stdout)
    shas = [r["sha256"] for r in rows if r["sha256"] not in first]
    assert len(shas) == n, f"{len(shas)} new recordings captured, {n} made"
    run_cli("derive", *shas, config=conf)
    c = load(conf)
    objects = LocalObjects(c.store_dir)
    copies = []
    for sha in shas:
        derived = derived_copy(c, sha)
        path = objects.path(derived)
        copies.append(Copy(sha, path, path.stat().st_size, derived))
    return conf, copies


def derived_copy(c: Any, original: str) -> str:
    """The access copy of an original, from the log (the newest `derive` entry)."""
    from custody.station import open_ledger
    from ledger.entry import decode_entry

    found = ""
    with open_ledger(c, writable=False) as ledger:
        for i in range(ledger.next_index()):
            f = dict(decode_entry(ledger.entry(i)).fields)
            if (
                f.get("type") == "derive"
                and f.get("kind") == "access_copy"
                and f.get("sha256") == original
                and isinstance(f.get("output"), dict)
            ):
                found = str(f["output"]["sha256"])
    assert found, f"no access copy of {original}"
    return found


def play_entries(conf: Path) -> int:
    """How many access/play entries the station's log holds (committed)."""
    from custody.config import load
    from custody.station import open_ledger
    from ledger.entry import decode_entry

    n = 0
    with open_ledger(load(conf), writable=False) as ledger:
        for i in range(ledger.next_index()):
            f = decode_entry(ledger.entry(i)).fields
            n += f.get("type") == "access" and f.get("action") == "play"
    return n


# -- the servers ---------------------------------------------------------------------------


@dataclass
class Server:
    key: str  # ours | static | nginx
    label: str
    base: str
    proc: subprocess.Popen[bytes]
    paths: dict[str, str]  # access copy SHA-256 -> URL path
    login: Callable[[], str | None]  # a new session's Cookie header (None: no login)
    extra_pids: bool = False  # count the children's memory too (nginx workers)
    hwm_mb: float = 0.0

    def pids(self) -> list[int]:
        return [self.proc.pid, *(children(self.proc.pid) if self.extra_pids else [])]

    def stop(self) -> None:
        self.hwm_mb = sum(proc_status_kb(p, "VmHWM") for p in self.pids()) / 1024
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def wait_up(url: str, proc: subprocess.Popen[bytes], what: str, errlog: Path) -> None:
    import urllib3

    http = urllib3.PoolManager(retries=False, timeout=5)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited {proc.returncode}: {errlog.read_text()[-2000:]}")
        with contextlib.suppress(urllib3.exceptions.HTTPError):
            if http.request("GET", url).status < 500:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not answer within 30 s: {errlog.read_text()[-2000:]}")


def start_ours(conf: Path, work: Path, copies: list[Copy]) -> tuple[Server, Any]:
    from tests.webfix import start_web

    srv = start_web(conf, work / "web.log")
    return (
        Server(
            "ours",
            "custody web (`/api/objects/<sha>/access`)",
            srv.base,
            srv.proc,
            {c.sha256: f"/api/objects/{c.original}/access" for c in copies},
            lambda: srv.login(USER)[0],
        ),
        srv,
    )


def start_static(root: Path, work: Path, copies: list[Copy]) -> Server:
    from tests.webfix import free_port

    port = free_port()
    errlog = work / "static.log"
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--stage", "static"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=open(errlog, "wb"),  # noqa: SIM115 - the child keeps it
    )
    assert proc.stdin is not None
    proc.stdin.write(json.dumps({"root": str(root), "port": port}).encode())
    proc.stdin.close()
    base = f"http://127.0.0.1:{port}"
    wait_up(base + "/files/", proc, "the static baseline", errlog)
    return Server(
        "static",
        "Starlette StaticFiles on uvicorn (baseline)",
        base,
        proc,
        {c.sha256: "/files/" + str(c.path.relative_to(root)) for c in copies},
        lambda: None,
    )


def start_nginx(root: Path, work: Path, copies: list[Copy]) -> Server | str:
    from tests.webfix import free_port

    exe = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else "")
    if not exe:
        return "nginx is not installed (apt-get install nginx-light)"
    port = free_port()
    prefix = work / "nginx"
    prefix.mkdir()
    conf = prefix / "nginx.conf"
    # The workers run as root: the station's object files are not readable by nobody.
    conf.write_text(
        f"""daemon off;
master_process on;
worker_processes 2;
user root;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 30s;
    keepalive_requests 1000000;
    default_type application/octet-stream;
    client_body_temp_path {prefix}/body;
    server {{
        listen 127.0.0.1:{port};
        location /files/ {{ alias {root}/; }}
    }}
}}
"""
    )
    errlog = prefix / "stderr.log"
    proc = subprocess.Popen(
        [exe, "-p", str(prefix), "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=open(errlog, "wb"),  # noqa: SIM115 - the child keeps it
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_up(base + "/files/", proc, "nginx", errlog)
    except RuntimeError as e:
        with contextlib.suppress(OSError):
            proc.kill()
            proc.wait()
        return str(e).splitlines()[0]
    v = subprocess.run([exe, "-v"], capture_output=True, text=True)  # prints to stderr
    version = (v.stderr or v.stdout).strip().rpartition("/")[2]
    return Server(
        "nginx",
        f"nginx {version} (2 workers, sendfile; extra row)",
        base,
        proc,
        {c.sha256: "/files/" + str(c.path.relative_to(root)) for c in copies},
        lambda: None,
        extra_pids=True,
    )


def check_bytes(server: Server, copies: list[Copy]) -> None:
    """Every copy read whole through the server in player-sized ranges equals its file."""
    import urllib3

    http = urllib3.PoolManager(retries=False, timeout=60)
    cookie = server.login()
    for c in copies:
        h = hashlib.sha256()
        for pos in range(0, c.size, RANGE):
            end = min(pos + RANGE, c.size) - 1
            headers = {"Range": f"bytes={pos}-{end}", **({"Cookie": cookie} if cookie else {})}
            r = http.request("GET", server.base + server.paths[c.sha256], headers=headers)
            if r.status != 206:
                raise RuntimeError(f"{server.key}: {r.status} for bytes {pos}-{end} of {c.sha256}")
            h.update(r.data)
        if h.hexdigest() != c.sha256:
            raise RuntimeError(f"{server.key}: the bytes of {c.sha256} differ from the file")


# -- runs ----------------------------------------------------------------------------------


@dataclass
class RunResult:
    server: str
    clients: int
    rep: int
    load: dict[str, Any]
    server_cpu_s: float
    peak_rss_mb: float
    plays: int | None = None  # play entries written (ours)
    load1: float = 0.0  # the 1-minute load average just before the run

    @property
    def mbps(self) -> float:
        return float(self.load["bytes"]) / 1e6 / float(self.load["elapsed"])

    @property
    def rps(self) -> float:
        return float(self.load["requests"]) / float(self.load["elapsed"])


def one_run(
    server: Server,
    copies: list[Copy],
    clients: int,
    args: argparse.Namespace,
    rep: int,
    conf: Path,
) -> RunResult:
    cookies = [server.login() for _ in range(clients)]  # one session per client, not timed
    plays0 = play_entries(conf) if server.key == "ours" else 0
    params = {
        "base": server.base,
        "objects": [{"path": server.paths[c.sha256], "size": c.size} for c in copies],
        "cookies": cookies,
        "range": RANGE,
        "seconds": args.seconds if clients > 1 else args.single_seconds,
        "rounds": args.rounds,
    }
    load1 = os.getloadavg()[0]
    cpu0 = sum(cpu_seconds(p) for p in server.pids())
    with RssSampler(server.pids) as rss:
        load = run_load(params)
    cpu1 = sum(cpu_seconds(p) for p in server.pids())
    r = RunResult(server.key, clients, rep, load, cpu1 - cpu0, rss.peak_kb / 1024, load1=load1)
    if server.key == "ours":
        r.plays = play_entries(conf) - plays0
    log(
        f"  {server.key:6} {clients:3} clients rep {rep}: {r.mbps:8.1f} MB/s, "
        f"{r.rps:7.1f} req/s, TTFB p50/p99 {load['ttfb_p50'] * 1e3:.1f}/"
        f"{load['ttfb_p99'] * 1e3:.1f} ms, RSS {r.peak_rss_mb:.0f} MB, "
        f"errors {load['error_count']}" + (f", plays {r.plays}" if r.plays is not None else "")
    )
    return r


def profile_ours(
    server: Server, copies: list[Copy], args: argparse.Namespace, work: Path
) -> dict[str, Any]:
    """Two more runs of ours with py-spy sampling the server (their throughput is not the
    benchmark's: py-spy stops the process to sample it). ``gil``: only the thread holding
    the GIL, i.e. where the server's Python CPU goes (on two cores the GIL is what a
    Python server runs out of). ``wall``: every thread, idle or not, to see what the
    event-loop thread does synchronously (it delays every stream's next byte) and what
    the thread-pool workers wait on (what a request waits for before its first byte)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        return {"error": "py-spy is not installed (.venv/bin/pip install py-spy)"}
    out: dict[str, Any] = {}
    for mode, flags in (("gil", ["--gil"]), ("wall", ["--idle", "--threads"])):
        raw = work / f"profile-{mode}.txt"
        params = {
            "base": server.base,
            "objects": [{"path": server.paths[c.sha256], "size": c.size} for c in copies],
            "cookies": [server.login() for _ in range(args.clients)],
            "range": RANGE,
            "seconds": args.seconds,
            "rounds": 0,
        }
        cmd = [spy, "record", "-p", str(server.proc.pid), "-d", str(int(args.seconds) + 2)]
        # --nonblocking: py-spy reads the process without stopping it (stopping 40 threads
        # 100 times a second would be the slowest part of the server).
        cmd += ["-r", "100", "-f", "raw", "--nolineno", "--nonblocking", *flags, "-o", str(raw)]
        spy_proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(1.0)
        load = run_load(params)
        _, err = spy_proc.communicate(timeout=120)
        if not raw.exists():
            return {"error": f"py-spy wrote nothing: {err.decode(errors='replace')[-300:]}"}
        stacks: list[tuple[list[str], int]] = []
        for line in raw.read_text().splitlines():
            stack, _, n = line.rpartition(" ")
            if stack and n.isdigit():
                frames = stack.split(";")
                # --threads puts "thread (tid): name" first: kept as it is.
                head = [frames.pop(0)] if frames[0].startswith("thread (") else []
                stacks.append((head + [short(f) for f in frames], int(n)))
        out[mode] = {
            "stacks": stacks,
            "mbps": load["bytes"] / 1e6 / load["elapsed"],
            "requests": load["requests"],
            "ttfb_p50": load["ttfb_p50"],
        }
    gil = out["gil"]["stacks"]
    total = sum(n for _, n in gil)
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    for frames, n in gil:
        own[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    wall = out["wall"]["stacks"]
    loop = [(f[1:], n) for f, n in wall if f and "MainThread" in f[0]]
    workers = [(f[1:], n) for f, n in wall if f and "AnyIO worker" in f[0]]
    loop_total = sum(n for _, n in loop)
    worker_total = sum(n for _, n in workers)

    def share(stacks: list[tuple[list[str], int]], frame: str, own_only: bool) -> int:
        return sum(
            c
            for frames, c in stacks
            if frames and (frame in frames[-1] if own_only else any(frame in f for f in frames))
        )

    focus = [
        (
            label,
            share(gil, frame, own_only),
            share(loop, frame, own_only),
            share(workers, frame, own_only),
        )
        for label, frame, own_only in FOCUS
    ]
    return {
        "samples": total,
        "loop_samples": loop_total,
        "worker_samples": worker_total,
        "workers": len({f[0] for f, _ in wall if f and "AnyIO worker" in f[0]}),
        "loop_idle": share(loop, "Runner.run (", True),
        "runs": {k: {x: v[x] for x in ("mbps", "requests", "ttfb_p50")} for k, v in out.items()},
        "focus": focus,
        "own": own.most_common(15),
        "incl": [(f, n) for f, n in incl.most_common(400) if interesting(f)][:20],
    }


# What one request of ours does beyond the baseline's, and the part both share: (label,
# frame, own time only).
FOCUS = (
    (
        "session check: `need` -> `UserStore.session` (SQLite; called on the event loop)",
        "UserStore.session (",
        False,
    ),
    (
        "  of which the `seen` update (`UserStore._tx`, a FULL-sync commit)",
        "UserStore._tx (",
        False,
    ),
    (
        "recording lookup: `item_for` -> `StationSource.item` (index refresh + find)",
        "item_for (",
        False,
    ),
    (
        "copy lookup: `StationSource.blob` (`item` again, derivative_of, stat)",
        "StationSource.blob (",
        False,
    ),
    (
        "index refresh: `StationSource.refresh` (forced after every new entry)",
        "StationSource.refresh (",
        False,
    ),
    (
        "`access` entry: `AccessLog.record` (dedupe; a signed commit when new)",
        "AccessLog.record (",
        False,
    ),
    ("  of which the ledger append (`Ledger.append_entries`)", "append_entries (", False),
    ("security headers middleware, own time", "SecurityHeaders.__call__", True),
    ("ledger integrator thread", "start_integrator", False),
    (
        "the file's bytes: `FileResponse` range streaming (the baseline does this too)",
        "FileResponse._handle_single_range (",
        False,
    ),
    ("  of which uvicorn writing to the socket", "RequestResponseCycle.send (", True),
    (
        "  of which 64 KiB file reads (`AsyncFile.read`, a thread hop each)",
        "AsyncFile.read (",
        False,
    ),
)


def short(frame: str) -> str:
    """``func (/long/path/pkg/file.py)`` as ``func (pkg/file.py)``."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    p = Path(where)
    return f"{name} ({p.parent.name}/{p.name})" if where else name


ENTRY_CHAIN = (
    "<module>",
    "main (custody/cli.py)",
    "cmd_web (",
    "serve_station (",
    "_run (web/serve.py)",
    "run (uvicorn/main.py)",
    "asyncio_run (",
    "Server.run (",
    "Server.serve (",
    "Server._serve (",
    "Runner.run (",
)


def interesting(frame: str) -> bool:
    """Frames a reader of web/app.py can act on: ours, Starlette's, uvicorn's, SQLite's
    (not the chain every sample passes through to reach the event loop)."""
    if any(frame.startswith(e) or e in frame for e in ENTRY_CHAIN):
        return False
    return any(
        k in frame
        for k in (
            "web/",
            "custody/",
            "ledger/",
            "retention/",
            "starlette/",
            "uvicorn/",
            "anyio/",
            "sqlite",
        )
    )


# -- the report ----------------------------------------------------------------------------


def median_run(runs: list[RunResult]) -> RunResult:
    ordered = sorted(runs, key=lambda r: r.mbps)
    return ordered[(len(ordered) - 1) // 2]


def ms(x: float) -> str:
    return f"{x * 1e3:.1f}"


def table(
    results: list[RunResult], servers: list[Server], clients: int, base_mbps: float
) -> list[str]:
    lines = [
        "| server | MB/s | ratio to baseline | requests/s | TTFB p50 ms | TTFB p99 ms | "
        "request p99 ms | server CPU s | client CPU s | peak RSS MB | MB/s of each rep | "
        "errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for s in servers:
        runs = [r for r in results if r.server == s.key and r.clients == clients]
        if not runs:
            continue
        m = median_run(runs)
        ld = m.load
        ratio = f"{m.mbps / base_mbps:.2f}×" if base_mbps else "–"
        lines.append(
            f"| {s.label} | {m.mbps:,.0f} | {ratio} | {m.rps:,.0f} | {ms(ld['ttfb_p50'])} | "
            f"{ms(ld['ttfb_p99'])} | {ms(ld['req_p99'])} | {m.server_cpu_s:.1f} | "
            f"{ld['client_cpu_s']:.1f} | {max(r.peak_rss_mb for r in runs):.0f} | "
            f"{' / '.join(f'{r.mbps:,.0f}' for r in sorted(runs, key=lambda r: r.rep))} | "
            f"{sum(r.load['error_count'] for r in runs)} |"
        )
    return lines


def med_mbps(results: list[RunResult], key: str, clients: int) -> float:
    runs = [r for r in results if r.server == key and r.clients == clients]
    return median_run(runs).mbps if runs else 0.0


def ttfb_p99(results: list[RunResult], key: str, clients: int) -> float:
    runs = [r for r in results if r.server == key and r.clients == clients]
    return float(median_run(runs).load["ttfb_p99"]) if runs else 0.0


@dataclass
class Run:
    args: argparse.Namespace
    machine: dict[str, str]
    copies: list[Copy] = field(default_factory=list)
    servers: list[Server] = field(default_factory=list)
    results: list[RunResult] = field(default_factory=list)
    nginx_note: str = ""
    access_checked: str = ""
    profile: dict[str, Any] | None = None
    pinned: str = ""


def report(r: Run, command: str) -> str:
    a, m = r.args, r.machine
    sizes = [c.size for c in r.copies]
    title = "# Review site streaming benchmark results"
    if a.clients != 50:
        title += f" ({a.clients} clients, not the 50 of the target run)"
    lines = [
        title,
        "",
        f"- Date: {m['date']}; total runtime {m['minutes']} min",
        f"- Command: `{command}`",
        f"- Machine: {m['nproc']} cores (`nproc`), {m['cpu']}, Linux {m['kernel']}, {m['mem']} RAM",
        f"- Python {m['python']}, uvicorn {m['uvicorn']} (uvloop, httptools), Starlette "
        f"{m['starlette']}, aiohttp {m['aiohttp']} (the load generator)",
        f"- Load average (1/5/15 min) at start: {m['load_start']}; at end: {m['load_end']}",
        f"- CPUs: the load generator, every server and this parent pinned to CPUs "
        f"{r.pinned} (the same two cores, over loopback)",
        "",
        f"{len(r.copies)} access copies of 640x360 H.264 recordings, {min(sizes) / 1e6:.1f} to "
        f"{max(sizes) / 1e6:.1f} MB ({sum(sizes) / 1e6:.0f} MB in all, in the page cache), "
        f"read in {RANGE >> 20} MiB Range requests as a player does; "
        + (
            f"{a.rounds} passes over every copy per client"
            if a.rounds
            else f"{a.seconds:g} s per {a.clients}-client run, {a.single_seconds:g} s per "
            "single-client run"
        )
        + f"; {a.reps} interleaved reps, the median rep by MB/s shown. Ratio = MB/s over "
        "the Starlette StaticFiles baseline's in the same table.",
        "",
    ]
    for clients, heading in (
        (a.clients, f"{a.clients} concurrent clients"),
        (1, "One client (the latency floor)"),
    ):
        base = med_mbps(r.results, "static", clients)
        lines += [f"## {heading}", "", *table(r.results, r.servers, clients, base), ""]
        if clients == a.clients:
            ours = med_mbps(r.results, "ours", clients)
            ratio = ours / base if base else 0.0
            lines += [
                f"Target: ours ≥ {TARGET}× the static baseline: {ratio:.2f}×, "
                f"**{'met' if ratio >= TARGET else 'missed'}**.",
                "",
            ]
    if r.nginx_note:
        lines += [f"nginx: {r.nginx_note}", ""]
    lines += [
        "TTFB: from sending a request to its status line and headers having arrived "
        "(aiohttp returns from `get()`). Request p99: the whole 1 MiB answer. Server CPU: "
        "user + system seconds of the server process(es) during the run; client CPU: the "
        "load generator's. Peak RSS: VmRSS sampled every 0.1 s during the runs, the "
        "maximum over reps (nginx: master + workers). VmHWM at the end: "
        + ", ".join(f"{s.key} {s.hwm_mb:.0f} MB" for s in r.servers)
        + ".",
        "",
    ]
    ours = [x for x in r.results if x.server == "ours"]
    lines += [
        "## Access entries written by ours",
        "",
        "| run | clients (one session each) | requests | (session, recording) pairs "
        "played | `play` entries written |",
        "|---|---:|---:|---:|---:|",
    ]
    for x in ours:
        lines.append(
            f"| {x.clients} client{'s' if x.clients > 1 else ''}, rep {x.rep} | {x.clients} | "
            f"{x.load['requests']:,} | {x.load['pairs']} | {x.plays} |"
        )
    good = all(x.plays == x.load["pairs"] for x in ours)
    lines += [
        "",
        "One `play` entry per session and recording (the 1 MiB requests of one playback "
        f"are one entry): **{'yes' if good else 'NO'}** in every run. {r.access_checked}",
        "",
        "Every run in the order run, with the 1-minute load average just before it (other "
        "work on the machine lowers every server's figures alike within a rep, not across "
        "reps):",
        "",
        "| # | server | clients | rep | load before | MB/s | requests/s | TTFB p50 / p99 ms |",
        "|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for i, x in enumerate(r.results, 1):
        lines.append(
            f"| {i} | {x.server} | {x.clients} | {x.rep} | {x.load1:.2f} | {x.mbps:,.0f} | "
            f"{x.rps:,.0f} | {ms(x.load['ttfb_p50'])} / {ms(x.load['ttfb_p99'])} |"
        )
    lines.append("")
    errs = [(x, x.load["errors"]) for x in r.results if x.load["errors"]]
    if errs:
        lines += ["Errors seen by the clients:", ""]
        lines += [f"- {x.server} {x.clients} clients rep {x.rep}: {e}" for x, e in errs]
        lines.append("")
    if r.profile:
        lines += profile_section(r.profile, a)
    return "\n".join(lines) + "\n"


def profile_section(p: dict[str, Any], a: argparse.Namespace) -> list[str]:
    lines = ["## Where ours spends its time (py-spy)", ""]
    if "error" in p:
        return [*lines, f"Not profiled: {p['error']}", ""]
    total = max(1, int(p["samples"]))
    loop = max(1, int(p["loop_samples"]))
    workers = max(1, int(p["worker_samples"]))
    g, w = p["runs"]["gil"], p["runs"]["wall"]
    lines += [
        f"Two more {a.clients}-client runs of {a.seconds:g} s with py-spy (100 Hz) sampling "
        f"`custody web`: `--gil` (only the thread holding the GIL: where the Python CPU "
        f"goes; {total:,} samples; {g['mbps']:,.0f} MB/s, TTFB p50 {ms(g['ttfb_p50'])} ms "
        f"under the profiler) and `--idle --threads` (every thread's wall time: the "
        f"event-loop thread, {loop:,} samples, and {p['workers']} AnyIO worker threads, "
        f"{workers:,} samples; {w['mbps']:,.0f} MB/s, TTFB p50 {ms(w['ttfb_p50'])} ms). "
        f"The event loop was idle or in uvloop's C code (`Runner.run` on top) "
        f"{p['loop_idle'] / loop:.0%} of its wall time; anything else on it is synchronous "
        "work that holds back every stream.",
        "",
        "| part of a request | GIL samples (CPU) | event-loop thread wall time | worker "
        "threads' wall time |",
        "|---|---:|---:|---:|",
        *(
            f"| {label} | {n / total:.1%} | {lp / loop:.1%} | {wk / workers:.1%} |"
            for label, n, lp, wk in p["focus"]
        ),
        "",
        "Own time by function, GIL samples (`Runner.run` own time is uvloop's C event loop: "
        "socket writes and reads, callbacks):",
        "",
        "| function | share of GIL samples (own) |",
        "|---|---:|",
        *(f"| `{f}` | {n / total:.1%} |" for f, n in p["own"]),
        "",
        "Inclusive time of the frames in our code, Starlette, uvicorn, anyio and SQLite, GIL "
        "samples:",
        "",
        "| function | share of GIL samples (inclusive) |",
        "|---|---:|",
        *(f"| `{f}` | {n / total:.1%} |" for f, n in p["incl"]),
        "",
    ]
    return lines


def machine_description() -> dict[str, str]:
    import starlette
    import uvicorn

    try:
        import aiohttp

        aio = aiohttp.__version__
    except ImportError:
        aio = "?"
    mem = "?"
    with contextlib.suppress(OSError):
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024 / 1024:.0f} GiB"
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": shell(["nproc"]),
        "cpu": cpu_model(),
        "kernel": platform.release(),
        "mem": mem,
        "python": sys.version.split()[0],
        "uvicorn": uvicorn.__version__,
        "starlette": starlette.__version__,
        "aiohttp": aio,
        "load_start": load_average(),
    }


@contextlib.contextmanager
def workdir(keep: bool) -> Iterator[Path]:
    work = WORK_ROOT / f"web-{os.getpid()}"
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


def run(args: argparse.Namespace, machine: dict[str, str], work: Path) -> Run:
    from custody.config import load

    r = Run(args, machine, pinned=pin())
    conf, r.copies = make_station(work, args.objects, args.shortest, args.longest)
    root = load(conf).store_dir
    stoppers: list[Server] = []
    try:
        ours, _srv = start_ours(conf, work, r.copies)
        stoppers.append(ours)
        static = start_static(root, work, r.copies)
        stoppers.append(static)
        servers = [ours, static]
        if not args.no_nginx:
            ng = start_nginx(root, work, r.copies)
            if isinstance(ng, Server):
                stoppers.append(ng)
                servers.append(ng)
            else:
                r.nginx_note = f"not measured: {ng}"
        else:
            r.nginx_note = "not measured (--no-nginx)"
        r.servers = servers
        log("checking every copy's bytes through every server ...")
        for s in servers:
            check_bytes(s, r.copies)
        for rep in range(1, args.reps + 1):
            order = servers if rep % 2 else servers[::-1]
            for clients in (args.clients, 1):
                for s in order:
                    r.results.append(one_run(s, r.copies, clients, args, rep, conf))
        base = med_mbps(r.results, "static", args.clients)
        ratio = med_mbps(r.results, "ours", args.clients) / base if base else 0.0
        slow = ttfb_p99(r.results, "ours", args.clients) > 2 * ttfb_p99(
            r.results, "static", args.clients
        )
        if args.profile or ratio < TARGET or slow:
            log(f"profiling ours ({ratio:.2f}× the baseline's MB/s) ...")
            r.profile = profile_ours(ours, r.copies, args, work)
        from tests.webfix import entries

        checked = entries(conf, "access", wait_s=30)
        r.access_checked = (
            f"All {len(checked):,} `access` entries of the station's log (the benchmark's "
            "logins' checks included) verify with the station's key and are under a signed "
            "checkpoint (`tests.webfix.entries`)."
        )
    finally:
        for s in stoppers:
            s.stop()
    return r


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--clients", type=int, default=50, help="concurrent clients (50)")
    ap.add_argument("--seconds", type=float, default=20, help="length of a many-client run")
    ap.add_argument(
        "--single-seconds", type=float, default=10, help="length of a one-client run (10)"
    )
    ap.add_argument("--rounds", type=int, default=0, help="passes over every copy instead")
    ap.add_argument("--reps", type=int, default=3, help="interleaved reps per server (3)")
    ap.add_argument("--objects", type=int, default=10, help="recordings streamed (10)")
    ap.add_argument("--shortest", type=int, default=30, help="shortest recording, s (30)")
    ap.add_argument("--longest", type=int, default=60, help="longest recording, s (60)")
    ap.add_argument("--no-nginx", action="store_true", help="skip the nginx row")
    ap.add_argument("--profile", action="store_true", help="py-spy even when the target is met")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="Markdown results file")
    ap.add_argument("--stage", choices=sorted(STAGES), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.stage:
        params = json.loads(sys.stdin.read())
        print(json.dumps(STAGES[args.stage](params)))
        return 0
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        print(
            "web_bench: the load generator needs aiohttp: .venv/bin/pip install aiohttp",
            file=sys.stderr,
        )
        return 2
    if args.clients < 1 or args.reps < 1 or args.objects < 1:
        print("web_bench: --clients, --reps and --objects are at least 1", file=sys.stderr)
        return 2
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
