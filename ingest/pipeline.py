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
its own entry.

Small files (under one copy chunk) of one recorder are captured in groups (up
to `GROUP_FILES` files, `GROUP_BYTES` bytes): each copy is written, then every
copy of the group is fsynced and read back from the disk (`settle_copies`),
moved into the store, the folders the moves touched are fsynced once each,
and only then are the group's entries signed and its jobs marked recorded in
one transaction (`Ledger.append_entries`). A crash before that transaction
leaves the whole group queued (copies already in the store are found there and
re-hashed on the retry); after it, the whole group recorded. A file that fails
(changed, vanished, unreadable, its part of the transaction refused) is dealt
with alone, as if it had been captured alone, and the rest of the group goes
on without it. Two copies of one content in a group are recorded in turn (the
ingest, then in a later transaction the sighting that names its entry). Whether
an entry is an ingest or a sighting is decided from the object table and checked
again inside the transaction, so two recorders docking the same content at once
still make one ingest; no lock is held across the commit, which lets the ledger
commit several recorders' groups together. Large files are captured one at a
time, each in its own transaction. A new object is handed to ``on_new_object``
inside its entry's transaction (the cold-store queue), and with ``release =
after_replication`` a source is released only once ``replicated`` names its
`store` entry. New originals are handed to the media steps (probe,
fingerprints, copies) once capture has nothing running or due (at most
`MEDIA_WAIT_MAX_S` later): their work competes with capture for the CPU and
the disk.

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
from collections import Counter, deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
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
from ingest.objects import (
    Digests,
    LocalObjects,
    capture_copy,
    open_source,
    settle_copies,
    start_copy,
)
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

# Small files (under one copy chunk, `CaptureSettings.chunk_mb`) of one recorder are
# captured in groups of up to this many files and bytes: one fsync of each folder the
# copies went into and one transaction for all their entries, instead of one each.
# 64 files: past that the time per file no longer falls measurably (the benchmark).
GROUP_FILES = 64
GROUP_BYTES = 64 << 20
# Times a group's entries are decided again after another recorder recorded the same
# content first (checked inside the transaction) before its jobs wait for a retry.
STALE_RETRIES = 5
# The longest a new original waits for capture to fall idle before its media steps
# (probe, fingerprints, copies) are started anyway.
MEDIA_WAIT_MAX_S = 120.0


@dataclass
class _Started:
    """A copy made into a temp file, its descriptor still open; ``settled`` once it is
    fsynced and verified (a large file is, at once; small ones by `settle_copies`)."""

    job: Job
    st: os.stat_result
    temp: Path
    fd: int
    digests: Digests
    dock_time: datetime
    settled: bool


@dataclass(frozen=True)
class _Copied:
    """A file copied into the store (fsynced, verified, moved into place): what its
    entry needs."""

    job: Job
    st: os.stat_result
    digests: Digests
    media_type: str
    dock_time: datetime


@dataclass(frozen=True)
class _Plan:
    """One entry to sign, and what it was decided on: the `first_entry` of the content's
    row in ``ingest_objects`` (None: no row), checked again in the transaction."""

    copied: _Copied
    kind: str  # ingest | sighting
    payload: dict[str, Any]
    first_entry: int | None


class _Stale(Exception):
    """Another recorder recorded the same content between deciding an entry and its
    transaction: decide again."""


class _FileFailed(Exception):
    """One file's part of a group's transaction failed (``at``: its place in the group)."""

    def __init__(self, at: int, cause: Exception) -> None:
        super().__init__(str(cause))
        self.at = at
        self.cause = cause


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
        # New originals owed their media steps, handed over once capture has nothing to
        # do (or `MEDIA_WAIT_MAX_S` after the first): evidence first. A crash loses
        # nothing: the steps are found pending at the next start.
        self._media_owed: list[tuple[str, str]] = []
        self._media_owed_since = 0.0
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
        self._hand_over_media(now)
        self.releaser.tick(now)

    def _hand_over_media(self, now: float, force: bool = False) -> None:
        """Give the media steps the originals recorded since, once no capture is running
        or due (the media worker competes for the CPU and the disk, and its PyAV work for
        the interpreter), or once the first has waited `MEDIA_WAIT_MAX_S`."""
        with self._lock:
            if not self._media_owed:
                self._media_owed_since = 0.0
                return
            if not self._media_owed_since:
                self._media_owed_since = now
            busy = self._inflight > 0 or any(
                j.not_before <= now for q in self._queued.values() for j in q
            )
            if busy and not force and now - self._media_owed_since < MEDIA_WAIT_MAX_S:
                return
            owed, self._media_owed = self._media_owed, []
            self._media_owed_since = 0.0
        for sha, media_type in owed:
            self.media_steps.captured(sha, media_type)

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
        now = self.clock()
        with self._lock:
            for rkey, q in self._queued.items():
                # Only a recorder with a job due now: a worker started for jobs that all
                # wait out a back-off would find nothing, and keep one-shot ingest from
                # ever seeing capture idle.
                if rkey not in self._active and any(j.not_before <= now for j in q):
                    self._active.add(rkey)
                    self._inflight += 1
                    self._pool.submit(self._drain_recorder, rkey)

    def _floor(self) -> int:
        return self.settings.min_free_mb << 20

    def _drain_recorder(self, rkey: str) -> None:
        try:
            while not self._stopping and not self.paused and not self.halted:
                group = self._take(rkey)
                if not group:
                    return
                size = sum(j.size for j in group)
                self.copying[rkey] = (shown(group[0].path), size, time.time())
                try:
                    keep = self._run_group(group)
                except Exception:
                    # A bug, not the files' fault: what is not recorded yet stays queued.
                    log.exception("capture of a group of %s failed; retrying it", rkey)
                    try:
                        keep = self._still_queued(group)
                    except Exception:
                        # The database too: keep them all, backed off. A job recorded
                        # meanwhile is recorded once (its row is no longer 'queued').
                        keep = list(group)
                        for j in keep:
                            j.attempts += 1
                            j.not_before = self.clock() + min(
                                MAX_BACKOFF_S, 2 ** min(j.attempts, 10)
                            )
                finally:
                    self.copying.pop(rkey, None)
                kept = {j.id for j in keep}
                with self._lock:
                    for job in group:
                        if job.id in kept:
                            self._queued.setdefault(rkey, deque()).append(job)
                        else:
                            self._job_paths.discard(os.fsencode(job.path))
                if len(kept) == len(group):
                    return  # nothing went through: the next tick tries again
        except IntegrityError as e:
            self.halt(str(e))
        except Exception:
            log.exception("capture worker for %s stopped unexpectedly; it will restart", rkey)
        finally:
            with self._lock:
                self._active.discard(rkey)
                self._inflight -= 1
                self._idle.notify_all()

    def _still_queued(self, jobs: list[Job]) -> list[Job]:
        """The jobs whose rows are still queued, each given a back-off."""
        with self._db_lock:
            queued = {
                r[0]
                for r in self.db.execute(
                    "SELECT id FROM ingest_files WHERE state='queued' AND id IN "
                    f"({','.join('?' * len(jobs))})",
                    [j.id for j in jobs],
                )
            }
        keep = [j for j in jobs if j.id in queued]
        for j in keep:
            j.attempts += 1
            j.not_before = self.clock() + min(MAX_BACKOFF_S, 2 ** min(j.attempts, 10))
        return keep

    def _take(self, rkey: str) -> list[Job]:
        """The next ready job of a recorder; if it is a small file (under one copy chunk),
        with it the ready small files queued after it, up to `GROUP_FILES` files and
        `GROUP_BYTES` bytes: one group, recorded in one transaction."""
        small = self.settings.chunk_mb << 20
        now = self.clock()
        group: list[Job] = []
        size = 0
        with self._lock:
            q = self._queued.get(rkey)
            for _ in range(len(q) if q else 0):
                assert q is not None
                job = q.popleft()
                if job.not_before > now:
                    q.append(job)
                elif not group:
                    group.append(job)
                    size = job.size
                    if job.size >= small:
                        break  # a large file goes alone
                elif (
                    job.size < small
                    and len(group) < GROUP_FILES
                    and size + job.size <= GROUP_BYTES
                    and group[0].size < small
                ):
                    group.append(job)
                    size += job.size
                else:
                    q.append(job)
        return group

    # -- one group ---------------------------------------------------------------

    def _run_group(self, jobs: list[Job]) -> list[Job]:
        """Capture a group of one recorder's files (or one large file): copy each into the
        store, fsynced and verified; fsync the folders the copies were moved into, once
        each; then sign their entries and mark the jobs recorded in one transaction.
        Returns the jobs kept queued (to be tried again, or not reached because capture
        paused or stopped); a file that fails is dealt with alone, as if captured alone."""
        keep: list[Job] = []
        try:
            free = self.objects.free_bytes()
        except OSError as e:
            return [j for j in jobs if self._failed(j, e)]
        started: list[_Started] = []
        dirs: set[Path] = set()
        copied: list[_Copied] = []
        opened = self._open_sources(jobs)
        try:
            for job in jobs:
                if self.paused or self.halted or self._stopping:
                    keep.append(job)
                    continue
                try:
                    if free - job.size < self._floor():
                        raise DiskFull(
                            f"only {free >> 20} MB free on {self.objects.root}, "
                            f"floor {self.settings.min_free_mb} MB"
                        )
                    started.append(self._start(job, opened.pop(job.id, None)))
                    free -= job.size
                except Exception as e:
                    if self._failed(job, e):
                        keep.append(job)
            small = [s for s in started if not s.settled]
            errors = settle_copies(
                [(s.fd, s.temp, s.digests) for s in small], self.settings.verify_copy
            )
            failed = {id(s): e for s, e in zip(small, errors, strict=True) if e is not None}
            for s in started:
                os.close(s.fd)
                s.fd = -1
                try:
                    error = failed.get(id(s))
                    if error is not None:
                        raise error
                    self.objects.commit(s.temp, s.digests.sha256, dirs)
                except Exception as e:
                    s.temp.unlink(missing_ok=True)
                    if self._failed(s.job, e):
                        keep.append(s.job)
                    continue
                media_type = sniff(s.digests.head, s.job.path.name)
                copied.append(_Copied(s.job, s.st, s.digests, media_type, s.dock_time))
        finally:
            for s in started:
                if s.fd >= 0:
                    os.close(s.fd)
                    s.temp.unlink(missing_ok=True)
            for fd, _ in opened.values():  # sources of jobs not reached
                os.close(fd)
        try:
            # Before any entry names a copy: its folder entries survive a power cut.
            self.objects.sync_dirs(dirs)
        except OSError as e:
            return keep + [c.job for c in copied if self._failed(c.job, e)]
        # The first copy of each content in one transaction, a second copy of the same
        # content (a sighting of the first) in the next, and so on: a sighting names
        # the entry of the ingest, which must have its index first.
        rounds: list[list[_Copied]] = []
        seen: Counter[str] = Counter()
        for c in copied:
            k = seen[c.digests.sha256]
            seen[c.digests.sha256] += 1
            if k == len(rounds):
                rounds.append([])
            rounds[k].append(c)
        for r in rounds:
            keep += self._commit(r)
        return keep

    def _check(self, job: Job) -> os.stat_result:
        """The source's lstat, taken through folders opened without following symlinks,
        if it is still the regular file version queued: the copy compares the file it
        opens (device, inode, size, mtime) with this one, so a symlink swapped in on
        the way makes the copy fail rather than read elsewhere."""
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
        return st

    def _open_sources(self, jobs: list[Job]) -> dict[int, tuple[int, os.stat_result]]:
        """The sources of a group of small files opened (checked as `_check` does) and
        asked for all at once, so the recorder or disk reads them in parallel; one that
        cannot be is left to `_start`, which says why."""
        opened: dict[int, tuple[int, os.stat_result]] = {}
        if len(jobs) < 2:
            return opened
        for job in jobs:
            if job.size >= self.settings.chunk_mb << 20:
                continue
            try:
                opened[job.id] = open_source(job.path, self._check(job))
            except (CaptureError, OSError):
                continue
        return opened

    def _start(self, job: Job, opened: tuple[int, os.stat_result] | None = None) -> _Started:
        """Copy one file into a temp file: a large one whole (fsynced and verified), a
        small one up to the point where `settle_copies` takes over (``opened``: its
        source from `_open_sources`, closed here)."""
        try:
            st = opened[1] if opened is not None else self._check(job)
            dock_time = datetime.now(UTC)
            chunk = self.settings.chunk_mb << 20
            temp, fd = self.objects.new_temp()
        except BaseException:
            if opened is not None:
                os.close(opened[0])
            raise
        try:
            if st.st_size < chunk:
                digests = start_copy(
                    job.path, fd, sm3=self.settings.sm3, chunk=chunk, expect=st, opened=opened
                )
            else:
                digests = capture_copy(
                    job.path,
                    fd,
                    temp,
                    sm3=self.settings.sm3,
                    verify=self.settings.verify_copy,
                    chunk=chunk,
                    expect=st,
                )
        except BaseException:
            os.close(fd)
            temp.unlink(missing_ok=True)
            raise
        return _Started(job, st, temp, fd, digests, dock_time, settled=st.st_size >= chunk)

    def _failed(self, job: Job, e: Exception) -> bool:
        """What a failure to capture one file means for it: True to keep it queued."""
        if isinstance(e, DiskFull):
            if not self.paused:
                log.error(
                    "capture paused: %s; make room on the local disk (custody removes "
                    "nothing it holds until it is safely stored elsewhere)",
                    e,
                )
            self.paused = str(e)
            self._resume_at = self._floor() + job.size
            return True
        if isinstance(e, SourceChanged):
            state = "gone" if not job.path.exists() else "superseded"
            log.info("not captured yet: %s; will take the file once it is stable", shown(str(e)))
            self._set_state(job, state, str(e))
            with self._lock:
                self._job_paths.discard(os.fsencode(job.path))
            if state == "superseded":
                self.discover(job.path)
            return False
        if isinstance(e, (SourceUnreadable, CaptureError, OSError)):
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
        if isinstance(e, IntegrityError):
            # Never a file's fault and never retried blindly: capture stops, loudly.
            self.halt(f"while capturing {shown(job.path)}: {e}")
            return True
        # Not the file's fault (database busy, a bug): keep the job, try again later.
        job.attempts += 1
        delay = min(MAX_BACKOFF_S, 2 ** min(job.attempts, 10))
        job.not_before = self.clock() + delay
        if self._database_full(e):
            return True
        log.error(
            "internal error while capturing %s; it stays queued and is retried in %d s",
            shown(job.path),
            delay,
            exc_info=e,
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

    def _commit(self, copied: list[_Copied]) -> list[Job]:
        """Sign the entries of copies of distinct contents and mark their jobs recorded,
        in one transaction; returns the jobs kept queued.

        A file whose part of the transaction fails (its job, its row, the cold-store
        queue) is taken out and dealt with alone, and the rest commit together without
        it. What an entry was decided on (ingest or sighting, of which entry) is checked
        again inside the transaction: another recorder may have recorded the same
        content meanwhile, and then the entries are decided and signed again (no lock
        is held across the commit, so the ledger commits the groups of several
        recorders together)."""
        pending = list(copied)
        keep: list[Job] = []
        stale = 0
        while pending:
            plans: list[_Plan] = []
            for c in list(pending):
                try:
                    plans.append(self._plan(c))
                except Exception as e:
                    pending.remove(c)
                    keep += [c.job] if self._failed(c.job, e) else []
            if not plans:
                break
            try:
                mark = self._marker(plans)
                if len(plans) == 1:
                    kind = plans[0].kind
                    indexes = [self.ledger.append(kind, plans[0].payload, mark)]
                else:
                    items = [(p.kind, p.payload) for p in plans]
                    indexes = self.ledger.append_entries(items, mark)
            except _Stale:
                stale += 1
                if stale < STALE_RETRIES:
                    continue
                busy = RuntimeError("the same content kept being recorded by another recorder")
                return keep + [c.job for c in pending if self._failed(c.job, busy)]
            except _FileFailed as e:
                c = plans[e.at].copied
                pending.remove(c)
                keep += [c.job] if self._failed(c.job, e.cause) else []
                continue
            except IntegrityError as e:
                self.halt(f"while capturing {shown(pending[0].job.path)}: {e}")
                return keep + [c.job for c in pending]
            except Exception as e:
                # The transaction as a whole failed (the database full or busy): each
                # file is kept for a retry.
                return keep + [c.job for c in pending if self._failed(c.job, e)]
            for p, index in zip(plans, indexes, strict=True):
                self._recorded(p, index)
            break
        return keep

    def _plan(self, c: _Copied) -> _Plan:
        """The entry for one copy: `ingest` for content not held, else a `sighting` of the
        entry that ingested it."""
        job, st, d, dock_time = c.job, c.st, c.digests, c.dock_time
        rel = os.fsencode(job.path.relative_to(job.dock.path))
        resolver = self._resolvers.get(job.dock.path) or IdentityResolver(job.dock)
        rec_dir = str(job.dock.path / job.recorder) if job.recorder else str(job.dock.path)
        ident = resolver.resolve(job.recorder, rec_dir, job.path.name, st.st_dev)
        mtime = datetime.fromtimestamp(st.st_mtime_ns / 1e9, UTC)
        skew_ms = int((mtime - dock_time).total_seconds() * 1000)
        payload: dict[str, Any] = {
            "sha256": d.sha256,
            "size": d.size,
            "media_type": c.media_type,
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
            row = self.db.execute(
                "SELECT first_entry FROM ingest_objects WHERE sha256=?", (d.sha256,)
            ).fetchone()
        if earlier is not None:
            # The same recorder file (its inode, or found changed at release), captured
            # before and changed since: this is its new version, and the earlier one is
            # never released (a path is released only while it holds what was captured).
            payload["earlier_version_entry"] = int(earlier[0])
        first = None if row is None else int(row[0])
        gone = self.deleted(d.sha256) if first is not None and self.deleted else None
        if gone is not None and first is not None and gone < first:
            gone = None  # deleted once, and captured anew since: that copy stands
        if first is not None and gone is None:
            payload["first_entry"] = first
            return _Plan(c, "sighting", payload, first)
        if first is not None:
            payload["after_deletion_entry"] = gone
            payload["earlier_entry"] = first
        return _Plan(c, "ingest", payload, first)

    def _marker(self, plans: list[_Plan]) -> Callable[[sqlite3.Connection, list[int]], None]:
        """The part of the entries' transaction that records them in the job tables; a
        failure is raised as `_FileFailed` naming the file it belongs to."""

        def mark(conn: sqlite3.Connection, idx: list[int]) -> None:
            for at, (p, index) in enumerate(zip(plans, idx, strict=True)):
                try:
                    self._mark_one(conn, p, index)
                except _Stale:
                    raise
                except Exception as e:
                    raise _FileFailed(at, e) from e

        return mark

    def _mark_one(self, conn: sqlite3.Connection, p: _Plan, index: int) -> None:
        job, d = p.copied.job, p.copied.digests
        cur = conn.execute(
            "UPDATE ingest_files SET state='recorded', sha256=?, entry=?, kind=?, "
            "attempts=?, last_error=NULL WHERE id=? AND state='queued'",
            (d.sha256, index, p.kind, job.attempts, job.id),
        )
        if cur.rowcount != 1:
            raise RuntimeError(f"job {job.id} is no longer queued")
        row = conn.execute(
            "SELECT first_entry FROM ingest_objects WHERE sha256=?", (d.sha256,)
        ).fetchone()
        if (None if row is None else int(row[0])) != p.first_entry:
            raise _Stale(d.sha256)
        if p.kind == "sighting":
            return
        if p.first_entry is not None:
            # Captured anew after retention deleted it: probed and given copies again,
            # stored again.
            conn.execute(
                "UPDATE ingest_objects SET first_entry=?, probe_entry=NULL, media_type=? "
                "WHERE sha256=?",
                (index, p.copied.media_type, d.sha256),
            )
            conn.execute("DELETE FROM ingest_derivatives WHERE original=?", (d.sha256,))
        else:
            conn.execute(
                "INSERT INTO ingest_objects (sha256, size, media_type, first_entry) "
                "VALUES (?,?,?,?)",
                (d.sha256, d.size, p.copied.media_type, index),
            )
        if self.on_new_object is not None:
            self.on_new_object(conn, d.sha256, d.size, "original")

    def _recorded(self, p: _Plan, index: int) -> None:
        """After the transaction: counts, the log line, media steps and the release."""
        job, d = p.copied.job, p.copied.digests
        if p.kind == "ingest":
            self.stats.captured += 1
            self.stats.bytes += d.size
            log.info(
                "captured %s (%d bytes, sha256 %s) as entry %d",
                shown(job.path),
                d.size,
                d.sha256[:16],
                index,
            )
            with self._lock:
                self._media_owed.append((d.sha256, p.copied.media_type))
        else:
            self.stats.sightings += 1
            log.info(
                "already captured: %s is the same as entry %s (sha256 %s); sighting is entry %d",
                shown(job.path),
                p.payload["first_entry"],
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
        self._hand_over_media(self.clock(), force=True)
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
