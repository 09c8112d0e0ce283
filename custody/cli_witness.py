"""`custody witness ...`: a C2SP tlog-witness server (its key, the logs it follows, serve)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from custody.errors import CustodyError


def _wdir(args: argparse.Namespace) -> Path:
    if not args.data:
        raise CustodyError(
            "custody witness needs --data WDIR", "e.g. custody witness --data /var/lib/witness vkey"
        )
    return Path(args.data)


def cmd_init(args: argparse.Namespace) -> int:
    from witness.state import init_witness

    data = args.init_data or args.data
    if not data:
        raise CustodyError("custody witness init needs --data WDIR")
    cosigner = init_witness(Path(data), args.name)
    print(cosigner.verifier().vkey())
    return 0


def cmd_vkey(args: argparse.Namespace) -> int:
    from witness.state import load_cosigner

    print(load_cosigner(_wdir(args)).verifier().vkey())
    return 0


def cmd_add_log(args: argparse.Namespace) -> int:
    from witness.state import WitnessState

    state = WitnessState(_wdir(args))
    try:
        origin, added = state.add_log(args.vkey, args.origin)
    finally:
        state.close()
    if added:
        print(f"following {origin} with key {args.vkey.strip()}")
    else:
        print(f"already following {origin} with that key (nothing changed)")
    return 0


def cmd_remove_key(args: argparse.Namespace) -> int:
    from witness.state import WitnessState

    state = WitnessState(_wdir(args))
    try:
        origin = state.remove_key(args.vkey, args.origin)
    finally:
        state.close()
    print(f"no longer trusting {args.vkey.strip()} for {origin}; its cosigned state stays")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from ledger.note import b64
    from witness.protocol import origin_id
    from witness.state import WitnessState

    state = WitnessState(_wdir(args))
    try:
        logs = state.logs()
    finally:
        state.close()
    if args.json:
        out = {
            "logs": [
                {
                    "origin": i.origin,
                    "origin_id": origin_id(i.origin),
                    "size": i.size,
                    "root": b64(i.root),
                    "updated": i.updated,
                    "vkeys": list(i.vkeys),
                }
                for i in logs
            ]
        }
        print(json.dumps(out, ensure_ascii=False))
        return 0
    if not logs:
        print("no logs followed yet (custody witness --data WDIR add-log --vkey VKEY)")
    for i in logs:
        print(f"{i.origin}  size {i.size}")
        for k in i.vkeys:
            print(f"  key {k}")
    return 0


def _listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{value!r} is not HOST:PORT")
    return host.strip("[]") or "127.0.0.1", int(port)


def cmd_serve(args: argparse.Namespace) -> int:
    from witness.server import Limits, serve

    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    host, port = args.listen
    burst = args.burst if args.burst is not None else 2 * args.rate
    limits = Limits(rate=args.rate, burst=burst, body_timeout_s=args.body_timeout)
    serve(_wdir(args), host, port, limits, workers=args.workers)
    return 0


def _positive(value: str) -> float:
    try:
        v = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"{value!r} is negative")
    return v


def add_parsers(sub: Any) -> None:
    w = sub.add_parser(
        "witness",
        help="run a witness: cosign other stations' checkpoints (C2SP tlog-witness)",
        description="A witness cosigns a log's checkpoint only when it is consistent with "
        "every checkpoint of that log it cosigned before (C2SP tlog-witness v1.0.0, "
        "cosignature/v1). See docs/witness.md.",
    )
    w.add_argument("--data", metavar="WDIR", help="the witness's folder (key and state)")
    wsub = w.add_subparsers(dest="witness_command", required=True, metavar="SUBCOMMAND")

    s = wsub.add_parser(
        "init",
        help="make the witness folder and its key (0600); prints the witness vkey",
    )
    s.add_argument("--data", dest="init_data", metavar="WDIR", help="the witness's folder")
    s.add_argument("--name", required=True, help="the witness's key name, e.g. witness.example/w1")
    s.set_defaults(func=cmd_init)

    s = wsub.add_parser("vkey", help="print the witness vkey that logs and verifiers pin")
    s.set_defaults(func=cmd_vkey)

    s = wsub.add_parser(
        "add-log",
        help="follow a log: trust its key for its origin (a second key for a known origin "
        "keeps the state: a station's key rotation)",
    )
    s.add_argument("--vkey", required=True, help="the log's verifier key name+id+key")
    s.add_argument("--origin", help="the checkpoint origin line (default: the key's name)")
    s.set_defaults(func=cmd_add_log)

    s = wsub.add_parser(
        "remove-key",
        help="stop trusting one key of a log (a revoked station key); its state stays",
    )
    s.add_argument("--vkey", required=True, help="the key to stop trusting")
    s.add_argument("--origin", help="the checkpoint origin line (default: the key's name)")
    s.set_defaults(func=cmd_remove_key)

    s = wsub.add_parser("list", help="the logs followed: origin, cosigned size, keys")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_list)

    s = wsub.add_parser(
        "serve",
        help="serve POST /add-checkpoint (SIGTERM stops after in-flight requests)",
        description="Serve the witness over HTTP until SIGTERM or SIGINT. One line per "
        "request on stderr. Bound to loopback unless --listen names another address.",
    )
    s.add_argument(
        "--listen",
        type=_listen,
        default=("127.0.0.1", 8700),
        metavar="HOST:PORT",
        help="address to listen on (default 127.0.0.1:8700)",
    )
    s.add_argument(
        "--rate",
        type=_positive,
        default=100.0,
        metavar="N",
        help="requests per second per client address (default 100; 0: no limit); "
        "over it: 429 with Retry-After",
    )
    s.add_argument(
        "--burst", type=_positive, metavar="B", help="bursts a client may send (default 2 x N)"
    )
    s.add_argument(
        "--body-timeout",
        type=_positive,
        default=10.0,
        metavar="S",
        help="seconds a client has to send its body (default 10; else 408)",
    )
    s.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="processes serving (default 1; they share the state safely)",
    )
    s.set_defaults(func=cmd_serve)


__all__ = ["add_parsers"]
