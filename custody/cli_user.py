"""`custody user ...` and `custody hub user ...`: the review site's users.

Both keep them in ``<data_dir>/web/users.sqlite`` (see web/users.py). The web modules
and argon2 are imported inside the commands: every `custody` command builds this parser,
and its start-up time must not pay for them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import unicodedata
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from custody.errors import CustodyError

if TYPE_CHECKING:
    from web.users import UserStore

ROLES = ("reviewer", "supervisor", "admin")  # web.users.ROLES, without importing it here

# The files of the web folder this command may make (web/users.py's DB_NAME, SECRET_NAME).
OWNED = ("users.sqlite", "users.sqlite-wal", "users.sqlite-shm", "secret")

Folder = Callable[[argparse.Namespace], Path]


def station_folder(args: argparse.Namespace) -> Path:
    from custody.cli_common import load

    return Path(load(args).data_dir) / "web"


def hub_folder(args: argparse.Namespace) -> Path:
    from custody.cli_hub import _config

    return Path(_config(args).data_dir) / "web"


def _store(folder: Path) -> UserStore:
    from web.users import UserStore, WebError

    try:
        return UserStore(folder)
    except WebError as e:
        raise CustodyError(str(e)) from None


def read_password(name: str) -> str:
    """The new password: the first line of stdin when it is not a terminal (scripts,
    `printf '%s\\n' "$PW" | custody user add ...`), else typed twice without echo."""
    if not sys.stdin.isatty():
        line = sys.stdin.readline(4096)
        if line.endswith("\n"):
            line = line[:-1]
            if line.endswith("\r"):
                line = line[:-1]
        if not line:
            raise CustodyError(f"no password for {name!r} on stdin: give it as the first line")
        return line
    import getpass

    first = getpass.getpass(f"new password for {name}: ")
    again = getpass.getpass("the same password again: ")
    if first != again:
        raise CustodyError("the two passwords differ; nothing was changed")
    return first


def _run(fn: Callable[[argparse.Namespace, UserStore], int]) -> Callable[[argparse.Namespace], int]:
    """A command on the folder's users; a WebError becomes the CLI's one line, exit 2."""

    def command(args: argparse.Namespace) -> int:
        from web.users import WebError

        folder = args.web_folder(args)
        try:
            store = _store(folder)
            with store:
                return fn(args, store)
        except WebError as e:
            raise CustodyError(str(e)) from None
        finally:
            hand_over(folder)

    return command


def hand_over(folder: Path) -> None:
    """Run as root (by hand, not as the service's user), the files made here would be
    root's and the web server could not open them: give them to the data folder's owner."""
    if os.geteuid() != 0 or not folder.is_dir():
        return
    owner = folder.parent.stat()
    if owner.st_uid == 0:
        return
    for path in [folder, *(folder / n for n in OWNED)]:
        with contextlib.suppress(FileNotFoundError):
            os.chown(path, owner.st_uid, owner.st_gid, follow_symlinks=False)


def cmd_add(args: argparse.Namespace, store: UserStore) -> int:
    from web.users import check_name, check_units

    # Bad names and units are refused before a password is asked for.
    check_name(args.name)
    check_units(args.unit or ())
    if store.get(args.name) is not None:
        raise CustodyError(f"user {args.name!r} already exists (change it with 'user passwd')")
    user = store.add(args.name, args.role, read_password(args.name), args.unit or ())
    units = ", ".join(user.units) or ("every unit" if user.role == "supervisor" else "-")
    print(f"user {user.name} added: {user.role}, units {units}")
    return 0


def cmd_passwd(args: argparse.Namespace, store: UserStore) -> int:
    from web.users import check_name

    check_name(args.name)
    if store.get(args.name) is None:
        raise CustodyError(f"there is no user {args.name!r} (see 'user list')")
    store.passwd(args.name, read_password(args.name))
    print(f"user {args.name}: password changed; their sessions have ended")
    return 0


def cmd_disable(args: argparse.Namespace, store: UserStore) -> int:
    store.disable(args.name)
    print(f"user {args.name} disabled; their sessions have ended")
    return 0


def cmd_enable(args: argparse.Namespace, store: UserStore) -> int:
    store.enable(args.name)
    print(f"user {args.name} enabled (and any lock after failed logins lifted)")
    return 0


def cmd_assign(args: argparse.Namespace, store: UserStore) -> int:
    store.assign(args.name, args.case)
    print(f"case {args.case} assigned to {args.name}")
    return 0


def cmd_unassign(args: argparse.Namespace, store: UserStore) -> int:
    store.unassign(args.name, args.case)
    print(f"case {args.case} no longer assigned to {args.name}")
    return 0


def _when(t: int) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _width(text: str) -> int:
    """Columns on a terminal: CJK unit names take two each."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def table(rows: list[list[str]]) -> list[str]:
    widths = [max(_width(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(c + " " * (w - _width(c)) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in rows
    ]


def cmd_list(args: argparse.Namespace, store: UserStore) -> int:
    users = store.list()
    cases = {u.name: sorted(store.cases_of(u.name)) for u in users}
    if args.json:
        out: dict[str, Any] = {
            "users": [
                {
                    "name": u.name,
                    "role": u.role,
                    "units": list(u.units),
                    "disabled": u.disabled,
                    "locked_until": u.locked_until,
                    "created": u.created,
                    "cases": cases[u.name],
                }
                for u in users
            ]
        }
        print(json.dumps(out, ensure_ascii=False))
        return 0
    if not users:
        print("no users yet (add one with 'user add NAME --role admin')")
        return 0
    rows = [["NAME", "ROLE", "UNITS", "STATE", "CASES"]]
    for u in users:
        state = (
            "disabled"
            if u.disabled
            else f"locked until {_when(u.locked_until)}"
            if u.locked_until
            else "active"
        )
        units = ",".join(u.units) or ("all" if u.role == "supervisor" else "-")
        rows.append([u.name, u.role, units, state, ",".join(cases[u.name]) or "-"])
    for line in table(rows):
        print(line)
    return 0


def _add(parent: Any, folder: Folder, where: str) -> None:
    p = parent.add_parser(
        "user",
        help=f"the review site's users{where}: add, passwd, disable, enable, list, assign",
        description="Users of the review site (custody web): reviewers see the cases "
        "assigned to them, supervisors the footage of their units (all without --unit) "
        "and approve exports, admins manage users. A password is read from the first "
        "line of stdin when it is not a terminal, else typed twice; it needs at least "
        "10 characters. After repeated failed logins a user is locked for a while "
        "('user enable' lifts the lock).",
    )
    us = p.add_subparsers(dest="user_command", required=True, metavar="SUBCOMMAND")

    def cmd(name: str, fn: Callable[[argparse.Namespace, UserStore], int], help: str) -> Any:
        s = us.add_parser(name, help=help)
        s.add_argument("name", metavar="NAME", help="user name: 1-64 of A-Z a-z 0-9 . _ @ -")
        s.set_defaults(func=_run(fn), web_folder=folder)
        return s

    s = cmd("add", cmd_add, "add a user (password from stdin or typed twice)")
    s.add_argument("--role", required=True, choices=ROLES)
    s.add_argument(
        "--unit",
        action="append",
        metavar="U",
        help="a unit the user sees (repeat for more; a supervisor without one sees all)",
    )
    cmd("passwd", cmd_passwd, "set a new password; ends the user's sessions")
    cmd("disable", cmd_disable, "stop a user logging in; ends the user's sessions")
    cmd("enable", cmd_enable, "let a disabled or locked user log in again")
    s = cmd("assign", cmd_assign, "give a reviewer a case to review")
    s.add_argument("--case", required=True, metavar="N", help="the case number")
    s = cmd("unassign", cmd_unassign, "take a case back from a reviewer")
    s.add_argument("--case", required=True, metavar="N", help="the case number")
    s = us.add_parser("list", help="every user: role, units, state, cases")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_run(cmd_list), web_folder=folder)


def add_parsers(sub: Any) -> None:
    """The station's `custody user` commands."""
    _add(sub, station_folder, "")


def add_hub_parsers(hub_sub: Any) -> None:
    """The hub's `custody hub user` commands."""
    _add(hub_sub, hub_folder, " (of the hub's site)")


__all__ = ["add_hub_parsers", "add_parsers", "read_password"]
