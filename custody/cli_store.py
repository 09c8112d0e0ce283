"""`custody store ...`: the cold store."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from custody.cli_common import cold_store, load, sha_arg
from custody.errors import CustodyError


def cmd_store_check(args: argparse.Namespace) -> int:
    from custody.cold import replication_settings

    conf = load(args)
    store = cold_store(conf)
    locking = replication_settings(conf).locking
    enabled = store.check_locking(locking)
    print(
        f"cold store {store.id}: reachable; object lock "
        f"{'enabled' if enabled else 'not enabled'}"
        f"{'' if locking else ' (lock_mode = none)'}"
    )
    return 0


def cmd_store_fetch(args: argparse.Namespace) -> int:
    from archive.retrieve import Retriever
    from ingest.objects import LocalObjects

    conf = load(args)
    sha = sha_arg(args.sha256)
    store = None if conf.store is None else cold_store(conf)
    local = None if args.cold else LocalObjects(conf.store_dir).path
    if args.cold and store is None:
        raise CustodyError("--cold: no [store] is configured")
    got = Retriever(local, store).fetch(sha, Path(args.out))
    print(f"{args.out}: {got.size} bytes, SHA-256 {got.sha256} verified (from {got.source})")
    return 0


def cmd_store_restore(args: argparse.Namespace) -> int:
    from archive.retrieve import Retriever

    conf = load(args)
    status = Retriever(None, cold_store(conf)).restore(sha_arg(args.sha256), args.days)
    print(f"{args.sha256}: {status}")
    return 0


def add_parsers(sub: Any) -> None:
    st = sub.add_parser("store", help="the cold store: check it, fetch or restore objects")
    ssub = st.add_subparsers(dest="store_command", required=True, metavar="SUBCOMMAND")
    s = ssub.add_parser(
        "check", help="reach the configured store and check it has object lock if required"
    )
    s.set_defaults(func=cmd_store_check)
    s = ssub.add_parser(
        "fetch", help="write an object to a file, verified by its SHA-256 (dock copy first)"
    )
    s.add_argument("sha256")
    s.add_argument("--out", required=True, help="file to write")
    s.add_argument("--cold", action="store_true", help="read from the cold store only")
    s.set_defaults(func=cmd_store_fetch)
    s = ssub.add_parser("restore", help="ask for a cold-class object to be made readable")
    s.add_argument("sha256")
    s.add_argument("--days", type=int, default=7)
    s.set_defaults(func=cmd_store_restore)
