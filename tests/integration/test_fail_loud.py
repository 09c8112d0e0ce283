"""The daemon fails loud: an integrity error stops capture and says so everywhere, a
full disk is one line, a recovered store shows no stale error."""

from __future__ import annotations

import errno
import logging
import socket
import sqlite3
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from ..conftest import needs_root
from .daemon import Daemon, entries, make_station, wait_for
from .test_appliance import drain, listen
from .test_capture import by_path
from .test_dock_safety import daemon_json


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def recorded(conf: Path, name: str) -> bool:
    """Whether capture recorded a file (from its job table: the damaged ledger cannot be
    read entry by entry any more)."""
    db = sqlite3.connect(f"file:{conf.parent / 'state' / 'ledger.sqlite'}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT path, state FROM ingest_files").fetchall()
    finally:
        db.close()
    return any(bytes(p).endswith(name.encode()) and s != "queued" for p, s in rows)


def test_integrity_error_stops_capture_and_the_daemon_exits_1(tmp_path: Path) -> None:
    dock = tmp_path / "dock"
    port = free_port()
    conf = make_station(tmp_path, dock, extra=f'\n[metrics]\nlisten = "127.0.0.1:{port}"\n')
    # The grace before it gives up ([ledger] halt_grace_s), short for the test.
    line = "checkpoint_interval_ms = 1000\n"
    conf.write_text(conf.read_text().replace(line, line + "halt_grace_s = 5\n", 1))
    sock = listen(tmp_path / "notify.sock")
    d = Daemon(conf, env={"NOTIFY_SOCKET": str(tmp_path / "notify.sock")})
    try:
        d.wait_ready()
        slot = dock / "slot01"
        slot.mkdir()
        (slot / "a.txt").write_text("before")
        wait_for(lambda: "slot01/a.txt" in by_path(entries(conf)), 30, d.log)
        # The state database now names a signed tree the tiles do not hold: the log
        # contradicts what the station signed.
        db = sqlite3.connect(conf.parent / "state" / "ledger.sqlite")
        with db:
            (size,) = db.execute("SELECT max(size) FROM checkpoints").fetchone()
            db.execute(
                "INSERT INTO checkpoints VALUES (?,?,?,?)",
                (size + 100, b"\0" * 32, "not a signed note", "2026-01-01T00:00:00Z"),
            )
        db.close()
        (slot / "b.txt").write_text("appended, then integration meets the damage")
        wait_for(lambda: bool(daemon_json(conf).get("halted")), 30, d.log)
        assert d.alive()
        status_lines = [m for m in drain(sock, 3) if "STATUS=" in m]
        assert any("STATUS=HALTED" in m for m in status_lines), status_lines
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
        assert "custody_halted 1.0" in metrics
        (slot / "c.txt").write_text("docked after the halt: stays on the recorder")
        time.sleep(2)
        assert not recorded(conf, "c.txt")
        rc = d.proc.wait(90)  # it gives integration a grace period, then gives up
        d.logf.close()
    finally:
        if d.alive():
            d.kill()
        sock.close()
    assert rc == 1
    assert "integrity error not resolved in 5 s" in d.log.read_text()
    assert (dock / "slot01" / "c.txt").exists()
    # Still there for custody status once the daemon is gone.
    assert str(daemon_json(conf)["halted"]).startswith("ledger: tile ")
    log = d.log.read_text()
    assert "capture STOPPED" in log and "Traceback" not in log


def fill(folder: Path) -> Path:
    """Fill the file system under ``folder`` up to the last block."""
    filler = folder / "filler"
    chunk = b"\0" * (1 << 20)
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(chunk)
                f.flush()
        except OSError as e:
            assert e.errno == errno.ENOSPC
    return filler


def test_full_disk_is_one_line_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    needs_root("mounts a 24 MiB tmpfs to fill")
    station = tmp_path / "station"
    station.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(station)], check=True)
    try:
        dock = tmp_path / "dock"
        conf = make_station(tmp_path, dock, min_free_mb=0)
        d = Daemon(conf, log=tmp_path / "daemon.log")
        try:
            d.wait_ready()
            filler = fill(station)
            (dock / "slot01").mkdir()
            (dock / "slot01" / "REC.MP4").write_bytes(b"x" * (2 << 20))
            time.sleep(8)  # four status writes, retries of the capture
            assert d.alive()
            log = d.log.read_text()[-20000:]
            assert "Traceback" not in log, log
            # One line for capture (whichever step met the full disk first), one for the
            # status file, however many attempts there were.
            assert log.count("capture paused") + log.count("cannot grow") == 1, log
            assert log.count("cannot write") <= 1, log
            assert not list((station / "state").glob(".daemon.json.tmp*"))
            assert not list((station / "store" / "tmp").iterdir())
            filler.unlink()
            wait_for(lambda: "slot01/REC.MP4" in by_path(entries(conf)), 30, d.log)
        finally:
            assert d.stop() == 0
    finally:
        subprocess.run(["umount", str(station)], check=False)


def test_cold_store_error_clears_when_the_store_recovers(tmp_path: Path) -> None:
    dock = tmp_path / "dock"
    cold = tmp_path / "cold"
    cold.mkdir()
    conf = make_station(
        tmp_path, dock, extra=f'\n[store]\nkind = "local"\npath = "{cold}"\nretry_max_s = 2\n'
    )
    d = Daemon(conf, drop_dac=True)
    try:
        d.wait_ready()
        cold.chmod(0)  # the second disk goes away (for the daemon's user)

        def last_error() -> str:
            return str((daemon_json(conf).get("replication") or {}).get("last_error") or "")

        (dock / "slot01").mkdir()
        (dock / "slot01" / "a.txt").write_text("to be stored")
        wait_for(lambda: bool(last_error()), 30, d.log)
        cold.chmod(0o755)  # it is back
        wait_for(lambda: any(e["type"] == "store" for e in entries(conf)), 30, d.log)
        wait_for(lambda: not last_error(), 30, d.log)
    finally:
        cold.chmod(0o755)
        assert d.stop() == 0


def test_a_retention_sweep_on_a_full_disk_is_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The daemon's scheduled sweep meeting a full disk (its index cannot grow) logs one
    line that says what to do, not a traceback; the daemon's next sweep tries again."""
    from custody.config import load
    from custody.daemon import _retention_sweep
    from custody.station import open_ledger

    needs_root("mounts an 8 MiB tmpfs to fill")
    station = tmp_path / "station"
    station.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(station)], check=True)
    try:
        conf = make_station(tmp_path, tmp_path / "dock")
        with open_ledger(load(conf)) as ledger:
            filler = fill(station)
            with caplog.at_level(logging.INFO, logger="custody"):
                _retention_sweep(load(conf), ledger, None)  # type: ignore[arg-type]
            lines = [r.getMessage() for r in caplog.records if r.name == "custody"]
            assert len(lines) == 1 and not caplog.records[0].exc_info, lines
            assert "retention sweep not run" in lines[0] and "make room" in lines[0], lines
            filler.unlink()
    finally:
        subprocess.run(["umount", "-l", str(station)], check=True)
