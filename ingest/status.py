"""What capture and the media worker have done, from ingest's own tables (read-only).

`custody status` and the metrics ask here instead of reading ingest's tables
themselves: the tables, their schema and their meaning stay with this package.
A station that has captured nothing yet has no tables: every count is then zero.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any


def capture_status(db: sqlite3.Connection) -> dict[str, Any]:
    """Files per dock, recorder and state (count and bytes), and the latest errors."""
    docks: dict[str, dict[str, dict[str, dict[str, int]]]] = {}
    try:
        rows = db.execute(
            "SELECT dock, recorder, state, count(*), sum(size) FROM ingest_files "
            "GROUP BY dock, recorder, state"
        ).fetchall()
        errors = db.execute(
            "SELECT dock, recorder, last_error FROM ingest_files "
            "WHERE state='queued' AND last_error IS NOT NULL ORDER BY id DESC LIMIT 5"
        ).fetchall()
    except sqlite3.OperationalError:  # nothing captured yet
        rows, errors = [], []
    for dock, rec, state, n, size in rows:
        r = docks.setdefault(dock, {}).setdefault(rec or "(dock root)", {})
        r[state] = {"files": n, "bytes": size or 0}
    return {"docks": docks, "recent_errors": [f"{d}/{r}: {e}" for d, r, e in errors]}


def media_status(db: sqlite3.Connection, today: str) -> dict[str, int]:
    """Fingerprints, access copies, posters and frame hashes made; transcodes waiting;
    seconds of footage transcoded on ``today`` (YYYY-MM-DD, the daily budget's day).

    ``fingerprinted``: originals with a packet fingerprint in either format;
    ``awaiting_v2``: those whose only one is custody-packets/v1 (the backfill owes them a
    v2 one; the same rows as `Fingerprinter.backfill_pending`, evicted ones included)."""
    out = {
        "fingerprinted": 0,
        "awaiting_v2": 0,
        "access_copies": 0,
        "posters": 0,
        "transcodes_waiting": 0,
        "transcoded_today_s": 0,
        "frames_hashed": 0,
    }
    try:
        # A station upgraded from before v2 has no v2 table until the daemon starts.
        v2 = (
            "ingest_packets_v2"
            if db.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name='ingest_packets_v2'"
            ).fetchone()
            else "(SELECT '' AS sha256, NULL AS sidecar WHERE 0)"
        )
        out["fingerprinted"] = db.execute(
            "SELECT COUNT(*) FROM (SELECT sha256 FROM ingest_fingerprints WHERE sidecar IS NOT "
            f"NULL UNION SELECT sha256 FROM {v2} WHERE sidecar IS NOT NULL)"
        ).fetchone()[0]
        out["awaiting_v2"] = db.execute(
            "SELECT COUNT(*) FROM ingest_objects o JOIN ingest_fingerprints f "
            "ON f.sha256 = o.sha256 WHERE f.sidecar IS NOT NULL "
            "AND (o.media_type LIKE 'video/%' OR o.media_type LIKE 'audio/%') "
            f"AND NOT EXISTS (SELECT 1 FROM {v2} v WHERE v.sha256 = o.sha256)"
        ).fetchone()[0]
        for kind, key in (("access_copy", "access_copies"), ("poster", "posters")):
            out[key] = db.execute(
                "SELECT COUNT(*) FROM ingest_derivatives WHERE kind=? AND output IS NOT NULL",
                (kind,),
            ).fetchone()[0]
        out["transcodes_waiting"] = db.execute(
            "SELECT COUNT(*) FROM ingest_derivatives WHERE entry < 0"
        ).fetchone()[0]
        row = db.execute("SELECT transcoded_s FROM media_budget WHERE day=?", (today,)).fetchone()
        out["transcoded_today_s"] = int(row[0]) if row else 0
        out["frames_hashed"] = db.execute(
            "SELECT COUNT(*) FROM ingest_frames WHERE sidecar IS NOT NULL"
        ).fetchone()[0]
    except sqlite3.OperationalError:
        pass  # nothing captured yet (the media tables come with the first capture)
    return out


def captured_objects(db: sqlite3.Connection, batch: int = 1000) -> Iterator[list[tuple[str, int]]]:
    """Every captured original as (SHA-256, size), in batches by SHA-256 (memory stays
    flat on a station of millions)."""
    last = ""
    while True:
        rows = db.execute(
            "SELECT sha256, size FROM ingest_objects WHERE sha256 > ? ORDER BY sha256 LIMIT ?",
            (last, batch),
        ).fetchall()
        if not rows:
            return
        yield [(str(s), int(n)) for s, n in rows]
        last = rows[-1][0]
