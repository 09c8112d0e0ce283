"""What `custody hub run` serves: add-checkpoint for stations that push, and metrics.

The hub is a witness like any other (C2SP tlog-witness, `witness.server`), with one
rule more: it cosigns nothing for a station it holds in an integrity alarm (fork,
rollback, invalid), whether the checkpoint comes from the bucket or is pushed.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time

import uvicorn
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from hub.config import HubConfig
from hub.follow import INTEGRITY_STATES
from witness.protocol import TEXT_CONTENT_TYPE, AddCheckpoint, Answer
from witness.server import Limits, build_app

log = logging.getLogger("custody.hub")


class AlarmGate:
    """Refuses a pushed checkpoint of a station in an integrity alarm (403), and notes
    the size of each one cosigned (`status` shows it as ``pushed_size``)."""

    def __init__(self, conf: HubConfig) -> None:
        self.path = conf.state_db
        self._db: sqlite3.Connection | None = None

    def __call__(self, request: AddCheckpoint) -> Answer | None:
        if self._db is None:  # opened on the witness's writer thread, used only there
            self._db = sqlite3.connect(self.path, check_same_thread=False)
            self._db.execute("PRAGMA busy_timeout = 10000")
        origin = request.checkpoint.origin
        try:
            row = self._db.execute(
                "SELECT state, fork FROM stations WHERE origin = ?", (origin,)
            ).fetchone()
        except sqlite3.OperationalError:  # no sync yet: no alarm either
            return None
        if row is None:
            return None
        state = "fork" if row[1] else row[0]
        if state not in INTEGRITY_STATES:
            return None
        return Answer(
            403,
            f"the county hub holds {origin} in alarm ({state}): it cosigns nothing for it "
            "until a supervisor has looked\n".encode(),
            TEXT_CONTENT_TYPE,
            None,
            f"refused: station in alarm ({state})",
            origin,
        )

    def observe(self, request: AddCheckpoint, answer: Answer) -> None:
        if answer.status != 200 or self._db is None:
            return
        self._db.execute(
            "UPDATE stations SET pushed_size = MAX(COALESCE(pushed_size, 0), ?) WHERE origin = ?",
            (request.checkpoint.size, request.checkpoint.origin),
        )
        self._db.commit()


def metrics_text(conf: HubConfig) -> str:
    """Prometheus text: each station's state and sizes, from the hub's state."""
    lines = [
        "# HELP custody_hub_station_state 1 for the state each station is in.",
        "# TYPE custody_hub_station_state gauge",
    ]
    sizes = [
        "# HELP custody_hub_station_size The tree size the hub verified.",
        "# TYPE custody_hub_station_size gauge",
    ]
    try:
        db = sqlite3.connect(f"file:{conf.state_db}?mode=ro", uri=True)
        try:
            rows = db.execute("SELECT origin, state, size, fork FROM stations").fetchall()
        finally:
            db.close()
    except sqlite3.Error:
        rows = []
    from hub.sync import STATES

    for origin, state, size, fork in rows:
        now = "fork" if fork else state
        o = json.dumps(origin)
        for s in STATES:
            lines.append(f'custody_hub_station_state{{origin={o},state="{s}"}} {int(s == now)}')
        sizes.append(f"custody_hub_station_size{{origin={o}}} {size}")
    return "\n".join(lines + sizes) + "\n"


class ServerThread:
    def __init__(self, server: uvicorn.Server, timeout: float = 30) -> None:
        self.server = server
        self.thread = threading.Thread(target=server.run, name="hub-http", daemon=True)
        self.thread.start()
        # Ready means listening: systemd and stations may connect once we say so.
        deadline = time.monotonic() + timeout
        while not server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise OSError(
                    f"the hub's HTTP server did not start on {server.config.host}:"
                    f"{server.config.port} (is the port in use?)"
                )
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


def serve_in_thread(conf: HubConfig) -> ServerThread:
    host, _, port = conf.listen.rpartition(":")

    async def metrics(request: Request) -> Response:
        return Response(metrics_text(conf), media_type="text/plain; version=0.0.4")

    gate = AlarmGate(conf)
    app = build_app(
        conf.witness_dir,
        Limits(),
        gate=gate,
        observe=gate.observe,
        extra_routes=[Route("/metrics", metrics, methods=["GET"])],
    )
    config = uvicorn.Config(
        app,
        host=host.strip("[]") or "127.0.0.1",
        port=int(port),
        access_log=False,
        log_config=None,
        server_header=False,
        lifespan="on",
    )
    log.info("hub: serving add-checkpoint and /metrics on %s", conf.listen)
    return ServerThread(uvicorn.Server(config))


__all__ = ["AlarmGate", "metrics_text", "serve_in_thread"]
