"""What a witness keeps on disk: its key and, per log, the latest checkpoint it cosigned.

Layout of the witness folder::

    witness.key    the cosigning key, PRIVATE+KEY+<name>+<id>+base64(0x04 ‖ seed), 0600
    witness.db     SQLite (WAL, synchronous=FULL):
                   logs(origin PRIMARY KEY, size, root, checkpoint, updated)
                   log_keys(origin, vkey)

Every add-checkpoint is one compare-and-set in one transaction: ``BEGIN
IMMEDIATE`` takes the write lock, the stored size and root are read, the pure
core decides, the new state is written and committed (fsynced) before the
answer leaves. Two requests for one log, in one process or several, cannot
both win.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ledger.checkpoint import Checkpoint
from ledger.cosignature import Cosigner, add_signature_lines
from ledger.durable import fsync_dir
from ledger.errors import LedgerError
from ledger.note import NoteError, Verifier, parse_note
from witness.protocol import AddCheckpoint, Answer, LogState, decide, origin_id

KEY_FILE = "witness.key"
DB_FILE = "witness.db"
KEY_MODE = 0o600

SCHEMA = """
CREATE TABLE IF NOT EXISTS logs (
    origin TEXT PRIMARY KEY,
    origin_id TEXT NOT NULL UNIQUE,   -- hex SHA-256 of origin: the monitoring URL
    size INTEGER NOT NULL DEFAULT 0,  -- the latest cosigned size (0 before the first)
    root BLOB NOT NULL,               -- its root hash (the empty tree's before the first)
    checkpoint TEXT,                  -- that checkpoint, with our cosignature
    updated INTEGER                   -- when it was cosigned (POSIX seconds)
);
CREATE TABLE IF NOT EXISTS log_keys (
    origin TEXT NOT NULL REFERENCES logs(origin),
    vkey TEXT NOT NULL,               -- a log verifier key, name+id+base64(0x01 ‖ key)
    added INTEGER NOT NULL,
    PRIMARY KEY (origin, vkey)
);
"""


class WitnessError(LedgerError):
    """An operational problem of the witness (exit code 2)."""


@dataclass(frozen=True)
class LogInfo:
    origin: str
    size: int
    root: bytes
    updated: int | None
    vkeys: tuple[str, ...]


def init_witness(wdir: Path, name: str) -> Cosigner:
    """Make the witness folder and its key (never replacing one) and the database."""
    try:
        cosigner = Cosigner.generate(name)
    except NoteError as e:
        raise WitnessError(f"witness name {name!r} is not usable as a key name: {e}") from None
    wdir.mkdir(parents=True, exist_ok=True)
    os.chmod(wdir, 0o700)
    path = wdir / KEY_FILE
    try:  # O_EXCL: never overwrite a key, even one that appeared a moment ago
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, KEY_MODE)
    except FileExistsError:
        raise WitnessError(
            f"{path} already exists; refusing to replace a witness key",
            "logs and verifiers pin the witness key: keep it, do not re-run init",
        ) from None
    try:
        os.write(fd, (cosigner.key_string() + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(wdir)
    WitnessState(wdir).close()
    return cosigner


def load_cosigner(wdir: Path) -> Cosigner:
    path = wdir / KEY_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise WitnessError(
            f"no witness key at {path}", "run `custody witness init --data DIR --name NAME`"
        ) from None
    try:
        return Cosigner.parse(text)
    except NoteError as e:
        raise WitnessError(f"{path} is not a witness key: {e}") from None


class WitnessState:
    """The witness database. One connection: use it from one thread at a time."""

    def __init__(self, wdir: Path, busy_timeout_ms: int = 10_000) -> None:
        if not wdir.is_dir():
            raise WitnessError(
                f"no witness folder at {wdir}",
                "run `custody witness init --data DIR --name NAME` first",
            )
        self.path = wdir / DB_FILE
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        self.db.execute("PRAGMA journal_mode = WAL")
        # FULL: the WAL is fsynced at every commit, so a cosigned size survives power loss.
        self.db.execute("PRAGMA synchronous = FULL")
        self.db.execute("PRAGMA foreign_keys = ON")
        self.db.executescript(SCHEMA)
        self._verifiers: dict[str, Verifier] = {}

    def close(self) -> None:
        self.db.close()

    def _verifier(self, vkey: str) -> Verifier:
        v = self._verifiers.get(vkey)
        if v is None:
            v = self._verifiers[vkey] = Verifier.parse(vkey)
        return v

    def add_log(
        self, vkey: str, origin: str | None = None, now: int | None = None
    ) -> tuple[str, bool]:
        """Follow a log: trust ``vkey`` for ``origin`` (default: the key's name). A key
        added to a known origin keeps its state (a station's key rotation). Returns
        the origin, and False when that key was already trusted for it."""
        try:
            v = Verifier.parse(vkey)
        except NoteError as e:
            raise WitnessError(f"log key: {e}") from None
        origin = origin if origin is not None else v.name
        if not origin or "\n" in origin:
            raise WitnessError(f"origin {origin!r} is not a checkpoint origin line")
        now = int(time.time()) if now is None else now
        c = self.db
        c.execute("BEGIN IMMEDIATE")
        try:
            c.execute(
                "INSERT OR IGNORE INTO logs (origin, origin_id, size, root) VALUES (?, ?, 0, ?)",
                (origin, origin_id(origin), LogState(origin).root),
            )
            cur = c.execute(
                "INSERT OR IGNORE INTO log_keys (origin, vkey, added) VALUES (?, ?, ?)",
                (origin, v.vkey(), now),
            )
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        return origin, cur.rowcount == 1

    def remove_key(self, vkey: str, origin: str | None = None) -> str:
        """Stop trusting ``vkey`` for ``origin`` (a revoked station key); the log's state
        stays, and its other keys. Refuses to remove a log's last key: a log with no key
        would answer 403 to everyone, which is what removing the log is for."""
        try:
            v = Verifier.parse(vkey)
        except NoteError as e:
            raise WitnessError(f"log key: {e}") from None
        origin = origin if origin is not None else v.name
        c = self.db
        c.execute("BEGIN IMMEDIATE")
        try:
            keys = [
                r[0] for r in c.execute("SELECT vkey FROM log_keys WHERE origin = ?", (origin,))
            ]
            if v.vkey() not in keys:
                raise WitnessError(f"{origin} is not followed with key {v.vkey()}")
            if len(keys) == 1:
                raise WitnessError(
                    f"{v.vkey()} is the only key of {origin}",
                    "add the station's new key first (add-log --vkey NEW)",
                )
            c.execute("DELETE FROM log_keys WHERE origin = ? AND vkey = ?", (origin, v.vkey()))
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        return origin

    def logs(self) -> list[LogInfo]:
        keys: dict[str, list[str]] = {}
        for origin, vkey in self.db.execute(
            "SELECT origin, vkey FROM log_keys ORDER BY origin, rowid"
        ):
            keys.setdefault(origin, []).append(vkey)
        return [
            LogInfo(o, s, bytes(r), u, tuple(keys.get(o, ())))
            for o, s, r, u in self.db.execute(
                "SELECT origin, size, root, updated FROM logs ORDER BY origin"
            )
        ]

    def checkpoint(self, oid: str) -> str | None:
        """The latest cosigned checkpoint of the log whose origin hashes to ``oid``."""
        row = self.db.execute("SELECT checkpoint FROM logs WHERE origin_id = ?", (oid,)).fetchone()
        return None if row is None else row[0]

    def add_checkpoints(
        self,
        requests: Sequence[AddCheckpoint],
        cosigner: Cosigner,
        clock: Callable[[], float] = time.time,
    ) -> list[Answer]:
        """Decide each request against the stored state, in order, in one transaction
        (a group commit): later requests see what earlier ones stored. Nothing is
        answered until the transaction is committed; if it fails, it raises and no
        request was cosigned."""
        c = self.db
        c.execute("BEGIN IMMEDIATE")
        try:
            timestamp = int(clock())
            answers = [self._decide(r, cosigner, timestamp) for r in requests]
            c.execute("COMMIT")
        except BaseException:
            if c.in_transaction:
                c.execute("ROLLBACK")
            raise
        return answers

    def state(self, origin: str) -> LogState | None:
        """What the witness stored for ``origin`` (None: not followed)."""
        row = self.db.execute(
            "SELECT size, root, checkpoint FROM logs WHERE origin = ?", (origin,)
        ).fetchone()
        return None if row is None else LogState(origin, row[0], bytes(row[1]), row[2])

    def cosign_known(
        self,
        text: str,
        checkpoint: Checkpoint,
        old: LogState,
        cosigner: Cosigner,
        clock: Callable[[], float] = time.time,
    ) -> str | None:
        """Cosign a checkpoint whose consistency with ``old`` the caller established
        itself (the county hub recomputes the tree from the entries instead of taking a
        proof). The same compare-and-set as a request: only while the stored state is
        still ``old``; returns the cosigned note, or None when the state moved on."""
        c = self.db
        c.execute("BEGIN IMMEDIATE")
        try:
            row = c.execute(
                "SELECT size, root FROM logs WHERE origin = ?", (checkpoint.origin,)
            ).fetchone()
            if row is None or row[0] != old.size or bytes(row[1]) != old.root:
                c.execute("ROLLBACK")
                return None
            timestamp = int(clock())
            note = parse_note(text)
            line = cosigner.cosign(note.text, timestamp).line()
            cosigned = add_signature_lines(text, [line])
            c.execute(
                "UPDATE logs SET size = ?, root = ?, checkpoint = ?, updated = ? WHERE origin = ?",
                (checkpoint.size, checkpoint.root, cosigned, timestamp, checkpoint.origin),
            )
            c.execute("COMMIT")
        except BaseException:
            if c.in_transaction:
                c.execute("ROLLBACK")
            raise
        return cosigned

    def _decide(self, request: AddCheckpoint, cosigner: Cosigner, timestamp: int) -> Answer:
        origin = request.checkpoint.origin
        row = self.db.execute(
            "SELECT size, root, checkpoint FROM logs WHERE origin = ?", (origin,)
        ).fetchone()
        stored = None if row is None else LogState(origin, row[0], bytes(row[1]), row[2])
        keys: list[Verifier] = []
        if stored is not None:
            for (vkey,) in self.db.execute("SELECT vkey FROM log_keys WHERE origin = ?", (origin,)):
                keys.append(self._verifier(vkey))
        answer = decide(request, stored, keys, cosigner, timestamp)
        new = answer.new_state
        if new is not None:
            self.db.execute(
                "UPDATE logs SET size = ?, root = ?, checkpoint = ?, updated = ? WHERE origin = ?",
                (new.size, new.root, new.checkpoint, timestamp, origin),
            )
        return answer


__all__ = [
    "DB_FILE",
    "KEY_FILE",
    "LogInfo",
    "WitnessError",
    "WitnessState",
    "init_witness",
    "load_cosigner",
]
