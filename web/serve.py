"""Running the review site: uvicorn on the configured address, TLS when a certificate
is configured, behind a reverse proxy when one is named (docs/web.md)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from custody.config import WebSettings

log = logging.getLogger("custody.web")


def _users(folder: Path, ws: WebSettings) -> Any:
    from web.users import UserStore

    return UserStore(folder, idle_s=ws.idle_minutes * 60, max_s=ws.session_hours * 3600)


def _run(app: Any, ws: WebSettings, listen: tuple[str, int] | None, what: str) -> int:
    import uvicorn

    host, port = listen or _split(ws.listen)
    tls = ws.tls_cert is not None and ws.tls_key is not None
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    scheme = "https" if tls else "http"
    print(f"custody web: {what} at {scheme}://{host}:{port}/", file=sys.stderr, flush=True)
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        ssl_certfile=str(ws.tls_cert) if tls else None,
        ssl_keyfile=str(ws.tls_key) if tls else None,
        proxy_headers=bool(ws.proxy),
        forwarded_allow_ips=ws.proxy or None,
        server_header=False,
        timeout_keep_alive=30,
        # Stopping waits this long for answers under way (a download is cut, and resumes
        # with a Range request), not for idle TLS peers to say goodbye.
        timeout_graceful_shutdown=5,
    )
    return 0


def _split(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


def station_app(conf: Any) -> Any:
    from web.app import Site, build_app
    from web.station import StationSource

    folder = conf.data_dir / "web"
    users = _users(folder, conf.web)
    src = StationSource(conf)
    secure = conf.web.tls_cert is not None or bool(conf.web.proxy)
    return build_app(Site(src, users, folder, secure=secure, timezone=conf.web.timezone))


def hub_app(conf: Any) -> Any:
    from web.app import Site, build_app
    from web.hubsource import HubSource

    folder = conf.data_dir / "web"
    users = _users(folder, conf.web)
    src = HubSource(conf)
    src.refresh(force=True)  # the county index is built before the first page, not during it
    secure = conf.web.tls_cert is not None or bool(conf.web.proxy)
    return build_app(Site(src, users, folder, secure=secure, timezone=conf.web.timezone))


def serve_station(conf: Any, listen: tuple[str, int] | None) -> int:
    return _run(station_app(conf), conf.web, listen, f"the review site of {conf.origin}")


def serve_hub(conf: Any, listen: tuple[str, int] | None) -> int:
    return _run(hub_app(conf), conf.web, listen, f"the county review site of {conf.name}")
