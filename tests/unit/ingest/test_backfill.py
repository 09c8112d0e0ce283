"""Which originals the custody-packets/v2 backfill owes a fingerprint, the gate that keeps
it behind every other media step, and the priority its thread runs at."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ingest.fingerprint import FORMAT, format_sidecar, read_packets
from ingest.fingerprinter import (
    BACKFILL_NICE,
    IOPRIO_CLASS_IDLE,
    Fingerprinter,
    lower_priority,
    thread_priority,
)
from ingest.jobs import JobDb
from ingest.mediasched import MediaSteps
from ingest.objects import LocalObjects
from ledger.entry import decode_entry
from ledger.log import Ledger
from ledger.note import Signer

SIGNER = Signer("custody.test/backfill", bytes(range(32)))


@pytest.fixture
def parts(tmp_path: Path) -> Iterator[tuple[Ledger, LocalObjects, JobDb]]:
    ledger = Ledger(tmp_path / "ledger", tmp_path / "state", SIGNER.name, SIGNER)
    jobs = JobDb(ledger.db_path)
    try:
        yield ledger, LocalObjects(tmp_path / "store"), jobs
    finally:
        jobs.close()
        ledger.close()


def original(jobs: JobDb, objects: LocalObjects, body: bytes, media_type: str) -> str:
    """An original in the dock's store with its capture row (what capture leaves)."""
    sha = objects.put_bytes(body)
    with jobs.lock:
        jobs.db.execute(
            "INSERT INTO ingest_objects (sha256, size, media_type, first_entry) VALUES (?,?,?,0)",
            (sha, len(body), media_type),
        )
        jobs.db.commit()
    return sha


def fingerprinted(jobs: JobDb, table: str, sha: str, sidecar: str | None) -> None:
    with jobs.lock:
        jobs.db.execute(
            f"INSERT INTO {table} (sha256, entry, sidecar) VALUES (?,?,?)", (sha, 1, sidecar)
        )
        jobs.db.commit()


def test_backfill_pending_selects_v1_only_media_on_the_dock(
    parts: tuple[Ledger, LocalObjects, JobDb],
) -> None:
    ledger, objects, jobs = parts
    fp = Fingerprinter(ledger, objects, jobs.db, jobs.lock)
    v1_video = original(jobs, objects, b"video one", "video/mp4")
    v1_audio = original(jobs, objects, b"audio one", "audio/mp4")
    both = original(jobs, objects, b"video both", "video/mp4")
    v2_only = original(jobs, objects, b"video new", "video/quicktime")
    unreadable = original(jobs, objects, b"video broken", "video/mp4")
    picture = original(jobs, objects, b"a photo", "image/jpeg")
    nothing = original(jobs, objects, b"not yet", "video/mp4")
    evicted = original(jobs, objects, b"video evicted", "video/mp4")
    for sha in (v1_video, v1_audio, both, picture, evicted):
        fingerprinted(jobs, "ingest_fingerprints", sha, "ab" * 32)
    fingerprinted(jobs, "ingest_fingerprints", unreadable, None)  # the v1 job's error entry
    for sha in (both, v2_only):
        fingerprinted(jobs, "ingest_packets_v2", sha, "cd" * 32)
    assert objects.remove(evicted)  # retention evicted the dock's copy

    got = fp.backfill_pending()
    assert set(got.owed) == {v1_video, v1_audio}
    assert got.evicted == (evicted,)
    assert fp.backfill_count() == 3
    assert nothing in fp.pending() and v1_video not in fp.pending()

    # In batches along the SHA-256: every one listed once, then nothing.
    seen: list[str] = []
    after = ""
    while True:
        batch = fp.backfill_pending(after, limit=1)
        if not batch.owed and not batch.evicted:
            break
        assert len(batch.owed) + len(batch.evicted) == 1
        seen += [*batch.owed, *batch.evicted]
        after = batch.last
    assert seen == sorted({v1_video, v1_audio, evicted})

    # None of them is backfilled without a v1 sidecar on the dock (no entry written).
    assert fp.backfill(evicted) is None
    assert fp.backfill(nothing) is None
    assert fp.backfill(unreadable) is None
    assert fp.backfill(both) is None
    assert ledger.append("note", {"text": "next"}) == 0


def test_backfill_waits_until_no_media_step_is_queued(
    parts: tuple[Ledger, LocalObjects, JobDb],
) -> None:
    ledger, objects, jobs = parts
    steps = MediaSteps(ledger, objects, jobs)
    release = threading.Event()

    def held(ev: threading.Event) -> Callable[[str], None]:
        def step(sha: str) -> None:
            ev.wait(30)

        return step

    steps._enqueue(held(release), "a")
    steps._enqueue(lambda sha: None, "b")  # queued behind it
    gate: list[bool] = []
    waiter = threading.Thread(target=lambda: gate.append(steps._wait_idle()))
    waiter.start()
    waiter.join(0.5)
    assert waiter.is_alive() and not gate, "the backfill went ahead of a queued step"
    release.set()
    waiter.join(10)
    assert gate == [True]

    # A stop lets a waiting backfill go, told not to take another object.
    again = threading.Event()
    steps._enqueue(held(again), "c")
    waiter = threading.Thread(target=lambda: gate.append(steps._wait_idle()))
    waiter.start()
    stopper = threading.Thread(target=steps.close)
    stopper.start()
    waiter.join(10)
    assert gate == [True, False]
    again.set()
    stopper.join(10)


def test_backfill_thread_runs_below_the_media_worker() -> None:
    seen: list[tuple[int, int]] = []

    def worker() -> None:
        lower_priority(BACKFILL_NICE)
        seen.append(thread_priority())

    before = thread_priority()
    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen == [(19, IOPRIO_CLASS_IDLE << 13)]
    assert thread_priority() == before  # the thread alone, not the daemon


def test_backfill_writes_a_second_entry_once_and_abandons_on_stop(
    parts: tuple[Ledger, LocalObjects, JobDb], clip: Path
) -> None:
    ledger, objects, jobs = parts
    fp = Fingerprinter(ledger, objects, jobs.db, jobs.lock)
    sha = original(jobs, objects, clip.read_bytes(), "video/mp4")
    fingerprinted(jobs, "ingest_fingerprints", sha, "ab" * 32)

    # The daemon stopping while the sidecar is written: nothing recorded, nothing left.
    assert fp.backfill(sha, stop=lambda: True) is None
    assert not list(objects.tmp.iterdir())
    assert fp.backfill_pending().owed == (sha,)

    index = fp.backfill(sha)
    assert index == 0
    fields = decode_entry(ledger.entry(index)).fields
    assert fields["format"] == FORMAT and fields["backfill"] is True
    assert fields["sha256"] == sha and fields["kind"] == "packets"
    side = objects.path(fields["sidecar"]["sha256"]).read_bytes()
    assert side == format_sidecar(read_packets(objects.path(sha), 2))
    assert fp.backfill(sha) is None and fp.run(sha) is None  # once, whoever asks
    assert fp.backfill_pending().owed == () and fp.backfill_count() == 0
