"""Capture: take every file on the docked recorders exactly once.

A file version is (source path, size, mtime). It is captured when it has
been unchanged for the settle window and nothing says it is still being
written: inotify saw no write since its last close-write, the kernel grants a
read lease on it (refused while any process has it open for writing; granted
only on the daemon's own files or with CAP_LEASE), and /proc, where the daemon
can see other processes at all, shows no writer. None of these depend on
seeing other users' processes; the first is there wherever inotify is.
Release waits longer than capture (`release_settle_s`), never deletes a
source whose size, mtime or inode changed after capture (the new version is
captured as a new job and names the earlier one), and takes the lstat again
through the folder's descriptor immediately before the unlink.

Folders below a dock are entered only through descriptors with O_NOFOLLOW
(`ingest.dockfs`): a symlink at any depth is refused, logged once and listed
in `problems`, never followed.
Capture copies it into the local store in one read pass while hashing, then
appends a signed ``ingest`` entry (or ``sighting`` when the same SHA-256 was
captured before) in the same SQLite transaction that marks the job recorded,
so a crash leaves either no entry and a queued job, or one entry and a
recorded job, never two entries. Probing and releasing follow, each with
its own entry. A new object is handed to ``on_new_object`` inside that same
transaction (the cold-store queue), and with ``release = after_replication``
a source is released only once ``replicated`` names its `store` entry.

The parts, by job: `ingest.stability` (when a file is done being written),
`ingest.jobs` (the job table and its states), `ingest.release` (removing a
source from the recorder), `ingest.mediasched` (probe, fingerprints, copies),
`ingest.dockfs` (reading a dock without following symlinks). The daemon
composes them (`custody.daemon.make_capturer`); this module discovers files,
decides when they are stable, and captures and records them.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import sqlite3
import stat
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ingest import dockfs
from ingest.derive import MediaSettings
from ingest.errors import CaptureError, DiskFull, SourceChanged, SourceUnreadable
from ingest.identity import IdentityResolver
from ingest.jobs import (
    DONE_STATES,
    MAX_BACKOFF_S,
    SAME_VERSION,
    Job,
    JobDb,
    Stats,
    Watch,
    now_text,
    path_payload,
    shown,
)
from ingest.media import sniff
from ingest.mediasched import MediaSteps
from ingest.objects import Digests, LocalObjects, capture_copy
from ingest.problems import Problems
from ingest.release import Releaser
from ingest.settings import CaptureSettings, DockSettings
from ingest.stability import (
    WriteMarks,
    ignore_lease_breaks,
    lease_says_writing,
    open_for_writing,
)
from ledger.entry import format_time
from ledger.errors import IntegrityError
from ledger.log import Ledger

__all__ = ["Capturer", "Stats", "shown"]

log = logging.getLogger("custody.ingest")


class Capturer:
    """The capture pipeline for a set of docks. Thread-safe entry points:
    `discover`, `scan`, `tick`; `drain` for one-shot use."""

    def __init__(
        self,
        ledger: Ledger,
        objects: LocalObjects,
        docks: Iterable[DockSettings],
        settings: CaptureSettings,
        clock: Callable[[], float] = time.monotonic,
        on_new_object: Callable[[sqlite3.Connection, str, int, str], None] | None = None,
        replicated: Callable[[str], int | None] | None = None,
        media: MediaSettings | None = None,
        deleted: Callable[[str], int | None] | None = None,
        jobs: JobDb | None = None,
        media_steps: MediaSteps | None = None,
        releaser: Releaser | None = None,
        problems: Problems | None = None,
        marks: WriteMarks | None = None,
    ) -> None:
        """``on_new_object(conn, sha256, size, role)`` runs inside the transaction of each
        new object's entry (`ingest` for originals, `fingerprint` for sidecars: the
        cold-store queue); ``replicated(sha256)`` gives the
        `store` entry of a replicated object, for release after replication. The job
        table, the media steps and the releaser are made here unless given (the daemon
        composes them)."""
        if settings.release == "after_replication" and replicated is None:
            raise ValueError("release after replication needs a cold store")
        self.on_new_object = on_new_object
        # The `delete` entry of an object retention deleted (None otherwise): docked again,
        # such a file is captured anew, not recorded as a sighting of what is gone.
        self.deleted = deleted
        self.ledger = ledger
        self.objects = objects
        self.docks = list(docks)
        self.settings = settings
        self.clock = clock
        self.jobs = jobs or JobDb(ledger.db_path)
        self.db, self._db_lock = self.jobs.db, self.jobs.lock
        self.problems = problems or Problems()
        # Files inotify saw written and not yet closed (close-write).
        self.marks = marks or WriteMarks()
        self.media_steps = media_steps or MediaSteps(
            ledger, objects, self.jobs, media, on_new_object, settings.min_free_mb
        )
        self.media_steps.halt = self.halt
        self.media_steps.halted = lambda: bool(self.halted)
        self.fingerprinter = self.media_steps.fingerprinter
        self.deriver = self.media_steps.deriver
        self.releaser = releaser or Releaser(
            ledger, objects, self.jobs, settings, self.problems, self.marks, clock, replicated
        )
        self.releaser.docks = lambda: list(self.docks)
        self.releaser.halt = self.halt
        self.releaser.halted = lambda: bool(self.halted)
        self.releaser.changed = lambda dock, path, st: self._note(dock, os.fsencode(path), path, st)
        self.releaser.refuse = self._refuse
        self._lock = threading.Lock()
        self._watch: dict[bytes, Watch] = {}
        self._queued: dict[str, deque[Job]] = {}  # recorder key -> jobs
        self._job_paths: set[bytes] = set()
        self._active: set[str] = set()
        # Striped locks: one capture at a time per SHA-256 prefix (ingest vs sighting).
        self._sha_locks = [threading.Lock() for _ in range(64)]
        self._pool = ThreadPoolExecutor(
            max_workers=settings.max_parallel_recorders, thread_name_prefix="capture"
        )
        self._resolvers = {d.path: IdentityResolver(d) for d in self.docks}
        # The integrity error that stopped capture ("" while none): capture and release
        # stop, everything queued stays queued, and the daemon says so and exits.
        self.halted: str = ""
        self.paused: str = ""
        self._resume_at = 0  # free bytes needed before a paused capture resumes
        self.copying: dict[str, tuple[str, int, float]] = {}  # recorder -> file, size, since
        self.stats = Stats()
        self._inflight = 0
        self._idle = threading.Condition(self._lock)
        self._stopping = False
        self._rescan = False
        ignore_lease_breaks()

    # -- bookkeeping ---------------------------------------------------------

    def close(self, wait: bool = True) -> None:
        self._stopping = True
        self._pool.shutdown(wait=wait, cancel_futures=True)
        self.media_steps.close(wait)
        self.releaser.close(wait)
        self.jobs.close()

    def _dock_for(self, path: Path) -> DockSettings | None:
        for d in self.docks:
            try:
                path.relative_to(d.path)
            except ValueError:
                continue
            return d
        return None

    @staticmethod
    def _recorder(dock: DockSettings, path: Path) -> str:
        """The recorder folder's name as text (bytes that are not UTF-8 escaped)."""
        rel = path.relative_to(dock.path)
        if len(rel.parts) < 2:
            return ""
        return os.fsencode(rel.parts[0]).decode("utf-8", "backslashreplace")

    def _wanted(self, dock: DockSettings, path: Path) -> bool:
        rel = str(path.relative_to(dock.path))
        if dock.files:
            return rel in dock.files
        name = path.name
        if not any(fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(name, p) for p in dock.include):
            return False
        return not any(fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(name, p) for p in dock.exclude)

    # -- discovery -----------------------------------------------------------

    def discover(self, path: Path, event: str = "") -> None:
        """Note a path seen by inotify (``event``: created, modified, closed, moved,
        attrib, deleted) or a scan; it is captured once it is stable."""
        dock = self._dock_for(path)
        if dock is None or path == dock.path:
            return
        key = os.fsencode(path)
        self.marks.event(key, event, self.clock())
        st = self._lstat(dock, key, path)
        if st is None:
            with self._lock:
                self._watch.pop(key, None)
            return
        self._note(dock, key, path, st)

    def _lstat(self, dock: DockSettings, key: bytes, path: Path) -> os.stat_result | None:
        """The lstat of a path below a dock, reached without following a symlink on the
        way; None (and a problem line for a refused symlink) if it cannot be."""
        try:
            return dockfs.lstat_below(dock.path, path)
        except dockfs.Outside as e:
            self._refuse(e.refused)
        except (OSError, ValueError):
            pass
        return None

    def _refuse(self, r: dockfs.Refused) -> str:
        """One log line and one status line for a path capture will not or cannot take."""
        key = "path:" + os.fsdecode(r.path)
        self.problems.report(key, f"not capturing {shown(os.fsdecode(r.path))}: {r.reason}")
        return key

    def _note(self, dock: DockSettings, key: bytes, path: Path, st: os.stat_result) -> str | None:
        """A file found below a dock (its lstat taken through trusted folders): watch it
        until it is stable. Returns the problem key if it is refused."""
        if stat.S_ISDIR(st.st_mode):
            return None
        if not stat.S_ISREG(st.st_mode):
            kind = (
                "a symlink (never followed)"
                if stat.S_ISLNK(st.st_mode)
                else "a special file (never read)"
            )
            with self._lock:
                self._watch.pop(key, None)
            return self._refuse(dockfs.Refused(key, kind))
        if len(key) + 1 > dockfs.PATH_MAX:
            too_long = f"path longer than the kernel's limit ({dockfs.PATH_MAX} bytes)"
            return self._refuse(dockfs.Refused(key, too_long))
        if not self._wanted(dock, path):
            return None
        now = self.clock()
        with self._lock:
            if key in self._job_paths:
                return None
            w = self._watch.get(key)
            if w is None or _version(w) != _version(st):
                if w is None and self._already_done(key, st):
                    return None
                self._watch[key] = Watch(
                    dock, st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev, now
                )
        return None

    def _already_done(self, key: bytes, st: os.stat_result) -> bool:
        """This file version (path, size, mtime, inode, device) was taken and is still
        on the recorder as taken; its release is tried again now if it was waiting for
        the recorder to come back."""
        with self._db_lock:
            row = self.db.execute(
                f"SELECT id, state FROM ingest_files WHERE {SAME_VERSION} ORDER BY id DESC LIMIT 1",
                (key, st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev),
            ).fetchone()
        if row is None or row[1] not in DONE_STATES:
            return False
        if row[1] in ("recorded", "releasing"):
            self.releaser.seen_again(int(row[0]))
        return True

    def events_lost(self) -> None:
        """inotify dropped events (its queue overflowed): writes may have gone unseen,
        so every file already there is unsure for one hold window, and the docks are
        scanned again at the next tick."""
        self.marks.blind(self.clock())
        self._rescan = True

    def forget_identities(self) -> None:
        """A mount came or went: ask identity commands afresh."""
        for r in self._resolvers.values():
            r.forget()

    def scan(self) -> int:
        """Walk every dock (inotify misses events on overflow and on new mounts)."""
        return sum(self._scan_below(dock, ()) for dock in list(self.docks))

    def scan_dir(self, path: Path) -> int:
        """Walk one folder below a dock (a new recorder folder or mount: files may have
        arrived before its watch existed); a folder reached through a symlink is refused."""
        dock = self._dock_for(path)
        if dock is None:
            return 0
        return self._scan_below(dock, dockfs.parts_below(dock.path, path))

    def _scan_below(self, dock: DockSettings, start: tuple[bytes, ...]) -> int:
        if not dock.path.is_dir():
            return 0
        if dock.files:
            return self._look_at(dock, dock.files)
        top = os.fsdecode(b"/".join((os.fsencode(dock.path), *start)))
        n = 0
        met: set[str] = set()
        for item in dockfs.walk(dock.path, start):
            if isinstance(item, dockfs.Refused):
                met.add(self._refuse(item))
                continue
            raw, st = item
            refused = self._note(dock, raw, Path(os.fsdecode(raw)), st)
            if refused is not None:
                met.add(refused)
            n += 1
        # What this walk covered and no longer met is over (made readable, removed).
        self.problems.resolve_where(
            lambda k: (k == "path:" + top or k.startswith("path:" + top + "/")) and k not in met
        )
        return n

    def _look_at(self, dock: DockSettings, names: tuple[str, ...]) -> int:
        """Only the named files directly in the dock's folder (no walk below it)."""
        n = 0
        for name in names:
            path = dock.path / name
            key = os.fsencode(path)
            st = self._lstat(dock, key, path)
            if st is not None:
                self._note(dock, key, path, st)
                n += 1
        return n

    # -- stability and dispatch -------------------------------------------------

    def tick(self) -> None:
        """Queue files that have been stable for the settle window; start workers; hand
        releases that waited out the release settle to the release worker."""
        if self._rescan:
            self._rescan = False
            self.scan()
        now = self.clock()
        settle = self.settings.settle_ms / 1000
        with self._lock:
            due = [(k, w) for k, w in self._watch.items() if now - w.changed_at >= settle]
        if due and not self.halted:
            ready: list[tuple[bytes, Path, Watch]] = []
            writing = open_for_writing()
            for key, w in due:
                path = Path(os.fsdecode(key))
                st = self._lstat(w.dock, key, path)
                if st is None or not stat.S_ISREG(st.st_mode):
                    with self._lock:
                        self._watch.pop(key, None)
                    continue
                if _version(st) != _version(w):
                    with self._lock:
                        w.size, w.mtime_ns, w.ino, w.dev, w.changed_at = (
                            st.st_size,
                            st.st_mtime_ns,
                            st.st_ino,
                            st.st_dev,
                            now,
                        )
                    continue
                if self.marks.held(key, now):
                    continue  # inotify saw it written and not closed: look again later
                if (st.st_dev, st.st_ino) in writing or lease_says_writing(w.dock.path, path):
                    with self._lock:
                        w.changed_at = now  # still being written; look again later
                    continue
                ready.append((key, path, w))
            if ready:
                self._enqueue(ready)
        self._dispatch()
        self.releaser.tick(now)

    def _enqueue(self, items: list[tuple[bytes, Path, Watch]]) -> None:
        """Record stable files as queued jobs (one transaction), then hand them to workers."""
        jobs: list[tuple[bytes, Job]] = []
        done: list[bytes] = []
        with self._db_lock:
            try:
                self._enqueue_rows(items, jobs, done)
                self.db.commit()
            except Exception as e:
                self.db.rollback()
                if not self._database_full(e):
                    log.exception("could not queue %d stable file(s); will try again", len(items))
                return
        self.problems.resolve("disk:database")
        with self._lock:
            for key in done:
                self._watch.pop(key, None)
            for key, job in jobs:
                self._watch.pop(key, None)
                self._job_paths.add(key)
                self._queued.setdefault(f"{job.dock.label}/{job.recorder}", deque()).append(job)

    def _enqueue_rows(
        self,
        items: list[tuple[bytes, Path, Watch]],
        jobs: list[tuple[bytes, Job]],
        done: list[bytes],
    ) -> None:
        for key, path, w in items:
            recorder = self._recorder(w.dock, path)
            # The job of this file version, unless it was released: a file at a released
            # path is another one (the recorder reused the name), a job of its own.
            row = self.db.execute(
                "SELECT id, state, attempts, failure_entry FROM ingest_files "
                f"WHERE {SAME_VERSION} AND state<>'released' ORDER BY id DESC LIMIT 1",
                (key, w.size, w.mtime_ns, w.ino, w.dev),
            ).fetchone()
            if row is None:
                cur = self.db.execute(
                    "INSERT INTO ingest_files "
                    "(dock, recorder, path, size, mtime_ns, ino, dev, state, first_seen) "
                    "VALUES (?,?,?,?,?,?,?,'queued',?)",
                    (w.dock.label, recorder, key, w.size, w.mtime_ns, w.ino, w.dev, now_text()),
                )
                job_id, attempts, failure_entry = cur.lastrowid, 0, None
            else:
                if row[1] not in ("queued", "gone", "superseded"):
                    done.append(key)
                    continue
                if row[1] != "queued":
                    self.db.execute("UPDATE ingest_files SET state='queued' WHERE id=?", (row[0],))
                job_id, attempts, failure_entry = row[0], row[2], row[3]
            assert job_id is not None
            job = Job(job_id, w.dock, recorder, path, w.size, w.mtime_ns, w.ino, w.dev, attempts)
            job.failure_entry = failure_entry
            jobs.append((key, job))

    def recover(self) -> None:
        """After a restart: clear half-made copies, requeue queued jobs, finish probes/releases."""
        # Writers that held a file open before this start left no inotify mark here.
        self.marks.blind(self.clock())
        n = self.objects.remove_temporaries()
        if n:
            log.info("removed %d unfinished copies left by an interrupted capture", n)
        with self._db_lock:
            rows = self.db.execute(
                "SELECT id, dock, recorder, path, size, mtime_ns, ino, dev, attempts, "
                "failure_entry FROM ingest_files WHERE state='queued'"
            ).fetchall()
        by_label = {d.label: d for d in self.docks}
        for r in rows:
            dock = by_label.get(r[1])
            if dock is None:
                continue
            key = bytes(r[3])
            job = Job(r[0], dock, r[2], Path(os.fsdecode(key)), r[4], r[5], r[6], r[7], r[8])
            job.failure_entry = r[9]
            with self._lock:
                self._job_paths.add(key)
                self._queued.setdefault(f"{dock.label}/{r[2]}", deque()).append(job)
        self.releaser.resume()
        self.media_steps.resume()

    def halt(self, reason: str) -> None:
        """An integrity error: stop capture and release (the first reason is kept)."""
        with self._lock:
            first = not self.halted
            if first:
                self.halted = reason
        if first:
            log.critical(
                "capture STOPPED: integrity error: %s (nothing more is captured or released "
                "until it is resolved; run 'custody ledger verify')",
                reason,
            )

    def resume_after_halt(self) -> None:
        """The integrity error was resolved (the ledger integrates again)."""
        with self._lock:
            self.halted = ""
        log.warning("capture resumed: the integrity error was resolved")

    def _dispatch(self) -> None:
        if self._stopping or self.halted:
            return
        if self.paused and self.objects.free_bytes() >= self._resume_at:
            log.info("capture resumed: local disk has free space again")
            self.paused = ""
        if self.paused:
            return
        with self._lock:
            for rkey, q in self._queued.items():
                if q and rkey not in self._active:
                    self._active.add(rkey)
                    self._inflight += 1
                    self._pool.submit(self._drain_recorder, rkey)

    def _floor(self) -> int:
        return self.settings.min_free_mb << 20

    def _drain_recorder(self, rkey: str) -> None:
        try:
            while not self._stopping and not self.paused and not self.halted:
                with self._lock:
                    q = self._queued.get(rkey)
                    job = None
                    if q:
                        for _ in range(len(q)):
                            cand = q.popleft()
                            if cand.not_before <= self.clock():
                                job = cand
                                break
                            q.append(cand)
                if job is None:
                    return
                self.copying[rkey] = (shown(job.path), job.size, time.time())
                try:
                    requeue = self._run_job(job)
                finally:
                    self.copying.pop(rkey, None)
                with self._lock:
                    if requeue:
                        self._queued.setdefault(rkey, deque()).append(job)
                    else:
                        self._job_paths.discard(os.fsencode(job.path))
                if requeue and job.not_before > self.clock():
                    return
        except IntegrityError as e:
            self.halt(str(e))
        except Exception:
            log.exception("capture worker for %s stopped unexpectedly; it will restart", rkey)
        finally:
            with self._lock:
                self._active.discard(rkey)
                self._inflight -= 1
                self._idle.notify_all()

    # -- one capture -----------------------------------------------------------

    def _run_job(self, job: Job) -> bool:
        """Capture one file; True to keep it queued for a retry."""
        try:
            free = self.objects.free_bytes()
            if free - job.size < self._floor():
                raise DiskFull(
                    f"only {free >> 20} MB free on {self.objects.root}, "
                    f"floor {self.settings.min_free_mb} MB"
                )
            self._capture(job)
            self.problems.resolve("disk:database")
            return False
        except DiskFull as e:
            if not self.paused:
                log.error(
                    "capture paused: %s; make room on the local disk (custody removes "
                    "nothing it holds until it is safely stored elsewhere)",
                    e,
                )
            self.paused = str(e)
            self._resume_at = self._floor() + job.size
            return True
        except SourceChanged as e:
            state = "gone" if not job.path.exists() else "superseded"
            log.info("not captured yet: %s; will take the file once it is stable", shown(str(e)))
            self._set_state(job, state, str(e))
            with self._lock:
                self._job_paths.discard(os.fsencode(job.path))
            if state == "superseded":
                self.discover(job.path)
            return False
        except (SourceUnreadable, CaptureError, OSError) as e:
            job.attempts += 1
            delay = min(MAX_BACKOFF_S, 2 ** min(job.attempts, 10))
            job.not_before = self.clock() + delay
            msg = str(e) if isinstance(e, CaptureError) else f"{job.path}: {e}"
            log.error(
                "capture failed (attempt %d): %s; retrying in %d s", job.attempts, shown(msg), delay
            )
            self._record_failure(job, msg)
            self.stats.failed += 1
            self.stats.errors.append(msg)
            return True
        except IntegrityError as e:
            # Never a file's fault and never retried blindly: capture stops, loudly.
            self.halt(f"while capturing {shown(job.path)}: {e}")
            return True
        except Exception as e:
            # Not the file's fault (database busy, a bug): keep the job, try again later.
            job.attempts += 1
            delay = min(MAX_BACKOFF_S, 2 ** min(job.attempts, 10))
            job.not_before = self.clock() + delay
            if self._database_full(e):
                return True
            log.exception(
                "internal error while capturing %s; it stays queued and is retried in %d s",
                shown(job.path),
                delay,
            )
            self.stats.errors.append(f"{shown(job.path)}: internal error: {e}")
            return True

    def _database_full(self, e: Exception) -> bool:
        """The disk under the ledger's database is full: one line while it lasts (the
        work is tried again), not a traceback per attempt."""
        if not (isinstance(e, sqlite3.OperationalError) and "full" in str(e)):
            return False
        self.problems.report(
            "disk:database",
            f"capture waits: the ledger's database cannot grow ({e}); make room on the "
            f"disk holding {self.ledger.db_path.parent}",
            logging.ERROR,
        )
        return True

    def _set_state(self, job: Job, state: str, error: str | None = None) -> None:
        self.jobs.set_state_error(job.id, state, error)

    def _record_failure(self, job: Job, msg: str) -> None:
        """The first failure of a job is a signed entry; later ones update the job only."""
        if job.failure_entry is not None:
            with self._db_lock:
                self.db.execute(
                    "UPDATE ingest_files SET attempts=?, last_error=? WHERE id=?",
                    (job.attempts, msg, job.id),
                )
                self.db.commit()
            return
        rel = os.fsencode(job.path.relative_to(job.dock.path))
        payload = {
            "source": {"dock": job.dock.label, "recorder": job.recorder, **path_payload(rel)},
            "size": job.size,
            "error": msg[:1000],
            "will_retry": True,
        }

        def mark(conn: sqlite3.Connection, idx: list[int]) -> None:
            conn.execute(
                "UPDATE ingest_files SET attempts=?, last_error=?, failure_entry=? WHERE id=?",
                (job.attempts, msg, idx[0], job.id),
            )

        try:
            job.failure_entry = self.ledger.append("capture_failed", payload, mark)
        except IntegrityError as e:
            self.halt(str(e))
        except Exception:
            log.exception("could not record the capture failure of %s", job.path)

    def _capture(self, job: Job) -> None:
        # The lstat through folders opened without following symlinks: `capture_copy`
        # compares the file it opens (device, inode, size, mtime) with this one, so a
        # symlink swapped in on the way makes the copy fail rather than read elsewhere.
        try:
            st = dockfs.lstat_below(job.dock.path, job.path)
        except FileNotFoundError:
            raise SourceChanged(f"{job.path}: vanished before it could be read") from None
        except dockfs.Outside as e:
            self._refuse(e.refused)
            raise SourceChanged(f"{job.path}: {e.refused.reason}") from None
        if not stat.S_ISREG(st.st_mode):
            raise SourceChanged(f"{job.path}: is no longer a regular file")
        if _version(st) != _version(job, st.st_dev):
            raise SourceChanged(f"{job.path}: changed after it was queued")
        dock_time = datetime.now(UTC)
        temp, fd = self.objects.new_temp()
        try:
            try:
                digests = capture_copy(
                    job.path,
                    fd,
                    temp,
                    sm3=self.settings.sm3,
                    verify=self.settings.verify_copy,
                    chunk=self.settings.chunk_mb << 20,
                    expect=st,
                )
            finally:
                os.close(fd)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        with open(temp, "rb") as f:
            head = f.read(64)
        stored_new = self.objects.commit(temp, digests.sha256)
        self._record(job, st, digests, sniff(head, job.path.name), dock_time, stored_new)

    def _sha_lock(self, sha: str) -> threading.Lock:
        return self._sha_locks[int(sha[:2], 16) % len(self._sha_locks)]

    def _record(
        self,
        job: Job,
        st: os.stat_result,
        d: Digests,
        media_type: str,
        dock_time: datetime,
        stored_new: bool,
    ) -> None:
        rel = os.fsencode(job.path.relative_to(job.dock.path))
        resolver = self._resolvers.get(job.dock.path) or IdentityResolver(job.dock)
        rec_dir = str(job.dock.path / job.recorder) if job.recorder else str(job.dock.path)
        ident = resolver.resolve(job.recorder, rec_dir, job.path.name, st.st_dev)
        mtime = datetime.fromtimestamp(st.st_mtime_ns / 1e9, UTC)
        skew_ms = int((mtime - dock_time).total_seconds() * 1000)
        payload: dict[str, Any] = {
            "sha256": d.sha256,
            "size": d.size,
            "media_type": media_type,
            "source": {"dock": job.dock.label, "recorder": job.recorder, **path_payload(rel)},
            "recorder": ident.payload(),
            "times": {
                "dock_received": format_time(dock_time),
                "file_mtime": format_time(mtime),
            },
        }
        if d.sm3:
            payload["sm3"] = d.sm3
        if skew_ms > self.settings.clock_skew_s * 1000:
            payload["times"]["clock_skew_ms"] = skew_ms
            payload["times"]["clock_skew"] = "recorder clock ahead of the dock"
            log.warning(
                "recorder clock ahead: %s has mtime %s, %d s after the dock's clock",
                shown(job.path),
                format_time(mtime),
                skew_ms // 1000,
            )
        if job.failure_entry is not None:
            payload["after_failure_entry"] = job.failure_entry
        with self._db_lock:
            earlier = self.db.execute(
                "SELECT entry FROM ingest_files WHERE path=? AND id<>? AND (state='changed' "
                "OR (state='recorded' AND ino=?)) ORDER BY id DESC LIMIT 1",
                (os.fsencode(job.path), job.id, st.st_ino),
            ).fetchone()
        if earlier is not None:
            # The same recorder file (its inode, or found changed at release), captured
            # before and changed since: this is its new version, and the earlier one is
            # never released (a path is released only while it holds what was captured).
            payload["earlier_version_entry"] = int(earlier[0])
        with self._sha_lock(d.sha256):
            with self._db_lock:
                row = self.db.execute(
                    "SELECT first_entry FROM ingest_objects WHERE sha256=?", (d.sha256,)
                ).fetchone()
            gone = self.deleted(d.sha256) if row and self.deleted is not None else None
            kind = "sighting" if row and gone is None else "ingest"
            if row and gone is None:
                payload["first_entry"] = int(row[0])
            elif row:
                payload["after_deletion_entry"] = gone
                payload["earlier_entry"] = int(row[0])

            def mark(conn: sqlite3.Connection, idx: list[int]) -> None:
                cur = conn.execute(
                    "UPDATE ingest_files SET state='recorded', sha256=?, entry=?, kind=?, "
                    "attempts=?, last_error=NULL WHERE id=? AND state='queued'",
                    (d.sha256, idx[0], kind, job.attempts, job.id),
                )
                if cur.rowcount != 1:
                    raise RuntimeError(f"job {job.id} is no longer queued")
                if gone is not None:
                    # Captured anew: probed and given copies again, stored again.
                    conn.execute(
                        "UPDATE ingest_objects SET first_entry=?, probe_entry=NULL, "
                        "media_type=? WHERE sha256=?",
                        (idx[0], media_type, d.sha256),
                    )
                    conn.execute("DELETE FROM ingest_derivatives WHERE original=?", (d.sha256,))
                    if self.on_new_object is not None:
                        self.on_new_object(conn, d.sha256, d.size, "original")
                    return
                new = conn.execute(
                    "INSERT OR IGNORE INTO ingest_objects (sha256, size, media_type, first_entry)"
                    " VALUES (?,?,?,?)",
                    (d.sha256, d.size, media_type, idx[0]),
                )
                if new.rowcount == 1 and self.on_new_object is not None:
                    self.on_new_object(conn, d.sha256, d.size, "original")

            index = self.ledger.append(kind, payload, mark)
        if kind == "ingest":
            self.stats.captured += 1
            self.stats.bytes += d.size
            log.info(
                "captured %s (%d bytes, sha256 %s) as entry %d",
                shown(job.path),
                d.size,
                d.sha256[:16],
                index,
            )
            self.media_steps.captured(d.sha256, media_type)
        else:
            self.stats.sightings += 1
            log.info(
                "already captured: %s is the same as entry %s (sha256 %s); sighting is entry %d",
                shown(job.path),
                payload["first_entry"],
                d.sha256[:16],
                index,
            )
        self.releaser.captured(job.id, d.sha256)

    def set_docks(self, docks: list[DockSettings] | tuple[DockSettings, ...]) -> None:
        """New dock settings (a configuration reload); work already queued goes on."""
        with self._lock:
            self.docks = list(docks)
            self._resolvers = {d.path: IdentityResolver(d) for d in self.docks}
        roots = tuple(f"path:{d.path}/" for d in self.docks)
        self.problems.resolve_where(lambda k: k.startswith("path:") and not k.startswith(roots))

    def release_replicated(self, sha256: str, store_entry: int) -> None:
        """The cold store confirmed ``sha256``: release every recorder file that holds it."""
        self.releaser.replicated_now(sha256, store_entry)

    def schedule_media(self) -> None:
        """Queue every media step still owed (the daemon's scheduler: transcodes waiting
        for the next day's budget)."""
        self.media_steps.schedule_media()

    def releases_waiting(self) -> int:
        return self.releaser.waiting()

    # -- one-shot ------------------------------------------------------------------

    def waiting_files(self) -> list[str]:
        """Files not captured yet: still changing, open for writing, or queued."""
        with self._lock:
            out = [shown(os.fsdecode(k)) for k in self._watch]
            out += [shown(j.path) for q in self._queued.values() for j in q]
        return sorted(out)

    def queued_count(self) -> int:
        with self._lock:
            return sum(len(q) for q in self._queued.values()) + len(self._watch)

    def drain(self, timeout: float | None = None) -> bool:
        """Run ticks until nothing is watched, queued or in flight (one-shot ingest)."""
        end = None if timeout is None else self.clock() + timeout
        while True:
            self.tick()
            with self._lock:
                pending = sum(len(q) for q in self._queued.values())
                retry_only = all(
                    j.not_before > self.clock() for q in self._queued.values() for j in q
                )
                idle = self._inflight == 0 and not self._watch
                if idle and (pending == 0 or retry_only or self.paused or self.halted):
                    break
                self._idle.wait(0.05)
            if end is not None and self.clock() > end:
                return False
        self.media_steps.finish()
        return True

    def finish_releases(self) -> None:
        """Wait out the release settle of every release asked for, then for the release
        worker (one-shot ingest)."""
        self.releaser.finish()


def _version(v: os.stat_result | Watch | Job, dev_unknown: int = 0) -> tuple[int, int, int, int]:
    """A file version: (size, mtime, inode, device). A job from before the device was
    recorded (dev 0) takes ``dev_unknown`` for it."""
    if isinstance(v, os.stat_result):
        return (v.st_size, v.st_mtime_ns, v.st_ino, v.st_dev)
    return (v.size, v.mtime_ns, v.ino, v.dev or dev_unknown)
