"""The fingerprint job: packet hashes of each captured media object, as a sidecar object
and a signed `fingerprint` entry. Runs after capture on the low-priority media worker.

The sidecar is stored content-addressed in the dock's store and queued for the cold
store (role ``sidecar``) in the same transaction as its entry, which also fills a
small index of video keyframe hashes (first 16 bytes) so `custody verify-clip` finds
the candidate originals of a clip without reading every sidecar (every packet is
indexed for a recording without video, e.g. audio only).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
from collections.abc import Callable
from typing import Any

from ingest.fingerprint import (
    FingerprintError,
    format_sidecar,
    keyframe_hashes,
    read_packets,
    summary,
)
from ingest.objects import LocalObjects
from ingest.probe import ffmpeg_version
from ledger.errors import Withdrawn
from ledger.log import Ledger

log = logging.getLogger("custody.ingest")

SCHEMA = """
CREATE TABLE IF NOT EXISTS ingest_fingerprints (
    sha256 TEXT PRIMARY KEY,
    entry INTEGER NOT NULL,
    sidecar TEXT
);
CREATE TABLE IF NOT EXISTS fingerprint_keys (
    hash BLOB NOT NULL,
    sha256 TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS fingerprint_keys_hash ON fingerprint_keys (hash);
"""

KEY_PREFIX = 16  # bytes of a keyframe hash kept in the index (candidates are checked in full)

OnNewObject = Callable[[sqlite3.Connection, str, int, str], None]


def lower_priority() -> None:
    """Thread initializer: media work yields the CPU to capture (Linux nice is per thread)."""
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)


class Fingerprinter:
    def __init__(
        self,
        ledger: Ledger,
        objects: LocalObjects,
        db: sqlite3.Connection,
        db_lock: threading.Lock,
        on_new_object: OnNewObject | None = None,
    ) -> None:
        self.ledger, self.objects, self.db, self.db_lock = ledger, objects, db, db_lock
        self.on_new_object = on_new_object
        with db_lock:
            db.executescript(SCHEMA)
            db.commit()

    def pending(self) -> list[str]:
        """Media objects with no fingerprint entry yet."""
        with self.db_lock:
            rows = self.db.execute(
                "SELECT o.sha256, o.media_type FROM ingest_objects o WHERE NOT EXISTS "
                "(SELECT 1 FROM ingest_fingerprints f WHERE f.sha256 = o.sha256)"
            ).fetchall()
        return [sha for sha, mt in rows if mt.split("/")[0] in ("video", "audio")]

    def run(self, sha: str) -> int | None:
        """Fingerprint one stored object; returns its entry (None if done before)."""
        with self.db_lock:
            done = self.db.execute(
                "SELECT 1 FROM ingest_fingerprints WHERE sha256=?", (sha,)
            ).fetchone()
        if done:
            return None
        payload: dict[str, Any] = {"sha256": sha, "kind": "packets", "tool": ffmpeg_version()}
        sidecar_sha: str | None = None
        keys: list[bytes] = []
        try:
            fp = read_packets(self.objects.path(sha))
            data = format_sidecar(fp)
            payload.update(summary(fp, data))
            sidecar_sha = self.objects.put_bytes(data)
            keys = keyframe_hashes(fp)
        except FingerprintError as e:
            payload["error"] = str(e)[:1000]
        size = int(payload["sidecar"]["size"]) if sidecar_sha else 0

        def mark(conn: sqlite3.Connection, idx: list[int]) -> None:
            cur = conn.execute(
                "INSERT OR IGNORE INTO ingest_fingerprints (sha256, entry, sidecar) VALUES (?,?,?)",
                (sha, idx[0], sidecar_sha),
            )
            if cur.rowcount != 1:
                raise Withdrawn()
            conn.executemany(
                "INSERT INTO fingerprint_keys (hash, sha256) VALUES (?,?)",
                [(k[:KEY_PREFIX], sha) for k in dict.fromkeys(keys)],
            )
            if sidecar_sha and self.on_new_object is not None:
                self.on_new_object(conn, sidecar_sha, size, "sidecar")

        try:
            index = self.ledger.append("fingerprint", payload, mark)
        except Withdrawn:
            return None
        if "error" in payload:
            log.warning(
                "no packet fingerprint for %s (entry %d): %s", sha[:16], index, payload["error"]
            )
        elif not payload["complete"]:
            log.warning(
                "packet fingerprint of %s covers the readable part only (entry %d): %s",
                sha[:16],
                index,
                payload.get("damage", ""),
            )
        return index


def candidates(db: sqlite3.Connection, hashes: list[bytes]) -> list[str]:
    """Originals whose fingerprints share a keyframe hash with ``hashes``, most shared first."""
    counts: dict[str, int] = {}
    for h in dict.fromkeys(hashes):
        for (sha,) in db.execute(
            "SELECT DISTINCT sha256 FROM fingerprint_keys WHERE hash=?", (h[:KEY_PREFIX],)
        ):
            counts[sha] = counts.get(sha, 0) + 1
    return sorted(counts, key=lambda s: -counts[s])
