"""Release: removing a captured source from the recorder, and only when that is safe.

A release is asked for once the capture is durable (``after_capture``) or the
cold store confirmed its copy (``after_replication``, with its `store` entry).
It then waits the release settle (longer than capture's), and on the release
worker: re-hashes the stored copy; refuses a source whose size, mtime, inode or
device changed since capture (state ``changed``: its new version is captured
anew); holds back one inotify saw written and not closed, or the kernel says a
writer has open; takes the lstat again through the folder's descriptor
immediately before the unlink; then signs the `wipe` entry in the transaction
that marks the job released.

A source is "already absent" (a `wipe` with ``source_already_absent``) only when
its own folder is there, on the device the file was captured from, and the file
is not in it. A folder on the way that is gone, or a mount point left behind
on another device, is a recorder unplugged before its release: the job stays
``recorded`` and is released when the recorder is docked again. Any other
error while releasing is a line in the status (`Problems`), the job goes back
to ``recorded``, and the release is tried again with a growing delay.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ingest import dockfs
from ingest.jobs import MAX_BACKOFF_S, JobDb, path_payload, shown
from ingest.objects import LocalObjects
from ingest.problems import Problems
from ingest.settings import CaptureSettings, DockSettings
from ingest.stability import WriteMarks, lease_says_writing, release_settle_s
from ledger.errors import IntegrityError, Withdrawn
from ledger.log import Ledger

log = logging.getLogger("custody.ingest")


class Releaser:
    def __init__(
        self,
        ledger: Ledger,
        objects: LocalObjects,
        jobs: JobDb,
        settings: CaptureSettings,
        problems: Problems,
        marks: WriteMarks,
        clock: Callable[[], float],
        replicated: Callable[[str], int | None] | None = None,
    ) -> None:
        self.ledger = ledger
        self.objects = objects
        self.jobs = jobs
        self.settings = settings
        self.problems = problems
        self.marks = marks
        self.clock = clock
        self.replicated = replicated
        self.settle_s = release_settle_s(settings.settle_ms)
        self._lock = threading.Lock()
        # Releases waiting out the release settle: job id -> (not before, store entry).
        self._due: dict[int, tuple[float, int | None]] = {}
        self._captured_at: dict[int, float] = {}
        self._releasing: set[int] = set()
        # Releases that failed (an error, or the recorder gone): job id -> attempts.
        self._retrying: dict[int, int] = {}
        self._pool = self._new_pool()
        # Wired by the capturer: its docks, its halt, and what to do with a source that
        # changed after capture (watch it again) or sits behind a symlink (refuse it).
        self.docks: Callable[[], list[DockSettings]] = list
        self.halted: Callable[[], bool] = lambda: False
        self.halt: Callable[[str], None] = lambda reason: None
        self.changed: Callable[[DockSettings, Path, os.stat_result], object] = lambda d, p, s: None
        self.refuse: Callable[[dockfs.Refused], object] = lambda r: None

    @staticmethod
    def _new_pool() -> ThreadPoolExecutor:
        return ThreadPoolExecutor(max_workers=1, thread_name_prefix="release")

    # -- asking ------------------------------------------------------------------------

    def captured(self, job_id: int, sha256: str) -> None:
        """A job was recorded now: release it when its rule allows."""
        with self._lock:
            self._captured_at[job_id] = self.clock()
        if self.settings.release == "after_capture":
            self.request(job_id)
        elif self.settings.release == "after_replication":
            assert self.replicated is not None
            store_entry = self.replicated(sha256)  # a duplicate of a replicated object
            if store_entry is not None:
                self.request(job_id, store_entry)

    def request(self, job_id: int, store_entry: int | None = None) -> None:
        """Release a recorded source once the release settle has passed since its capture
        (from now, for one captured before a restart)."""
        if self.settings.release == "after_replication" and store_entry is None:
            return
        with self._lock:
            since = self._captured_at.get(job_id, self.clock())
            self._due[job_id] = (since + self.settle_s, store_entry)

    def resume(self) -> None:
        """At start: every recorded source its rule allows to be released."""
        mode = self.settings.release
        if mode == "never":
            return
        with self.jobs.lock:
            rows = self.jobs.db.execute(
                "SELECT id, sha256 FROM ingest_files WHERE state IN ('recorded','releasing')"
            ).fetchall()
        for job_id, sha in rows:
            if mode == "after_capture":
                self.request(job_id)
                continue
            assert self.replicated is not None
            store_entry = self.replicated(sha)
            if store_entry is not None:
                self.request(job_id, store_entry)

    def replicated_now(self, sha256: str, store_entry: int) -> None:
        """The cold store confirmed ``sha256``: release every recorder file that holds it."""
        if self.settings.release != "after_replication":
            return
        with self.jobs.lock:
            rows = self.jobs.db.execute(
                "SELECT id FROM ingest_files WHERE sha256=? AND state IN ('recorded','releasing')",
                (sha256,),
            ).fetchall()
        for (job_id,) in rows:
            # On the release worker, after the release settle: a release re-hashes the
            # stored copy first, which must not hold up the uploads that called us.
            self.request(job_id, store_entry)

    def tick(self, now: float) -> None:
        """Hand the releases that waited out the settle to the release worker."""
        if self.halted():
            return
        with self._lock:
            due = [(j, e) for j, (t, e) in self._due.items() if t <= now]
            for j, _ in due:
                del self._due[j]
        for job_id, store_entry in due:
            try:
                self._pool.submit(self._release, job_id, store_entry)
            except RuntimeError:  # shutting down: resumed at the next start
                return

    def seen_again(self, job_id: int) -> None:
        """A recorded source was seen on its dock again: if its release was waiting for
        the recorder to come back, it is tried once the release settle has passed."""
        with self._lock:
            if job_id not in self._retrying or job_id not in self._due:
                return
            due, store_entry = self._due[job_id]
            self._due[job_id] = (min(due, self.clock() + self.settle_s), store_entry)

    def waiting(self) -> int:
        """Releases waiting out their settle (not those waiting to be tried again)."""
        with self._lock:
            return len(self._due.keys() - self._retrying.keys())

    def finish(self) -> None:
        """Wait out the release settle of every release asked for, then for the release
        worker (one-shot ingest); a source that keeps changing is left in place."""
        end = self.clock() + 2 * self.settle_s + 30
        while self.waiting() and not self.halted() and self.clock() < end:
            self.tick(self.clock())
            time.sleep(0.05)
        self._pool.shutdown(wait=True)
        self._pool = self._new_pool()

    def close(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=True)

    # -- releasing ---------------------------------------------------------------------

    def _release(self, job_id: int, store_entry: int | None = None) -> None:
        """Remove the source from the recorder: only after the capture is durable and,
        with ``after_replication``, the cold store confirmed its copy (``store_entry``)."""
        if self.settings.release == "after_replication" and store_entry is None:
            return
        # One release per job at a time: the capture thread (a duplicate of a replicated
        # object) and the replicator (its store entry) can ask for the same job at once.
        with self._lock:
            if job_id in self._releasing:
                return
            self._releasing.add(job_id)
        try:
            if not self.halted():
                self._release_claimed(job_id, store_entry)
        except IntegrityError as e:
            self.halt(f"while releasing job {job_id}: {e}")
        finally:
            with self._lock:
                self._releasing.discard(job_id)

    def _release_claimed(self, job_id: int, store_entry: int | None) -> None:
        with self.jobs.lock:
            row = self.jobs.db.execute(
                "SELECT dock, recorder, path, size, mtime_ns, sha256, entry, state, ino, dev "
                "FROM ingest_files WHERE id=?",
                (job_id,),
            ).fetchone()
            if row is None or row[7] not in ("recorded", "releasing"):
                return
            # 'releasing' already: an earlier release was cut short (crash or shutdown);
            # the source may have been removed by it before its entry was signed.
            interrupted = row[7] == "releasing"
            self.jobs.db.execute("UPDATE ingest_files SET state='releasing' WHERE id=?", (job_id,))
            self.jobs.db.commit()
        path = Path(os.fsdecode(bytes(row[2])))
        dock = next((d for d in self.docks() if d.label == row[0]), None)
        if dock is None:
            # Its dock left the configuration: the folders to it cannot be trusted now.
            self.jobs.set_state(job_id, "recorded")
            return
        if self.objects.hash_of(row[5]) != row[5]:
            self.problems.report(
                f"stored:{row[5]}",
                f"not releasing {shown(path)}: its stored copy {row[5][:16]} is missing or "
                "damaged; the source stays on the recorder (run 'custody audit')",
                logging.ERROR,
            )
            self.jobs.set_state(job_id, "recorded")
            return
        size, mtime_ns, ino, dev = row[3], row[4], row[8], row[9]

        def same(now: os.stat_result) -> bool:
            # dev 0: a job from before the device was recorded.
            return (now.st_size, now.st_mtime_ns, now.st_ino) == (size, mtime_ns, ino) and (
                dev == 0 or now.st_dev == dev
            )

        key = os.fsencode(path)
        absent = False
        try:
            st, _ = dockfs.lstat_with_folder(dock.path, path)
            if not same(st):
                self._changed_after_capture(job_id, dock, path, st, row[3])
                return
            now = self.clock()
            writing = lease_says_writing(dock.path, path)
            # No mark may mean no writer, or a writer that paused before the daemon
            # started (or before events were lost): then only the kernel's word will do.
            unsure = writing is None and self.marks.unsure(key, now)
            if self.marks.held(key, now) or writing or unsure:
                # inotify saw a write with no close since, the kernel says a writer holds
                # it, or neither can be known: not now; the settle starts again.
                self.jobs.set_state(job_id, "recorded")
                with self._lock:
                    self._captured_at[job_id] = self.clock()
                self.request(job_id, store_entry)
                return
            # The lstat again through the same folder descriptor, immediately before
            # the unlink: a write since the checks above keeps the file.
            if not dockfs.unlink_below(dock.path, path, same):
                again = dockfs.lstat_below(dock.path, path)
                self._changed_after_capture(job_id, dock, path, again, row[3])
                return
        except dockfs.FolderGone:
            self._later(job_id, store_entry, path, "", interrupted, gone=True)
            return
        except dockfs.FileAbsent as e:
            if dev and e.folder.st_dev != dev:
                # The folder there is not on the recorder's device: the mount point left
                # behind when the recorder was unplugged.
                self._later(job_id, store_entry, path, "", interrupted, gone=True)
                return
            absent = True
        except dockfs.Outside as e:
            self.refuse(e.refused)
            self.jobs.set_state(job_id, "recorded")
            return
        except OSError as e:
            self._later(job_id, store_entry, path, e.strerror or str(e), interrupted)
            return
        rel = os.fsencode(path.relative_to(dock.path))
        payload: dict[str, Any] = {
            "sha256": row[5],
            "ingest_entry": row[6],
            "source": {"dock": row[0], "recorder": row[1], **path_payload(rel)},
            "rule": self.settings.release,
        }
        if store_entry is not None:
            payload["store_entry"] = store_entry
        if absent:
            why = "release_interrupted" if interrupted else "source_already_absent"
            payload[why] = True

        def mark(conn: sqlite3.Connection, idx: list[int]) -> None:
            cur = conn.execute(
                "UPDATE ingest_files SET state='released', wipe_entry=? "
                "WHERE id=? AND state='releasing'",
                (idx[0], job_id),
            )
            if cur.rowcount != 1:
                raise Withdrawn()

        try:
            index = self.ledger.append("wipe", payload, mark)
        except Withdrawn:
            return
        except (OSError, sqlite3.OperationalError) as e:
            # Not signed (a full disk, a busy database): the source may be gone already,
            # and the retry signs the wipe as interrupted.
            self._later(job_id, store_entry, path, f"the wipe entry was not signed: {e}", True)
            return
        with self._lock:
            self._retrying.pop(job_id, None)
        self.problems.resolve(f"release:{job_id}")
        self.problems.resolve(f"release-gone:{row[0]}/{row[1]}")
        log.info("released %s from the recorder (entry %d)", shown(path), index)

    def _later(
        self,
        job_id: int,
        store_entry: int | None,
        path: Path,
        error: str,
        interrupted: bool,
        gone: bool = False,
    ) -> None:
        """The release cannot be done now: the job is ``recorded`` again, the status says
        why, and it is tried again after a delay that grows with each attempt (sooner,
        after the release settle, when ``gone`` and the recorder is docked again). A job
        whose source may already be unlinked (``interrupted``) stays ``releasing``, so
        its wipe says so when it is signed."""
        self.jobs.set_state(job_id, "releasing" if interrupted else "recorded")
        with self._lock:
            attempts = self._retrying.get(job_id, 0) + 1
            self._retrying[job_id] = attempts
            delay = min(MAX_BACKOFF_S, self.settle_s * 2 ** min(attempts, 10))
            self._due[job_id] = (self.clock() + delay, store_entry)
        if gone:
            # One line per recorder, not per file: unplugging one is ordinary.
            with self.jobs.lock:
                row = self.jobs.db.execute(
                    "SELECT dock, recorder FROM ingest_files WHERE id=?", (job_id,)
                ).fetchone()
            where = f"{row[0]}/{row[1]}" if row else str(path.parent)
            self.problems.report(
                f"release-gone:{where}",
                f"not releasing from recorder {shown(where)} yet: its folder is gone "
                "(unplugged before release?); its files are released when it is docked again",
                logging.INFO,
            )
            return
        self.problems.report(
            f"release:{job_id}",
            f"cannot release {shown(path)} from the recorder: {error}; tried again in "
            f"{delay:.0f} s (attempt {attempts})",
            logging.ERROR,
        )

    def _changed_after_capture(
        self, job_id: int, dock: DockSettings, path: Path, st: os.stat_result, size: int
    ) -> None:
        """The source changed after it was captured: it is never released on the strength
        of the older copy; its new version is captured (its entry names this one)."""
        log.warning(
            "not releasing %s: it changed after it was captured (%d bytes then, %d now); "
            "the new version is captured and released on its own",
            shown(path),
            size,
            st.st_size,
        )
        self.jobs.set_state(job_id, "changed")
        self.changed(dock, path, st)
