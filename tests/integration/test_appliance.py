"""The daemon as an appliance: systemd's notify protocol over a real datagram socket,
SIGHUP reloads, JSON log lines."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from ..conftest import REPO, make_clip, run_cli
from .daemon import (
    Daemon,
    entries,
    make_station,
    s3_store_conf,
    status,
    verify_bucket,
    wait_for,
)
from .test_fingerprints import sha


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


def test_full_flow_through_the_daemon_with_a_stop_in_the_middle(
    tmp_path: Path, ffmpeg: str, seaweed: Any
) -> None:
    """dock -> capture -> ledger -> cold store (SeaweedFS) -> fingerprints and access
    copies -> export -> verify, with SIGTERM while work is in flight and a restart that
    finishes the rest."""
    bucket = seaweed.bucket(f"flow-{uuid.uuid4().hex[:12]}")
    dock = tmp_path / "dock"
    conf = make_station(
        tmp_path, dock, extra=s3_store_conf(seaweed.endpoint, bucket), release="after_replication"
    )
    slot = dock / "slot01"
    clips = [
        make_clip(
            ffmpeg,
            tmp_path / "made" / f"ABC1234_010203_2026112009{i}000_000{i}.mp4",
            seconds=3,
            tone=300 + 100 * i,
        )
        for i in range(4)
    ]
    bad = tmp_path / "made" / "ABC1234_010203_20261120099000_0009.mp4"
    bad.write_bytes(b"not a video, cut short\n")
    shas = {sha(p) for p in [*clips, bad]}
    d = Daemon(conf)
    d.wait_ready()
    slot.mkdir(parents=True)
    for p in [*clips, bad]:
        shutil.copy(p, slot / p.name)
    # Stop as soon as the first file is recorded: the rest is in flight or waiting.
    wait_for(lambda: any(e["type"] == "ingest" for e in entries(conf)), 30, d.log)
    t = time.monotonic()
    assert d.stop(timeout=90) == 0
    assert time.monotonic() - t < 90
    done_before = {e["sha256"] for e in entries(conf) if e["type"] == "ingest"}
    assert done_before and done_before <= shas

    d = Daemon(conf)
    try:
        d.wait_ready()

        def finished() -> bool:
            es = entries(conf)
            stored = {e["sha256"] for e in es if e["type"] == "store" and e["role"] == "original"}
            copies = {
                e["sha256"] for e in es if e["type"] == "derive" and e["kind"] == "access_copy"
            }
            return stored == shas and len(copies) == 4 and not any(slot.iterdir())

        wait_for(finished, 120, d.log)
        # The ledger's copy in the bucket follows every few seconds.
        wait_for(lambda: status(conf)["cold_store"]["ledger_mirrored_size"] > 10, 60, d.log)
    finally:
        assert d.stop() == 0
    es = entries(conf)
    assert sorted(e["sha256"] for e in es if e["type"] == "ingest") == sorted(shas), "once each"
    fps = {e["sha256"]: e for e in es if e["type"] == "fingerprint"}
    assert "error" in fps[sha(bad)] and all("sidecar" in fps[sha(c)] for c in clips)
    wipes = [e for e in es if e["type"] == "wipe"]
    assert len(wipes) == 5 and all(w["rule"] == "after_replication" for w in wipes)

    for c in clips[:2]:
        run_cli("annotate", sha(c), "--case", "2026-XZ-0099", config=conf)
    bag = tmp_path / "bag"
    run_cli("export", "--case", "2026-XZ-0099", "--out", str(bag), "--purpose", "test", config=conf)
    vkey = (conf.parent / "keys" / "station.vkey").read_text().strip()
    v = subprocess.run(
        [sys.executable, "-m", "verify", "bag", str(bag), "--vkey", vkey],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert v.returncode == 0, v.stdout
    assert (
        "OK"
        in verify_bucket(seaweed.endpoint, bucket, conf.parent / "keys" / "station.vkey").stdout
    )


def test_restore_a_station_from_its_key_config_and_the_cold_ledger(
    tmp_path: Path, ffmpeg: str
) -> None:
    """The README's restore: a new box gets the key and the configuration back and the
    ledger from the cold store's mirror; it carries on where the old one stopped."""
    dock = tmp_path / "dock"
    cold = tmp_path / "cold"
    conf = make_station(tmp_path, dock, extra=f'\n[store]\nkind = "local"\npath = "{cold}"\n')
    make_clip(ffmpeg, dock / "slot01" / "A.mp4")
    run_cli("ingest", str(dock), "--settle-ms", "0", config=conf)
    old = entries(conf)
    station = conf.parent
    # The old disk is gone: only the key, the config and the cold store remain.
    keep = tmp_path / "backup"
    shutil.copytree(station / "keys", keep / "keys")
    shutil.copy(conf, keep / "custody.toml")
    shutil.rmtree(station)
    station.mkdir()
    shutil.copytree(keep / "keys", station / "keys")
    shutil.copy(keep / "custody.toml", conf)
    mirror = cold / "ledger" / "custody.test" / "capture" / "dock-01"
    shutil.copytree(mirror, station / "ledger", ignore=shutil.ignore_patterns("checkpoints"))
    # The first writing command adopts the ledger after checking it against its checkpoint.
    out = run_cli("note", "station restored from backup and the cold store", config=conf).stdout
    assert f"entry {len(old)}" in out, out
    assert run_cli("ledger", "verify", config=conf).returncode == 0
    run_cli("reindex", config=conf)
    found = json.loads(run_cli("find", "--json", config=conf).stdout)
    assert len(found) == 1 and found[0]["store_entry"] is not None


def test_prometheus_metrics_on_localhost(tmp_path: Path) -> None:
    import urllib.request

    from tests.s3server import free_ports

    port = free_ports(1)[0]
    dock = tmp_path / "dock"
    conf = make_station(tmp_path, dock, extra=f'\n[metrics]\nlisten = "127.0.0.1:{port}"\n')
    d = Daemon(conf)
    try:
        d.wait_ready()
        (dock / "slot01").mkdir(parents=True, exist_ok=True)
        (dock / "slot01" / "x.bin").write_bytes(b"metrics")
        wait_for(lambda: any(e["type"] == "ingest" for e in entries(conf)), 20, d.log)

        def scrape() -> dict[str, float]:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                text = r.read().decode()
            return {
                ln.split()[0]: float(ln.split()[1])
                for ln in text.splitlines()
                if ln and not ln.startswith("#")
            }

        wait_for(lambda: scrape().get("custody_captured_files_total", 0) >= 1, 10, d.log)
        m = scrape()
        assert m["custody_ledger_entries"] >= 2 and m["custody_free_bytes"] > 0
        assert m["custody_files_waiting"] == 0 and m["custody_capture_paused"] == 0
        assert 0 <= m["custody_checkpoint_age_seconds"] < 60
    finally:
        assert d.stop() == 0
    # Anything but localhost is refused.
    conf.write_text(conf.read_text().replace(f"127.0.0.1:{port}", "0.0.0.0:9108"))
    bad = run_cli("status", config=conf, check=False)
    assert bad.returncode == 2 and "metrics.listen" in bad.stderr
