"""The station's append-only ledger: durable appends, integration, checkpoints.

Storage:

- ``<state>/ledger.sqlite`` (SQLite, WAL, ``synchronous=FULL``): ``pending``
  holds appended leaves until they are integrated into tiles; ``checkpoints``
  holds every signed checkpoint, keyed by size. An append is acknowledged
  when its transaction commits, and its index is fixed then.
- ``<ledger>/tile/...`` and ``<ledger>/checkpoint``: the C2SP tlog-tiles
  folder, the public form of the log.

Integration (one process at a time, under ``<state>/ledger.lock``): take the
pending leaves after the latest checkpoint, write their tiles durably, sign a
checkpoint for the new size, then in one transaction record it and drop the
integrated pending rows, and only then publish ``<ledger>/checkpoint``.

Invariants after a crash at any point:

- every acknowledged leaf is either in a tile covered by a recorded
  checkpoint or still pending (tiles are fsynced before the transaction that
  drops the pending row);
- the station never signs two roots for one size (the table's primary key,
  and a checkpoint is recorded before it is published);
- tiles are replaced atomically, so no half-written tile is ever visible; a
  tile written past the recorded checkpoint comes from durable pending rows
  and is rewritten with the same bytes.

Appends from many threads are group-committed: whoever finds no commit in
progress commits everything queued so far in one transaction.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ledger.checkpoint import Checkpoint, CheckpointError, open_checkpoint
from ledger.cosignature import add_signature_lines
from ledger.durable import file_lock
from ledger.entry import format_time, make_entry
from ledger.errors import IntegrityError, LedgerError
from ledger.integrate import Edge, edge_from_tiles, edge_tiles, integrate
from ledger.note import BoundSigner, NoteError, Signer, Verifier, parse_note
from ledger.proof import TlogProof
from ledger.storage import FolderTiles
from ledger.tiles import MAX_ENTRY_SIZE, TILE_WIDTH, TileHashReader, bundle_for_size, decode_bundle
from ledger.tree import consistency_proof, inclusion_proof, tree_root

log = logging.getLogger("custody.ledger")

SCHEMA = """
CREATE TABLE IF NOT EXISTS pending (idx INTEGER PRIMARY KEY, leaf BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS checkpoints (
    size INTEGER PRIMARY KEY,
    root BLOB NOT NULL,
    note TEXT NOT NULL,
    signed_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

MAX_INTEGRATION_BATCH = 16384


def now_utc() -> datetime:
    """The station's clock, read here (the entry core is pure and takes the time given)."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class CheckpointRecord:
    size: int
    root: bytes
    note: str
    signed_at: str


OnCommit = Callable[[sqlite3.Connection, list[int]], None]


class _Queued:
    __slots__ = ("done", "error", "indexes", "leaves", "on_commit")

    def __init__(self, leaves: Sequence[bytes], on_commit: OnCommit | None) -> None:
        self.leaves = leaves
        self.on_commit = on_commit
        self.indexes: list[int] = []
        self.error: BaseException | None = None
        self.done = False


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA busy_timeout=60000")
    return db


def _connect_ro(path: Path) -> sqlite3.Connection:
    if not path.exists():
        raise LedgerError(f"no ledger state at {path}", "run 'custody init' first")
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        db.execute("PRAGMA busy_timeout=60000")
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.OperationalError:
        # A WAL database in a folder we cannot write to: read it as it stands.
        db = sqlite3.connect(f"file:{path}?immutable=1", uri=True, check_same_thread=False)
    return db


class Ledger:
    """One station's ledger. Thread-safe; several processes may append."""

    def __init__(
        self,
        ledger_dir: Path,
        state_dir: Path,
        origin: str,
        signer: Signer | None = None,
        *,
        also_sign: Sequence[Signer] = (),
        known_keys: Sequence[Verifier] = (),
    ) -> None:
        """``signer`` signs entries and checkpoints; ``also_sign`` adds signatures to
        checkpoints only (the previous key during a rotation's overlap, so witnesses
        and verifiers that know only it keep accepting); ``known_keys`` are earlier
        station keys whose checkpoints this ledger may find published."""
        self.origin = origin
        self.tiles = FolderTiles(ledger_dir)
        self.state_dir = state_dir
        self._signer = signer.bound() if signer else None
        self._checkpoint_signers: list[Signer] = [signer, *also_sign] if signer else []
        self._known_keys: list[Verifier] = [s.verifier() for s in self._checkpoint_signers]
        self._known_keys += [k for k in known_keys if k not in self._known_keys]
        self._signer_vkey = signer.verifier().vkey() if signer else ""
        if signer is not None:
            state_dir.mkdir(parents=True, exist_ok=True)
            ledger_dir.mkdir(parents=True, exist_ok=True)
        self._db_path = state_dir / "ledger.sqlite"
        self._lock_path = state_dir / "ledger.lock"
        if signer is None:
            # Read-only: a supervisor or court may look at a copy they cannot write to.
            self._append_db = self._read_db = self._integ_db = _connect_ro(self._db_path)
        else:
            self._append_db = _connect(self._db_path)
            self._read_db = _connect(self._db_path)
            self._integ_db = _connect(self._db_path)
            with self._append_db:
                self._append_db.executescript(SCHEMA)
        self._read_lock = threading.Lock()
        self._check_origin()
        self._cv = threading.Condition()
        self._queue: list[_Queued] = []
        self._committing = False
        self._integrate_lock = threading.Lock()
        self._edge: Edge | None = None
        self._stop = threading.Event()
        self._integrator: threading.Thread | None = None
        # The integrity error that stopped the background integrator ("" while none).
        self.halted = ""
        self._reader: TileHashReader | None = None
        self._reader_lock = threading.RLock()
        if signer is not None:
            # Finish what a crash interrupted now, so the published folder verifies
            # even if nothing new is appended.
            with self._process_lock():
                self._recover_locked()

    # -- setup -------------------------------------------------------------

    def _check_origin(self) -> None:
        row = self._append_db.execute("SELECT value FROM meta WHERE key='origin'").fetchone()
        if row is None and self._signer is None:
            return
        if row is None:
            self._append_db.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES ('origin', ?)", (self.origin,)
            )
        elif row[0] != self.origin:
            raise LedgerError(
                f"this ledger belongs to origin {row[0]!r}, not {self.origin!r}",
                "check 'origin' in the config; a station's origin never changes",
            )

    def close(self) -> None:
        self.stop_integrator()
        for db in {id(d): d for d in (self._append_db, self._read_db, self._integ_db)}.values():
            db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- appending ---------------------------------------------------------

    def append_leaves(
        self, leaves: Sequence[bytes], on_commit: OnCommit | None = None
    ) -> list[int]:
        """Append raw leaves; returns their indexes once they are durable.

        ``on_commit(conn, indexes)`` runs inside the same SQLite transaction,
        so a caller can record its own state (in its own tables of the same
        database, see `db_path`) atomically with the append. If it raises, this
        append alone is rolled back and the error is raised here; a hook that finds
        its work already recorded raises `ledger.errors.Withdrawn`.
        """
        for leaf in leaves:
            if len(leaf) > MAX_ENTRY_SIZE:
                raise LedgerError(f"leaf of {len(leaf)} bytes exceeds {MAX_ENTRY_SIZE}")
        q = _Queued(leaves, on_commit)
        with self._cv:
            self._queue.append(q)
            while not q.done:
                if self._committing:
                    self._cv.wait()
                    continue
                self._committing = True
                batch, self._queue = self._queue, []
                self._cv.release()
                try:
                    self._commit(batch)
                finally:
                    self._cv.acquire()
                    self._committing = False
                    self._cv.notify_all()
        if q.error is not None:
            raise q.error
        return q.indexes

    def _commit(self, batch: list[_Queued]) -> None:
        db = self._append_db
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                self._check_signer(db)
                nxt = self._next_index(db)
                for q in batch:
                    idx = list(range(nxt, nxt + len(q.leaves)))
                    if q.on_commit is None:
                        db.executemany(
                            "INSERT INTO pending(idx, leaf) VALUES (?, ?)",
                            zip(idx, q.leaves, strict=True),
                        )
                    else:
                        db.execute("SAVEPOINT item")
                        try:
                            db.executemany(
                                "INSERT INTO pending(idx, leaf) VALUES (?, ?)",
                                zip(idx, q.leaves, strict=True),
                            )
                            q.on_commit(db, idx)
                            db.execute("RELEASE item")
                        except Exception as e:
                            db.execute("ROLLBACK TO item")
                            db.execute("RELEASE item")
                            q.error = e
                            continue
                    q.indexes = idx
                    nxt += len(q.leaves)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        except BaseException as e:
            for q in batch:
                q.error = e if isinstance(e, Exception) else LedgerError("append interrupted")
                q.indexes = []
        finally:
            for q in batch:
                q.done = True

    def _check_signer(self, db: sqlite3.Connection) -> None:
        """Refuse entries signed by a key the station has rotated away from (another
        process ran `custody key rotate` since this one loaded its key)."""
        row = db.execute("SELECT value FROM meta WHERE key='signer'").fetchone()
        if row is not None and self._signer_vkey and row[0] != self._signer_vkey:
            raise LedgerError(
                "the station key changed (custody key rotate) after this process loaded it",
                "run the command again; restart the daemon if it is running",
            )

    @staticmethod
    def _next_index(db: sqlite3.Connection) -> int:
        p = db.execute("SELECT max(idx) FROM pending").fetchone()[0]
        c = db.execute("SELECT max(size) FROM checkpoints").fetchone()[0]
        return max(-1 if p is None else p, (c or 0) - 1) + 1

    def _require_signer(self) -> BoundSigner:
        if self._signer is None:
            raise LedgerError("this ledger was opened read-only (no station key)")
        return self._signer

    def append(
        self, type_: str, payload: Mapping[str, Any], on_commit: OnCommit | None = None
    ) -> int:
        """Sign an entry with the station key and append it durably; returns its index."""
        leaf = make_entry(self._require_signer(), self.origin, type_, payload, now_utc())
        return self.append_leaves([leaf], on_commit)[0]

    def append_entries(
        self,
        items: Sequence[tuple[str, Mapping[str, Any]]],
        on_commit: OnCommit | None = None,
    ) -> list[int]:
        """Sign and append several entries in one durable commit."""
        signer = self._require_signer()
        t = format_time(now_utc())
        leaves = [make_entry(signer, self.origin, ty, p, t) for ty, p in items]
        return self.append_leaves(leaves, on_commit)

    @property
    def db_path(self) -> Path:
        """The SQLite database holding pending appends (callers may add their own tables)."""
        return self._db_path

    # -- integration -------------------------------------------------------

    @contextmanager
    def _process_lock(self) -> Iterator[None]:
        with self._integrate_lock, file_lock(self._lock_path):
            yield

    def integrate(self) -> CheckpointRecord | None:
        """Integrate every pending leaf; returns the new checkpoint (None if none pending)."""
        if not self._checkpoint_signers:
            raise LedgerError("cannot integrate without the station key")
        latest = None
        with self._process_lock():
            self._recover_locked()
            # Only what is pending now: under a steady stream of appends, chasing the
            # tail would sign a checkpoint per tiny batch and starve the appenders.
            end = self._next_index(self._integ_db)
            while True:
                rec = self._integrate_batch(end)
                if rec is None:
                    break
                latest = rec
        return latest

    def _db_latest(self, db: sqlite3.Connection) -> CheckpointRecord | None:
        row = db.execute(
            "SELECT size, root, note, signed_at FROM checkpoints ORDER BY size DESC LIMIT 1"
        ).fetchone()
        return CheckpointRecord(row[0], bytes(row[1]), row[2], row[3]) if row else None

    def _recover_locked(self) -> None:
        """Bring the database and the tile folder in line after a crash or a restore.

        The published checkpoint is the public record: if it is validly signed by
        this station and newer than the database knows (state lost or restored from
        an older backup), it is adopted, never contradicted; signing a different
        root for a size the world has seen would be a fork.
        """
        db = self._integ_db
        latest = self._db_latest(db)
        size = latest.size if latest else 0
        if self._edge is not None and self._edge.size == size:
            return
        self.tiles.remove_temporaries()
        published = self._published()
        if published is not None and published.size > size:
            latest = self._adopt(published)
            size = latest.size
        elif latest is None and self.tiles.has_tiles():
            raise IntegrityError(
                f"{self.tiles.root} holds tiles but no checkpoint this station signed",
                "restore the ledger folder's checkpoint (or the state folder) from backup",
            )
        self._edge = self._load_edge(size, latest.root if latest else None)
        # Republish the checkpoint if a crash came between recording and publishing it.
        if latest is not None and (published is None or published.size < latest.size):
            self.tiles.write_checkpoint(latest.note)

    def _published(self) -> Checkpoint | None:
        """The published checkpoint if it is this station's; None if absent."""
        assert self._checkpoint_signers
        try:
            text = self.tiles.read_checkpoint()
        except FileNotFoundError:
            return None
        try:
            return open_checkpoint(text, self._known_keys, self.origin).checkpoint
        except CheckpointError as e:
            raise IntegrityError(
                f"the published checkpoint {self.tiles.root / 'checkpoint'} is not this "
                f"station's ({e})",
                "run 'custody ledger verify'; restore the ledger folder from backup",
            ) from None

    def _load_edge(self, size: int, root: bytes | None) -> Edge:
        tiles = {}
        for tid in edge_tiles(size):
            try:
                tiles[tid] = self.tiles.read_tile(tid)
            except FileNotFoundError as e:
                raise IntegrityError(
                    f"tile {tid.path()} of the signed tree of size {size} is missing",
                    "restore the ledger folder from backup or the cold store",
                ) from e
        try:
            edge = edge_from_tiles(size, tiles)
        except ValueError as e:
            raise IntegrityError(f"ledger tile is damaged: {e}") from e
        if root is not None and edge.root() != root:
            raise IntegrityError(
                f"tiles at the right edge do not hash to the signed root of size {size}",
                "run 'custody ledger verify' to see which tile is damaged",
            )
        return edge

    def _adopt(self, cp: Checkpoint) -> CheckpointRecord:
        """Record a published checkpoint the database lost, after checking the tiles."""
        assert self._checkpoint_signers
        self._load_edge(cp.size, cp.root)
        note = self.tiles.read_checkpoint().decode("utf-8")
        db = self._integ_db
        db.execute("BEGIN IMMEDIATE")
        try:
            for idx, leaf in db.execute(
                "SELECT idx, leaf FROM pending WHERE idx < ? ORDER BY idx", (cp.size,)
            ).fetchall():
                tid = bundle_for_size(idx // TILE_WIDTH, cp.size)
                if decode_bundle(self.tiles.read_tile(tid))[idx % TILE_WIDTH] != bytes(leaf):
                    raise IntegrityError(
                        f"entry {idx} in the state database differs from the published log",
                        "the state folder is from another history; restore the matching one",
                    )
            db.execute(
                "INSERT INTO checkpoints(size, root, note, signed_at) VALUES (?,?,?,?)",
                (cp.size, cp.root, note, format_time(now_utc())),
            )
            db.execute("DELETE FROM pending WHERE idx < ?", (cp.size,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        log.warning(
            "the state database was behind the published ledger; adopted its checkpoint "
            "of size %d after checking the tiles",
            cp.size,
        )
        rec = self._db_latest(db)
        assert rec is not None
        return rec

    def _integrate_batch(self, end: int) -> CheckpointRecord | None:
        assert self._edge is not None and self._checkpoint_signers
        db = self._integ_db
        start = self._edge.size
        rows = db.execute(
            "SELECT idx, leaf FROM pending WHERE idx >= ? AND idx < ? ORDER BY idx LIMIT ?",
            (start, end, MAX_INTEGRATION_BATCH),
        ).fetchall()
        if not rows:
            return None
        for i, (idx, _) in enumerate(rows):
            if idx != start + i:
                raise IntegrityError(f"pending entries skip from index {start + i - 1} to {idx}")
        result = integrate(self._edge, [bytes(r[1]) for r in rows])
        self.tiles.write_tiles(result.tiles)
        new = result.edge
        root = new.root()
        note = Checkpoint(self.origin, new.size, root).sign(self._checkpoint_signers)
        rec = CheckpointRecord(new.size, root, note, format_time(now_utc()))
        db.execute("BEGIN IMMEDIATE")
        try:
            existing = db.execute(
                "SELECT root FROM checkpoints WHERE size = ?", (rec.size,)
            ).fetchone()
            if existing is not None and bytes(existing[0]) != root:
                raise IntegrityError(
                    f"refusing to sign a second, different root for size {rec.size}"
                )
            if existing is None:
                db.execute(
                    "INSERT INTO checkpoints(size, root, note, signed_at) VALUES (?,?,?,?)",
                    (rec.size, rec.root, rec.note, rec.signed_at),
                )
            db.execute("DELETE FROM pending WHERE idx < ?", (rec.size,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self.tiles.write_checkpoint(rec.note)
        self.tiles.collect_partials(result.completed)
        self._edge = new
        return rec

    # -- witnesses ---------------------------------------------------------

    def add_cosignatures(self, size: int, lines: Sequence[str]) -> CheckpointRecord:
        """Add witness cosignature lines (already verified by the caller) to the signed
        checkpoint of ``size``: stored in place of its note, and republished as
        ``<ledger>/checkpoint`` when it is still the latest. The station's own signature
        and the root never change; only lines are added."""
        with self._process_lock():
            db = self._integ_db
            row = db.execute(
                "SELECT size, root, note, signed_at FROM checkpoints WHERE size = ?", (size,)
            ).fetchone()
            if row is None:
                raise LedgerError(f"no checkpoint was signed at size {size}")
            rec = CheckpointRecord(row[0], bytes(row[1]), row[2], row[3])
            note = add_signature_lines(rec.note, lines)
            if note == rec.note:
                return rec
            try:
                parsed = parse_note(note)
            except NoteError as e:
                raise LedgerError(f"cosignature lines do not fit the checkpoint: {e}") from e
            if parsed.text != parse_note(rec.note).text:
                raise LedgerError("cosignature lines changed the checkpoint text")
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("UPDATE checkpoints SET note = ? WHERE size = ?", (note, size))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            latest = self._db_latest(db)
            if latest is not None and latest.size == size:
                self.tiles.write_checkpoint(note)
            return CheckpointRecord(rec.size, rec.root, note, rec.signed_at)

    def set_witness_settled(self, size: int | None) -> None:
        """Record that the witness round for checkpoints up to ``size`` is over (cosigned,
        or given up on after the configured wait); None: the station has no witnesses,
        nothing is held back. `publishable` reads it."""
        with self._process_lock():
            db = self._integ_db
            if size is None:
                db.execute("DELETE FROM meta WHERE key='witness_settled'")
            else:
                db.execute(
                    "INSERT INTO meta(key, value) VALUES ('witness_settled', ?) "
                    "ON CONFLICT(key) DO UPDATE SET value = excluded.value "
                    "WHERE CAST(value AS INTEGER) < CAST(excluded.value AS INTEGER)",
                    (str(size),),
                )

    def witness_settled(self) -> int | None:
        with self._read_lock:
            row = self._read_db.execute(
                "SELECT value FROM meta WHERE key='witness_settled'"
            ).fetchone()
        return int(row[0]) if row else None

    def publishable(self) -> CheckpointRecord | None:
        """The newest checkpoint the cold-store mirror may write as ``checkpoints/<size>``
        (write-once, locked): the latest, unless a witness round for it is still open;
        then the newest one whose round is over."""
        settled = self.witness_settled()
        if settled is None:
            return self.latest()
        with self._read_lock:
            row = self._read_db.execute(
                "SELECT size, root, note, signed_at FROM checkpoints WHERE size <= ? "
                "ORDER BY size DESC LIMIT 1",
                (settled,),
            ).fetchone()
        return CheckpointRecord(row[0], bytes(row[1]), row[2], row[3]) if row else None

    def start_integrator(self, interval: float = 1.0) -> None:
        """Integrate in a background thread every ``interval`` seconds while leaves are pending."""
        if self._integrator is not None:
            return
        self._stop.clear()

        def run() -> None:
            said = ""  # the failure already logged: one line per kind, not one per second
            while not self._stop.wait(interval):
                try:
                    if self.pending_count():
                        self.integrate()
                    if said:
                        log.info("ledger integration works again")
                        said = ""
                except IntegrityError as e:
                    # Never retried blindly: the log contradicts what the station signed.
                    # Integration stops here; the daemon sees `halted` and stops capture.
                    self.halted = str(e)
                    log.critical("ledger integration STOPPED: integrity error: %s", e)
                    return
                except (OSError, sqlite3.Error) as e:
                    # Disk full, an I/O error: one line until it changes or clears.
                    why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
                    line = f"ledger integration failed: {why}; will retry"
                    if line != said:
                        log.error("%s", line)
                        said = line
                except Exception as e:
                    line = f"ledger integration failed: {type(e).__name__}: {e}; will retry"
                    if line != said:
                        log.exception("%s", line)
                        said = line
            if not self.halted:
                try:
                    self.integrate()
                except IntegrityError as e:
                    self.halted = str(e)
                    log.critical("ledger integration STOPPED: integrity error: %s", e)

        self._integrator = threading.Thread(target=run, name="ledger-integrator", daemon=True)
        self._integrator.start()

    def stop_integrator(self) -> None:
        if self._integrator is None:
            return
        self._stop.set()
        self._integrator.join()
        self._integrator = None

    # -- reading -----------------------------------------------------------

    def pending_count(self) -> int:
        with self._read_lock:
            latest = self._db_latest(self._read_db)
            size = latest.size if latest else 0
            return int(
                self._read_db.execute(
                    "SELECT count(*) FROM pending WHERE idx >= ?", (size,)
                ).fetchone()[0]
            )

    def next_index(self) -> int:
        with self._read_lock:
            return self._next_index(self._read_db)

    def latest(self) -> CheckpointRecord | None:
        with self._read_lock:
            return self._db_latest(self._read_db)

    def checkpoint_at(self, size: int) -> CheckpointRecord | None:
        with self._read_lock:
            row = self._read_db.execute(
                "SELECT size, root, note, signed_at FROM checkpoints WHERE size = ?", (size,)
            ).fetchone()
        return CheckpointRecord(row[0], bytes(row[1]), row[2], row[3]) if row else None

    def checkpoints(self, after: int = -1, limit: int = 1000) -> list[CheckpointRecord]:
        """Signed checkpoints in size order, starting after size ``after``."""
        with self._read_lock:
            rows = self._read_db.execute(
                "SELECT size, root, note, signed_at FROM checkpoints WHERE size > ? "
                "ORDER BY size LIMIT ?",
                (after, limit),
            ).fetchall()
        return [CheckpointRecord(r[0], bytes(r[1]), r[2], r[3]) for r in rows]

    def _size(self) -> int:
        latest = self.latest()
        return latest.size if latest else 0

    def entry(self, index: int) -> bytes:
        """The leaf at ``index`` (integrated or still pending)."""
        for _ in range(2):
            size = self._size()
            if 0 <= index < size:
                tid = bundle_for_size(index // TILE_WIDTH, size)
                try:
                    return decode_bundle(self.tiles.read_tile(tid))[index % TILE_WIDTH]
                except (OSError, ValueError, IndexError) as e:
                    raise IntegrityError(
                        f"entry {index}: {tid.path()} is missing or damaged ({e})",
                        "run 'custody ledger verify'",
                    ) from e
            with self._read_lock:
                row = self._read_db.execute(
                    "SELECT leaf FROM pending WHERE idx = ?", (index,)
                ).fetchone()
            if row is not None:
                return bytes(row[0])
            # Integrated between the two reads? Look once more.
        raise LedgerError(f"no entry at index {index}; the ledger has {self.next_index()}")

    def reader(self) -> TileHashReader:
        """Stored hashes of the current tree; kept while the size stays the same, since
        the tiles of a given size never change (proofs then reuse upper tiles)."""
        size = self._size()
        with self._reader_lock:
            if self._reader is None or self._reader.size != size:
                self._reader = TileHashReader(self.tiles, size)
            return self._reader

    def _resolve_size(self, size: int | None) -> CheckpointRecord:
        rec = self.latest() if size is None else self.checkpoint_at(size)
        if rec is None:
            if size is None:
                raise LedgerError("the ledger has no signed checkpoint yet")
            raise LedgerError(
                f"no checkpoint was signed at size {size}",
                "use the size of a signed checkpoint "
                "('custody ledger checkpoint' shows the latest)",
            )
        return rec

    def proof(self, index: int, size: int | None = None) -> TlogProof:
        """An offline inclusion proof (tlog-proof) of entry ``index`` in a signed checkpoint."""
        rec = self._resolve_size(size)
        if not 0 <= index < rec.size:
            raise LedgerError(
                f"entry {index} is not in the checkpoint of size {rec.size}",
                "wait for the next checkpoint or pick a larger --size",
            )
        reader = self.reader()
        with self._reader_lock:
            hashes = inclusion_proof(reader, index, rec.size)
        return TlogProof(index, tuple(hashes), rec.note)

    def consistency(self, old_size: int, new_size: int | None = None) -> dict[str, Any]:
        """Consistency proof between two tree sizes; roots computed from the tiles."""
        cur = self._size()
        new = cur if new_size is None else new_size
        if not 0 <= old_size <= new <= cur:
            raise LedgerError(
                f"need 0 <= old size ({old_size}) <= new size ({new}) <= ledger size ({cur})"
            )
        r = self.reader()
        with self._reader_lock:
            return {
                "old_size": old_size,
                "new_size": new,
                "old_root": tree_root(r, old_size),
                "new_root": tree_root(r, new),
                "proof": consistency_proof(r, old_size, new),
            }
