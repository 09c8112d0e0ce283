"""The `custody` command line: the parser and the one place errors become exit codes.

Each area's commands live in their own module (``custody.cli_*``), which adds its
parsers here and never imports this module. Output goes to stdout; errors are one
line on stderr that says what to do. Exit codes: 0 ok, 1 integrity/verification
failure, 2 usage or operational error.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from collections.abc import Sequence

from custody import (
    __version__,
    cli_capture,
    cli_evidence,
    cli_find,
    cli_ledger,
    cli_media,
    cli_retention,
    cli_station,
    cli_status,
    cli_store,
)
from custody import config as cfg
from ledger.errors import LedgerError

# In the order `custody --help` lists them.
AREAS = (
    cli_station,
    cli_capture,
    cli_status,
    cli_ledger,
    cli_media,
    cli_retention,
    cli_find,
    cli_evidence,
    cli_store,
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="custody",
        description="Evidence integrity and archive appliance for body-worn recorder docks: "
        "captures every docked file exactly once, signs every event into an append-only "
        "Merkle ledger (C2SP tlog-tiles), keeps the files in cold storage under retention "
        "rules, and exports them for courts with proof that verifies offline.",
    )
    p.add_argument(
        "-c",
        "--config",
        help=f"config file (default: ${cfg.ENV_VAR}, else {cfg.DEFAULT_PATH})",
    )
    p.add_argument("--version", action="version", version=f"custody {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for area in AREAS:
        area.add_parsers(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "note" and not args.text and not args.file:
        parser.error("note needs TEXT or --file F")
    try:
        rc: int = args.func(args)
        return rc
    except LedgerError as e:
        print(f"custody: error: {e}", file=sys.stderr)
        return e.exit_code
    except sqlite3.Error as e:
        print(f"custody: error: the state database failed: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        where = f" {e.filename}" if e.filename else ""
        print(f"custody: error:{where}: {e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("custody: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


__all__ = ["build_parser", "main"]
