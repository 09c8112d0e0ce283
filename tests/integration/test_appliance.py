"""The daemon as an appliance: systemd's notify protocol over a real datagram socket,
SIGHUP reloads, JSON log lines."""

from __future__ import annotations

import json
import signal
import socket
import time
from pathlib import Path

from .daemon import Daemon, entries, make_station, wait_for


def listen(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(path))
    s.settimeout(0.2)
    return s


def drain(s: socket.socket, seconds: float) -> list[str]:
    got: list[str] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            got.append(s.recv(4096).decode())
        except TimeoutError:
            continue
    return got


def test_readiness_status_watchdog_and_stopping(tmp_path: Path) -> None:
    dock = tmp_path / "dock"
    conf = make_station(tmp_path, dock)
    sock = listen(tmp_path / "notify.sock")
    d = Daemon(
        conf,
        env={"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "1000000"},
    )
    try:
        msgs = drain(sock, 4)
        ready = [m for m in msgs if "READY=1" in m]
        assert ready, msgs
        assert f"MAINPID={d.proc.pid}" in ready[0] and "STATUS=captured 0" in ready[0]
        assert msgs.index(ready[0]) > 0 and msgs[0].startswith("STATUS=starting")
        # Pings every half of WATCHDOG_USEC, from the main loop, after readiness.
        pings = [m for m in msgs[msgs.index(ready[0]) :] if m == "WATCHDOG=1"]
        assert len(pings) >= 4, msgs
        assert any(m.startswith("STATUS=captured") for m in msgs if "READY" not in m)
        d.proc.send_signal(signal.SIGHUP)
        again = drain(sock, 1.5)
        assert any(m.startswith("RELOADING=1") for m in again), again
        assert any("READY=1" in m for m in again), again
    finally:
        assert d.stop() == 0
    rest = drain(sock, 0.5)
    assert any(m.startswith("STOPPING=1") for m in rest), rest
    sock.close()


def test_sighup_takes_new_docks_and_refuses_a_broken_config(tmp_path: Path) -> None:
    dock = tmp_path / "dock"
    conf = make_station(tmp_path, dock, settle_ms=200)
    second = tmp_path / "dock2"
    (second / "slot09").mkdir(parents=True)
    d = Daemon(conf, args=("--log-format", "json"))
    try:
        d.wait_ready()
        good = conf.read_text()
        # A config with a mistake: refused in one line, the running one is kept.
        conf.write_text(good + "\n[capture2]\n")
        d.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: b"configuration not reloaded" in d.log.read_bytes(), 10, d.log)
        (dock / "slot01").mkdir(parents=True, exist_ok=True)
        (dock / "slot01" / "a.bin").write_bytes(b"first dock")
        wait_for(lambda: any(e["type"] == "ingest" for e in entries(conf)), 20, d.log)
        # A second dock added: watched after the reload, its files captured.
        conf.write_text(good + f'\n[[docks]]\npath = "{second}"\nname = "two"\n')
        d.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: b"configuration reloaded: 2 dock(s)" in d.log.read_bytes(), 10, d.log)
        (second / "slot09" / "b.bin").write_bytes(b"second dock")
        wait_for(lambda: len([e for e in entries(conf) if e["type"] == "ingest"]) == 2, 20, d.log)
    finally:
        assert d.stop() == 0
    src = [e["source"]["dock"] for e in entries(conf) if e["type"] == "ingest"]
    assert "two" in src
    # Every log line is one JSON object.
    lines = [ln for ln in d.log.read_text().splitlines() if ln.strip()]
    docs = [json.loads(ln) for ln in lines]
    assert {"time", "level", "logger", "message"} <= set(docs[0])
    assert any("custody running" in x["message"] for x in docs)
