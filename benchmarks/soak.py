"""Soak run: the daemon under continuous docking for a bounded time.

A station with a local dock and a local cold folder runs `custody run` (release after
replication, fingerprints and access copies on). Every ``--interval`` seconds a new
"recorder" docks with ``--files`` recordings (720p H.264 + AAC, unique content: each is
a re-mux of a generated clip with its own metadata). Every 10 s the daemon's RSS and
open file descriptors are sampled. At the end: files per hour, MB/s captured, RSS and
fd counts over time (flat or not), files docked vs recorded vs released, and the
WARNING/ERROR lines of the daemon's log (zero expected).

Run: .venv/bin/python benchmarks/soak.py [--minutes 20] [--interval 5] [--files 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from _station import ENV, fresh_station  # noqa: E402


def ffmpeg() -> str:
    import imageio_ffmpeg

    return shutil.which("ffmpeg") or str(imageio_ffmpeg.get_ffmpeg_exe())


def sample(pid: int) -> tuple[int, int]:
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) // 1024
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def count(conf: Path, ty: str) -> int:
    sys.path.insert(0, str(REPO))
    from custody import config as cfg
    from custody.station import open_ledger
    from ledger.entry import decode_entry

    with open_ledger(cfg.load(conf), writable=False) as led:
        return sum(1 for i in range(led.next_index()) if decode_entry(led.entry(i)).type == ty)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--minutes", type=float, default=20)
    ap.add_argument("--interval", type=float, default=5)
    ap.add_argument("--files", type=int, default=3)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "RESULTS-soak.md"))
    args = ap.parse_args()
    work, conf = fresh_station("soak")
    (work / "dock").mkdir(parents=True)
    text = conf.read_text().replace("settle_ms = 5000", "settle_ms = 1000")
    text += (
        f'\n[[docks]]\npath = "{work / "dock"}"\n'
        f'\n[store]\nkind = "local"\npath = "{work / "cold"}"\n'
    )
    conf.write_text(text)
    ff = ffmpeg()
    base = []
    for i in range(4):
        p = work / f"base{i}.mp4"
        subprocess.run(
            [
                ff,
                "-v",
                "error",
                "-y",
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=1280x720:rate=30:duration=10",
                "-f",
                "lavfi",
                "-i",
                f"sine=frequency={300 + 100 * i}:duration=10",
                "-c:v",
                "libx264",
                "-preset",
                "veryfast",
                "-c:a",
                "aac",
                "-shortest",
                str(p),
            ],
            check=True,
        )
        base.append(p)
    log = open(work / "daemon.log", "wb")  # noqa: SIM115
    d = subprocess.Popen(
        [sys.executable, "-m", "custody", "-c", str(conf), "run"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=ENV,
    )
    time.sleep(3)
    start = time.monotonic()
    end = start + args.minutes * 60
    docked = 0
    docked_bytes = 0
    samples: list[tuple[float, int, int]] = []
    next_dock = start
    next_sample = start
    n = 0
    while time.monotonic() < end:
        now = time.monotonic()
        if now >= next_dock:
            slot = work / "dock" / f"rec{n:05d}"
            tmp = work / "staging"
            tmp.mkdir(exist_ok=True)
            for k in range(args.files):
                out = tmp / f"REC{n:04d}_{k}.mp4"
                subprocess.run(
                    [
                        ff,
                        "-v",
                        "error",
                        "-y",
                        "-i",
                        str(base[(n + k) % 4]),
                        "-c",
                        "copy",
                        "-metadata",
                        f"comment=soak {n} {k}",
                        str(out),
                    ],
                    check=True,
                )
                docked_bytes += out.stat().st_size
                docked += 1
            tmp.rename(slot)  # the recorder appears at once, as a mount would
            n += 1
            next_dock += args.interval
        if now >= next_sample:
            samples.append((now - start, *sample(d.pid)))
            next_sample += 10
        time.sleep(0.2)
    # Let the backlog drain (bounded), then stop.
    drain_start = time.monotonic()
    while time.monotonic() - drain_start < 120:
        if not any(p.is_file() for p in (work / "dock").rglob("*")):
            break
        time.sleep(1)
    drained = time.monotonic() - drain_start
    samples.append((time.monotonic() - start, *sample(d.pid)))
    d.send_signal(signal.SIGTERM)
    rc = d.wait(180)
    log.close()
    elapsed = time.monotonic() - start
    left = sum(1 for p in (work / "dock").rglob("*") if p.is_file())
    ingests, stores, wipes = (count(conf, t) for t in ("ingest", "store", "wipe"))
    problems = [
        ln
        for ln in (work / "daemon.log").read_text(errors="replace").splitlines()
        if " WARNING " in ln or " ERROR " in ln
    ]
    rss = [s[1] for s in samples]
    fds = [s[2] for s in samples]
    third = max(1, len(samples) // 3)
    lines = [
        "# Soak run (benchmarks/soak.py)",
        "",
        f"{platform.node()} · {os.cpu_count()} cores · Python {platform.python_version()} · "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        f"{args.minutes:g} minutes of docking: a recorder with {args.files} recordings "
        f"(720p30 H.264 + AAC, 10 s) every {args.interval:g} s; release after replication to "
        "a local cold folder; fingerprints and access copies on the same two cores. Then up "
        f"to 2 minutes to drain (took {drained:.0f} s), then SIGTERM (exit {rc}).",
        "",
        "| measure | value |",
        "|---|---|",
        f"| files docked / recorded (ingest) / replicated (store, originals and derivatives) / "
        f"released (wipe) | {docked} / {ingests} / {stores} / {wipes} |",
        f"| files left on the dock | {left} |",
        f"| throughput | {ingests / elapsed * 3600:,.0f} files/h, "
        f"{docked_bytes / elapsed / 1e6:.1f} MB/s docked |",
        f"| daemon RSS, first third / last third (max) | {max(rss[:third])} / "
        f"{max(rss[-third:])} MiB |",
        f"| daemon open fds, first third / last third (max) | {max(fds[:third])} / "
        f"{max(fds[-third:])} |",
        f"| WARNING/ERROR log lines | {len(problems)} |",
        "",
        "Samples (seconds, RSS MiB, open fds): "
        + ", ".join(f"({t:.0f}, {r}, {f})" for t, r, f in samples),
        "",
    ]
    if problems:
        lines += ["Log lines:", "", *[f"    {p}" for p in problems[:20]], ""]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
