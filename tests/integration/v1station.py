"""`custody` as released before custody-packets/v2: its packet fingerprint job wrote a v1
sidecar, a `fingerprint` entry and a row in `ingest_fingerprints` (commit ed4c0ea).

Run as ``python -m tests.integration.v1station ARGS...`` it is the `custody` command
with that job in place of today's, so a test makes a station as an upgraded one finds
it: everything else (capture, probe, access copies) is the code under test.
"""

from __future__ import annotations

import io
import sqlite3
import sys
from typing import Any

from ingest.fingerprint import FingerprintError, write_sidecar
from ingest.fingerprinter import KEY_PREFIX, Fingerprinter
from ingest.probe import ffmpeg_version
from ledger.errors import Withdrawn


def run_v1(self: Fingerprinter, sha: str) -> int | None:
    """The v1 job of ed4c0ea, the sidecar made by today's writer at version 1."""
    with self.db_lock:
        done = self.db.execute(
            "SELECT 1 FROM ingest_fingerprints WHERE sha256=?", (sha,)
        ).fetchone()
    if done:
        return None
    payload: dict[str, Any] = {"sha256": sha, "kind": "packets", "tool": ffmpeg_version()}
    sidecar_sha: str | None = None
    keys: tuple[bytes, ...] = ()
    size = 0
    try:
        buf = io.BytesIO()
        s = write_sidecar(self.objects.path(sha), buf, version=1)
        payload.update(s.entry_fields())
        sidecar_sha = self.objects.put_bytes(buf.getvalue())
        keys, size = s.keyframes, s.size
    except FingerprintError as e:
        payload["error"] = str(e)[:1000]

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
        return self.ledger.append("fingerprint", payload, mark)
    except Withdrawn:
        return None


def main(argv: list[str]) -> int:
    from custody.cli import main as custody_main

    Fingerprinter.run = run_v1  # type: ignore[method-assign]
    return custody_main(argv)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
