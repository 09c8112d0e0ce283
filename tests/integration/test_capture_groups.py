"""Capture of small files in groups: one transaction for a recorder's group of files,
duplicates within a group, and files of a group that fail alone.

The pipeline runs in-process on a real ledger (SQLite), a real store and real files;
the ledger only counts its commits, so the grouping can be seen.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ingest.jobs import JobDb
from ingest.mediasched import MediaSteps
from ingest.objects import LocalObjects
from ingest.pipeline import GROUP_FILES, Capturer
from ingest.settings import CaptureSettings, DockSettings
from ledger.entry import decode_entry
from ledger.log import Ledger, OnCommit
from ledger.note import Signer

SIGNER = Signer("custody.test/groups", bytes(range(32)))


class CountingLedger(Ledger):
    """The real ledger, remembering how many entries each successful commit held."""

    commits: list[int]

    def append_leaves(
        self, leaves: Sequence[bytes], on_commit: OnCommit | None = None
    ) -> list[int]:
        idx = super().append_leaves(leaves, on_commit)
        self.commits.append(len(idx))
        return idx


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def station(
    tmp: Path,
    dock: Path,
    on_new_object: Callable[[sqlite3.Connection, str, int, str], None] | None = None,
    clock: Clock | None = None,
) -> tuple[CountingLedger, Capturer]:
    led = CountingLedger(tmp / "ledger", tmp / "state", SIGNER.name, SIGNER)
    led.commits = []
    settings = CaptureSettings(settle_ms=0, min_free_mb=1, max_parallel_recorders=2)
    cap = Capturer(
        led,
        LocalObjects(tmp / "store"),
        [DockSettings(path=dock, name="dock")],
        settings,
        clock=clock or Clock(),
        on_new_object=on_new_object,
    )
    return led, cap


def entries(led: Ledger) -> list[tuple[int, dict[str, Any]]]:
    return [(i, dict(decode_entry(led.entry(i)).fields)) for i in range(led.next_index())]


def put(dock: Path, rel: str, data: bytes) -> str:
    p = dock / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def states(led: Ledger) -> Counter[str]:
    db = sqlite3.connect(led.db_path)
    try:
        return Counter(r[0] for r in db.execute("SELECT state FROM ingest_files"))
    finally:
        db.close()


def stored(tmp: Path, digest: str) -> bytes:
    return (tmp / "store" / "objects" / "sha256" / digest[:2] / digest[2:4] / digest).read_bytes()


def test_small_files_of_a_recorder_are_recorded_in_groups(tmp_path: Path) -> None:
    dock = tmp_path / "dock"
    expected: dict[str, str] = {}
    for i in range(100):
        rel = f"slot01/DCIM/IMG_{i:04d}.bin"
        expected[rel] = put(dock, rel, os.urandom(1000 + 97 * i))
    # A second recorder holding copies of five of the first one's files: whichever
    # records a content first ingests it, the other sights it.
    for i in range(5):
        rel = f"slot02/copy_{i}.bin"
        expected[rel] = put(dock, rel, (dock / f"slot01/DCIM/IMG_{i:04d}.bin").read_bytes())
    led, cap = station(tmp_path, dock)
    try:
        cap.recover()
        cap.scan()
        assert cap.drain(timeout=120)
    finally:
        cap.close()
    es = [e for _, e in entries(led) if e["type"] in ("ingest", "sighting")]
    assert Counter(e["source"]["path"] for e in es) == Counter(list(expected))
    for e in es:
        assert e["sha256"] == expected[e["source"]["path"]]
    ingests = Counter(e["sha256"] for e in es if e["type"] == "ingest")
    assert set(ingests) == set(expected.values()) and set(ingests.values()) == {1}
    # 100 files of one recorder: two groups (64 + 36), the other recorder's five: one.
    assert sorted(led.commits) == sorted([GROUP_FILES, 100 - GROUP_FILES, 5])
    assert states(led) == Counter({"recorded": 105})
    for digest in expected.values():
        assert hashlib.sha256(stored(tmp_path, digest)).hexdigest() == digest
    assert not list((tmp_path / "store" / "tmp").iterdir())
    led.close()


def test_the_same_content_twice_in_one_group_is_one_ingest_then_sightings(
    tmp_path: Path,
) -> None:
    dock = tmp_path / "dock"
    a, b = os.urandom(5000), os.urandom(7000)
    contents = [a, b, os.urandom(10), a, a, b, os.urandom(20), a, b"", b""]
    digests = [put(dock, f"slot01/F{i:02d}.bin", data) for i, data in enumerate(contents)]
    led, cap = station(tmp_path, dock)
    try:
        cap.recover()
        cap.scan()
        assert cap.drain(timeout=60)
    finally:
        cap.close()
    es = [(i, e) for i, e in entries(led) if e["type"] in ("ingest", "sighting")]
    assert len(es) == len(contents)
    first = {e["sha256"]: i for i, e in es if e["type"] == "ingest"}
    assert Counter(e["sha256"] for _, e in es if e["type"] == "ingest") == Counter(set(digests))
    for i, e in es:
        if e["type"] == "sighting":
            assert e["first_entry"] == first[e["sha256"]] < i
    assert Counter(e["source"]["path"] for _, e in es) == Counter(
        f"slot01/F{i:02d}.bin" for i in range(len(contents))
    )
    # The first copy of each content in one transaction; each further copy of a content
    # in the next one, once the entry it names has its index.
    assert led.commits == [5, 3, 1, 1]
    db = sqlite3.connect(led.db_path)
    rows = dict(db.execute("SELECT sha256, first_entry FROM ingest_objects").fetchall())
    db.close()
    assert rows == first
    assert states(led) == Counter({"recorded": len(contents)})
    led.close()


def test_a_file_that_fails_in_a_group_holds_back_no_other(tmp_path: Path) -> None:
    dock = tmp_path / "dock"
    expected = {
        f"slot01/F{i:02d}.bin": put(dock, f"slot01/F{i:02d}.bin", os.urandom(3000 + i))
        for i in range(12)
    }
    bad = expected["slot01/F05.bin"]
    refused: list[str] = []

    def on_new_object(conn: sqlite3.Connection, digest: str, size: int, role: str) -> None:
        # The cold-store queue refuses one object once (its transaction fails).
        if digest == bad and not refused:
            refused.append(digest)
            raise sqlite3.OperationalError("the upload queue is locked")

    clock = Clock()
    led, cap = station(tmp_path, dock, on_new_object, clock)
    # Two jobs a restart finds queued for files that are no longer as queued: one gone
    # from the recorder, one rewritten since (captured anew as its new version).
    changed = dock / "slot01" / "F11.bin"
    st = changed.stat()
    db = sqlite3.connect(led.db_path)
    with db:
        for path, size, ino in (
            (dock / "slot01" / "lost.bin", 123, 1),
            (changed, st.st_size - 1, st.st_ino),
        ):
            db.execute(
                "INSERT INTO ingest_files (dock, recorder, path, size, mtime_ns, ino, dev, "
                "state, first_seen) VALUES ('dock', 'slot01', ?, ?, ?, ?, ?, 'queued', 'x')",
                (os.fsencode(path), size, st.st_mtime_ns, ino, st.st_dev),
            )
    db.close()
    try:
        cap.recover()
        cap.scan()
        assert cap.drain(timeout=60)
        got = {
            e["source"]["path"]: e["sha256"]
            for _, e in entries(led)
            if e["type"] in ("ingest", "sighting")
        }
        # Everything but the refused file; the other ten of its group in one transaction
        # without it, the rewritten file's new version after them.
        assert got == {k: v for k, v in expected.items() if v != bad}
        assert refused == [bad]
        assert led.commits == [10, 1]
        s = states(led)
        assert s == Counter({"recorded": 11, "queued": 1, "gone": 1, "superseded": 1})
        # Its retry, after the back-off: recorded once.
        clock.t += 600
        assert cap.drain(timeout=60)
        assert led.commits == [10, 1, 1]
    finally:
        cap.close()
    es = [e for _, e in entries(led) if e["type"] in ("ingest", "sighting")]
    assert Counter(e["source"]["path"] for e in es) == Counter(list(expected))
    assert [e["type"] for e in es if e["sha256"] == bad] == ["ingest"]
    assert states(led) == Counter({"recorded": 12, "gone": 1, "superseded": 1})
    led.close()


class WatchedMediaSteps(MediaSteps):
    """The real media steps, noting how much was captured when each original was
    handed to them."""

    handed: list[tuple[str, int]]
    cap: Capturer

    def captured(self, sha: str, media_type: str) -> None:
        self.handed.append((media_type, self.cap.stats.captured))
        super().captured(sha, media_type)


def test_media_steps_wait_until_capture_is_idle(tmp_path: Path, clip: Path) -> None:
    """A recording's probe, fingerprints and copies compete with capture for the CPU
    and the disk: they start once the files docked with it are all captured."""
    dock = tmp_path / "dock"
    put(dock, "slot00/clip.mp4", clip.read_bytes())
    for r in range(1, 4):
        for i in range(100):
            put(dock, f"slot{r:02d}/F{i:03d}.bin", os.urandom(2000 + i))
    led = CountingLedger(tmp_path / "ledger", tmp_path / "state", SIGNER.name, SIGNER)
    led.commits = []
    objects = LocalObjects(tmp_path / "store")
    jobs = JobDb(led.db_path)
    steps = WatchedMediaSteps(led, objects, jobs)
    steps.handed = []
    cap = Capturer(
        led,
        objects,
        [DockSettings(path=dock, name="dock")],
        CaptureSettings(settle_ms=0, min_free_mb=1, max_parallel_recorders=2),
        clock=Clock(),
        jobs=jobs,
        media_steps=steps,
    )
    steps.cap = cap
    try:
        cap.recover()
        cap.scan()
        assert cap.drain(timeout=120)
    finally:
        cap.close()
    assert [h for h in steps.handed if h[0] == "video/mp4"] == [("video/mp4", 301)]
    assert [e["type"] for _, e in entries(led)].count("probe") == 1
    led.close()
