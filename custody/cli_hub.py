"""`custody hub ...`: the county hub (follow, witness, catalogue, audit every station)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

ENV_VAR = "CUSTODY_HUB_CONFIG"
DEFAULT_PATH = "/etc/custody/hub.toml"
log = logging.getLogger("custody.hub")


def _config(args: argparse.Namespace) -> Any:
    from custody.errors import ConfigError
    from hub.config import load_hub

    path = Path(args.hub_config or os.environ.get(ENV_VAR) or DEFAULT_PATH)
    if not path.exists() and not path.is_symlink():
        raise ConfigError(
            path,
            "",
            "file not found (create one with 'custody hub init --data DIR --name NAME', "
            f"then pass -c DIR/hub.toml or set {ENV_VAR})",
        )
    return load_hub(path)


def _logging(verbose: bool = False) -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _exit_code(stations: list[dict[str, Any]]) -> int:
    from hub.follow import INTEGRITY_STATES

    return 1 if any(s["state"] in INTEGRITY_STATES for s in stations) else 0


def cmd_init(args: argparse.Namespace) -> int:
    from hub.sync import init_hub

    path, witness_vkey, log_vkey = init_hub(Path(args.data), args.name)
    print(f"hub config: {path} (add a [[stations]] block per station)")
    print(f"witness vkey (stations' witness policies and verifiers pin it): {witness_vkey}")
    print(f"hub log vkey (its alarms and audits are signed with it): {log_vkey}")
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    _logging(args.verbose)
    conf = _config(args)
    from hub.sync import Hub, result_json

    with Hub(conf) as hub:
        res = hub.sync()
        status = hub.status()
    if args.json:
        status["sync"] = result_json(res)
        print(json.dumps(status, ensure_ascii=False))
        return _exit_code(status["stations"])
    for r in res.stations:
        line = f"{r.origin}: {r.state} size {r.size} (+{r.new_entries} entries)"
        print(line)
        for p in r.problems:
            print(f"  {p}")
    print(
        f"{res.entries} entries verified in {res.seconds:.1f} s "
        f"({res.gets} GETs, {res.lists} LISTs, {res.rows} catalog rows)"
    )
    return _exit_code(status["stations"])


def cmd_status(args: argparse.Namespace) -> int:
    conf = _config(args)
    from hub.sync import Hub

    with Hub(conf) as hub:
        hub._catalogued = hub.catalog.catalogued()
        status = hub.status()
    if args.json:
        print(json.dumps(status, ensure_ascii=False))
        return _exit_code(status["stations"])
    h = status["hub"]
    print(f"hub {h['name']}: own ledger size {h['ledger_size']}, last sync {h['last_sync']}")
    print(f"  witness vkey {h['witness_vkey']}")
    if not status["stations"]:
        print("no station in the config yet (add [[stations]] blocks to hub.toml)")
    for s in status["stations"]:
        print(
            f"{s['origin']}: {s['state']} size {s['size']} "
            f"(cosigned {s['cosigned_size']}, catalogued {s['catalogued']})"
        )
        for p in s["problems"]:
            print(f"  {p}")
    return _exit_code(status["stations"])


def cmd_run(args: argparse.Namespace) -> int:
    _logging(True)
    conf = _config(args)
    from custody.notify import Notifier
    from hub.server import serve_in_thread
    from hub.sync import Hub

    notifier = Notifier()
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    from custody.disclose_schedule import start_hub_schedule

    with Hub(conf) as hub:
        server = serve_in_thread(conf) if conf.listen else None
        # The monthly disclosure (公示), on its own thread: a sync never waits for it.
        stop_disclosure = start_hub_schedule(conf, hub.ledger)
        notifier.ready(f"following {len(conf.stations)} stations")
        log.info("hub %s: following %d stations", conf.name, len(conf.stations))
        try:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    res = hub.sync()
                    bad = [r for r in res.stations if r.state != "ok"]
                    notifier.status(
                        f"{len(res.stations) - len(bad)}/{len(res.stations)} stations ok; "
                        f"{res.entries} new entries in the last sync"
                        + (f"; {bad[0].origin}: {bad[0].state}" if bad else "")
                    )
                except Exception as e:  # one bad pass must not stop the hub
                    log.exception("hub sync failed: %s", e)
                    notifier.status(f"sync failed: {e}")
                stop.wait(max(0.0, conf.sync_interval_s - (time.monotonic() - started)))
        finally:
            notifier.stopping()
            if stop_disclosure is not None:
                stop_disclosure()
            if server is not None:
                server.stop()
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    _logging(args.verbose)
    conf = _config(args)
    from hub.sync import Hub

    with Hub(conf) as hub:
        result, paths, index = hub.audit(
            args.sample,
            args.max_duration or None,
            args.seed,
            Path(args.out) if args.out else None,
        )
    if args.json:
        out = result.to_json()
        out["reports"] = [str(p) for p in paths]
        out["entry"] = index
        print(json.dumps(out, ensure_ascii=False))
        return 0 if result.ok else 1
    summary = result.to_json()
    print(
        f"county audit: {len(result.checked)} objects re-hashed "
        f"({result.bytes_read} bytes), results {summary['results']}, "
        f"completeness {summary['completeness']}"
    )
    for line in summary["failures"][:20]:
        print(
            f"  {line.get('what')}: {line.get('origin')}#{line.get('leaf_index')} "
            f"{line.get('sha256')}: {line.get('detail', '')}"
        )
    print(f"reports: {paths[0].parent if paths else '-'} (signed as hub entry {index})")
    return 0 if result.ok else 1


def cmd_clear(args: argparse.Namespace) -> int:
    conf = _config(args)
    from custody.station import operator
    from hub.sync import Hub

    with Hub(conf, catalog=False) as hub:
        index = hub.clear(args.origin, args.reason, args.operator or operator())
    print(f"{args.origin}: alarm cleared (hub entry {index}); the next sync decides afresh")
    return 0


def add_parsers(sub: Any) -> None:
    h = sub.add_parser(
        "hub",
        help="the county hub: follow, witness and catalogue every station's log",
        description="The county hub follows every station's ledger mirror in the shared "
        "S3 cluster, verifies what is new, cosigns each verified checkpoint as a witness, "
        "raises alarms (fork, rollback, invalid, silent, behind, unreachable), keeps the "
        "Iceberg table custody.entries and audits stored footage across stations. "
        "See docs/hub.md.",
    )
    h.add_argument(
        "-c",
        "--config",
        dest="hub_config",
        metavar="HUBCFG",
        help=f"the hub's hub.toml (default: ${ENV_VAR}, else {DEFAULT_PATH})",
    )
    hs = h.add_subparsers(dest="hub_command", required=True, metavar="SUBCOMMAND")

    s = hs.add_parser("init", help="make the hub folder: hub.toml, witness key, log key")
    s.add_argument("--data", required=True, metavar="DIR", help="the hub's folder")
    s.add_argument(
        "--name", required=True, help="the hub's key name, e.g. witness.example/county-hub"
    )
    s.set_defaults(func=cmd_init)

    s = hs.add_parser(
        "sync",
        help="one pass over every station (for cron and tests); exit 1 on an integrity alarm",
    )
    s.add_argument("--json", action="store_true")
    s.add_argument("-v", "--verbose", action="store_true", help="log progress on stderr")
    s.set_defaults(func=cmd_sync)

    s = hs.add_parser("status", help="each station's state, verified size and problems")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_status)

    s = hs.add_parser(
        "run",
        help="the daemon: sync every sync_interval_s, serve add-checkpoint and /metrics",
    )
    s.set_defaults(func=cmd_run)

    s = hs.add_parser(
        "clear",
        help="a supervisor has looked at a station in alarm (a fork stays until then): "
        "follow it again, with a signed reason",
    )
    s.add_argument("origin", help="the station's origin")
    s.add_argument("--reason", required=True, help="what was found and decided")
    s.add_argument("--operator", help="who decided (default: the login name)")
    s.set_defaults(func=cmd_clear)

    s = hs.add_parser(
        "audit",
        help="re-hash a random sample of stored objects across stations; completeness; "
        "a report per unit (Markdown + Parquet)",
    )
    s.add_argument("--sample", type=int, default=100, metavar="N", help="objects to re-hash")
    s.add_argument(
        "--max-duration", type=float, default=0, metavar="S", help="stop after S seconds"
    )
    s.add_argument("--out", metavar="DIR", help="where the reports go (default DIR/reports/…)")
    s.add_argument("--seed", type=int, help="the sample's random seed (to repeat an audit)")
    s.add_argument("--json", action="store_true")
    s.add_argument("-v", "--verbose", action="store_true")
    s.set_defaults(func=cmd_audit)

    from custody import cli_disclose, cli_user, cli_web

    cli_web.add_hub_parsers(hs)
    cli_user.add_hub_parsers(hs)
    cli_disclose.add_hub_parsers(hs)


__all__ = ["add_parsers"]
