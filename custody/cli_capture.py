"""`custody run | ingest`: the daemon, and capture once without watching."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from custody.cli_common import load


def cmd_run(args: argparse.Namespace) -> int:
    from custody.daemon import run, setup_logging

    conf = load(args)
    setup_logging(args.log_level, args.log_format)
    return run(conf)


def cmd_ingest(args: argparse.Namespace) -> int:
    from custody.daemon import ingest_once, setup_logging

    conf = load(args)
    setup_logging(args.log_level)
    res = ingest_once(conf, [Path(p) for p in args.paths], args.settle_ms, args.wait_s)
    if args.json:
        print(json.dumps(res))
    else:
        print(
            f"captured {res['captured']} file(s) ({res['bytes']} bytes), "
            f"{res['sightings']} already held, {res['failures']} failure(s)"
        )
        for e in res["errors"]:
            print(f"failed: {e}")
        if res["paused"]:
            print(f"paused: {res['paused']}")
        for f in res["still_changing"]:
            print(f"not taken: {f} (still being written or changing; run again later)")
        for line in res.get("problems", []):
            print(f"problem: {line}")
        if res.get("halted"):
            print(f"HALTED on an integrity error: {res['halted']}")
        rep = res.get("replication")
        if rep:
            print(
                f"cold store {rep['store']}: {rep['replicated']} replicated, "
                f"{rep['backlog']} waiting"
                + (" (the daemon uploads them)" if rep["backlog"] else "")
                + (f"; last error: {rep['last_error']}" if rep["last_error"] else "")
            )
    if res.get("halted"):
        return 1
    ok = not res["failures"] and not res["paused"] and not res["still_queued"]
    return 0 if ok and not res.get("problems") else 2


def add_parsers(sub: Any) -> None:
    s = sub.add_parser(
        "run",
        help="the daemon: watch the docks, capture, replicate, fingerprint, sweep "
        "(SIGTERM stops, SIGHUP reloads the docks)",
    )
    s.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    s.add_argument(
        "--log-format",
        default="plain",
        choices=["plain", "json"],
        help="json: one object per line (time, level, logger, message)",
    )
    s.set_defaults(func=cmd_run)

    s = sub.add_parser(
        "ingest",
        help="capture files or folders once (card reader, USB disk), no watching; exit 2 "
        "when a file could not be captured or is still changing",
    )
    s.add_argument("paths", nargs="+", metavar="PATH")
    s.add_argument(
        "--settle-ms",
        type=int,
        default=1000,
        help="a file must be unchanged this long before it is taken (default 1000)",
    )
    s.add_argument(
        "--wait-s",
        type=float,
        default=300,
        help="give up on files still changing after this long (default 300)",
    )
    s.add_argument("--json", action="store_true")
    s.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    s.set_defaults(func=cmd_ingest)
