"""Replication to the cold store: a durable queue of objects, and the ledger mirror.

Objects. A row in ``archive_queue`` (in the ledger's SQLite file) is written
in the same transaction as the entry that made the object (capture's
``ingest``; later sidecars and derivatives), so nothing recorded can miss
the queue. A worker uploads due rows, confirms the stored checksum, and
appends a signed ``store`` entry in the same transaction that marks the row
stored. A crash between upload and entry repeats the upload, which finds
the object already there with the right checksum and accepts it: one object
version, one ``store`` entry. Failures back off exponentially with jitter;
the next attempt time is persisted, so backoff holds across restarts, and
a store that is down for hours only delays.

Ledger. Full tiles and entry bundles are written once (locked like
evidence), partial tiles at the right edge unlocked, every signed
checkpoint as ``checkpoints/<size>`` and the latest as ``checkpoint`` (written
again when it gains witness cosignatures after it was mirrored); the tiles
always go before the checkpoints that need them. The replicated size
is kept in ``archive_meta``.
"""

from __future__ import annotations

import hashlib
import logging
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from archive.errors import (
    LockingNotEnabled,
    NotFound,
    StoreError,
    StoreUnavailable,
    TransferCorrupted,
)
from archive.settings import ReplicationSettings
from archive.store import ColdStore, Lock, Stored, ledger_prefix, object_key
from ledger.entry import format_time
from ledger.errors import IntegrityError, Withdrawn
from ledger.log import Ledger
from ledger.tiles import tiles_to_publish

log = logging.getLogger("custody.archive")

SCHEMA = """
CREATE TABLE IF NOT EXISTS archive_queue (
    store TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    role TEXT NOT NULL,
    enqueued TEXT NOT NULL,
    enqueued_at REAL NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL DEFAULT 0,
    last_error TEXT,
    failure_entry INTEGER,
    store_entry INTEGER,
    PRIMARY KEY (store, sha256)
);
CREATE INDEX IF NOT EXISTS archive_queue_due ON archive_queue (state, next_at);
CREATE TABLE IF NOT EXISTS archive_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

ROLES = ("original", "sidecar", "derivative")


def ensure_schema(db: sqlite3.Connection) -> None:
    db.executescript(SCHEMA)
    db.commit()


def enqueue(conn: sqlite3.Connection, store: str, sha256: str, size: int, role: str) -> bool:
    """Queue an object for upload inside the caller's transaction; False if already queued."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, not {role!r}")
    now = datetime.now(UTC)
    cur = conn.execute(
        "INSERT OR IGNORE INTO archive_queue (store, sha256, size, role, enqueued, enqueued_at, "
        "state) VALUES (?,?,?,?,?,?,'queued')",
        (store, sha256, size, role, format_time(now), now.timestamp()),
    )
    return cur.rowcount == 1


def enqueue_missing(
    db: sqlite3.Connection, store: str, batches: Iterable[list[tuple[str, int]]]
) -> int:
    """Queue the originals this store has no row for (a store added after capture began);
    returns how many were queued. One transaction per batch."""
    n = 0
    for batch in batches:
        with db:
            n += sum(enqueue(db, store, sha, size, "original") for sha, size in batch)
    return n


def requeue(conn: sqlite3.Connection, store: str, sha256: str, size: int, role: str) -> None:
    """Queue an object again whose stored copy was deleted (retention) and which has come
    back: its row, stored before, goes back to the queue (inside the caller's
    transaction)."""
    if not enqueue(conn, store, sha256, size, role):
        conn.execute(
            "UPDATE archive_queue SET state='queued', attempts=0, next_at=0, last_error=NULL, "
            "store_entry=NULL, size=? WHERE store=? AND sha256=?",
            (size, store, sha256),
        )


def backoff(
    attempts: int, base: float, cap: float, rnd: Callable[[], float] = random.random
) -> float:
    """Exponential backoff with "equal jitter": between half and all of min(cap, base·2^(n-1))."""
    d = min(cap, base * (2 ** min(max(attempts, 1) - 1, 30)))
    return float(d / 2 + rnd() * d / 2)


class Replicator:
    """Uploads queued objects and mirrors the ledger; thread-safe `kick`, `status`."""

    def __init__(
        self,
        ledger: Ledger,
        store: ColdStore,
        local_path: Callable[[str], Path],
        settings: ReplicationSettings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ledger = ledger
        self.store = store
        self.local_path = local_path
        self.settings = settings
        self.clock = clock
        self.store_id = store.id
        self.db = sqlite3.connect(ledger.db_path, timeout=60, check_same_thread=False)
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("PRAGMA busy_timeout=60000")
        ensure_schema(self.db)
        self._db_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._pause_until = 0.0  # whole store unreachable: wait before trying anything
        self._down_count = 0
        # The latest failure of uploads and of the ledger mirror, each cleared by the next
        # success of the same kind: a store that recovered shows no stale error.
        self._errors: dict[str, tuple[str, float]] = {}
        # An integrity error met while replicating ("" while none): never retried as if
        # it were an outage; the daemon stops capture on it.
        self.integrity_error: str = ""
        self.uploaded = 0
        self.uploaded_bytes = 0
        self.on_stored: Callable[[str, int], None] | None = None
        self._ledger_next = 0.0
        self._ledger_attempts = 0
        self._locking_checked = False
        self._mirror_integrity_reported = False
        clean = getattr(store, "remove_temporaries", None)
        if clean is not None:
            clean()  # a folder store's half-written copies from a crash

    @property
    def last_error(self) -> str:
        latest = max(self._errors.values(), key=lambda e: e[1], default=("", 0.0))
        return latest[0]

    @property
    def last_error_at(self) -> float:
        return max((at for _, at in self._errors.values()), default=0.0)

    def _error(self, kind: str, msg: str) -> None:
        self._errors[kind] = (msg, self.clock())

    def _cleared(self, kind: str) -> None:
        if self._errors.pop(kind, None) is not None:
            log.info("cold store %s: %s works again", self.store_id, kind)

    # -- wiring ----------------------------------------------------------------------

    def enqueue_in(self, conn: sqlite3.Connection, sha256: str, size: int, role: str) -> None:
        """Hook for callers that make objects: queue inside their entry's transaction."""
        enqueue(conn, self.store_id, sha256, size, role)
        self._wake.set()

    def kick(self) -> None:
        self._wake.set()

    def stored_entry(self, sha256: str) -> int | None:
        """The `store` entry of an object in this store, or None while it is not replicated."""
        with self._db_lock:
            row = self.db.execute(
                "SELECT store_entry FROM archive_queue WHERE store=? AND sha256=? "
                "AND state='stored'",
                (self.store_id, sha256),
            ).fetchone()
        return int(row[0]) if row else None

    def start(self) -> None:
        self._stop.clear()
        stopping = getattr(self.store, "stopping", None)
        if stopping is not None:
            stopping.clear()
        for name, fn in (("replicate", self._object_loop), ("ledger-mirror", self._ledger_loop)):
            t = threading.Thread(target=fn, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        stopping = getattr(self.store, "stopping", None)
        if stopping is not None:
            stopping.set()  # a large upload in flight gives up between parts
        end = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, end - time.monotonic()))
        self._threads = [t for t in self._threads if t.is_alive()]

    def close(self, timeout: float = 30.0) -> None:
        self.stop(timeout)
        if any(t.is_alive() for t in self._threads):
            log.warning("replication still busy after %d s; it resumes at the next start", timeout)
            return  # the thread still uses the database; the process exit closes it
        self.db.close()

    # -- objects -----------------------------------------------------------------------

    def _object_loop(self) -> None:
        while not self._stop.is_set():
            try:
                n, wait = self.run_due()
            except IntegrityError as e:
                self.integrity_error = str(e)
                log.critical("replication STOPPED: integrity error: %s", e)
                return
            except Exception:
                log.exception("replication worker error; retrying shortly")
                n, wait = 0, 5.0
            if n == 0:
                # Rows are queued inside other transactions: a wake-up can come before
                # their commit, so look again within a second whatever happens.
                self._wake.wait(min(max(wait, 0.05), 1.0))
                self._wake.clear()

    def run_due(self, limit: int = 100) -> tuple[int, float]:
        """Upload what is due now; returns (attempted, seconds until the next is due)."""
        now = self.clock()
        if now < self._pause_until:
            return 0, self._pause_until - now
        with self._db_lock:
            rows = self.db.execute(
                "SELECT sha256, size, role, attempts, failure_entry FROM archive_queue "
                "WHERE store=? AND state='queued' AND next_at <= ? ORDER BY next_at, enqueued_at "
                "LIMIT ?",
                (self.store_id, now, limit),
            ).fetchall()
        n = 0
        for sha, size, role, attempts, failure_entry in rows:
            if self._stop.is_set():
                break
            n += 1
            try:
                stored = self.replicate_one(sha, size, role, attempts, failure_entry)
            except Exception as e:  # a bug or a database error: back off this row only
                log.exception("replication of %s failed unexpectedly", sha[:16])
                self._failed(sha, size, attempts + 1, e, failure_entry)
                stored = False
            if not stored and self.clock() < self._pause_until:
                break
        return n, self._next_due() - self.clock()

    def _next_due(self) -> float:
        with self._db_lock:
            row = self.db.execute(
                "SELECT MIN(next_at) FROM archive_queue WHERE store=? AND state='queued'",
                (self.store_id,),
            ).fetchone()
        nxt = float(row[0]) if row and row[0] is not None else self.clock() + 3600
        return max(nxt, self._pause_until)

    def _lock(self, days: int) -> Lock | None:
        if not self.settings.locking:
            return None
        until = datetime.fromtimestamp(self.clock(), UTC) + timedelta(days=days)
        return Lock(self.settings.lock_mode, until.replace(microsecond=0))

    def replicate_one(
        self, sha: str, size: int, role: str, attempts: int = 0, failure_entry: int | None = None
    ) -> bool:
        """Upload one object, confirm it, record its `store` entry. True when stored."""
        key = object_key(sha)
        try:
            path = self.local_path(sha)
            if not path.exists():
                raise LocalObjectMissing(
                    f"local copy of {sha[:16]} is missing from the dock's store",
                    "restore it from backup; it stays queued",
                )
            if not self._locking_checked:
                # Also when the store was away at start: never upload unlocked by mistake.
                self.store.check_locking(self.settings.locking)
                self._locking_checked = True
            lock = self._lock(self.settings.retain_days)
            st = self.store.put(key, path, sha, lock)
            if lock is not None and (st.lock is None or st.lock.retain_until < lock.retain_until):
                # Found already stored (another dock, an earlier run) under a shorter lock:
                # extend it, then record what the store says holds.
                self.store.extend_retention(key, lock)
                st = self.store.head(key) or st
                if st.lock is None or st.lock.retain_until < lock.retain_until:
                    raise LockingNotEnabled(
                        f"{self.store_id}: {key} is not locked until "
                        f"{format_time(lock.retain_until)} after the upload",
                        "the store ignores object lock; check the bucket and the store",
                    )
        except (StoreError, IntegrityError, OSError) as e:
            if self._stop.is_set() and isinstance(e, StoreUnavailable):
                return False  # cut short by shutdown: not a failure of the store
            self._failed(sha, size, attempts + 1, e, failure_entry)
            return False
        self._down_count = 0
        self._cleared("uploads")
        index = self._record_store(sha, size, role, st)
        if index is None:
            return True
        self.uploaded += 1
        self.uploaded_bytes += size
        log.info(
            "replicated %s (%d bytes) to %s as %s; store entry %d",
            sha[:16],
            size,
            self.store_id,
            key,
            index,
        )
        if self.on_stored is not None:
            try:
                self.on_stored(sha, index)
            except Exception:
                log.exception("after-replication step for %s failed", sha[:16])
        return True

    def _record_store(self, sha: str, size: int, role: str, st: Stored) -> int | None:
        payload: dict[str, Any] = {
            "sha256": sha,
            "size": size,
            "role": role,
            "store": self.store_id,
            "key": st.key,
            "checksum": st.checksum,
            "storage_class": st.storage_class,
            "lock_mode": st.lock.mode if st.lock else "none",
        }
        if self.store.bucket:
            payload["bucket"] = self.store.bucket
        if st.version_id:
            payload["version_id"] = st.version_id
        if st.lock:
            payload["retain_until"] = format_time(st.lock.retain_until)
        if st.legal_hold:
            payload["legal_hold"] = True

        def mark(conn: sqlite3.Connection, idx: list[int]) -> None:
            cur = conn.execute(
                "UPDATE archive_queue SET state='stored', store_entry=?, last_error=NULL "
                "WHERE store=? AND sha256=? AND state='queued'",
                (idx[0], self.store_id, sha),
            )
            if cur.rowcount != 1:
                raise Withdrawn()

        try:
            return self.ledger.append("store", payload, mark)
        except Withdrawn:
            return None

    def _failed(
        self, sha: str, size: int, attempts: int, e: Exception, failure_entry: int | None
    ) -> None:
        s = self.settings
        delay = backoff(attempts, s.retry_base_s, s.retry_max_s)
        now = self.clock()
        msg = str(e)
        self._error("uploads", msg)
        if isinstance(e, IntegrityError) and not self.integrity_error:
            # A stored object or the dock's own copy does not hold the bytes its hash
            # names: recorded below, and capture stops until someone looks.
            self.integrity_error = f"{sha[:16]}: {msg}"
        if isinstance(e, StoreUnavailable):
            # The whole store is away: hold every upload, not just this one.
            self._down_count += 1
            self._pause_until = now + backoff(self._down_count, s.retry_base_s, s.retry_max_s)
            delay = self._pause_until - now
        entry = failure_entry
        if isinstance(e, IntegrityError | LocalObjectMissing) and failure_entry is None:
            entry = self._record_failure(sha, size, msg)
        serious = (IntegrityError, LockingNotEnabled, LocalObjectMissing)
        level = logging.ERROR if isinstance(e, serious) else logging.WARNING
        kind = "retrying" if isinstance(e, TransferCorrupted | StoreUnavailable) else "will retry"
        log.log(
            level,
            "replication of %s failed (attempt %d): %s; %s in %d s",
            sha[:16],
            attempts,
            msg,
            kind,
            delay,
        )
        with self._db_lock:
            self.db.execute(
                "UPDATE archive_queue SET attempts=?, next_at=?, last_error=?, failure_entry=? "
                "WHERE store=? AND sha256=?",
                (attempts, now + delay, msg[:1000], entry, self.store_id, sha),
            )
            self.db.commit()

    def _record_failure(self, sha: str, size: int, msg: str) -> int | None:
        try:
            return self.ledger.append(
                "store_failed",
                {"sha256": sha, "size": size, "store": self.store_id, "error": msg[:1000]},
            )
        except Exception:
            log.exception("could not record the replication failure of %s", sha[:16])
            return None

    # -- the ledger mirror -----------------------------------------------------------------

    def _ledger_loop(self) -> None:
        while not self._stop.wait(min(self.settings.ledger_interval_s, 1.0)):
            if self.clock() < max(self._ledger_next, self._pause_until):
                continue
            try:
                self.sync_ledger()
                self._ledger_attempts = 0
                self._ledger_next = self.clock() + self.settings.ledger_interval_s
                self._cleared("ledger mirror")
            except (StoreError, IntegrityError, OSError) as e:
                if isinstance(e, IntegrityError) and not self.integrity_error:
                    self.integrity_error = f"ledger mirror: {e}"
                self._ledger_attempts += 1
                d = backoff(
                    self._ledger_attempts, self.settings.retry_base_s, self.settings.retry_max_s
                )
                self._ledger_next = self.clock() + d
                self._error("ledger mirror", f"ledger mirror: {e}")
                log.warning("ledger mirror to %s failed: %s; retrying in %d s", self.store_id, e, d)
            except Exception:
                log.exception("ledger mirror error; retrying shortly")
                self._ledger_next = self.clock() + 30

    def _drop_partials(self, prefix: str) -> None:
        """Partial tiles whose full tile is mirrored are no longer needed (tidying only:
        a failure leaves small unlocked objects behind, nothing more)."""
        try:
            for k in list(self.store.list(prefix)):
                self.store.delete(k)
        except (StoreError, OSError) as e:
            log.debug("partial tiles under %s stay for now: %s", prefix, e)

    def _record_mirror_failure(self, msg: str) -> None:
        try:
            self.ledger.append(
                "store_failed",
                {"store": self.store_id, "what": "ledger mirror", "error": msg[:1000]},
            )
        except Exception:
            log.exception("could not record the ledger mirror failure")

    def ledger_mirrored_size(self) -> int:
        with self._db_lock:
            row = self.db.execute(
                "SELECT value FROM archive_meta WHERE name=?", (self._meta_name(),)
            ).fetchone()
        return int(row[0]) if row else 0

    def _meta_name(self) -> str:
        return f"ledger_size:{self.store_id}"

    def sync_ledger(self) -> int:
        """Bring the store's copy of the ledger up to the latest signed checkpoint whose
        witness round is over (``checkpoints/<size>`` is written once and locked, so it
        waits for the cosignatures; see `Ledger.publishable`)."""
        latest = self.ledger.publishable()
        done = self.ledger_mirrored_size()
        prefix = ledger_prefix(self.ledger.origin)
        if latest is not None and latest.size == done:
            # Cosignatures that arrived after the mirror wrote this checkpoint: the locked
            # checkpoints/<size> keeps what it had, the mutable `checkpoint` gains them.
            self._put_latest(prefix, latest.note)
        if latest is None or latest.size <= done:
            return done
        lock = self._lock(self.settings.ledger_retain_days)
        completed = []
        for tid in tiles_to_publish(done, latest.size):
            data = self.ledger.tiles.read_tile(tid)
            # Partials are small and superseded once their tile is full: never locked.
            sha = hashlib.sha256(data).hexdigest()
            self.store.put(prefix + tid.path(), data, sha, lock if tid.full else None)
            if tid.full:
                completed.append(tid)
        after = done
        while True:
            batch = [r for r in self.ledger.checkpoints(after, 1000) if r.size <= latest.size]
            for rec in batch:
                note = rec.note.encode()
                self.store.put(
                    f"{prefix}checkpoints/{rec.size}", note, hashlib.sha256(note).hexdigest(), lock
                )
            if len(batch) < 1000:
                break
            after = batch[-1].size
        self._put_latest(prefix, latest.note)
        with self._db_lock:
            self.db.execute(
                "INSERT OR REPLACE INTO archive_meta (name, value) VALUES (?,?)",
                (self._meta_name(), str(latest.size)),
            )
            self.db.commit()
        for tid in completed:
            self._drop_partials(prefix + tid.path() + ".p/")
        log.debug("ledger mirrored to %s up to size %d", self.store_id, latest.size)
        return latest.size

    def _put_latest(self, prefix: str, note_text: str) -> None:
        """Write the mutable ``checkpoint`` unless the store already holds these bytes
        (their SHA-256 is kept in ``archive_meta``)."""
        note = note_text.encode()
        sha = hashlib.sha256(note).hexdigest()
        name = f"ledger_checkpoint_sha256:{self.store_id}"
        with self._db_lock:
            row = self.db.execute("SELECT value FROM archive_meta WHERE name=?", (name,)).fetchone()
        if row is not None and row[0] == sha:
            return
        self.store.put(f"{prefix}checkpoint", note, sha, replace=True)
        with self._db_lock:
            self.db.execute(
                "INSERT OR REPLACE INTO archive_meta (name, value) VALUES (?,?)", (name, sha)
            )
            self.db.commit()

    # -- housekeeping and status -----------------------------------------------------------

    def clean_stale_uploads(self) -> int:
        abort = getattr(self.store, "abort_stale_uploads", None)
        if abort is None:
            return 0
        n: int = abort(timedelta(hours=self.settings.stale_upload_hours))
        if n:
            log.info("aborted %d stale multipart upload(s) in %s", n, self.store_id)
        return n

    def status(self) -> dict[str, Any]:
        return queue_status(self.db, self.store_id, self._db_lock) | {
            "last_error": self.last_error,
            "last_error_at": self.last_error_at or None,
            "uploaded": self.uploaded,
            "uploaded_bytes": self.uploaded_bytes,
            "paused_until": self._pause_until if self._pause_until > self.clock() else None,
        }


class LocalObjectMissing(NotFound):
    """The dock's own copy of a queued object is gone: it cannot be uploaded."""


def queue_status(
    db: sqlite3.Connection, store_id: str, lock: threading.Lock | None = None
) -> dict[str, Any]:
    """Backlog figures from the queue table (works with the daemon down, too)."""

    def q() -> dict[str, Any]:
        row = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(size),0), MIN(enqueued) FROM archive_queue "
            "WHERE store=? AND state='queued'",
            (store_id,),
        ).fetchone()
        stored = db.execute(
            "SELECT COUNT(*) FROM archive_queue WHERE store=? AND state='stored'", (store_id,)
        ).fetchone()[0]
        err = db.execute(
            "SELECT sha256, attempts, last_error FROM archive_queue WHERE store=? "
            "AND state='queued' AND last_error IS NOT NULL ORDER BY enqueued_at LIMIT 1",
            (store_id,),
        ).fetchone()
        mirrored = db.execute(
            "SELECT value FROM archive_meta WHERE name=?", (f"ledger_size:{store_id}",)
        ).fetchone()
        return {
            "store": store_id,
            "backlog": int(row[0]),
            "backlog_bytes": int(row[1]),
            "oldest_unreplicated": row[2],
            "replicated": int(stored),
            "queue_error": (
                {"sha256": err[0], "attempts": err[1], "error": err[2]} if err else None
            ),
            "ledger_mirrored_size": int(mirrored[0]) if mirrored else 0,
        }

    if lock is None:
        return q()
    with lock:
        return q()
