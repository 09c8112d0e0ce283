"""`custody find | reindex | catalog export`: search the evidence, rebuild the index."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from custody.cli_common import Progress, parse_date, with_config
from custody.errors import CustodyError

if TYPE_CHECKING:
    from custody import config as cfg


def cmd_find(args: argparse.Namespace, conf: cfg.Config) -> int:
    from custody.find import Query, find, iso
    from custody.retain import index_db
    from custody.station import open_ledger
    from retention.index import refresh
    from retention.policy import PolicyError, category_key

    try:
        category = category_key(args.category) if args.category else ""
    except PolicyError as e:
        raise CustodyError(str(e)) from None
    prefix = (args.sha or "").lower()
    if prefix and any(c not in "0123456789abcdef" for c in prefix):
        raise CustodyError(f"--sha {args.sha!r} is not a hex prefix")
    q = Query(
        officer=args.officer or "",
        recorder=args.recorder or "",
        unit=args.unit or "",
        since=args.since,
        until=args.until,
        category=category,
        case=args.case or "",
        sha_prefix=prefix,
        include_deleted=args.deleted,
    )
    with open_ledger(conf) as ledger:
        db = index_db(ledger)
        try:
            refresh(ledger, db)
            rows = find(db, q, args.limit)
        finally:
            db.close()
    if args.json:
        for r in rows:
            r["recorded"] = iso(r["recorded"])
            r["captured"] = iso(r["captured"])
            r["retain_until"] = iso(r["retain_until"])
        print(json.dumps(rows, ensure_ascii=False))
        return 0
    for r in rows:
        where = (
            "deleted"
            if r["deleted_entry"] is not None
            else (
                "dock+cold"
                if r["local"] and r["store_entry"] is not None
                else "cold"
                if r["store_entry"] is not None
                else "dock"
            )
        )
        print(
            f"{iso(r['recorded'])} ({r['recorded_from']})  {_shown(r['file_name']) or '-'}"
            f"  {r['sha256']}  {r['size']:>12}  recorder {r['recorder'] or '-'}"
            f"  警号 {r['officer'] or '-'}  unit {r['unit'] or '-'}"
            f"  {r['category'] or '-'}{_by(r['category_from']) if r['category'] else ''}"
            f"  cases {','.join(r['cases']) or '-'}  {where}"
            + ("  HELD" if r["held"] else "")
            + (f"  important{_by(r['important_from'])}" if r["important"] else "")
            + ("  CUT SHORT (complete: false)" if r["complete"] is False else "")
        )
    print(f"{len(rows)} original(s)", file=sys.stderr)
    return 0


_CONTROL = {c: f"\\x{c:02x}" for c in range(0x20)} | {0x7F: "\\x7f"}


def _shown(name: str) -> str:
    """A recorder's file name on one line (a name may hold newlines)."""
    return name.translate(_CONTROL)


def _by(source: str) -> str:
    """Who marked it, when it was not a person: the station read it from the file name."""
    return " (file name)" if source == "file name pattern" else ""


def cmd_reindex(args: argparse.Namespace, conf: cfg.Config) -> int:
    from custody.retain import index_db
    from custody.station import open_ledger
    from retention.index import rebuild

    show = Progress("reindexing", "entries")
    with open_ledger(conf) as ledger:
        db = index_db(ledger)
        try:
            n = rebuild(ledger, db, show.update)
            items = db.execute("SELECT COUNT(*) FROM retention_items").fetchone()[0]
        finally:
            db.close()
            show.end()
    print(f"index rebuilt from {n} entries: {items} originals")
    return 0


def cmd_catalog(args: argparse.Namespace, conf: cfg.Config) -> int:
    from custody.find import export_catalog
    from custody.retain import index_db
    from custody.station import open_ledger
    from retention.index import refresh

    with open_ledger(conf) as ledger:
        db = index_db(ledger)
        try:
            refresh(ledger, db)
            n, files = export_catalog(db, Path(args.out))
        finally:
            db.close()
    print(f"catalog of {n} original(s) in {len(files)} Parquet file(s) under {args.out}")
    return 0


def add_parsers(sub: Any) -> None:
    run = with_config
    s = sub.add_parser(
        "find", help="find originals by officer, recorder, unit, recording time, case, hash"
    )
    s.add_argument("--officer", help="警号 (officer number)")
    s.add_argument("--recorder", help="recorder serial")
    s.add_argument("--unit", help="unit code")
    s.add_argument(
        "--from",
        dest="since",
        type=parse_date,
        help="recording started on or after (YYYY-MM-DD; the station's local time unless "
        "it says, e.g. 2026-11-25T00:00+08:00)",
    )
    s.add_argument(
        "--to", dest="until", type=parse_date, help="recording started before (YYYY-MM-DD)"
    )
    s.add_argument("--category")
    s.add_argument("--case")
    s.add_argument("--sha", help="SHA-256 or a prefix of it")
    s.add_argument("--deleted", action="store_true", help="include originals deleted by rule")
    s.add_argument("--limit", type=int)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=run(cmd_find))
    s = sub.add_parser("reindex", help="rebuild the search and retention index from the ledger")
    s.set_defaults(func=run(cmd_reindex))
    cat = sub.add_parser("catalog", help="the catalog of all evidence")
    csub = cat.add_subparsers(dest="catalog_command", required=True, metavar="SUBCOMMAND")
    s = csub.add_parser("export", help="Parquet partitioned by unit and date")
    s.add_argument("--out", required=True)
    s.set_defaults(func=run(cmd_catalog))
