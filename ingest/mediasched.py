"""The media steps after a capture, on one low-priority worker: the probe (a signed
`probe` entry), packet fingerprints, access copies and posters, decoded-frame hashes.
Evidence first: none of them delays a capture or a release, a failure never takes
the daemon down, and a step not done is found pending again at the next start."""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ingest.derive import MediaSettings
from ingest.deriver import Deriver
from ingest.fingerprinter import Fingerprinter, lower_priority
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
        self._pool.submit(self._probe, sha)
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
                self._pool.submit(self._probe, sha)
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
        self.stopping = True
        self._pool.shutdown(wait=wait, cancel_futures=True)

    def _submit(self, what: str, sha: str) -> None:
        """One media step on the media worker, unless the same step is queued already."""
        with self._lock:
            if (what, sha) in self._queued:
                return
            self._queued.add((what, sha))
        try:
            self._pool.submit(self._step, what, sha)
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
