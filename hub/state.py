"""What the hub keeps between syncs (``hub.sqlite``, WAL, synchronous=FULL).

Per station: the verified checkpoint and the right edge of its tree, the ``key``
entries of its chain, the tag of every full tile and bundle the hub verified (so a new
version written over one is noticed from a listing, without reading it again), the
roots of the sizes it verified, and its state and problems. The verified state of a
station is written only after the catalog holds its rows (see `hub.sync`).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from hub.follow import Followed, decode_levels, encode_levels
from ledger.tree import EMPTY_ROOT

SCHEMA = """
CREATE TABLE IF NOT EXISTS stations (
    origin TEXT PRIMARY KEY,
    size INTEGER NOT NULL DEFAULT 0,       -- the verified tree size
    root BLOB NOT NULL,                    -- its root
    levels BLOB NOT NULL DEFAULT x'',      -- the right edge (hub.follow.encode_levels)
    checkpoint TEXT,                       -- the verified checkpoint, as the bucket held it
    state TEXT NOT NULL DEFAULT 'new',     -- ok, behind, silent, fork, rollback, invalid, ...
    problems TEXT NOT NULL DEFAULT '[]',   -- JSON list of lines
    seen_size INTEGER,                     -- the bucket checkpoint's size at the last sync
    first_seen INTEGER,                    -- when the hub first followed it (POSIX s)
    last_new INTEGER,                      -- when the verified size last grew
    last_sync INTEGER,
    ahead_since INTEGER,                   -- since when a pushed checkpoint is ahead
    alarm TEXT NOT NULL DEFAULT '',        -- the alarm last recorded in the hub's ledger
    fork TEXT,                             -- a fork's evidence: stays until cleared
    pushed_size INTEGER                    -- the largest checkpoint the station pushed
);
CREATE TABLE IF NOT EXISTS key_entries (
    origin TEXT NOT NULL, idx INTEGER NOT NULL, leaf BLOB NOT NULL,
    PRIMARY KEY (origin, idx)
);
CREATE TABLE IF NOT EXISTS tiles_seen (
    origin TEXT NOT NULL, path TEXT NOT NULL, tag TEXT NOT NULL,
    PRIMARY KEY (origin, path)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS roots (
    origin TEXT NOT NULL, size INTEGER NOT NULL, root BLOB NOT NULL,
    PRIMARY KEY (origin, size)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass
class StationRow:
    origin: str
    followed: Followed
    checkpoint: str | None
    state: str
    problems: list[str]
    seen_size: int | None
    first_seen: int | None
    last_new: int | None
    last_sync: int | None
    ahead_since: int | None
    alarm: str
    fork: str | None
    pushed_size: int | None


class HubState:
    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA busy_timeout = 30000")
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.execute("PRAGMA synchronous = FULL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def station(self, origin: str, now: int) -> StationRow:
        r = self.db.execute(
            "SELECT size, root, levels, checkpoint, state, problems, seen_size, first_seen, "
            "last_new, last_sync, ahead_since, alarm, fork, pushed_size FROM stations "
            "WHERE origin = ?",
            (origin,),
        ).fetchone()
        if r is None:
            self.db.execute(
                "INSERT OR IGNORE INTO stations (origin, root, first_seen) VALUES (?, ?, ?)",
                (origin, EMPTY_ROOT, now),
            )
            return StationRow(
                origin, Followed(), None, "new", [], None, now, None, None, None, "", None, None
            )
        return StationRow(
            origin,
            Followed(int(r[0]), bytes(r[1]), decode_levels(bytes(r[2]))),
            r[3],
            r[4],
            json.loads(r[5]),
            r[6],
            r[7],
            r[8],
            r[9],
            r[10],
            r[11],
            r[12],
            r[13],
        )

    def key_entries(self, origin: str) -> list[tuple[int, bytes]]:
        return [
            (int(i), bytes(leaf))
            for i, leaf in self.db.execute(
                "SELECT idx, leaf FROM key_entries WHERE origin = ? ORDER BY idx", (origin,)
            )
        ]

    def tags(self, origin: str) -> dict[str, str]:
        return dict(self.db.execute("SELECT path, tag FROM tiles_seen WHERE origin = ?", (origin,)))

    def root_at(self, origin: str, size: int) -> bytes | None:
        if size == 0:
            return EMPTY_ROOT
        r = self.db.execute(
            "SELECT root FROM roots WHERE origin = ? AND size = ?", (origin, size)
        ).fetchone()
        return None if r is None else bytes(r[0])

    def commit_verified(
        self,
        origin: str,
        followed: Followed,
        checkpoint: str,
        key_entries: Iterable[tuple[int, bytes]],
        tags: Iterable[tuple[str, str]],
        roots: Iterable[tuple[int, bytes]],
        now: int,
        grew: bool,
    ) -> None:
        """The new verified state of one station, in one transaction."""
        c = self.db
        c.execute("BEGIN IMMEDIATE")
        try:
            c.execute(
                "UPDATE stations SET size = ?, root = ?, levels = ?, checkpoint = ?, "
                "last_new = CASE WHEN ? THEN ? ELSE last_new END WHERE origin = ?",
                (
                    followed.size,
                    followed.root,
                    encode_levels(followed.levels),
                    checkpoint,
                    grew,
                    now,
                    origin,
                ),
            )
            c.executemany(
                "INSERT OR REPLACE INTO key_entries VALUES (?, ?, ?)",
                ((origin, i, leaf) for i, leaf in key_entries),
            )
            c.executemany(
                "INSERT OR REPLACE INTO tiles_seen VALUES (?, ?, ?)",
                ((origin, p, t) for p, t in tags),
            )
            c.executemany(
                "INSERT OR REPLACE INTO roots VALUES (?, ?, ?)",
                ((origin, s, r) for s, r in roots),
            )
            c.execute("COMMIT")
        except BaseException:
            if c.in_transaction:
                c.execute("ROLLBACK")
            raise

    def set_status(
        self,
        origin: str,
        state: str,
        problems: list[str],
        seen_size: int | None,
        now: int,
        ahead_since: int | None,
    ) -> None:
        self.db.execute(
            "UPDATE stations SET state = ?, problems = ?, seen_size = COALESCE(?, seen_size), "
            "last_sync = ?, ahead_since = ? WHERE origin = ?",
            (state, json.dumps(problems, ensure_ascii=False), seen_size, now, ahead_since, origin),
        )

    def set_alarm(self, origin: str, alarm: str) -> None:
        self.db.execute("UPDATE stations SET alarm = ? WHERE origin = ?", (alarm, origin))

    def set_fork(self, origin: str, evidence: str | None) -> None:
        self.db.execute("UPDATE stations SET fork = ? WHERE origin = ?", (evidence, origin))

    def origins(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT origin FROM stations ORDER BY origin")]

    def meta(self, name: str) -> str | None:
        r = self.db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return None if r is None else str(r[0])

    def set_meta(self, name: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (name, value))


__all__ = ["HubState", "StationRow"]
