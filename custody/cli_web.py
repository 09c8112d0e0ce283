"""`custody web` and `custody hub web`: the review site for courts, reviewers and
supervisors (see docs/web.md)."""

from __future__ import annotations

import argparse
from typing import Any


def _listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536 or not host:
        raise argparse.ArgumentTypeError(f"{text!r}: give HOST:PORT, e.g. 127.0.0.1:8080")
    return host.strip("[]"), int(port)


def cmd_web(args: argparse.Namespace) -> int:
    from custody.cli_common import load
    from web.serve import serve_station

    conf = load(args)
    return serve_station(conf, args.listen)


def cmd_hub_web(args: argparse.Namespace) -> int:
    from custody.cli_hub import _config
    from web.serve import serve_hub

    return serve_hub(_config(args), args.listen)


def _add_listen(s: Any) -> None:
    s.add_argument(
        "--listen",
        type=_listen,
        metavar="HOST:PORT",
        help="where to serve (default: [web] listen, else 127.0.0.1:8080)",
    )


def add_parsers(sub: Any) -> None:
    s = sub.add_parser(
        "web",
        help="serve the review site: search, play and verify footage, cases, exports",
        description="Serves the review site for courts, reviewers and supervisors: "
        "search, recordings with their proof, cases, export requests and approvals, "
        "audits. Users come from 'custody user'. Every view of footage, download, export "
        "and failed login is a signed access entry. Loopback by default; TLS by [web] "
        "tls_cert/tls_key or a reverse proxy (docs/web.md).",
    )
    _add_listen(s)
    s.set_defaults(func=cmd_web)


def add_hub_parsers(hs: Any) -> None:
    s = hs.add_parser(
        "web",
        help="serve the review site over every station: search, recordings, audits, "
        "alarms, the county overview",
    )
    _add_listen(s)
    s.set_defaults(func=cmd_hub_web)


__all__ = ["add_hub_parsers", "add_parsers"]
