"""A job table from before the device was recorded is rebuilt, its rows kept."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ingest.jobs import JobDb

OLD = """
CREATE TABLE ingest_files (
    id INTEGER PRIMARY KEY, dock TEXT NOT NULL, recorder TEXT NOT NULL, path BLOB NOT NULL,
    size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, ino INTEGER NOT NULL,
    state TEXT NOT NULL, first_seen TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT, failure_entry INTEGER, sha256 TEXT, entry INTEGER, kind TEXT,
    wipe_entry INTEGER, UNIQUE (path, size, mtime_ns)
);
CREATE INDEX ingest_files_state ON ingest_files (state);
CREATE INDEX ingest_files_sha ON ingest_files (sha256);
INSERT INTO ingest_files (dock, recorder, path, size, mtime_ns, ino, state, first_seen,
    wipe_entry) VALUES ('dock', 'slot01', x'2f612f62', 10, 20, 30, 'released', 't', 7);
"""


def test_old_job_table_is_rebuilt_with_its_rows(tmp_path: Path) -> None:
    db_path = tmp_path / "ledger.sqlite"
    with sqlite3.connect(db_path) as db:
        db.executescript(OLD)
    jobs = JobDb(db_path)
    try:
        row = jobs.db.execute(
            "SELECT dock, path, size, ino, state, wipe_entry, dev FROM ingest_files"
        ).fetchone()
        assert row == ("dock", b"/a/b", 10, 30, "released", 7, 0)
        # The same name, size and mtime again (a reused name) is a row of its own now.
        jobs.db.execute(
            "INSERT INTO ingest_files (dock, recorder, path, size, mtime_ns, ino, dev, state, "
            "first_seen) VALUES ('dock', 'slot01', x'2f612f62', 10, 20, 30, 5, 'queued', 't')"
        )
        indexes = {r[1] for r in jobs.db.execute("PRAGMA index_list(ingest_files)")}
        assert {"ingest_files_state", "ingest_files_sha", "ingest_files_version"} <= indexes
    finally:
        jobs.close()
    JobDb(db_path).close()  # a second open leaves it as it is
