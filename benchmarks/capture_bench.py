"""Capture throughput, side by side with its floor, in one run on one filesystem.

Workloads (each source file is evicted from the page cache before every
measurement with posix_fadvise, so every run reads from the disk):

1. One large file (default 2 GiB): `capture_copy` (one read pass, SHA-256,
   durable write; with and without the verifying re-read from disk) against
   its floor, the slower of `openssl dgst -sha256` (hashing with the CPU's
   SHA instructions) and `dd bs=8M conv=fsync` (writing durably). Peak RSS
   of the capture process is reported too.
2. A burst of 1,000 small files (4-64 KiB) of one recorder: files/s, against
   the least a durable, hashed capture of each file must do (read, SHA-256,
   write, fsync the file, rename, fsync the folder), a plain Python loop over
   the same files in the same run. Capture is measured twice: through the
   daemon's pipeline in a fresh process, from the scan that finds the files to
   the last one recorded (no process start: what a docked recorder sees), and
   through `custody ingest` (process start, ledger integration and exit
   included). Floor and pipeline are measured five times each, alternately,
   and the best runs compared: other work on a shared machine slows single
   runs by up to 10x, and the least disturbed run of each says what each can
   do (every run is listed).
3. Ten recorders docked at once (10 folders x 8 files of 16 MiB) with four
   parallel recorder workers, copy verification on: MB/s through the daemon's
   pipeline (found -> all recorded; the media steps the daemon starts for these
   .MP4 names run too, at their low priority), against two floors: the
   single-file floor of step 1 (the issue's target) and the durable hashed copy
   loop over the same 80 files (like with like: a file at a time, fsync and
   folder fsync each, no verifying re-read); best of three, alternately.
   `custody ingest` is shown too; it also waits for the media steps, which
   these files of random bytes fail.

Run: .venv/bin/python benchmarks/capture_bench.py [--size-gib 2] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
from _common import load_average  # noqa: E402


def evict(path: Path) -> None:
    for p in [path] if path.is_file() else [q for q in path.rglob("*") if q.is_file()]:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def make_file(path: Path, size: int) -> None:
    block = os.urandom(8 << 20)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, len(block))
            f.write(block[:n])
            left -= n
        f.flush()
        os.fsync(f.fileno())


def timed(cmd: list[str], **kw: object) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)  # type: ignore[call-overload]
    return time.perf_counter() - t


def durable_copy_loop(src: Path, dst: Path) -> float:
    """Per file: read, hash, write, fsync, rename, fsync the folder (no entries, no verify)."""
    import hashlib

    evict(src)
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    t = time.perf_counter()
    for p in sorted(q for q in src.rglob("*") if q.is_file()):
        data = p.read_bytes()
        h = hashlib.sha256(data).hexdigest()
        tmp = dst / f".{h}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
        os.write(fd, data)
        os.fsync(fd)
        os.close(fd)
        os.replace(tmp, dst / h)
        dfd = os.open(dst, os.O_RDONLY)
        os.fsync(dfd)
        os.close(dfd)
    return time.perf_counter() - t


def capture_child(src: str, store: str, verify: bool) -> None:
    """Runs in a fresh process so ru_maxrss is this workload's peak alone."""
    from ingest.objects import LocalObjects, capture_copy

    objects = LocalObjects(Path(store))
    temp, fd = objects.new_temp()
    t = time.perf_counter()
    d = capture_copy(Path(src), fd, temp, verify=verify)
    os.close(fd)
    elapsed = time.perf_counter() - t
    temp.unlink()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": elapsed, "size": d.size, "rss_mb": rss}))


def pipeline_child(conf: str, dock: str, files: int) -> None:
    """The daemon's capture pipeline, as `custody run` composes it, in a fresh process:
    seconds from the scan that finds ``files`` files below ``dock`` to the last one
    recorded (the media steps are left to finish afterwards, untimed)."""
    from dataclasses import replace

    from custody import config as cfg
    from custody.daemon import make_capturer
    from custody.station import open_ledger
    from ingest.objects import LocalObjects
    from ingest.settings import DockSettings

    c = cfg.load(Path(conf))
    settings = replace(c.capture, settle_ms=0)
    ledger = open_ledger(c)
    cap = make_capturer(
        ledger, LocalObjects(c.store_dir), [DockSettings(path=Path(dock))], settings, None, c.media
    )
    cap.recover()
    t = time.perf_counter()
    cap.scan()
    while cap.stats.captured + cap.stats.sightings < files:
        cap.tick()
        if cap.stats.failed or cap.halted:
            raise SystemExit(f"capture failed: {list(cap.stats.errors)} {cap.halted}")
        time.sleep(0.002)
    elapsed = time.perf_counter() - t
    cap.drain()
    cap.close()
    ledger.close()
    print(json.dumps({"seconds": elapsed}))


def run_pipeline(conf: Path, dock: Path, files: int) -> float:
    evict(dock)
    p = subprocess.run(
        [sys.executable, __file__, "--pipeline", str(conf), str(dock), str(files)],
        check=True,
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    return float(json.loads(p.stdout.splitlines()[-1])["seconds"])


def run_capture(src: Path, store: Path, verify: bool) -> dict[str, float]:
    evict(src)
    p = subprocess.run(
        [sys.executable, __file__, "--child", str(src), str(store), "1" if verify else "0"],
        check=True,
        capture_output=True,
        text=True,
    )
    out: dict[str, float] = json.loads(p.stdout)
    return out


def custody(conf: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "custody", "-c", str(conf), *args],
        check=True,
        capture_output=True,
        text=True,
        cwd=REPO,
    )


def station(work: Path, name: str) -> Path:
    data = work / name
    subprocess.run(
        [
            sys.executable,
            "-m",
            "custody",
            "init",
            "--data",
            str(data),
            "--origin",
            f"bench.example/{name}",
        ],
        check=True,
        capture_output=True,
        cwd=REPO,
    )
    conf = data / "custody.toml"
    conf.write_text(conf.read_text().replace("min_free_mb = 1024", "min_free_mb = 64"))
    return conf


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-gib", type=float, default=2.0)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "RESULTS-capture.md"))
    ap.add_argument("--work", default=str(REPO / "benchmarks" / "work"))
    args = ap.parse_args()
    Path(args.work).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="capture-", dir=args.work))
    load_before = load_average()
    rows: list[str] = []
    try:
        size = int(args.size_gib * (1 << 30))
        src = work / "large.mp4"
        make_file(src, size)
        mb = size / 1e6

        evict(src)
        t_hash = timed(["openssl", "dgst", "-sha256", str(src)])
        evict(src)
        t_dd = timed(["dd", f"if={src}", f"of={work / 'dd.out'}", "bs=8M", "conv=fsync"])
        (work / "dd.out").unlink()
        floor_t = max(t_hash, t_dd)
        floor = mb / floor_t
        store = work / "store"
        off = run_capture(src, store, verify=False)
        on = run_capture(src, store, verify=True)
        rows += [
            "## One large file",
            "",
            f"{size / (1 << 30):.1f} GiB of random bytes, read from disk each time.",
            "",
            "| workload | seconds | MB/s | ratio to floor | ratio to hashing alone | peak RSS MB |",
            "|---|---:|---:|---:|---:|---:|",
            f"| `openssl dgst -sha256` (hash floor) | {t_hash:.2f} | {mb / t_hash:.0f} "
            "| | 1.00 | |",
            f"| `dd bs=8M conv=fsync` (durable write floor) | {t_dd:.2f} | {mb / t_dd:.0f} | | | |",
            f"| floor = slower of the two | {floor_t:.2f} | {floor:.0f} | 1.00 | | |",
            f"| capture, copy verification off | {off['seconds']:.2f} | "
            f"{mb / off['seconds']:.0f} | {floor_t / off['seconds']:.2f} | "
            f"{t_hash / off['seconds']:.2f} | {off['rss_mb']:.0f} |",
            f"| capture, verifying re-read from disk on | {on['seconds']:.2f} | "
            f"{mb / on['seconds']:.0f} | {floor_t / on['seconds']:.2f} | "
            f"{t_hash / on['seconds']:.2f} | {on['rss_mb']:.0f} |",
            "",
            "Targets: >= 0.8x the floor with verification off, >= 0.6x with it on; "
            "RSS under 150 MB whatever the file size. The `dd` floor is the slower one "
            "here, and capture beats it because `dd` reads and writes in turn with the "
            "default readahead, while capture reads ahead sequentially on its own thread; "
            "hashing alone is the real ceiling, so that ratio is shown as well.",
            "",
        ]
        src.unlink()

        # A burst of 1,000 small files of one recorder.
        burst = work / "burst"
        (burst / "slot01").mkdir(parents=True)
        total = 0
        for i in range(1000):
            data = os.urandom(4096 * (1 + i % 16))
            (burst / "slot01" / f"IMG_{i:04d}.JPG").write_bytes(data)
            total += len(data)
        floor_runs: list[float] = []
        pipe_runs: list[float] = []
        for k in range(5):
            floor_runs.append(durable_copy_loop(burst, work / "floor-copy"))
            conf = station(work, f"burst-station-{k}")
            pipe_runs.append(run_pipeline(conf, burst, 1000))
        t_cp, t_pipe = min(floor_runs), min(pipe_runs)
        conf = station(work, "burst-station-cli")
        evict(burst)
        t = time.perf_counter()
        res = json.loads(custody(conf, "ingest", "--json", "--settle-ms", "0", str(burst)).stdout)
        t_ing = time.perf_counter() - t
        assert res["captured"] == 1000, res
        runs = ", ".join(f"{x:.2f}" for x in floor_runs)
        pruns = ", ".join(f"{x:.2f}" for x in pipe_runs)
        rows += [
            "## A burst of 1,000 small files",
            "",
            f"1,000 files of 4-64 KiB ({total / 1e6:.0f} MB) on one recorder: copy, SHA-256, "
            "fsync, verifying re-read from disk and a signed entry each, captured in groups "
            "of up to 64 (one transaction per group).",
            "",
            "| workload | seconds | files/s | ratio to the loop |",
            "|---|---:|---:|---:|",
            f"| durable hashed copy loop (floor; best of {runs}) | {t_cp:.2f} | "
            f"{1000 / t_cp:.0f} | 1.00 |",
            f"| daemon pipeline, found -> all recorded (best of {pruns}) | {t_pipe:.2f} | "
            f"{1000 / t_pipe:.0f} | {t_cp / t_pipe:.2f} |",
            f"| `custody ingest` (process start, integration, exit included) | {t_ing:.2f} | "
            f"{1000 / t_ing:.0f} | {t_cp / t_ing:.2f} |",
            "",
            "Target: the pipeline >= 0.7x the loop. The loop fsyncs one file at a time and "
            "verifies nothing; the pipeline fsyncs a group's copies side by side and reads "
            "each back from the disk. Under I/O from other work, one-at-a-time fsyncs slow "
            "down far more than side-by-side ones: the ratio is only telling at a low load "
            "average (see the run line).",
            "",
        ]

        # Ten recorders at once.
        ten = work / "ten"
        for r in range(10):
            d = ten / f"slot{r:02d}" / "DCIM"
            d.mkdir(parents=True)
            for i in range(8):
                make_file(d / f"REC_{i}.MP4", 16 << 20)
        ten_mb = 10 * 8 * (16 << 20) / 1e6
        loop_runs: list[float] = []
        ten_runs: list[float] = []
        for k in range(3):
            loop_runs.append(durable_copy_loop(ten, work / "ten-floor-copy"))
            shutil.rmtree(work / "ten-floor-copy")
            ten_runs.append(run_pipeline(station(work, f"ten-pipeline-{k}"), ten, 80))
            shutil.rmtree(work / f"ten-pipeline-{k}")
        t_loop, t_ten_pipe = min(loop_runs), min(ten_runs)
        lruns = ", ".join(f"{x:.2f}" for x in loop_runs)
        truns = ", ".join(f"{x:.2f}" for x in ten_runs)
        conf = station(work, "ten-station")
        evict(ten)
        t = time.perf_counter()
        res = json.loads(custody(conf, "ingest", "--json", "--settle-ms", "0", str(ten)).stdout)
        t_ten = time.perf_counter() - t
        assert res["captured"] == 80, res
        loop_mb = ten_mb / t_loop
        rows += [
            "## Ten recorders docked at once",
            "",
            f"10 recorder folders x 8 files of 16 MiB ({ten_mb:.0f} MB), four recorders "
            "read in parallel, copy verification on.",
            "",
            "| workload | seconds | MB/s | ratio to single-file floor | ratio to the loop |",
            "|---|---:|---:|---:|---:|",
            f"| single-file floor (step 1) | | {floor:.0f} | 1.00 | |",
            f"| durable hashed copy loop over the same 80 files (best of {lruns}) | "
            f"{t_loop:.2f} | "
            f"{loop_mb:.0f} | {loop_mb / floor:.2f} | 1.00 |",
            f"| daemon pipeline, found -> all recorded (best of {truns}) | {t_ten_pipe:.2f} | "
            f"{ten_mb / t_ten_pipe:.0f} | {ten_mb / t_ten_pipe / floor:.2f} | "
            f"{t_loop / t_ten_pipe:.2f} |",
            f"| `custody ingest` of all ten (process start, media steps included) | "
            f"{t_ten:.2f} | {ten_mb / t_ten:.0f} | {ten_mb / t_ten / floor:.2f} | "
            f"{t_loop / t_ten:.2f} |",
            "",
            "Target: >= 0.7x the single-file floor. The pipeline writes every byte and "
            "reads it back from the disk to verify it; neither floor reads anything back.",
            "",
        ]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    fs = (
        subprocess.run(["df", "-T", str(REPO)], capture_output=True, text=True)
        .stdout.split("\n")[1]
        .split()[1]
    )
    head = [
        "# Capture benchmark",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {os.cpu_count()} cores, "
        f"{fs} filesystem, Python {platform.python_version()}; load average (1/5/15 min) "
        f"{load_before} at the start, {load_average()} at the end (the machine is shared).",
        "",
        f"Command: `.venv/bin/python benchmarks/capture_bench.py --size-gib {args.size_gib:g}`",
        "",
    ]
    Path(args.out).write_text("\n".join(head + rows))
    print("\n".join(head + rows))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        capture_child(sys.argv[2], sys.argv[3], sys.argv[4] == "1")
    elif len(sys.argv) > 1 and sys.argv[1] == "--pipeline":
        pipeline_child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        main()
