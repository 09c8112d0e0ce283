"""The media steps after a capture, on one low-priority worker: the probe (a signed
`probe` entry), packet fingerprints, access copies and posters, decoded-frame hashes.
Evidence first: none of them delays a capture or a release, a failure never takes
the daemon down, and a step not done is found pending again at the next start.

Originals fingerprinted before custody-packets/v2 get a v2 fingerprint from the
backfill (`start_backfill`, the daemon only): a thread of its own at the lowest CPU
priority (nice 19) and the idle I/O class, one object at a time, and only while no
other media step is queued or running: a new capture's steps always go first. It
stops between objects when the daemon stops; the tables say what is left, so the next
start goes on where it stopped."""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ingest.derive import MediaSettings
from ingest.deriver import Deriver
from ingest.fingerprinter import (
    BACKFILL_NICE,
    IOPRIO_CLASS_IDLE,
    Fingerprinter,
    lower_priority,
    thread_priority,
)
from ingest.jobs import JobDb
from ingest.media import is_media
from ingest.objects import LocalObjects
from ingest.probe import ProbeFailed, ffmpeg_version, probe
from ledger.errors import IntegrityError, Withdrawn
from ledger.log import Ledger

log = logging.getLogger("custody.ingest")

OnNewObject = Callable[[sqlite3.Connection, str, int, str], None]


class MediaSteps:
    def __init__(
        self,
        ledger: Ledger,
        objects: LocalObjects,
        jobs: JobDb,
        media: MediaSettings | None = None,
        on_new_object: OnNewObject | None = None,
        min_free_mb: int = 0,
    ) -> None:
        self.ledger = ledger
        self.objects = objects
        self.jobs = jobs
        self.fingerprinter = Fingerprinter(
            ledger, objects, jobs.db, jobs.lock, on_new_object, media
        )
        self.deriver = Deriver(
            ledger,
            objects,
            jobs.db,
            jobs.lock,
            media or MediaSettings(),
            on_new_object,
            min_free_mb=min_free_mb,
        )
        self._pool = self._new_pool()
        self._queued: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        # Steps (probes included) queued on the media worker and not yet done: the
        # backfill waits for none.
        self._outstanding = 0
        self._idle = threading.Condition(self._lock)
        self._backfill: threading.Thread | None = None
        self.stopping = False
        # Set by the capturer: an integrity error met here stops capture too.
        self.halt: Callable[[str], None] = lambda reason: None
        self.halted: Callable[[], bool] = lambda: False

    @staticmethod
    def _new_pool() -> ThreadPoolExecutor:
        return ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="media", initializer=lower_priority
        )

    def captured(self, sha: str, media_type: str) -> None:
        """A new original was recorded: every media step it is owed."""
        if not is_media(media_type):
            return
        self._enqueue(self._probe, sha)
        self._submit("fingerprinting", sha)
        self._submit("making copies", sha)
        if self.fingerprinter.media.frame_hashes and media_type.startswith("video/"):
            self._submit("hashing frames", sha)

    def resume(self) -> None:
        """At start: the probes and media steps a stop or crash left undone."""
        with self.jobs.lock:
            rows = self.jobs.db.execute(
                "SELECT sha256, media_type FROM ingest_objects WHERE probe_entry IS NULL"
            ).fetchall()
        for sha, mt in rows:
            if is_media(mt):
                self._enqueue(self._probe, sha)
        self.schedule_media()

    def schedule_media(self) -> None:
        """Queue every media step still owed (at start, and from the daemon's scheduler:
        transcodes waiting for the next day's budget)."""
        for sha in self.fingerprinter.pending():
            self._submit("fingerprinting", sha)
        for sha in self.deriver.pending():
            self._submit("making copies", sha)
        for sha in self.fingerprinter.frames_pending():
            self._submit("hashing frames", sha)

    def finish(self) -> None:
        """Wait for every step queued so far (one-shot ingest); the worker is made anew."""
        self._pool.shutdown(wait=True)
        self._pool = self._new_pool()

    def close(self, wait: bool = True) -> None:
        with self._lock:
            self.stopping = True
            self._idle.notify_all()
        self._pool.shutdown(wait=wait, cancel_futures=True)
        if wait and self._backfill is not None:
            self._backfill.join()  # the object it is on; it takes no next one

    def start_backfill(self) -> None:
        """Give the originals that have only a custody-packets/v1 fingerprint a v2 one, in
        the background (the daemon, once at start)."""
        if self._backfill is not None and self._backfill.is_alive():
            return
        # A thread of its own: a thread's nice value cannot come back up without
        # privilege, so the media worker's cannot be lent to it.
        self._backfill = threading.Thread(
            target=self._run_backfill, name="media-backfill", daemon=True
        )
        self._backfill.start()

    def _enqueue(self, fn: Callable[..., None], *args: str) -> None:
        """Run ``fn`` on the media worker, counted until it is done."""
        with self._lock:
            self._outstanding += 1
        try:
            self._pool.submit(self._counted, fn, *args)
        except RuntimeError:  # shutting down: found pending at the next start
            self._done_one()
            raise

    def _counted(self, fn: Callable[..., None], *args: str) -> None:
        try:
            fn(*args)
        finally:
            self._done_one()

    def _done_one(self) -> None:
        with self._lock:
            self._outstanding -= 1
            if self._outstanding == 0:
                self._idle.notify_all()

    def _wait_idle(self) -> bool:
        """Block the backfill until no media step is queued or running; False when it is
        to stop instead (the daemon stops, or capture halted)."""
        with self._lock:
            while self._outstanding and not self.stopping and not self.halted():
                self._idle.wait(1.0)  # the halt comes without a notification
            return not self.stopping and not self.halted()

    def _run_backfill(self) -> None:
        lower_priority(BACKFILL_NICE)
        try:
            self._backfill_pass()
        except IntegrityError as e:
            self.halt(f"while backfilling v2 fingerprints: {e}")
        except Exception:  # never take the daemon down; the tables say what is left
            log.exception("custody-packets/v2 backfill failed; it goes on at the next start")

    def _backfill_pass(self) -> None:
        fp = self.fingerprinter
        total = fp.backfill_count()
        if not total:
            return
        nice, io = thread_priority()
        log.info(
            "custody-packets/v2 backfill: %d original(s) have a v1 packet fingerprint only; "
            "each gets a v2 one when the media worker is idle (nice %d, I/O %s)",
            total,
            nice,
            "idle" if io >> 13 == IOPRIO_CLASS_IDLE else f"priority {io}",
        )
        made = evicted = failed = 0
        after = ""
        stopped = False
        while not stopped:
            batch = fp.backfill_pending(after, limit=500)
            if not batch.owed and not batch.evicted:
                break
            after, evicted = batch.last, evicted + len(batch.evicted)
            for sha in batch.owed:
                if not self._wait_idle():
                    stopped = True
                    break
                try:
                    if fp.backfill(sha, stop=lambda: self.stopping or self.halted()) is None:
                        continue
                    made += 1
                except IntegrityError as e:
                    self.halt(f"while backfilling the v2 fingerprint of {sha[:16]}: {e}")
                    stopped = True
                    break
                except Exception:
                    failed += 1
                    log.exception(
                        "v2 fingerprint of %s failed; it is tried again at the next start",
                        sha[:16],
                    )
        left = fp.backfill_count()
        log.info(
            "custody-packets/v2 backfill %s: %d made, %d evicted to the cold store left for "
            "now, %d failed; %d original(s) still have a v1 packet fingerprint only",
            "stopped" if stopped else "finished",
            made,
            evicted,
            failed,
            left,
        )

    def _submit(self, what: str, sha: str) -> None:
        """One media step on the media worker, unless the same step is queued already."""
        with self._lock:
            if (what, sha) in self._queued:
                return
            self._queued.add((what, sha))
        try:
            self._enqueue(self._step, what, sha)
        except RuntimeError:  # shutting down: found pending at the next start
            with self._lock:
                self._queued.discard((what, sha))

    def _step(self, what: str, sha: str) -> None:
        """One media step for one object on the media worker; a failure never takes the
        daemon down, and the step is found pending again at the next start."""
        steps: dict[str, Callable[[str], object]] = {
            "fingerprinting": self.fingerprinter.run,
            "making copies": self.deriver.run,
            "hashing frames": self.fingerprinter.run_frames,
        }
        try:
            if not self.stopping and not self.halted():
                steps[what](sha)
        except IntegrityError as e:
            self.halt(f"while {what} {sha[:16]}: {e}")
        except Exception:
            log.exception("%s of %s failed; it is tried again at the next start", what, sha[:16])
        finally:
            with self._lock:
                self._queued.discard((what, sha))

    def _probe(self, sha: str) -> None:
        if self.stopping:
            return
        path = self.objects.path(sha)
        payload: dict[str, Any] = {"sha256": sha, "tool": ffmpeg_version()}
        try:
            payload["summary"] = probe(path)
        except ProbeFailed as e:
            payload["error"] = str(e)[:1000]
        except Exception as e:  # never let a probe take the daemon down
            payload["error"] = f"probe crashed: {type(e).__name__}: {e}"[:1000]

        def mark(conn: sqlite3.Connection, idx: list[int]) -> None:
            cur = conn.execute(
                "UPDATE ingest_objects SET probe_entry=? WHERE sha256=? AND probe_entry IS NULL",
                (idx[0], sha),
            )
            if cur.rowcount != 1:
                raise Withdrawn()  # probed already

        try:
            index = self.ledger.append("probe", payload, mark)
        except Withdrawn:
            return
        except IntegrityError as e:
            self.halt(f"while recording the probe of {sha[:16]}: {e}")
            return
        if "error" in payload:
            log.warning(
                "ffmpeg cannot read %s as media (kept and recorded; entry %d): %s",
                sha[:16],
                index,
                payload["error"],
            )
