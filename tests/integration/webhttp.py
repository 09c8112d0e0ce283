"""Raw HTTP for the review site's security, API and Range tests.

urllib3 (tests.webfix.WebServer.request) normalises a URL before sending it: it removes
dot segments and re-encodes characters. An attack is sent as typed, so these helpers
speak HTTP/1.1 through http.client, which puts the path on the wire byte for byte.
"""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.webfix import WebServer


@dataclass(frozen=True)
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def header(self, name: str) -> str:
        return self.headers.get(name, "")

    def cookies(self) -> list[str]:
        return self.headers.get_all("set-cookie") or []

    def json(self) -> Any:
        return json.loads(self.body)


def raw(
    srv: WebServer,
    method: str,
    path: str,
    cookie: str | None = None,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    source: str | None = None,
) -> Answer:
    """One request with ``path`` sent exactly as given (from ``source``, a loopback
    address, when given: the server counts failed logins per client address)."""
    conn = http.client.HTTPConnection(
        "127.0.0.1", srv.port, timeout=60, source_address=(source, 0) if source else None
    )
    try:
        h = {"Host": f"127.0.0.1:{srv.port}", **(headers or {})}
        if cookie:
            h["Cookie"] = cookie
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for k, v in h.items():
            conn.putheader(k, v)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        r = conn.getresponse()
        data = r.read()
        return Answer(r.status, r.headers, data)
    finally:
        conn.close()


def api_json(
    srv: WebServer,
    method: str,
    path: str,
    payload: Any,
    cookie: str | None = None,
    csrf: str | None = None,
    source: str | None = None,
) -> Answer:
    h = {"Content-Type": "application/json"}
    if csrf is not None:
        h["X-CSRF-Token"] = csrf
    return raw(srv, method, path, cookie, h, json.dumps(payload).encode(), source)


def form(
    srv: WebServer, path: str, fields: dict[str, str] | list[tuple[str, str]], cookie: str
) -> Answer:
    from urllib.parse import urlencode

    body = urlencode(fields).encode()
    return raw(
        srv, "POST", path, cookie, {"Content-Type": "application/x-www-form-urlencoded"}, body
    )


def committed(conf: Path, kind: str = "access") -> list[dict[str, Any]]:
    """Every entry of type ``kind`` committed to the station's ledger, integrated into a
    checkpoint or not yet: what was durable when the answer came back."""
    from custody.config import load
    from custody.station import open_ledger
    from ledger.entry import decode_entry

    with open_ledger(load(conf), writable=False) as ledger:
        out = []
        for i in range(ledger.next_index()):
            e = decode_entry(ledger.entry(i))
            if e.type == kind:
                out.append({"index": i, **dict(e.fields)})
    return out


def of(entries: list[dict[str, Any]], **match: Any) -> list[dict[str, Any]]:
    return [e for e in entries if all(e.get(k) == v for k, v in match.items())]
