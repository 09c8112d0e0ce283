"""Capture through the real daemon: real inotify, real files, media made by ffmpeg."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from ..conftest import make_clip, needs_root, run_cli
from .daemon import Daemon, entries, make_station, status, wait_for


def sha(p: Path | bytes) -> str:
    return hashlib.sha256(p if isinstance(p, bytes) else p.read_bytes()).hexdigest()


def src_path(e: dict[str, Any]) -> str:
    """The entry's source path (names that are not UTF-8 are recorded as path_b64)."""
    import base64

    s = e["source"]
    return str(s["path"]) if "path" in s else os.fsdecode(base64.b64decode(s["path_b64"]))


def by_path(
    es: list[dict[str, Any]], types: tuple[str, ...] = ("ingest", "sighting")
) -> Counter[str]:
    return Counter(src_path(e) for e in es if e["type"] in types)


def store_files(conf: Path) -> list[Path]:
    return [p for p in (conf.parent / "store" / "objects").rglob("*") if p.is_file()]


def test_daemon_captures_docked_recorders(tmp_path: Path, ffmpeg: str, clip: Path) -> None:
    dock = tmp_path / "dock"
    conf = make_station(tmp_path, dock)
    outside = tmp_path / "outside-secret.txt"
    outside.write_text("never capture me")
    d = Daemon(conf, drop_dac=True)
    try:
        d.wait_ready()
        expected: dict[str, str] = {}  # dock-relative path -> sha256

        def put(rel: str, data: bytes) -> None:
            p = dock / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
            expected[rel] = sha(data)

        media = clip.read_bytes()
        other = make_clip(ffmpeg, tmp_path / "other.mp4", seconds=1, tone=880).read_bytes()
        # Three recorders docked at once.
        put("slot01/DCIM/ABC1234_010203_20261125083000_0001.MP4", media)
        put("slot02/DCIM/XYZ7654_020304_20261125090000_0001.MP4", other)
        put("slot03/same clip on a second recorder.mp4", media)
        put("slot02/DCIM/empty.MP4", b"")
        put("slot02/GPS/track 轨迹.nmea", b"$GPGGA,083000.00,2159.0,N,10035.0,E\n")
        put("slot03/执法记录仪 录像.mp4", other[: len(other) // 3])  # truncated
        put("slot03/odd\nname.txt", b"a newline in the name")
        (dock / "slot03" / "link-out").symlink_to(outside)
        # A recorder folder whose name is not UTF-8 (an odd vendor tool): still captured.
        odd = Path(os.fsdecode(bytes(dock) + b"/slot\xff"))
        odd.mkdir()
        (odd / "a.txt").write_bytes(b"from a folder with a non-UTF-8 name")
        expected["slot\udcff/a.txt"] = sha(b"from a folder with a non-UTF-8 name")
        locked = dock / "slot01" / "locked.MP4"
        locked.write_bytes(b"unreadable footage")
        locked.chmod(0)

        # A recorder still writing a file, pausing longer than the settle window while it
        # holds the file open: only the open-for-writing check keeps the dock from taking
        # a partial copy (which would show up as a second entry for this path).
        growing = dock / "slot02" / "DCIM" / "growing.MP4"
        chunks = [os.urandom(64 * 1024) for _ in range(4)]

        def write_slowly() -> None:
            with open(growing, "wb") as f:
                for c in chunks:
                    f.write(c)
                    f.flush()
                    time.sleep(0.8)

        w = threading.Thread(target=write_slowly)
        w.start()
        w.join()
        expected["slot02/DCIM/growing.MP4"] = sha(b"".join(chunks))

        def done() -> bool:
            got = by_path(entries(conf))
            return all(got[k] >= 1 for k in expected)

        wait_for(done, 60, d.log)
        wait_for(lambda: any(e["type"] == "capture_failed" for e in entries(conf)), 30, d.log)
        wait_for(lambda: sum(e["type"] == "probe" for e in entries(conf)) >= 3, 60, d.log)
        time.sleep(2.5)  # longer than the scan interval: a duplicate would show up now
        es = entries(conf)
        got = by_path(es)
        assert all(n == 1 for n in got.values()), got
        assert set(got) == set(expected), set(got) ^ set(expected)
        for e in es:
            if e["type"] in ("ingest", "sighting"):
                assert e["sha256"] == expected[src_path(e)]
        odd_entry = next(
            e for e in es if e["type"] == "ingest" and src_path(e) == "slot\udcff/a.txt"
        )
        assert odd_entry["source"]["recorder"] == "slot\\xff"
        # The same clip on two recorders: stored once, one ingest and one sighting.
        same = [e for e in es if e.get("sha256") == sha(media)]
        media_work = ("probe", "fingerprint", "derive")
        assert sorted(e["type"] for e in same if e["type"] not in media_work) == [
            "ingest",
            "sighting",
        ]
        made = {
            e["sidecar"]["sha256"] for e in es if e["type"] == "fingerprint" and "sidecar" in e
        } | {e["output"]["sha256"] for e in es if e["type"] == "derive" and "output" in e}
        assert {p.name for p in store_files(conf)} == set(expected.values()) | made
        for p in store_files(conf):
            assert sha(p) == p.name
        # Identity from the vendor filename pattern and the site's table.
        first = next(
            e
            for e in es
            if e["type"] in ("ingest", "sighting") and src_path(e).startswith("slot01/DCIM/ABC")
        )
        assert first["recorder"]["serial"] == "ABC1234"
        assert first["recorder"]["officer"] == "010203"
        assert first["recorder"]["unit"] == "530822000000"
        assert first["recorder"]["claimed_start"] == "2026-11-25T08:30:00"
        assert first["media_type"] == "video/mp4"
        assert "dock_received" in first["times"] and "file_mtime" in first["times"]
        # Probe: the good clip has a summary, the truncated one a recorded failure.
        probes = {e["sha256"]: e for e in es if e["type"] == "probe"}
        assert probes[sha(media)]["summary"]["streams"][0]["codec"] == "h264"
        assert "error" in probes[expected["slot03/执法记录仪 录像.mp4"]]
        assert (
            expected["slot02/DCIM/empty.MP4"] not in probes
            or "error" in probes[expected["slot02/DCIM/empty.MP4"]]
        )
        # The symlink was not followed; the unreadable file is recorded as a failure.
        assert sha(outside) not in {p.name for p in store_files(conf)}
        fail = next(e for e in es if e["type"] == "capture_failed")
        assert fail["source"]["path"] == "slot01/locked.MP4"
        assert "Permission denied" in fail["error"]
        assert d.alive()
        st = status(conf)
        assert st["capture"]["daemon"]["pid"] == d.proc.pid
        assert st["capture"]["docks"]["dock"]["slot01"]["queued"]["files"] == 1
        assert st["capture"]["docks"]["dock"]["slot02"]["recorded"]["files"] == 4
        log = d.log.read_text()
        assert "locked.MP4" in log and "odd\\x0aname.txt" in log
        assert "never followed" in log
    finally:
        rc = d.stop()
    assert rc == 0
    assert "OK" in run_cli("ledger", "verify", config=conf).stdout
    assert not list((conf.parent / "store" / "tmp").iterdir())


def test_ingest_once_from_a_card_reader(tmp_path: Path, clip: Path) -> None:
    card = tmp_path / "card"
    (card / "DCIM").mkdir(parents=True)
    shutil.copy(clip, card / "DCIM" / "a.mp4")
    (card / "DCIM" / "notes.txt").write_text("sidecar")
    conf = make_station(tmp_path, tmp_path / "dock")
    p = run_cli("ingest", "--settle-ms", "0", "--json", str(card), config=conf)
    res = json.loads(p.stdout)
    assert res["captured"] == 2 and res["failures"] == 0
    again = json.loads(
        run_cli("ingest", "--settle-ms", "0", "--json", str(card), config=conf).stdout
    )
    assert again["captured"] == 0 and again["sightings"] == 0
    # The same file version again, named on its own: already taken.
    same = run_cli(
        "ingest", "--json", "--settle-ms", "0", str(card / "DCIM" / "a.mp4"), config=conf
    )
    assert json.loads(same.stdout)["captured"] == 0
    # The same content from another card: a sighting, not a second copy.
    shutil.copy(clip, tmp_path / "b.mp4")
    single = json.loads(
        run_cli("ingest", "--json", "--settle-ms", "0", str(tmp_path / "b.mp4"), config=conf).stdout
    )
    assert single["sightings"] == 1 and single["captured"] == 0
    es = entries(conf)
    assert Counter(e["type"] for e in es)["ingest"] == 2
    assert any(e["type"] == "probe" for e in es)
    missing = run_cli("ingest", str(tmp_path / "nope"), config=conf, check=False)
    assert missing.returncode == 2 and "not found" in missing.stderr


def test_release_after_capture(tmp_path: Path, clip: Path) -> None:
    dock = tmp_path / "dock"
    conf = make_station(tmp_path, dock, release="after_capture")
    d = Daemon(conf)
    try:
        d.wait_ready()
        (dock / "slot01").mkdir()
        shutil.copy(clip, dock / "slot01" / "x.mp4")
        (dock / "slot01" / "y.txt").write_text("y")
        wait_for(lambda: sum(e["type"] == "wipe" for e in entries(conf)) == 2, 30, d.log)
        assert not (dock / "slot01" / "x.mp4").exists()
        es = entries(conf)
        ingest = {e["source"]["path"]: e for e in es if e["type"] == "ingest"}
        for e in es:
            if e["type"] == "wipe":
                assert e["sha256"] == ingest[e["source"]["path"]]["sha256"]
        for sha256 in (e["sha256"] for e in ingest.values()):
            assert (
                conf.parent / "store" / "objects" / "sha256" / sha256[:2] / sha256[2:4] / sha256
            ).exists()
    finally:
        assert d.stop() == 0


def test_low_disk_pauses_capture_and_loses_nothing(tmp_path: Path, clip: Path) -> None:
    dock = tmp_path / "dock"
    conf = make_station(tmp_path, dock, min_free_mb=1 << 29)  # more than any disk here
    d = Daemon(conf)
    try:
        d.wait_ready()
        (dock / "slot01").mkdir()
        shutil.copy(clip, dock / "slot01" / "x.mp4")
        wait_for(lambda: b"capture paused" in d.log.read_bytes(), 30, d.log)
        wait_for(lambda: bool((status(conf)["capture"]["daemon"] or {}).get("paused")), 10)
        assert (dock / "slot01" / "x.mp4").exists()
        assert not any(e["type"] == "ingest" for e in entries(conf))
    finally:
        assert d.stop() == 0
    # With the floor lowered, the same file is captured on the next start.
    text = conf.read_text().replace(f"min_free_mb = {1 << 29}", "min_free_mb = 1")
    conf.write_text(text)
    d = Daemon(conf)
    try:
        wait_for(lambda: any(e["type"] == "ingest" for e in entries(conf)), 30, d.log)
    finally:
        assert d.stop() == 0


def test_second_daemon_on_same_data_is_refused(tmp_path: Path) -> None:
    conf = make_station(tmp_path, tmp_path / "dock")
    d = Daemon(conf)
    try:
        d.wait_ready()
        p = run_cli("run", config=conf, check=False)
        assert p.returncode == 2 and "is capturing" in p.stderr
        # It names the process that holds the lock, so the operator can find it.
        assert f"PID {d.proc.pid}" in p.stderr, p.stderr
        # A one-shot import beside the daemon is refused too (one capturer per store).
        card = tmp_path / "card"
        card.mkdir()
        (card / "x.txt").write_text("x")
        p = run_cli("ingest", str(card), config=conf, check=False)
        assert p.returncode == 2 and "put the files on a dock" in p.stderr
    finally:
        assert d.stop() == 0


def test_recorder_mounted_under_the_dock(tmp_path: Path, clip: Path) -> None:
    """A recorder shows up as a mount with its files already on it: inotify sends
    nothing, so the daemon must notice the mount table change (the periodic scan is
    set far away here). Unplugging it mid-run is normal."""
    import subprocess

    needs_root("mounts a tmpfs as the recorder")

    dock = tmp_path / "dock"
    conf = make_station(tmp_path, dock, scan_s=3600)
    staging = tmp_path / "usb"
    staging.mkdir()
    slot = dock / "slot05"
    slot.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(staging)], check=True)
    mounted = [staging]
    d = Daemon(conf)
    try:
        d.wait_ready()
        (staging / "DCIM").mkdir()
        shutil.copy(clip, staging / "DCIM" / "on-the-recorder.mp4")
        (staging / "DCIM" / "sidecar.gps").write_text("$GPRMC")
        subprocess.run(["mount", "--move", str(staging), str(slot)], check=True)
        mounted = [slot]
        wait_for(
            lambda: (
                {"slot05/DCIM/on-the-recorder.mp4", "slot05/DCIM/sidecar.gps"}
                <= set(by_path(entries(conf)))
            ),
            30,
            d.log,
        )
        # Files the recorder writes while docked arrive through the new watches.
        (slot / "DCIM" / "later.txt").write_text("written while docked")
        wait_for(lambda: "slot05/DCIM/later.txt" in by_path(entries(conf)), 30, d.log)
        subprocess.run(["umount", str(slot)], check=True)
        mounted = []
        time.sleep(2)
        assert d.alive()
        assert b"mount table changed" in d.log.read_bytes()
    finally:
        for m in mounted:
            subprocess.run(["umount", str(m)], check=False)
        assert d.stop() == 0


def test_disk_full_mid_copy_pauses_and_recovers(tmp_path: Path) -> None:
    """The store's disk fills up during copies (a real, tiny tmpfs): capture pauses with
    one clear line, keeps no partial copy, loses nothing, and resumes when space returns."""
    import subprocess

    needs_root("mounts a 6 MiB tmpfs as the store")

    dock = tmp_path / "dock"
    conf = make_station(tmp_path, dock, min_free_mb=0)
    store = conf.parent / "store"
    store.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(store)], check=True)
    try:
        d = Daemon(conf)
        try:
            d.wait_ready()
            data = {f"slot0{i}/REC_{i}.MP4": os.urandom(4 << 20) for i in range(1, 4)}
            for rel, b in data.items():
                (dock / rel).parent.mkdir(parents=True, exist_ok=True)
                (dock / rel).write_bytes(b)
            wait_for(lambda: b"capture paused" in d.log.read_bytes(), 30, d.log)
            time.sleep(1)
            assert d.alive()
            es = entries(conf)
            recorded = {e["source"]["path"] for e in es if e["type"] == "ingest"}
            assert len(recorded) < 3
            for rel, b in data.items():
                assert (dock / rel).read_bytes() == b  # nothing touched on the recorder
            for p in (store / "objects").rglob("*"):
                if p.is_file():
                    assert sha(p) == p.name  # no partial object under a hash name
            # Space returns: capture resumes on its own.
            subprocess.run(["mount", "-o", "remount,size=64m", str(store)], check=True)
            wait_for(
                lambda: (
                    {e["source"]["path"] for e in entries(conf) if e["type"] == "ingest"}
                    == set(data)
                ),
                30,
                d.log,
            )
            assert b"capture resumed" in d.log.read_bytes()
            assert not list((store / "tmp").iterdir())
        finally:
            assert d.stop() == 0
    finally:
        subprocess.run(["umount", str(store)], check=False)


def test_file_deleted_mid_copy_is_not_recorded(tmp_path: Path) -> None:
    dock = tmp_path / "dock"
    conf = make_station(tmp_path, dock)
    tmp = conf.parent / "store" / "tmp"
    d = Daemon(conf)
    try:
        d.wait_ready()
        big = dock / "slot01" / "REC_big.MP4"
        big.parent.mkdir(parents=True)
        with open(big, "wb") as f:
            for _ in range(48):
                f.write(os.urandom(4 << 20))  # 192 MiB: long enough to catch mid-copy

        def copying() -> bool:
            try:
                return any(p.stat().st_size > (8 << 20) for p in tmp.iterdir())
            except OSError:
                return False

        end = time.monotonic() + 30
        while not copying() and time.monotonic() < end:
            time.sleep(0.001)
        big.unlink()  # the recorder is emptied (or pulled) while the dock reads it
        wait_for(lambda: b"removed while it was being read" in d.log.read_bytes(), 30, d.log)
        (dock / "slot01" / "after.txt").write_text("the daemon carries on")
        wait_for(lambda: "slot01/after.txt" in by_path(entries(conf)), 30, d.log)
        es = entries(conf)
        assert "slot01/REC_big.MP4" not in by_path(es)
        assert not any(e["type"] == "capture_failed" for e in es)
        assert not list(tmp.iterdir())
        assert len(store_files(conf)) == 1  # only after.txt
    finally:
        assert d.stop() == 0


def test_ingest_takes_exact_names_and_gives_up_on_files_being_written(tmp_path: Path) -> None:
    conf = make_station(tmp_path, tmp_path / "dock")
    card = tmp_path / "card"
    card.mkdir()
    (card / "[1].txt").write_text("bracket")
    (card / "1.txt").write_text("one")
    (card / "a*.txt").write_text("star")
    (card / "abc.txt").write_text("abc")
    res = json.loads(
        run_cli(
            "ingest",
            "--json",
            "--settle-ms",
            "0",
            str(card / "[1].txt"),
            str(card / "a*.txt"),
            config=conf,
        ).stdout
    )
    assert res["captured"] == 2
    got = set(by_path(entries(conf)))
    assert got == {"[1].txt", "a*.txt"}
    # A file some process still has open for writing is not taken; ingest says so.
    busy = card / "busy.MP4"
    with open(busy, "wb") as f:
        f.write(b"recording...")
        f.flush()
        p = run_cli(
            "ingest", "--settle-ms", "0", "--wait-s", "2", str(busy), config=conf, check=False
        )
    assert p.returncode == 2
    assert "not taken" in p.stdout and "busy.MP4" in p.stdout
