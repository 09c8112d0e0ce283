"""The capture job table (``ingest_files``, ``ingest_objects``, in the ledger's
database) and the plain records capture, release and media scheduling share.

Job states: ``queued`` -> ``recorded`` -> (``releasing`` -> ``released``);
``superseded`` (the file changed before capture; its new version is a new job),
``gone`` (vanished before capture), ``changed`` (recorded, then the source
changed before it was released: kept on the recorder, its new version is a new
job).
"""

from __future__ import annotations

import sqlite3
import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from ingest.settings import DockSettings
from ledger.entry import format_time

# A file version is (path, size, mtime, inode, device): a recorder that reuses a name
# (FILE0001.MP4 again, after the first was released) with the same size and mtime is
# another file, never skipped as already taken. No UNIQUE key: a released row and the
# new file of the same name, size and mtime, even on a reused inode, are two jobs.
FILES_TABLE = """
CREATE TABLE IF NOT EXISTS ingest_files (
    id INTEGER PRIMARY KEY,
    dock TEXT NOT NULL,
    recorder TEXT NOT NULL,
    path BLOB NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ino INTEGER NOT NULL,
    state TEXT NOT NULL,
    first_seen TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    failure_entry INTEGER,
    sha256 TEXT,
    entry INTEGER,
    kind TEXT,
    wipe_entry INTEGER,
    dev INTEGER NOT NULL DEFAULT 0
);
"""
FILES_COLUMNS = (
    "id, dock, recorder, path, size, mtime_ns, ino, state, first_seen, attempts, "
    "last_error, failure_entry, sha256, entry, kind, wipe_entry"
)
SCHEMA = (
    FILES_TABLE
    + """
CREATE INDEX IF NOT EXISTS ingest_files_state ON ingest_files (state);
CREATE INDEX IF NOT EXISTS ingest_files_sha ON ingest_files (sha256);
CREATE INDEX IF NOT EXISTS ingest_files_version ON ingest_files (path, size, mtime_ns);
CREATE TABLE IF NOT EXISTS ingest_objects (
    sha256 TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    media_type TEXT NOT NULL,
    first_entry INTEGER NOT NULL,
    probe_entry INTEGER
);
"""
)

MAX_BACKOFF_S = 300
# Taken and still on the recorder as captured: the same version seen again is not taken
# again. A `released` job is not among them: the station removed that file (or found it
# gone), so a file at its path now is another one and is captured.
DONE_STATES = ("recorded", "releasing", "changed")
# Rows from before the device was recorded have dev 0: their device is unknown.
SAME_VERSION = "path=? AND size=? AND mtime_ns=? AND ino=? AND (dev=? OR dev=0)"


@dataclass
class Watch:
    """A file seen on a dock but not yet stable."""

    dock: DockSettings
    size: int
    mtime_ns: int
    ino: int
    dev: int
    changed_at: float


@dataclass
class Job:
    id: int
    dock: DockSettings
    recorder: str
    path: Path
    size: int
    mtime_ns: int
    ino: int
    dev: int
    attempts: int = 0
    not_before: float = 0.0
    failure_entry: int | None = None


@dataclass
class Stats:
    captured: int = 0
    sightings: int = 0
    failed: int = 0
    bytes: int = 0
    errors: deque[str] = field(default_factory=lambda: deque(maxlen=20))


_CONTROL = {c: f"\\x{c:02x}" for c in range(0x20)} | {0x7F: "\\x7f"}


def shown(path: Path | str) -> str:
    """A path for a log line: control characters (newlines in names) escaped."""
    return str(path).translate(_CONTROL)


def now_text() -> str:
    return format_time(datetime.now(UTC))


def path_payload(rel: bytes) -> dict[str, str]:
    try:
        return {"path": rel.decode("utf-8")}
    except UnicodeDecodeError:
        import base64

        return {"path_b64": base64.b64encode(rel).decode()}


class JobDb:
    """One connection to the job tables, shared by capture, release and the media
    steps under one lock (SQLite connections are not for concurrent use)."""

    def __init__(self, db_path: Path) -> None:
        self.db = sqlite3.connect(db_path, timeout=60, check_same_thread=False)
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("PRAGMA busy_timeout=60000")
        _migrate(self.db)
        self.db.executescript(SCHEMA)
        self.db.commit()
        self.lock = threading.Lock()

    def set_state(self, job_id: int, state: str) -> None:
        with self.lock:
            self.db.execute("UPDATE ingest_files SET state=? WHERE id=?", (state, job_id))
            self.db.commit()

    def set_state_error(self, job_id: int, state: str, error: str | None) -> None:
        with self.lock:
            self.db.execute(
                "UPDATE ingest_files SET state=?, last_error=? WHERE id=?", (state, error, job_id)
            )
            self.db.commit()

    def close(self) -> None:
        self.db.close()


def _migrate(db: sqlite3.Connection) -> None:
    """A job table from before the device was recorded (UNIQUE on path, size and mtime,
    which made a reused name look taken): rebuilt in one transaction, dev 0 (unknown)."""
    cols = {r[1] for r in db.execute("PRAGMA table_info(ingest_files)")}
    if not cols or "dev" in cols:
        return
    db.execute("BEGIN IMMEDIATE")  # DDL too: sqlite3 would otherwise commit each alone
    with db:  # commits, or rolls back on an error
        db.execute("ALTER TABLE ingest_files RENAME TO ingest_files_before_dev")
        for index in ("ingest_files_state", "ingest_files_sha"):
            db.execute(f"DROP INDEX IF EXISTS {index}")
        db.execute(FILES_TABLE)
        db.execute(
            f"INSERT INTO ingest_files ({FILES_COLUMNS}) "
            f"SELECT {FILES_COLUMNS} FROM ingest_files_before_dev"
        )
        db.execute("DROP TABLE ingest_files_before_dev")
