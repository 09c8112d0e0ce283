"""Audit re-hash speed against `openssl dgst -sha256` of the same stored objects.

A real station with a local cold folder captures N files of S MiB (random bytes), so
each object exists twice (the dock's copy and the cold copy). Then, interleaved, each in
a fresh process with the objects dropped from the page cache first:

- ours: `custody audit --full` (ledger recomputed, every object re-hashed on the dock
  and in the cold folder, completeness checks, Parquet and report written);
- baseline: `openssl dgst -sha256` over the same object files.

Reports both rates over the bytes hashed, and the ratio (target >= 0.8).

Run: .venv/bin/python benchmarks/audit_bench.py [--files 4] [--mib 256] [--reps 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from _station import ENV, fresh_station  # noqa: E402


def custody(conf: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "custody", "-c", str(conf), *args],
        check=False,
        capture_output=True,
        text=True,
        env=ENV,
    )


def drop_cache(files: list[Path]) -> None:
    for p in files:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "RESULTS-audit.md"))
    args = ap.parse_args()
    work, conf = fresh_station("audit")
    (work / "dock" / "slot01").mkdir(parents=True)
    with open(conf, "a") as f:
        f.write(f'\n[store]\nkind = "local"\npath = "{work / "cold"}"\n')
    for i in range(args.files):
        with open(work / "dock" / "slot01" / f"f{i}.bin", "wb") as f:
            for _ in range(args.mib):
                f.write(os.urandom(1 << 20))
    p = custody(conf, "ingest", "--settle-ms", "0", str(work / "dock"))
    assert p.returncode == 0, p.stderr
    objects = [
        p
        for root in (work / "st" / "store" / "objects", work / "cold" / "objects")
        for p in root.rglob("*")
        if p.is_file()
    ]
    total = sum(p.stat().st_size for p in objects)
    ours, base = [], []
    for r in range(args.reps):
        order = ["ours", "base"] if r % 2 == 0 else ["base", "ours"]
        for who in order:
            drop_cache(objects)
            t = time.perf_counter()
            if who == "ours":
                p = custody(conf, "audit", "--full", "--json")
                assert p.returncode == 0, p.stdout + p.stderr
                ours.append(time.perf_counter() - t)
                hashed = json.loads(p.stdout)["bytes_hashed"]
            else:
                subprocess.run(
                    ["openssl", "dgst", "-sha256", *map(str, objects)],
                    check=True,
                    stdout=subprocess.DEVNULL,
                )
                base.append(time.perf_counter() - t)
        print(f"rep {r}: ours {ours[-1]:.2f} s, openssl {base[-1]:.2f} s", flush=True)
    mo, mb = statistics.median(ours), statistics.median(base)
    ro, rb = hashed / mo / (1 << 20), total / mb / (1 << 20)
    lines = [
        "# Audit re-hash (benchmarks/audit_bench.py)",
        "",
        f"{platform.node()} · {os.cpu_count()} cores · Python {platform.python_version()} · "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        f"{args.files} objects of {args.mib} MiB, each on the dock and in a cold folder "
        f"({total / (1 << 30):.1f} GiB to read), page cache dropped before every run, "
        f"{args.reps} interleaved runs, medians.",
        "",
        "| | seconds | MiB/s | ratio | target |",
        "|---|---:|---:|---:|---|",
        f"| `custody audit --full` (ledger, objects, completeness, report) | {mo:.2f} | "
        f"{ro:.0f} | {ro / rb:.2f} | >= 0.8: {'met' if ro / rb >= 0.8 else 'missed'} |",
        f"| `openssl dgst -sha256` of the same files | {mb:.2f} | {rb:.0f} | 1.00 | |",
        "",
        f"Raw seconds: ours {ours}, openssl {base}.",
        "",
    ]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
