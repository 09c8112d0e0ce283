"""`custody key rotate | revoke | list`: change the station key through the log."""

from __future__ import annotations

import argparse
import json
from typing import Any

from custody.cli_common import index_arg, load
from custody.errors import CustodyError


def _change(args: argparse.Namespace, last_index: int | None) -> int:
    from custody import keys
    from custody.station import load_signer, open_ledger, operator

    conf = load(args)
    what = "custody key rotate" if last_index is None else "custody key revoke"
    # The daemon keeps the key in memory: it must not run while the key changes.
    from custody.daemon import InstanceLock  # the daemon's modules: only when needed

    lock = InstanceLock(conf.state_dir / "daemon.lock", what)
    try:
        with open_ledger(conf) as ledger:
            old = load_signer(conf)
            res = keys.change_key(
                conf,
                ledger,
                old,
                args.reason,
                args.operator or operator(),
                overlap_days=getattr(args, "overlap_days", 0),
                last_index=last_index,
            )
        # The checkpoint that covers the key entry is signed by the new key (and the
        # previous one while a rotation overlaps).
        with open_ledger(conf) as ledger:
            rec = ledger.integrate() or ledger.latest()
    finally:
        lock.release()
    doc: dict[str, Any] = {
        "action": res.action,
        "entry": res.index,
        "old_vkey": res.old_vkey,
        "new_vkey": res.new_vkey,
        "checkpoint_size": rec.size if rec else None,
        "overlap_until": res.overlap_until,
        "last_index": res.last_index,
    }
    if args.json:
        print(json.dumps(doc))
        return 0
    print(f"key entry {res.index}: {res.action} signed by the old key")
    print("new verifier key (give it to supervisors and witness operators):")
    print(res.new_vkey)
    if res.action == "rotate":
        print(
            f"the previous key co-signs checkpoints until {res.overlap_until}, then it is "
            "deleted; witnesses keep accepting the station meanwhile; each witness operator "
            f"adds the new key before then: custody witness --data WDIR add-log --vkey "
            f"{res.new_vkey}"
        )
    else:
        print(
            f"the old key vouches for entries up to {res.last_index} only; it no longer "
            "signs anything here; tell supervisors and witness operators now "
            "(README: 'A station key is lost or stolen')"
        )
    return 0


def cmd_rotate(args: argparse.Namespace) -> int:
    if not 0 <= args.overlap_days <= 3650:
        raise CustodyError("--overlap-days must be between 0 and 3650")
    return _change(args, None)


def cmd_revoke(args: argparse.Namespace) -> int:
    return _change(args, args.last_index)


def cmd_list(args: argparse.Namespace) -> int:
    from custody import keys
    from custody.station import load_signer

    conf = load(args)
    files = keys.key_files(conf)
    history = keys.read_history(files)
    current = load_signer(conf).verifier() if conf.key_path.exists() else None
    until = None
    if files.previous_until.exists():
        until = int(files.previous_until.read_text().strip() or 0)
    doc = {
        "current": current.vkey() if current else None,
        "history": [k.vkey() for k in history],
        "previous_cosigns_until": until,
    }
    if args.json:
        print(json.dumps(doc))
        return 0
    for k in history:
        mark = "current" if current and k == current else "retired"
        print(f"{mark:8} {k.vkey()}")
    if until:
        print(f"the previous key co-signs checkpoints until {until} (POSIX seconds)")
    return 0


def add_parsers(sub: Any) -> None:
    from custody import keys  # light: the ledger behind it is imported by its functions

    k = sub.add_parser(
        "key", help="change the station key through the log (rotate, revoke) or list its keys"
    )
    ks = k.add_subparsers(dest="key_command", required=True, metavar="KEY_COMMAND")

    s = ks.add_parser(
        "rotate",
        help="make a new station key; a key entry signed by the old key announces it "
        "(the daemon must be stopped)",
    )
    s.add_argument("--reason", default="scheduled rotation", help="why (recorded in the entry)")
    s.add_argument(
        "--overlap-days",
        type=float,
        default=keys.DEFAULT_OVERLAP_DAYS,
        help="days the old key keeps co-signing checkpoints so witnesses and pinned "
        f"verifiers follow (default {keys.DEFAULT_OVERLAP_DAYS}; 0 = none)",
    )
    s.add_argument("--operator", help="who changes the key (default: the login user)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_rotate)

    s = ks.add_parser(
        "revoke",
        help="the key may be compromised: make a new key; the old key vouches for entries "
        "up to --last-index only (the daemon must be stopped)",
    )
    s.add_argument(
        "--last-index",
        type=index_arg,
        required=True,
        help="the last entry known to be genuine (from before the compromise)",
    )
    s.add_argument("--reason", default="key compromised", help="why (recorded in the entry)")
    s.add_argument("--operator", help="who revokes (default: the login user)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_revoke)

    s = ks.add_parser("list", help="the station's keys, oldest first")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_list)
