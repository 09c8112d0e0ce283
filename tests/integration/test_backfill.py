"""Originals fingerprinted before custody-packets/v2 get a v2 fingerprint from the daemon's
background backfill: a second `fingerprint` entry marked ``backfill`` (the v1 entry
stands), at idle priority, after every new capture's media steps, exactly once across a
SIGKILL and a restart."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ingest.fingerprint import FORMAT, FORMAT_V1, format_sidecar, read_packets

from ..conftest import REPO, make_clip, run_cli
from .daemon import Daemon, entries, make_station, status, wait_for

OLD = 5  # originals captured by the release before v2


def audio_only(ffmpeg: str, out: Path, seconds: int = 2) -> Path:
    subprocess.run(
        [
            ffmpeg,
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency=700:duration={seconds}",
            "-c:a",
            "aac",
            str(out),
        ],
        check=True,
        timeout=60,
    )
    return out


def stored(conf: Path, sha: str) -> Path:
    return conf.parent / "store" / "objects" / "sha256" / sha[:2] / sha[2:4] / sha


def v2_rows(conf: Path) -> int:
    db = sqlite3.connect(f"file:{conf.parent / 'state' / 'ledger.sqlite'}?mode=ro", uri=True)
    try:
        return int(db.execute("SELECT COUNT(*) FROM ingest_packets_v2").fetchone()[0])
    except sqlite3.OperationalError:  # the daemon has not made the table yet
        return 0
    finally:
        db.close()


def packets(es: list[dict[str, Any]], sha: str) -> list[tuple[int, dict[str, Any]]]:
    return [
        (i, e)
        for i, e in enumerate(es)
        if e["type"] == "fingerprint" and e["sha256"] == sha and e["kind"] == "packets"
    ]


def steps_of(es: list[dict[str, Any]], sha: str) -> list[int]:
    """The media steps of a new capture: probe, packet fingerprint, access copy, poster."""
    return [
        i
        for i, e in enumerate(es)
        if e["type"] in ("probe", "fingerprint", "derive") and e["sha256"] == sha
    ]


def test_backfill_gives_old_originals_a_v2_fingerprint_once(tmp_path: Path, ffmpeg: str) -> None:
    dock = tmp_path / "dock"
    conf = make_station(tmp_path, dock, settle_ms=50)
    slot = dock / "slot01"
    for n in range(OLD - 1):
        make_clip(ffmpeg, slot / f"old{n}.mp4", seconds=2 + n, tone=300 + 100 * n)
    audio_only(ffmpeg, slot / "old_audio.m4a")
    old = {hashlib.sha256(p.read_bytes()).hexdigest() for p in slot.iterdir()}

    # The station as the release before v2 left it: v1 fingerprints only.
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("CUSTODY_CONFIG", None)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.integration.v1station",
            "-c",
            str(conf),
            "ingest",
            str(dock),
            "--settle-ms",
            "0",
        ],
        check=True,
        env=env,
        capture_output=True,
        timeout=120,
    )
    es = entries(conf)
    v1 = {}
    for sha in old:
        (only,) = packets(es, sha)
        assert only[1]["format"] == FORMAT_V1
        v1[sha] = only
    assert status(conf)["media"]["awaiting_v2"] == OLD
    assert f"{OLD} awaiting a v2 packet fingerprint" in run_cli("status", config=conf).stdout

    # The upgraded daemon starts the backfill; killed once the first one is recorded.
    d = Daemon(conf)
    try:
        end = time.monotonic() + 60
        while v2_rows(conf) < 1 and time.monotonic() < end:
            time.sleep(0.002)  # an object takes some 50 ms here: look often
    finally:
        d.kill()
    killed_at = v2_rows(conf)
    assert 1 <= killed_at < OLD, "the kill came after the whole backfill: nothing tested"

    # A recording docked meanwhile: its media steps go ahead of the backfill.
    make_clip(ffmpeg, slot / "new.mp4", seconds=2, tone=1000)
    new = hashlib.sha256((slot / "new.mp4").read_bytes()).hexdigest()
    d = Daemon(conf)
    try:
        wait_for(lambda: b"backfill finished" in d.log.read_bytes()[d.log_start :], 60, d.log)
        wait_for(lambda: len(steps_of(entries(conf), new)) == 4, 30, d.log)
    finally:
        assert d.stop() == 0
    log = d.log.read_text()
    assert "nice 19, I/O idle" in log, "the backfill thread did not run at idle priority"

    es = entries(conf)
    for sha in old:
        fps = packets(es, sha)
        assert fps[0] == v1[sha], "the v1 entry stands, first"
        assert len(fps) == 2, f"{sha[:16]}: {len(fps)} packet fingerprint entries"
        _, e = fps[1]
        assert e["format"] == FORMAT and e["backfill"] is True
        side = stored(conf, e["sidecar"]["sha256"]).read_bytes()
        assert side == format_sidecar(read_packets(stored(conf, sha), 2))
        assert len(side) == e["sidecar"]["size"] and e["complete"] is True
    (nf,) = packets(es, new)
    assert nf[1]["format"] == FORMAT and "backfill" not in nf[1]

    # New capture first: at most the one backfill already under way lands between the
    # new recording's capture and its last media step.
    first = next(i for i, e in enumerate(es) if e["type"] == "ingest" and e["sha256"] == new)
    last = max(steps_of(es, new))
    between = [i for i, e in enumerate(es) if first < i < last and e.get("backfill")]
    assert len(between) <= 1, (first, last, between)

    assert not list((conf.parent / "store" / "tmp").iterdir()), "a half-made sidecar was left"
    st = status(conf)["media"]
    assert st["awaiting_v2"] == 0 and st["fingerprinted"] == OLD + 1
    assert "awaiting a v2" not in run_cli("status", config=conf).stdout
    run_cli("verify", str(conf.parent / "ledger"), config=conf)
    run_cli("audit", "--full", config=conf)
    # An export carries both sidecars of a backfilled original, and verifies offline.
    bag = tmp_path / "bag"
    some = sorted(old)[0]
    run_cli("export", "--out", str(bag), "--purpose", "court", some, config=conf)
    sides = {e["sidecar"]["sha256"] for _, e in packets(es, some)}
    assert {p.name.split(".")[0] for p in (bag / "custody" / "sidecars").iterdir()} >= sides
    run_cli("verify", str(bag), config=conf)
