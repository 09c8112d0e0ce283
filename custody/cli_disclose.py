"""`custody disclose` and `custody hub disclose`: the public disclosure (公示) of a
period as a signed static folder (docs/disclosure.md)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def _report(res: Any, as_json: bool) -> int:
    if as_json:
        print(
            json.dumps(
                {
                    "out": str(res.out),
                    "period": res.period,
                    "entry": res.entry_index,
                    "checkpoint_size": res.checkpoint_size,
                    "files": res.files,
                    "manifest_sha256": res.manifest_sha256,
                    "seconds": res.seconds,
                    "totals": res.figures,
                },
                ensure_ascii=False,
                sort_keys=True,
            )
        )
        return 0
    allc = res.figures.get("all", {})
    print(f"published {res.period} to {res.out} ({res.files} files, {res.seconds:.1f} s)")
    print(
        f"  recordings {allc.get('recordings')}, hours {allc.get('hours') or 'withheld'}, "
        f"cases {allc.get('cases')}, kept as evidence {allc.get('evidence')}, "
        f"deleted by rule {allc.get('deletions')}, holds {allc.get('holds')}, "
        f"exports {allc.get('exports')}"
    )
    print(
        f"  signed: disclose entry {res.entry_index} under checkpoint {res.checkpoint_size}; "
        f"MANIFEST {res.manifest_sha256}"
    )
    print(f"  check it with: custody verify {res.out}")
    return 0


def cmd_disclose(args: argparse.Namespace) -> int:
    from custody.cli_common import load
    from custody.disclose import disclose_station
    from custody.station import operator

    conf = load(args)
    res = disclose_station(
        conf,
        args.period,
        Path(args.out),
        args.operator or operator(),
        rules_path=Path(args.rules) if args.rules else None,
    )
    return _report(res, args.json)


def cmd_hub_disclose(args: argparse.Namespace) -> int:
    from custody.cli_hub import _config
    from custody.station import operator
    from hub.disclose import disclose_county

    res = disclose_county(
        _config(args),
        args.period,
        Path(args.out),
        args.operator or operator(),
        rules_path=Path(args.rules) if args.rules else None,
    )
    return _report(res, args.json)


def _args(s: Any) -> None:
    s.add_argument("--out", required=True, metavar="DIR", help="the folder to write (new)")
    s.add_argument(
        "--period",
        required=True,
        metavar="YYYY|YYYY-MM",
        help="a year (the annual report) or a month, in the rules' time zone",
    )
    s.add_argument(
        "--rules",
        metavar="FILE",
        help="the disclosure rules (threshold, time zone, public names); default: "
        "[disclose] rules, else the built-in defaults",
    )
    s.add_argument("--operator", metavar="NAME", help="who publishes (default: login name)")
    s.add_argument("--json", action="store_true", help="one JSON document on stdout")


def add_parsers(sub: Any) -> None:
    s = sub.add_parser(
        "disclose",
        help="publish a period's figures for the public (公示): signed, no personal data",
        description="Writes a static folder any web server or public bucket can serve: "
        "index.html (Chinese with English), data.json, data.csv and audits.csv with the "
        "period's recordings, hours, cases, footage kept as evidence, deletions by rule, "
        "holds and exports per unit, enforcement category and month (counts under the "
        "threshold withheld), the station's latest witnessed checkpoint and key, and a "
        "MANIFEST whose hash is in a signed `disclose` entry with its inclusion proof. "
        "No officer numbers, names, file names, places, case numbers or footage hashes. "
        "Check a publication with `custody verify DIR`.",
    )
    _args(s)
    s.set_defaults(func=cmd_disclose)


def add_hub_parsers(hs: Any) -> None:
    s = hs.add_parser(
        "disclose",
        help="publish the county's figures for a period (公示), from the Iceberg catalog",
        description="As `custody disclose`, for every station the hub follows: figures "
        "from the county catalog, each station's latest checkpoint with the hub's "
        "cosignature, signed into the hub's own log.",
    )
    _args(s)
    s.set_defaults(func=cmd_hub_disclose)
