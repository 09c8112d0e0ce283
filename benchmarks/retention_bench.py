"""Retention planning at scale: `custody retention plan` on N synthetic originals.

A real station (its own ledger, signed entries) gets N `ingest` entries from 40
recorders, a tenth of them linked to cases, a twentieth marked important, and holds
on ten cases; then, each in a fresh process as a person runs it:

1. `custody retention plan --as-of DATE` the first time (the index is built from the
   ledger's entries);
2. the same again (the index is current; the usual case);
3. `--policy NEW` (a comparison of two policies over every item);
4. the baseline: reading the same rows with the sqlite3 command-line shell.

Target (issue): under 2 s for 10,000 items.

Run: .venv/bin/python benchmarks/retention_bench.py [--items 10000] [--reps 3]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from _station import ENV, fresh_station  # noqa: E402

sys.path.insert(0, str(REPO))

NEW_POLICY = """
[[rules]]
name = "case"
match = { case = true }
keep = "permanent"
[[rules]]
name = "ordinary"
keep_days = 200
tiers = [{ after_days = 60, class = "GLACIER" }]
"""


def cli(conf: Path, *args: str) -> float:
    t = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "custody", "-c", str(conf), *args],
        check=True,
        stdout=subprocess.DEVNULL,
        env=ENV,
    )
    return time.perf_counter() - t


def populate(conf_path: Path, n: int) -> None:
    from custody import config as cfg
    from custody.station import open_ledger

    conf = cfg.load(conf_path)
    rnd = random.Random(7)
    with open_ledger(conf) as ledger:
        batch: list[tuple[str, dict[str, object]]] = []
        for i in range(n):
            sha = hashlib.sha256(f"item {i}".encode()).hexdigest()
            # Capture time is the signed entry's own time (now for all of them): the
            # plan date that matters is far enough ahead for every rule to act.
            batch.append(
                (
                    "ingest",
                    {
                        "sha256": sha,
                        "size": rnd.randrange(10 << 20, 2 << 30),
                        "media_type": "video/mp4",
                        "recorder": {
                            "serial": f"REC{rnd.randrange(40):04d}",
                            "officer": f"{rnd.randrange(10**6):06d}",
                            "unit": "530822000000",
                        },
                    },
                )
            )
            if i % 10 == 0:
                batch.append(("annotate", {"sha256": sha, "cases_added": [f"K-{i % 500}"]}))
            if i % 20 == 0:
                batch.append(("annotate", {"sha256": sha, "important": True}))
            if len(batch) >= 1000:
                ledger.append_entries(batch)
                batch = []
        for c in range(0, 500, 50):
            batch.append(("hold", {"scope": "case", "target": f"K-{c}", "reason": "bench"}))
        ledger.append_entries(batch)
        ledger.integrate()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--items", type=int, default=10000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "RESULTS-retention.md"))
    args = ap.parse_args()
    work, conf = fresh_station("retention")
    # custody init writes the default policy; a site applies it, as here.
    cli(conf, "retention", "apply", "--policy", str(work / "st" / "retention.toml"))
    t = time.perf_counter()
    populate(conf, args.items)
    fill = time.perf_counter() - t
    (work / "new.toml").write_text(NEW_POLICY)
    as_of = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 400 * 86400))
    first = cli(conf, "retention", "plan", "--as-of", as_of)
    again, compare, base = [], [], []
    db = work / "st" / "state" / "ledger.sqlite"
    sqlite = shutil.which("sqlite3")
    for _ in range(args.reps):
        again.append(cli(conf, "retention", "plan", "--as-of", as_of))
        compare.append(cli(conf, "retention", "plan", "--policy", str(work / "new.toml")))
        if sqlite:
            t = time.perf_counter()
            subprocess.run(
                [sqlite, str(db), "SELECT * FROM retention_items"],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            base.append(time.perf_counter() - t)
    t = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", "import custody.cli, custody.cli_retention"],
        check=True,
        env=ENV,
    )
    start = time.perf_counter() - t
    ma, mc = statistics.median(again), statistics.median(compare)
    mb = statistics.median(base) if base else float("nan")
    n = args.items
    lines = [
        "# Retention planning (benchmarks/retention_bench.py)",
        "",
        f"{platform.node()} · {os.cpu_count()} cores · Python {platform.python_version()} · "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        f"{n} synthetic originals from 40 recorders (a tenth linked to cases, a twentieth "
        "important, holds on ten cases), each command in a fresh process as a person runs "
        f"it; {args.reps} runs, medians. Filling the ledger took {fill:.1f} s.",
        "",
        "| command | seconds | items/s | target |",
        "|---|---:|---:|---|",
        f"| `retention plan` first run (index built from {n} entries) | {first:.2f} | "
        f"{n / first:,.0f} | |",
        f"| `retention plan` (index current) | {ma:.2f} | {n / ma:,.0f} | < 2 s: "
        f"{'met' if ma < 2 else 'missed'} |",
        f"| `retention plan --policy NEW` (both policies over every item) | {mc:.2f} | "
        f"{n / mc:,.0f} | < 2 s: {'met' if mc < 2 else 'missed'} |",
        f"| baseline: `sqlite3 ledger.sqlite 'SELECT * FROM retention_items'` | {mb:.2f} | "
        f"{n / mb:,.0f} | |",
        f"| Python start-up and imports of the CLI alone | {start:.2f} | | |",
        "",
    ]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
