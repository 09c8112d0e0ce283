"""What a dock must never do: follow a symlink out of a recorder's folder, delete a
file still being written, or leave a file uncaptured without saying so."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ..conftest import REPO, run_cli
from .daemon import Daemon, entries, make_station, wait_for
from .test_capture import by_path, sha, src_path, store_files


def daemon_json(conf: Path) -> dict[str, Any]:
    """The running daemon's status file (the contract `custody status` reads)."""
    try:
        doc: dict[str, Any] = json.loads((conf.parent / "state" / "daemon.json").read_text())
    except (OSError, ValueError):
        return {}
    return doc


def recorder_with_links(src: Path, secret: Path) -> None:
    """A recorder folder as `cp -a` of a vendor tool's export would bring it: real files,
    a symlink to a folder deep down and a symlink to a file."""
    media = src / "DCIM" / "100MEDIA"
    (media / "deep").mkdir(parents=True)
    (media / "REC_0001.txt").write_text(f"real footage {uuid.uuid4()}")
    (media / "deep" / "outside").symlink_to(secret, target_is_directory=True)
    (src / "key-link").symlink_to(secret / "station.key")


def make_secret(tmp: Path) -> tuple[Path, set[str]]:
    secret = tmp / "private"
    secret.mkdir()
    (secret / "sentinel.txt").write_text(f"SENTINEL {uuid.uuid4()}")
    (secret / "station.key").write_text(f"PRIVATE KEY {uuid.uuid4()}")
    return secret, {sha(p) for p in secret.iterdir()}


def captured_shas(conf: Path) -> set[str]:
    got = {str(e["sha256"]) for e in entries(conf) if e["type"] in ("ingest", "sighting")}
    return got | {p.name for p in store_files(conf)}


def test_symlinked_folders_are_never_followed(tmp_path: Path) -> None:
    """Events (the scan far away), the scan at start and periodically, and `custody
    ingest`: none of them enters a symlinked folder at any depth or reads a symlink."""
    secret, secret_shas = make_secret(tmp_path)
    src = tmp_path / "export" / "slot07"
    recorder_with_links(src, secret)
    real = "slot07/DCIM/100MEDIA/REC_0001.txt"

    # 1. inotify alone: the periodic scan is an hour away and the dock is empty at start,
    # so only events can bring the new recorder folder in.
    dock = tmp_path / "dock"
    conf = make_station(tmp_path, dock, scan_s=3600)
    d = Daemon(conf)
    try:
        d.wait_ready()
        subprocess.run(["cp", "-a", str(src), str(dock)], check=True)
        wait_for(lambda: real in by_path(entries(conf)), 30, d.log)
        time.sleep(1.5)  # events for the linked folder's files would have been handled
        assert not captured_shas(conf) & secret_shas

        def both_refusals_listed() -> bool:
            # The status file is rewritten every 2 s: the refusals appear in the next one.
            problems = daemon_json(conf).get("problems", [])
            return any("deep/outside" in p and "symlink" in p for p in problems) and any(
                "key-link" in p for p in problems
            )

        wait_for(both_refusals_listed, 10, d.log)
    finally:
        assert d.stop() == 0
    assert set(by_path(entries(conf))) == {real}
    assert "OK" in run_cli("ledger", "verify", config=conf).stdout

    # 2. The scans: a second recorder docked while the daemon is down (the scan at start),
    # then scans every second; each refused symlink is one log line, however many scans.
    shutil.copytree(src, dock / "slot08", symlinks=True)
    conf.write_text(conf.read_text().replace("scan_interval_s = 3600", "scan_interval_s = 1"))
    d = Daemon(conf)
    try:
        wait_for(lambda: "slot08/DCIM/100MEDIA/REC_0001.txt" in by_path(entries(conf)), 30, d.log)
        time.sleep(3.5)  # three periodic scans
        assert not captured_shas(conf) & secret_shas
        log = d.log.read_bytes()[d.log_start :].decode()
        assert log.count("slot08/DCIM/100MEDIA/deep/outside: a symlink") == 1, log[-3000:]
        assert daemon_json(conf)["problems_total"] >= 4  # two links in each recorder
    finally:
        assert d.stop() == 0

    # 3. `custody ingest` of a card holding the same tree.
    card = tmp_path / "card"
    subprocess.run(["cp", "-a", str(src), str(card)], check=True)
    (card / "DCIM" / "100MEDIA" / "REC_0002.txt").write_text("second file")
    p = run_cli("ingest", "--settle-ms", "0", "--json", str(card), config=conf, check=False)
    assert p.returncode == 2, p.stderr  # not all of the card was taken: a person looks
    res = json.loads(p.stdout)
    assert res["captured"] == 1, res
    assert any("deep/outside" in p for p in res["problems"]), res
    assert not captured_shas(conf) & secret_shas
    assert "OK" in run_cli("ledger", "verify", config=conf).stdout


@contextlib.contextmanager
def system_user() -> Iterator[str]:
    """A system user of its own for the daemon, as the unit's `custody` user is."""
    name = f"custody-t{uuid.uuid4().hex[:8]}"
    subprocess.run(
        ["useradd", "--system", "--user-group", "--no-create-home", "--shell", "/bin/false", name],
        check=True,
    )
    try:
        yield name
    finally:
        subprocess.run(["userdel", name], check=False)


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """A folder other users can reach (pytest's own is private to root)."""
    base = Path(tempfile.mkdtemp(prefix="custody-unpriv-"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def test_paused_writer_is_not_released_by_an_unprivileged_daemon(open_tmp: Path) -> None:
    """The daemon runs as its own unprivileged user and cannot see the writer in /proc;
    the writer writes 100 KB, pauses longer than the settle window (and the release
    settle), then writes the rest. The source must stay until the whole file is captured,
    and what is captured and released is the full 800 KB."""
    if os.geteuid() != 0:
        pytest.skip("needs root: it creates a system user and runs the daemon as it")
    dock = open_tmp / "dock"
    conf = make_station(open_tmp, dock, settle_ms=300, release="after_capture")
    (dock / "slot01").mkdir()
    with system_user() as user:
        subprocess.run(["chown", "-R", f"{user}:{user}", str(conf.parent), str(dock)], check=True)
        d = Daemon(conf, user=user)
        try:
            d.wait_ready()
            time.sleep(1)  # the recorder folder's watch is in place
            rec = dock / "slot01" / "REC_0001.MP4"
            head, tail = os.urandom(100 * 1024), os.urandom(700 * 1024)
            with open(rec, "wb") as f:
                f.write(head)
                f.flush()
                time.sleep(4)  # longer than settle (0.3 s) and release settle (2.3 s)
                # Still here: nothing took it while it was being written.
                assert os.stat(rec).st_nlink == 1
                f.write(tail)
            full = sha(head + tail)
            wait_for(lambda: any(e["type"] == "wipe" for e in entries(conf)), 30, d.log)
            assert not rec.exists()
        finally:
            assert d.stop() == 0
    es = entries(conf)
    wipes = [e for e in es if e["type"] == "wipe"]
    assert [w["sha256"] for w in wipes] == [full], "released a copy that is not the whole file"
    taken = [e for e in es if e["type"] == "ingest" and src_path(e) == "slot01/REC_0001.MP4"]
    assert taken[-1]["sha256"] == full and taken[-1]["size"] == 800 * 1024
    obj = conf.parent / "store" / "objects" / "sha256" / full[:2] / full[2:4] / full
    assert obj.stat().st_size == 800 * 1024 and sha(obj) == full


def test_late_dock_root_and_folder_readable_later_are_captured(tmp_path: Path) -> None:
    """A dock root made after the daemon started and a folder it could not read at first
    are captured by the periodic scan; what it could not read is in the status meanwhile."""
    dock = tmp_path / "dock"
    conf = make_station(tmp_path, dock, scan_s=1)
    dock.rmdir()  # the dock root is not there yet when the daemon starts
    d = Daemon(conf, drop_dac=True)
    try:
        d.wait_ready()
        wait_for(
            lambda: any("does not exist" in p for p in daemon_json(conf).get("problems", [])),
            10,
            d.log,
        )
        slot = dock / "slot01" / "DCIM"
        slot.mkdir(parents=True)
        (slot / "late.txt").write_text("docked after start")
        wait_for(lambda: "slot01/DCIM/late.txt" in by_path(entries(conf)), 30, d.log)

        # A recorder whose folder the daemon's user cannot read, docked in one move.
        staging = tmp_path / "staging" / "slot02"
        (staging / "DCIM").mkdir(parents=True)
        (staging / "DCIM" / "h.txt").write_text("hidden at first")
        (staging / "DCIM").chmod(0)
        staging.rename(dock / "slot02")
        locked = dock / "slot02" / "DCIM"

        def listed() -> bool:
            return any("slot02/DCIM" in p for p in daemon_json(conf).get("problems", []))

        wait_for(listed, 15, d.log)
        assert "slot02/DCIM/h.txt" not in by_path(entries(conf))
        locked.chmod(0o755)  # no event for the file inside: only the scan can find it
        wait_for(lambda: "slot02/DCIM/h.txt" in by_path(entries(conf)), 30, d.log)
        wait_for(lambda: not listed(), 10, d.log)  # the problem is over: gone from status
        log = d.log.read_bytes()[d.log_start :].decode()
        assert log.count("slot02/DCIM: cannot open") == 1, log[-3000:]
    finally:
        assert d.stop() == 0


def test_file_changed_after_capture_is_captured_again_not_released(tmp_path: Path) -> None:
    """The recorder appends to a file after it was captured (within the release settle):
    the captured version is never released; the new one is captured, names the earlier
    one, and is the one released."""
    dock = tmp_path / "dock"
    conf = make_station(tmp_path, dock, settle_ms=300, release="after_capture")
    (dock / "slot01").mkdir()
    d = Daemon(conf)
    try:
        d.wait_ready()
        rec = dock / "slot01" / "REC_0002.MP4"
        first, more = os.urandom(50_000), os.urandom(30_000)
        rec.write_bytes(first)
        wait_for(lambda: "slot01/REC_0002.MP4" in by_path(entries(conf)), 30, d.log)
        with open(rec, "ab") as f:
            f.write(more)
        wait_for(lambda: any(e["type"] == "wipe" for e in entries(conf)), 30, d.log)
        time.sleep(3)  # longer than the release settle: a second wipe would show now
    finally:
        assert d.stop() == 0
    es = entries(conf)
    ingests = [(i, e) for i, e in enumerate(es) if e["type"] == "ingest"]
    assert [e["sha256"] for _, e in ingests] == [sha(first), sha(first + more)]
    assert ingests[1][1]["earlier_version_entry"] == ingests[0][0]
    assert [e["sha256"] for e in es if e["type"] == "wipe"] == [sha(first + more)]
    assert not rec.exists()


def make_deep(root: Path, levels: int, name: str = "d" * 200) -> list[bytes]:
    """Folders nested past the kernel's path limit (made by descriptor, as a recorder's
    own file system could hold them), with a file at every level; their relative paths."""
    made: list[bytes] = []
    rel = b""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for i in range(levels):
            f = os.open(f"f{i}.txt", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
            os.write(f, f"level {i}".encode())
            os.close(f)
            made.append(rel + f"f{i}.txt".encode())
            os.mkdir(name, dir_fd=fd)
            nxt = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nxt
            rel += name.encode() + b"/"
    finally:
        os.close(fd)
    return made


def test_paths_over_the_kernel_limit_are_reported_not_skipped(tmp_path: Path) -> None:
    card = tmp_path / "card"
    (card / "DCIM").mkdir(parents=True)
    made = make_deep(card / "DCIM", 25)
    conf = make_station(tmp_path, tmp_path / "dock")
    p = run_cli("ingest", "--settle-ms", "0", "--json", str(card), config=conf, check=False)
    assert p.returncode == 2, p.stderr
    res = json.loads(p.stdout)
    fits = [r for r in made if len(os.fsencode(card / "DCIM") + b"/" + r) < 4096]
    assert 0 < len(fits) < len(made)
    assert res["captured"] == len(fits), res
    too_long = [x for x in res["problems"] if "longer than the kernel's limit" in x]
    # The first level too deep (its file and its folder), said once; nothing below it.
    assert 1 <= len(too_long) <= 2, res["problems"]


def test_ingest_never_follows_a_symlinked_folder_in_its_arguments(tmp_path: Path) -> None:
    """`custody ingest tree/slot03/shadow` where slot03 is a symlink to a private folder
    is refused in one line (exit 2) with nothing captured, as is a symlink as the last
    component; the real folder, named as itself, is taken."""
    secret, secret_shas = make_secret(tmp_path)
    (secret / "shadow").write_text(f"root:$6$secret {uuid.uuid4()}")
    secret_shas.add(sha(secret / "shadow"))
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "slot03").symlink_to(secret, target_is_directory=True)
    (tree / "real").mkdir()
    (tree / "real" / "REC_0001.txt").write_text(f"footage {uuid.uuid4()}")
    (tree / "real" / "up").symlink_to(tmp_path, target_is_directory=True)
    conf = make_station(tmp_path, tmp_path / "dock")
    before = len(entries(conf))
    for arg in (
        tree / "slot03" / "shadow",
        tree / "slot03",
        tree / "slot03" / ".." / "real",
        tree / "real" / "up" / "private" / "sentinel.txt",
    ):
        p = run_cli("ingest", "--settle-ms", "0", str(arg), config=conf, check=False)
        assert p.returncode == 2, (arg, p.stdout, p.stderr)
        lines = p.stderr.strip().splitlines()
        assert lines and "symlink" in lines[0] and "Traceback" not in p.stderr, p.stderr
        assert len(entries(conf)) == before, arg
    # Several arguments, one refused: none is taken.
    p = run_cli(
        "ingest",
        "--settle-ms",
        "0",
        str(tree / "real"),
        str(tree / "slot03"),
        config=conf,
        check=False,
    )
    assert p.returncode == 2 and len(entries(conf)) == before, p.stderr
    assert not captured_shas(conf) & secret_shas
    # Relative to the working folder and through "..", with no symlink on the way: taken.
    cmd = [sys.executable, "-m", "custody", "-c", str(conf), "ingest", "--json"]
    ok = subprocess.run(
        [*cmd, "--settle-ms", "0", "tree/real/../real"],
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert json.loads(ok.stdout)["captured"] == 1, ok.stdout + ok.stderr
    assert not captured_shas(conf) & secret_shas


def test_ingest_never_takes_the_stations_own_data_folder_or_key(tmp_path: Path) -> None:
    """An argument that is, holds or lies within the station's data folder (its store and
    key) is refused as a dock there is refused in the configuration; a single file named
    like the key takes that file only, not the key of the same name deeper down."""
    conf = make_station(tmp_path, tmp_path / "dock")
    data = conf.parent
    key = data / "keys" / "station.key"
    key_sha = sha(key)
    before = len(entries(conf))
    for arg in (data, data / "keys", key, tmp_path, data / "ledger"):
        p = run_cli("ingest", "--settle-ms", "0", str(arg), config=conf, check=False)
        assert p.returncode == 2, (arg, p.stdout, p.stderr)
        assert "data folder" in p.stderr and "Traceback" not in p.stderr, p.stderr
        assert len(p.stderr.strip().splitlines()) <= 2, p.stderr
        assert len(entries(conf)) == before, arg
    decoy = tmp_path / "station.key"
    decoy.write_text("an officer's file that happens to share the key's name")
    res = json.loads(
        run_cli("ingest", "--settle-ms", "0", "--json", str(decoy), config=conf).stdout
    )
    assert res["captured"] == 1, res
    assert key_sha not in captured_shas(conf)
    assert sha(decoy) in captured_shas(conf)


def job_states(conf: Path) -> dict[str, list[str]]:
    """The capture jobs' states by path below the dock (from the job table)."""
    db = sqlite3.connect(f"file:{conf.parent / 'state' / 'ledger.sqlite'}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT path, state FROM ingest_files ORDER BY id").fetchall()
    finally:
        db.close()
    out: dict[str, list[str]] = {}
    for p, s in rows:
        out.setdefault(os.fsdecode(bytes(p)).split("/dock/", 1)[-1], []).append(s)
    return out


def wipes(conf: Path) -> list[dict[str, Any]]:
    return [e for e in entries(conf) if e["type"] == "wipe"]


def test_recorder_unplugged_before_release_is_released_when_docked_again(tmp_path: Path) -> None:
    """A recorder's folder disappears between capture and release (renamed away; as root
    also a recorder mount moved away, leaving the empty mount point on the dock's own
    device): no `wipe` is signed and the job stays recorded; docked again, the file is
    released properly (a real unlink, not "already absent")."""
    dock = tmp_path / "dock"
    # settle 1 s: the release settle is 4 s, time enough to unplug after the capture.
    conf = make_station(tmp_path, dock, settle_ms=1000, release="after_capture")
    (dock / "slot01" / "DCIM").mkdir(parents=True)
    away = tmp_path / "away"
    away.mkdir()
    usb = tmp_path / "usb"
    usb.mkdir()
    as_root = os.geteuid() == 0
    mounted: list[Path] = []
    d = Daemon(conf)
    try:
        if as_root:
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(usb)], check=True
            )
            mounted = [usb]
            (usb / "REC_0002.MP4").write_bytes(os.urandom(40_000))  # at the recorder's root
            (dock / "slot02").mkdir()
        d.wait_ready()
        time.sleep(1)
        rec = dock / "slot01" / "DCIM" / "REC_0001.MP4"
        rec.write_bytes(os.urandom(50_000))
        if as_root:
            subprocess.run(["mount", "--move", str(usb), str(dock / "slot02")], check=True)
            mounted = [dock / "slot02"]
        want = {"slot01/DCIM/REC_0001.MP4"} | ({"slot02/REC_0002.MP4"} if as_root else set())
        wait_for(lambda: want <= set(by_path(entries(conf))), 30, d.log)
        (dock / "slot01").rename(away / "slot01")  # unplugged before the release
        if as_root:
            subprocess.run(["mount", "--move", str(dock / "slot02"), str(usb)], check=True)
            mounted = [usb]
            assert (dock / "slot02").is_dir()  # the mount point stays behind, empty
        # The releases come due (the release settle after each capture) and find every
        # recorder gone: each one's problem says so, where a wipe would have been signed.
        # Waiting for that, not a fixed 7 s: the next try is 8 s further on.
        slots = {w.split("/")[0] for w in want}

        def all_gone() -> bool:
            problems = daemon_json(conf).get("problems", [])
            return all(any(s in p and "gone" in p for p in problems) for s in slots)

        wait_for(all_gone, 30, d.log)
        assert wipes(conf) == [], "a wipe was signed for a recorder that was unplugged"
        states = job_states(conf)
        assert states["slot01/DCIM/REC_0001.MP4"][-1] == "recorded", states

        (away / "slot01").rename(dock / "slot01")  # docked again
        if as_root:
            subprocess.run(["mount", "--move", str(usb), str(dock / "slot02")], check=True)
            mounted = [dock / "slot02"]
        wait_for(lambda: len(wipes(conf)) == len(want), 60, d.log)
        assert not rec.exists()
        if as_root:
            assert not (dock / "slot02" / "REC_0002.MP4").exists()
    finally:
        for m in mounted:
            subprocess.run(["umount", str(m)], check=False)
        assert d.stop() == 0
    for w in wipes(conf):
        assert "source_already_absent" not in w and "release_interrupted" not in w, w
    assert {src_path(w) for w in wipes(conf)} == want
    assert [e["type"] for e in entries(conf)].count("ingest") == len(want)


def test_a_name_the_recorder_reuses_after_release_is_captured(tmp_path: Path) -> None:
    """After FILE0001.MP4 was captured and released, the recorder writes a new
    FILE0001.MP4 of the same size with the same mtime: it is captured, not skipped as
    the version already taken."""
    dock = tmp_path / "dock"
    conf = make_station(tmp_path, dock, settle_ms=300, release="after_capture")
    (dock / "slot01").mkdir()
    staging = tmp_path / "staging"
    staging.mkdir()
    mtime_ns = 1_732_000_000_123_456_789

    def record(data: bytes) -> None:
        f = staging / "FILE0001.MP4"
        f.write_bytes(data)
        os.utime(f, ns=(mtime_ns, mtime_ns))
        f.rename(dock / "slot01" / "FILE0001.MP4")

    first, second = os.urandom(30_000), os.urandom(30_000)
    d = Daemon(conf)
    try:
        d.wait_ready()
        record(first)
        wait_for(lambda: len(wipes(conf)) == 1, 30, d.log)
        record(second)
        wait_for(lambda: len(wipes(conf)) == 2, 30, d.log)
    finally:
        assert d.stop() == 0
    ingests = [e["sha256"] for e in entries(conf) if e["type"] == "ingest"]
    assert ingests == [sha(first), sha(second)]
    assert [w["sha256"] for w in wipes(conf)] == [sha(first), sha(second)]


def test_a_release_error_is_in_the_status_and_retried(tmp_path: Path) -> None:
    """The recorder's folder refuses the unlink (EACCES): the status says so, the job is
    recorded again (not left `releasing`), and once the folder allows it the release is
    tried again by itself, without a restart, and signed as a real release."""
    dock = tmp_path / "dock"
    conf = make_station(tmp_path, dock, settle_ms=300, release="after_capture")
    folder = dock / "slot01" / "DCIM"
    folder.mkdir(parents=True)
    d = Daemon(conf, drop_dac=True)
    try:
        d.wait_ready()
        time.sleep(1)
        rec = folder / "REC_0003.MP4"
        rec.write_bytes(os.urandom(20_000))
        wait_for(lambda: "slot01/DCIM/REC_0003.MP4" in by_path(entries(conf)), 30, d.log)
        folder.chmod(0o555)  # the unlink is refused

        def said() -> bool:
            return any(
                "cannot release" in p and "REC_0003" in p
                for p in daemon_json(conf).get("problems", [])
            )

        wait_for(said, 30, d.log)
        assert job_states(conf)["slot01/DCIM/REC_0003.MP4"] == ["recorded"]
        assert wipes(conf) == []
        folder.chmod(0o755)
        wait_for(lambda: len(wipes(conf)) == 1, 60, d.log)
        assert not rec.exists()
        wait_for(lambda: not said(), 10, d.log)  # over: gone from the status
    finally:
        folder.chmod(0o755)
        assert d.stop() == 0
    (w,) = wipes(conf)
    assert "release_interrupted" not in w and "source_already_absent" not in w, w


def test_a_restart_does_not_forget_a_paused_writer(open_tmp: Path) -> None:
    """A writer holds a file open and pauses; the daemon (its own unprivileged user: no
    lease on another user's file, nothing in /proc) is restarted meanwhile, so its
    in-memory marks are gone. The file must not be released while the writer holds it;
    once the writer finishes, the whole file is captured and released."""
    if os.geteuid() != 0:
        pytest.skip("needs root: it creates a system user and runs the daemon as it")
    dock = open_tmp / "dock"
    conf = make_station(open_tmp, dock, settle_ms=300, release="after_capture")
    (dock / "slot01").mkdir()
    rec = dock / "slot01" / "REC_0004.MP4"
    head, tail = os.urandom(100 * 1024), os.urandom(300 * 1024)
    with system_user() as user:
        subprocess.run(["chown", "-R", f"{user}:{user}", str(conf.parent), str(dock)], check=True)
        d = Daemon(conf, user=user)
        try:
            d.wait_ready()
            time.sleep(1)
            with open(rec, "wb") as f:
                f.write(head)
                f.flush()
                time.sleep(1)
                assert d.stop() == 0  # restarted while the writer pauses
                d = Daemon(conf, user=user)
                d.wait_ready()
                time.sleep(6)  # longer than the settle (0.3 s) and release settle (2.3 s)
                assert os.stat(rec).st_nlink == 1, "released while a writer held it open"
                f.write(tail)
            full = sha(head + tail)
            wait_for(lambda: any(w["sha256"] == full for w in wipes(conf)), 60, d.log)
            assert not rec.exists()
        finally:
            assert d.stop() == 0
    assert [w["sha256"] for w in wipes(conf)] == [full]


def test_a_writer_that_pauses_before_its_first_write_is_not_released(open_tmp: Path) -> None:
    """A recorder creates its file and pauses before writing anything (the daemon runs
    as its own unprivileged user and cannot take a lease on it): the empty file is not
    released from under the writer; what is finally released is the whole file."""
    if os.geteuid() != 0:
        pytest.skip("needs root: it creates a system user and runs the daemon as it")
    dock = open_tmp / "dock"
    conf = make_station(open_tmp, dock, settle_ms=300, release="after_capture")
    (dock / "slot01").mkdir()
    with system_user() as user:
        subprocess.run(["chown", "-R", f"{user}:{user}", str(conf.parent), str(dock)], check=True)
        d = Daemon(conf, user=user)
        try:
            d.wait_ready()
            time.sleep(1)
            rec = dock / "slot01" / "REC_0005.MP4"
            body = os.urandom(200 * 1024)
            with open(rec, "wb") as f:
                time.sleep(5)  # longer than the settle and the release settle
                assert os.stat(rec).st_nlink == 1, "released while its creator held it open"
                f.write(body)
            wait_for(lambda: any(w["sha256"] == sha(body) for w in wipes(conf)), 30, d.log)
        finally:
            assert d.stop() == 0
    assert [w["sha256"] for w in wipes(conf)] == [sha(body)]
