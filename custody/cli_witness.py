"""`custody witness ...`: a C2SP tlog-witness server (its key, the logs it follows, serve)."""

from __future__ import annotations

from typing import Any


def add_parsers(sub: Any) -> None:
    w = sub.add_parser(
        "witness",
        help="run a witness: cosign other stations' checkpoints (C2SP tlog-witness)",
    )
    w.add_argument("--data", help="the witness's folder (key and state)")
    w.add_subparsers(dest="witness_command", required=True, metavar="SUBCOMMAND")


__all__ = ["add_parsers"]
