"""A station with footage, users and a running review site (`custody web`), for the web
tests: real captures of ffmpeg-made recordings, real users (`custody user add`), the
real server process over HTTP on a free loopback port.

Cases: ``CASE_A`` holds the first recording and is assigned to the reviewer ``li``;
``CASE_B`` holds the second and is assigned to nobody. The third recording is in no case.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import urllib3

from tests.conftest import make_clip, run_cli
from tests.integration.daemon import make_station
from tests.integration.test_search import NAMED, PLAIN_NAMED, remux

CASE_A = "2026-行政处罚-0042"
CASE_B = "2026-行政检查-0007"
PASSWORDS = {
    "li": "reviewer-pass-1",  # reviewer, CASE_A
    "zhao": "reviewer-pass-2",  # reviewer, no case
    "wang": "supervisor-pass-1",  # supervisor, every unit
    "chen": "supervisor-pass-2",  # supervisor, another unit only
    "root": "admin-pass-123",  # admin
}
OTHER_UNIT = "530822999999"


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port: int = s.getsockname()[1]
    s.close()
    return port


def ffmpeg_exe() -> str:
    exe = shutil.which("ffmpeg")
    if exe:
        return exe
    import imageio_ffmpeg

    return str(imageio_ffmpeg.get_ffmpeg_exe())


def make_web_station(tmp: Path) -> tuple[Path, list[str]]:
    """A station with three captured recordings (access copies and posters made), two
    cases and the users of PASSWORDS; returns its config and the originals' SHA-256s."""
    ff = ffmpeg_exe()
    dock = tmp / "dock"
    conf = make_station(tmp, dock)
    text = conf.read_text()
    pattern = (
        "regex = '^(?P<serial>[A-Z0-9]{7})_(?P<officer>[0-9]{6})_(?P<start>[0-9]{14})"
        "(?:_(?P<category>[A-Z]{4}))?(?P<important>_IMP)?'"
    )
    text = text.replace(
        "[[docks.patterns]]",
        'timezone = "Asia/Shanghai"\ncategory_map = { XZCF = "行政处罚" }\n[[docks.patterns]]',
        1,
    )
    conf.write_text(
        "\n".join(pattern if ln.startswith("regex = ") else ln for ln in text.split("\n"))
    )
    slot = dock / "slot01"
    remux(ff, make_clip(ff, tmp / "made" / "a.mp4", seconds=4, tone=300), slot / NAMED)
    remux(ff, make_clip(ff, tmp / "made" / "b.mp4", tone=350), slot / PLAIN_NAMED)
    remux(ff, make_clip(ff, tmp / "made" / "c.mp4", tone=400), slot / "VID_0003.mp4")
    run_cli("ingest", str(dock), "--settle-ms", "0", config=conf)
    rows = json.loads(run_cli("find", "--json", config=conf).stdout)
    shas = [r["sha256"] for r in rows]
    assert len(shas) == 3, rows
    run_cli("derive", *shas, config=conf)
    run_cli("annotate", shas[0], "--case", CASE_A, "--reason", "complaint", config=conf)
    run_cli("annotate", shas[1], "--case", CASE_B, "--reason", "inspection", config=conf)
    for name, role, units in (
        ("li", "reviewer", ()),
        ("zhao", "reviewer", ()),
        ("wang", "supervisor", ()),
        ("chen", "supervisor", (OTHER_UNIT,)),
        ("root", "admin", ()),
    ):
        args = ["user", "add", name, "--role", role]
        for u in units:
            args += ["--unit", u]
        run_cli(*args, config=conf, input=PASSWORDS[name] + "\n")
    run_cli("user", "assign", "li", "--case", CASE_A, config=conf)
    return conf, shas


@dataclass
class WebServer:
    """`custody web` running in its own process."""

    conf: Path
    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    http: urllib3.PoolManager = field(
        default_factory=lambda: urllib3.PoolManager(retries=False, timeout=30)
    )

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        cookie: str | None = None,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
        preload: bool = True,
    ) -> urllib3.BaseHTTPResponse:
        h = dict(headers or {})
        if cookie:
            h["Cookie"] = cookie
        data = raw
        if body is not None:
            h["Content-Type"] = "application/json"
            data = json.dumps(body).encode()
        return self.http.request(
            method,
            self.base + path,
            body=data,
            headers=h,
            redirect=False,
            preload_content=preload,
        )

    def login(self, name: str, password: str | None = None) -> tuple[str, str]:
        """Log in through the API; returns the Cookie header value and the CSRF token."""
        r = self.request(
            "POST",
            "/api/login",
            {"username": name, "password": password or PASSWORDS[name]},
        )
        assert r.status == 200, (r.status, r.data)
        jar: SimpleCookie = SimpleCookie()
        jar.load(r.headers["set-cookie"])
        return f"custody_session={jar['custody_session'].value}", json.loads(r.data)["csrf"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_web(conf: Path, log: Path, extra_env: dict[str, str] | None = None) -> WebServer:
    port = free_port()
    env = dict(os.environ, **(extra_env or {}))
    env.pop("CUSTODY_CONFIG", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "custody", "-c", str(conf), "web", "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=open(log, "wb"),  # noqa: SIM115 - the child keeps it
        env=env,
    )
    srv = WebServer(conf, port, proc, log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"custody web exited {proc.returncode}: {log.read_text()}")
        try:
            if srv.request("GET", "/healthz").status == 200:
                return srv
        except urllib3.exceptions.HTTPError:
            pass
        time.sleep(0.1)
    srv.stop()
    raise AssertionError(f"custody web did not answer within 30 s: {log.read_text()}")


def web_station(tmp: Path) -> Iterator[tuple[WebServer, list[str]]]:
    """For a module-scoped fixture: the station, its server, the originals' SHA-256s."""
    conf, shas = make_web_station(tmp)
    srv = start_web(conf, tmp / "web.log")
    try:
        yield srv, shas
    finally:
        srv.stop()


def entries(conf: Path, kind: str = "access", wait_s: float = 10) -> list[dict[str, Any]]:
    """Every entry of type ``kind`` in the station's ledger, each checked: its signature
    verifies with the station's verifier key, and an inclusion proof puts it under a
    signed checkpoint (waiting up to ``wait_s`` for the web process to integrate)."""
    from custody.config import load
    from custody.station import open_ledger, station_verifier
    from ledger.entry import decode_entry

    c = load(conf)
    vkey = station_verifier(c)
    deadline = time.monotonic() + wait_s
    with open_ledger(c, writable=False) as ledger:
        while True:
            latest = ledger.latest()
            if latest is not None and latest.size >= ledger.next_index():
                break
            assert time.monotonic() < deadline, "entries not integrated into a checkpoint"
            time.sleep(0.2)
        out = []
        for i in range(latest.size):
            leaf = ledger.entry(i)
            e = decode_entry(leaf)
            if e.type != kind:
                continue
            assert e.verify(vkey), f"entry {i} does not verify with the station key"
            ledger.proof(i).verify(leaf, [vkey])
            out.append({"index": i, **dict(e.fields)})
    return out
