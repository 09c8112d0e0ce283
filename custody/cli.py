"""The `custody` command line: the parser and the one place errors become exit codes.

Each area's commands live in their own module (``custody.cli_*``), which adds its
parsers here and never imports this module. Output goes to stdout; errors are one
line on stderr that says what to do. Exit codes: 0 ok, 1 integrity/verification
failure, 2 usage or operational error.
"""

from __future__ import annotations

import argparse
import errno
import os
import sqlite3
import sys
from collections.abc import Sequence

from custody import (
    __version__,
    cli_capture,
    cli_disclose,
    cli_evidence,
    cli_find,
    cli_hub,
    cli_key,
    cli_ledger,
    cli_media,
    cli_retention,
    cli_station,
    cli_status,
    cli_store,
    cli_user,
    cli_web,
    cli_witness,
)
from custody.cli_common import full_disk
from custody.errors import describe_os_error
from ledger.errors import LedgerError
from verify.quiet import finish_stdout, guard_stdout

# In the order `custody --help` lists them.
AREAS = (
    cli_station,
    cli_capture,
    cli_status,
    cli_ledger,
    cli_key,
    cli_media,
    cli_retention,
    cli_find,
    cli_evidence,
    cli_disclose,
    cli_store,
    cli_witness,
    cli_hub,
    cli_web,
    cli_user,
)


class _Parser(argparse.ArgumentParser):
    """The top parser. Its -c help names the config's default places, looked up only
    when help is shown: parsing a command must not import the config module (and the
    settings of every area behind it), as the command imports what it needs itself."""

    def format_help(self) -> str:
        from custody import config as cfg

        for action in self._actions:
            if "--config" in action.option_strings:
                action.help = f"config file (default: ${cfg.ENV_VAR}, else {cfg.DEFAULT_PATH})"
        return super().format_help()


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="custody",
        description="Evidence integrity and archive appliance for body-worn recorder docks: "
        "captures every docked file exactly once, signs every event into an append-only "
        "Merkle ledger (C2SP tlog-tiles), keeps the files in cold storage under retention "
        "rules, and exports them for courts with proof that verifies offline.",
        epilog="Every command that reports takes --json (one JSON document on stdout). "
        "Exit codes: 0 ok; 1 an integrity or verification failure (something does not "
        "verify, an audit found a problem, the daemon halted on one); 2 a usage, "
        "configuration or operational error (one line on stderr says what to do). "
        "Progress lines go to stderr, and only when it is a terminal.",
    )
    p.add_argument("-c", "--config", help="config file")  # the defaults: _Parser.format_help
    p.add_argument("--version", action="version", version=f"custody {__version__}")
    sub = p.add_subparsers(
        dest="command",
        required=True,
        metavar="COMMAND",
        parser_class=argparse.ArgumentParser,  # the commands' own parsers, as before
    )
    for area in AREAS:
        area.add_parsers(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    guard_stdout()  # `custody status | head -1`: no "Broken pipe" message, the real exit code
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "note" and not args.text and not args.file:
        parser.error("note needs TEXT or --file F")
    try:
        rc: int = args.func(args)
        finish_stdout()
        return rc
    except LedgerError as e:
        print(f"custody: error: {e}", file=sys.stderr)
        return e.exit_code
    except (sqlite3.Error, OSError) as e:
        if isinstance(e, OSError) and e.errno != errno.ENOSPC:
            print(f"custody: error: {describe_os_error(e)}", file=sys.stderr)
            return 2
        full = full_disk(args) if hasattr(args, "config") else ""
        what = describe_os_error(e) if isinstance(e, OSError) else f"the state database failed: {e}"
        if full:
            what = (
                f"no space left on device (ENOSPC) on the disk holding {full} ({what}); "
                "free some space and run the command again"
            )
        print(f"custody: error: {what}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("custody: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug, not bad input: still one line, the cause named
        if os.environ.get("CUSTODY_TRACEBACK"):
            raise
        print(
            f"custody: error: unexpected {type(e).__name__}: {e} (a bug: please report it; "
            "CUSTODY_TRACEBACK=1 shows where)",
            file=sys.stderr,
        )
        return 2


__all__ = ["build_parser", "main"]
