"""The retention index: the state of every original, rebuilt from the ledger's entries.

Nothing here is a second source of truth. `refresh` reads the entries appended since
it last ran (ingest, store, annotate, hold, hold_release, lock, tier, delete) and
updates a few tables in the ledger's SQLite database; dropping them and refreshing
from entry 0 gives the same state. Annotations, holds and moves are only ever made as
signed entries, so the index cannot hold anything the ledger does not say.
"""
# (lock, legal_hold, tier and delete entries are written by sweeps; annotate, hold and
# hold_release by people, through the command line.)

from __future__ import annotations

import base64
import contextlib
import json
import sqlite3
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from ledger.entry import decode_entry, parse_time
from ledger.log import Ledger
from retention.plan import State
from retention.policy import Facts

SCHEMA = """
CREATE TABLE IF NOT EXISTS retention_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS retention_items (
    sha256 TEXT PRIMARY KEY,
    ingest_entry INTEGER NOT NULL,
    captured INTEGER NOT NULL,
    size INTEGER NOT NULL,
    media_type TEXT NOT NULL,
    unit TEXT NOT NULL DEFAULT '',
    recorder TEXT NOT NULL DEFAULT '',
    officer TEXT NOT NULL DEFAULT '',
    category TEXT NOT NULL DEFAULT '',
    important INTEGER NOT NULL DEFAULT 0,
    category_from TEXT NOT NULL DEFAULT '',   -- '' | 'file name pattern' | 'annotation'
    important_from TEXT NOT NULL DEFAULT '',
    file_name TEXT NOT NULL DEFAULT '',
    recorded INTEGER NOT NULL DEFAULT 0,      -- when recording started (seconds, UTC)
    recorded_from TEXT NOT NULL DEFAULT 'docking',   -- 'file name' | 'container' | 'docking'
    complete INTEGER,              -- the probe's verdict; NULL: not probed (yet)
    damage TEXT NOT NULL DEFAULT '',          -- what the probe found missing
    local INTEGER NOT NULL DEFAULT 1,
    store_entry INTEGER,
    store TEXT,
    key TEXT,
    version_id TEXT,
    storage_class TEXT NOT NULL DEFAULT '',
    retain_until INTEGER,
    legal_hold INTEGER NOT NULL DEFAULT 0,
    local_entry INTEGER,           -- the entry that removed the dock's copy
    deleted_entry INTEGER
);
CREATE TABLE IF NOT EXISTS retention_cases (
    sha256 TEXT NOT NULL,
    case_no TEXT NOT NULL,
    PRIMARY KEY (sha256, case_no)
);
CREATE INDEX IF NOT EXISTS retention_cases_case ON retention_cases (case_no);
CREATE TABLE IF NOT EXISTS retention_holds (
    entry INTEGER PRIMARY KEY,
    scope TEXT NOT NULL,         -- object | case
    target TEXT NOT NULL,        -- a SHA-256 or a case number
    reason TEXT NOT NULL,
    operator TEXT NOT NULL,
    released_entry INTEGER
);
CREATE INDEX IF NOT EXISTS retention_holds_target ON retention_holds (target);
CREATE TABLE IF NOT EXISTS retention_objects (  -- derivatives and sidecars in the store
    sha256 TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    store_entry INTEGER NOT NULL,
    key TEXT,
    version_id TEXT,
    deleted_entry INTEGER
);
CREATE TABLE IF NOT EXISTS derivative_of (   -- access copies and posters, by original
    derived TEXT NOT NULL,
    original TEXT NOT NULL,
    kind TEXT NOT NULL,
    entry INTEGER NOT NULL,
    PRIMARY KEY (derived, original)
);
CREATE INDEX IF NOT EXISTS derivative_of_original ON derivative_of (original);
CREATE TABLE IF NOT EXISTS entry_refs (  -- every entry that names an object, by its hash
    sha256 TEXT NOT NULL,
    entry INTEGER NOT NULL,
    type TEXT NOT NULL,
    PRIMARY KEY (sha256, entry)
);
"""

# Indexes on columns an older index version lacks: made once the version is current.
LATE_SCHEMA = """
CREATE INDEX IF NOT EXISTS retention_items_recorded ON retention_items (recorded);
"""

TYPES = (
    "ingest",
    "probe",
    "store",
    "derive",
    "annotate",
    "hold",
    "hold_release",
    "lock",
    "legal_hold",
    "tier",
    "delete",
)


def open_index(db: sqlite3.Connection) -> None:
    db.executescript(SCHEMA)
    db.commit()


def _epoch(t: str) -> int:
    return int(parse_time(t).timestamp())


def apply_entry(db: sqlite3.Connection, index: int, f: dict[str, Any]) -> None:
    """Fold one entry into the index (inside the caller's transaction)."""
    ty = f.get("type")
    sha = f.get("sha256")
    if ty == "ingest" and isinstance(sha, str):
        rec = f.get("recorder") or {}
        captured = _epoch(f["time"])
        recorded, recorded_from = recording_start(f, captured)
        important = rec.get("important") is True
        category = rec.get("category") if isinstance(rec.get("category"), str) else ""
        # A file docked again after retention deleted it starts a new life: the row is
        # taken over by the new capture (its annotations and cases stay; what the new
        # file name says counts unless a person annotated otherwise).
        db.execute(
            "INSERT INTO retention_items (sha256, ingest_entry, captured, size, "
            "media_type, unit, recorder, officer, file_name, recorded, recorded_from, "
            "important, important_from, category, category_from) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
            "ON CONFLICT (sha256) DO UPDATE SET ingest_entry=excluded.ingest_entry, "
            "captured=excluded.captured, local=1, store_entry=NULL, store=NULL, key=NULL, "
            "version_id=NULL, storage_class='', retain_until=NULL, legal_hold=0, "
            "local_entry=NULL, deleted_entry=NULL, file_name=excluded.file_name, "
            "recorded=excluded.recorded, recorded_from=excluded.recorded_from, "
            "complete=NULL, damage='', "
            "important=CASE WHEN retention_items.important_from='annotation' "
            "OR excluded.important_from='' THEN retention_items.important "
            "ELSE excluded.important END, "
            "important_from=CASE WHEN retention_items.important_from='annotation' "
            "OR excluded.important_from='' THEN retention_items.important_from "
            "ELSE excluded.important_from END, "
            "category=CASE WHEN retention_items.category_from='annotation' "
            "OR excluded.category_from='' THEN retention_items.category "
            "ELSE excluded.category END, "
            "category_from=CASE WHEN retention_items.category_from='annotation' "
            "OR excluded.category_from='' THEN retention_items.category_from "
            "ELSE excluded.category_from END "
            "WHERE retention_items.deleted_entry IS NOT NULL",
            (
                sha,
                index,
                captured,
                int(f.get("size", 0)),
                str(f.get("media_type", "")),
                str(rec.get("unit", "")),
                str(rec.get("serial", "")),
                str(rec.get("officer", "")),
                file_name(f),
                recorded,
                recorded_from,
                int(important),
                NAME_PATTERN if important else "",
                category,
                NAME_PATTERN if category else "",
            ),
        )
    elif ty == "probe" and isinstance(sha, str):
        complete, damage = probe_verdict(f)
        db.execute(
            "UPDATE retention_items SET complete=?, damage=? WHERE sha256=?",
            (complete, damage, sha),
        )
        started = container_start(f)
        if started is not None:
            db.execute(
                "UPDATE retention_items SET recorded=?, recorded_from='container' "
                "WHERE sha256=? AND recorded_from='docking'",
                (started, sha),
            )
    elif ty == "store" and f.get("role") != "original" and isinstance(sha, str):
        db.execute(
            "INSERT OR REPLACE INTO retention_objects (sha256, role, store_entry, key, "
            "version_id) VALUES (?,?,?,?,?)",
            (sha, str(f.get("role")), index, f.get("key"), f.get("version_id")),
        )
    elif ty == "derive" and isinstance(f.get("output"), dict):
        db.execute(
            "INSERT OR IGNORE INTO derivative_of VALUES (?,?,?,?)",
            (f["output"]["sha256"], sha, str(f.get("kind", "")), index),
        )
    elif ty == "store" and f.get("role") == "original":
        ru = f.get("retain_until")
        db.execute(
            "UPDATE retention_items SET store_entry=?, store=?, key=?, version_id=?, "
            "storage_class=?, retain_until=? WHERE sha256=?",
            (
                index,
                f.get("store"),
                f.get("key"),
                f.get("version_id"),
                str(f.get("storage_class", "")),
                _epoch(ru) if isinstance(ru, str) else None,
                sha,
            ),
        )
    elif ty == "annotate":
        if "category" in f:
            db.execute(
                "UPDATE retention_items SET category=?, category_from='annotation' WHERE sha256=?",
                (f["category"], sha),
            )
        if "important" in f:
            db.execute(
                "UPDATE retention_items SET important=?, important_from='annotation' "
                "WHERE sha256=?",
                (int(bool(f["important"])), sha),
            )
        for c in f.get("cases_added", []):
            db.execute("INSERT OR IGNORE INTO retention_cases VALUES (?,?)", (sha, c))
        for c in f.get("cases_removed", []):
            db.execute("DELETE FROM retention_cases WHERE sha256=? AND case_no=?", (sha, c))
    elif ty == "hold":
        db.execute(
            "INSERT OR IGNORE INTO retention_holds (entry, scope, target, reason, operator) "
            "VALUES (?,?,?,?,?)",
            (index, f["scope"], f["target"], f.get("reason", ""), f.get("operator", "")),
        )
    elif ty == "hold_release":
        db.execute(
            "UPDATE retention_holds SET released_entry=? WHERE released_entry IS NULL AND "
            "scope=? AND target=?",
            (index, f["scope"], f["target"]),
        )
    elif ty == "lock" and isinstance(f.get("retain_until"), str):
        db.execute(
            "UPDATE retention_items SET retain_until=MAX(COALESCE(retain_until, 0), ?) "
            "WHERE sha256=?",
            (_epoch(f["retain_until"]), sha),
        )
    elif ty == "legal_hold":
        db.execute(
            "UPDATE retention_items SET legal_hold=? WHERE sha256=?", (int(bool(f["on"])), sha)
        )
    elif ty == "tier":
        if f.get("action") == "evict_local":
            db.execute(
                "UPDATE retention_items SET local=0, local_entry=? WHERE sha256=?", (index, sha)
            )
        elif f.get("action") == "storage_class":
            db.execute(
                "UPDATE retention_items SET storage_class=?, version_id=COALESCE(?, version_id) "
                "WHERE sha256=?",
                (f.get("to"), f.get("version_id"), sha),
            )
    elif ty == "delete" and f.get("role") == "derivative":
        db.execute(
            "INSERT INTO retention_objects (sha256, role, store_entry, deleted_entry) "
            "VALUES (?, 'derivative', -1, ?) ON CONFLICT (sha256) DO UPDATE SET "
            "deleted_entry = excluded.deleted_entry",
            (sha, index),
        )
    elif ty == "delete":
        db.execute(
            "UPDATE retention_items SET deleted_entry=?, local=0, local_entry=? WHERE sha256=?",
            (index, index, sha),
        )


NAME_PATTERN = "file name pattern"  # where the station's own annotations come from
EARLIEST = 946684800  # 2000-01-01: a container time before this is an unset field


def _try_epoch(t: object) -> int | None:
    """Seconds since the epoch of an ISO 8601 time; a time without zone is UTC."""
    if not isinstance(t, str) or not t:
        return None
    try:
        d = datetime.fromisoformat(t)
    except ValueError:
        return None
    if d.tzinfo is None:
        d = d.replace(tzinfo=UTC)
    return int(d.timestamp())


def recording_start(f: dict[str, Any], captured: int) -> tuple[int, str]:
    """When the recording started, by an `ingest` entry, and which source says so: the
    start in the file name (read in the offset the station recorded with it; UTC for
    entries from before offsets were recorded), else the time the dock received it.
    A `probe` entry may improve "docking" to "container" later."""
    rec = f.get("recorder") or {}
    start = rec.get("claimed_start")
    offset = rec.get("claimed_start_offset")
    if isinstance(start, str) and isinstance(offset, str) and offset:
        start += offset
    t = _try_epoch(start)
    if t is not None:
        return t, "file name"
    docked = _try_epoch((f.get("times") or {}).get("dock_received"))
    return (docked if docked is not None else captured), "docking"


def container_start(f: dict[str, Any]) -> int | None:
    """The container's creation time in a `probe` entry's summary, when it is set."""
    summary = f.get("summary")
    tags = summary.get("tags") if isinstance(summary, dict) else None
    t = _try_epoch(tags.get("creation_time")) if isinstance(tags, dict) else None
    return t if t is not None and t >= EARLIEST else None


def probe_verdict(f: dict[str, Any]) -> tuple[int | None, str]:
    """(complete, what is missing) from a `probe` entry. A summary's ``complete`` is the
    verdict (absent in entries from before it was recorded: unknown); a file FFmpeg could
    not read is not shown complete."""
    summary = f.get("summary")
    if isinstance(summary, dict):
        c = summary.get("complete")
        damage = summary.get("damage")
        text = "; ".join(str(d) for d in damage) if isinstance(damage, list) else ""
        return (int(c) if isinstance(c, bool) else None), text
    if "error" in f:
        return 0, f"FFmpeg cannot read it: {f['error']}"
    return None, ""


def file_name(f: dict[str, Any]) -> str:
    """The recorder's name for the file (the last part of its path on the dock)."""
    src = f.get("source") or {}
    path = src.get("path")
    if isinstance(path, str):
        return path.rsplit("/", 1)[-1]
    b64 = src.get("path_b64")
    if isinstance(b64, str):
        with contextlib.suppress(ValueError):
            raw = base64.b64decode(b64, validate=True)
            return raw.rsplit(b"/", 1)[-1].decode("utf-8", "backslashreplace")
    return ""


def _refs(f: dict[str, Any]) -> list[str]:
    """The objects an entry names: its subject, and what it made (sidecars, copies)."""
    out = []
    for v in (f.get("sha256"), (f.get("output") or {}).get("sha256")):
        if isinstance(v, str) and len(v) == 64:
            out.append(v)
    for k in ("sidecar", "signature"):
        v = f.get(k)
        if isinstance(v, dict) and isinstance(v.get("sha256"), str):
            out.append(v["sha256"])
    return out


def rebuild(
    ledger: Ledger, db: sqlite3.Connection, progress: Callable[[int, int], None] | None = None
) -> int:
    """Drop the index and fold every entry again (`custody reindex`). The sweeps' own
    memory (when the last ran, what it did) is kept: the clock checks need it."""
    kept: list[tuple[str, str]] = []
    with contextlib.suppress(sqlite3.OperationalError):
        kept = db.execute(
            "SELECT key, value FROM retention_meta WHERE key IN ('last_sweep', 'last_result')"
        ).fetchall()
    for t in (
        "retention_meta",
        "retention_items",
        "retention_cases",
        "retention_holds",
        "retention_objects",
        "derivative_of",
        "entry_refs",
    ):
        db.execute(f"DROP TABLE IF EXISTS {t}")
    db.commit()
    open_index(db)
    db.executemany("INSERT INTO retention_meta VALUES (?, ?)", kept)
    db.commit()
    return refresh(ledger, db, progress)


INDEX_VERSION = "4"  # bump when what is folded changes: the index is then rebuilt


def refresh(
    ledger: Ledger, db: sqlite3.Connection, progress: Callable[[int, int], None] | None = None
) -> int:
    """Fold every entry appended since the last refresh; returns how many were read.
    ``progress(done, total)`` is called after each batch of entries."""
    open_index(db)
    ver = db.execute("SELECT value FROM retention_meta WHERE key='version'").fetchone()
    if ver is None or ver[0] != INDEX_VERSION:
        folded = db.execute("SELECT 1 FROM retention_meta WHERE key='next'").fetchone()
        if ver is not None or folded is not None:  # folded by other code: fold afresh
            return rebuild(ledger, db, progress)
        db.execute("INSERT INTO retention_meta VALUES ('version', ?)", (INDEX_VERSION,))
        db.commit()
    db.executescript(LATE_SCHEMA)
    row = db.execute("SELECT value FROM retention_meta WHERE key='next'").fetchone()
    start = int(row[0]) if row else 0
    end = ledger.next_index()
    i = start
    while i < end:
        stop = min(end, i + 5000)
        for j in range(i, stop):
            fields = dict(decode_entry(ledger.entry(j)).fields)
            if fields.get("type") in TYPES:
                apply_entry(db, j, fields)
            for ref in _refs(fields):
                db.execute(
                    "INSERT OR IGNORE INTO entry_refs VALUES (?,?,?)", (ref, j, fields["type"])
                )
        db.execute(
            "INSERT INTO retention_meta VALUES ('next', ?) ON CONFLICT (key) DO UPDATE SET "
            "value=excluded.value",
            (str(stop),),
        )
        db.commit()
        i = stop
        if progress is not None:
            progress(stop - start, end - start)
    return end - start


def active_holds(db: sqlite3.Connection) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Unreleased holds: by object SHA-256 and by case number."""
    by_obj: dict[str, list[str]] = {}
    by_case: dict[str, list[str]] = {}
    for entry, scope, target, reason in db.execute(
        "SELECT entry, scope, target, reason FROM retention_holds WHERE released_entry IS NULL"
    ).fetchall():
        d = by_obj if scope == "object" else by_case
        d.setdefault(target, []).append(f"hold entry {entry} ({reason})")
    return by_obj, by_case


def states(
    db: sqlite3.Connection, include_deleted: bool = False, only: str | None = None
) -> list[State]:
    """Every original's state (or one's), for the planner. A list: no cursor is left
    open across the ledger appends a sweep makes."""
    return list(_states(db, include_deleted, only))


def _states(db: sqlite3.Connection, include_deleted: bool, only: str | None) -> Iterator[State]:
    cases: dict[str, list[str]] = {}
    for sha, c in db.execute(
        "SELECT sha256, case_no FROM retention_cases ORDER BY case_no"
    ).fetchall():
        cases.setdefault(sha, []).append(c)
    by_obj, by_case = active_holds(db)
    q = (
        "SELECT sha256, captured, category, important, unit, recorder, media_type, local, "
        "store_entry, storage_class, retain_until, deleted_entry FROM retention_items"
    )
    where = [] if include_deleted else ["deleted_entry IS NULL"]
    params: tuple[str, ...] = ()
    if only is not None:
        where.append("sha256 = ?")
        params = (only,)
    if where:
        q += " WHERE " + " AND ".join(where)
    for (
        sha,
        captured,
        category,
        important,
        unit,
        recorder,
        media_type,
        local,
        store_entry,
        storage_class,
        retain_until,
        deleted,
    ) in db.execute(q, params).fetchall():
        cs = tuple(cases.get(sha, ()))
        held = list(by_obj.get(sha, ()))
        for c in cs:
            held += [f"{h}, case {c}" for h in by_case.get(c, ())]
        yield State(
            Facts(sha, captured, category, cs, bool(important), unit, recorder, media_type),
            tuple(held),
            bool(local),
            store_entry is not None,
            storage_class,
            retain_until,
            deleted is not None,
        )


def orphaned_derivatives(db: sqlite3.Connection) -> list[tuple[str, str, list[str]]]:
    """Access copies and posters not yet deleted whose every original has been deleted:
    (sha256, kind, originals). A copy shared by a live original is kept."""
    rows = db.execute(
        "SELECT d.derived, d.kind, group_concat(d.original, ','), "
        "SUM(CASE WHEN i.deleted_entry IS NULL THEN 1 ELSE 0 END) FROM derivative_of d "
        "JOIN retention_items i ON i.sha256 = d.original "
        "LEFT JOIN retention_objects o ON o.sha256 = d.derived "
        "WHERE o.deleted_entry IS NULL GROUP BY d.derived"
    ).fetchall()
    return [(sha, kind, origs.split(",")) for sha, kind, origs, live in rows if not live]


def item(db: sqlite3.Connection, sha: str) -> dict[str, Any] | None:
    cur = db.execute("SELECT * FROM retention_items WHERE sha256=?", (sha,))
    row = cur.fetchone()
    if row is None:
        return None
    return dict(zip([d[0] for d in cur.description], row, strict=True))


def status(db: sqlite3.Connection) -> dict[str, Any]:
    """Originals indexed and deleted, holds in force, and the last sweep's result (with
    its time as ``at_utc``); zeros before the index exists."""
    out: dict[str, Any] = {"items": 0, "deleted": 0, "holds": 0, "last_sweep": None}
    try:
        out["items"], out["deleted"] = db.execute(
            "SELECT COUNT(*), COUNT(deleted_entry) FROM retention_items"
        ).fetchone()
        out["holds"] = db.execute(
            "SELECT COUNT(*) FROM retention_holds WHERE released_entry IS NULL"
        ).fetchone()[0]
        row = db.execute("SELECT value FROM retention_meta WHERE key='last_result'").fetchone()
    except sqlite3.OperationalError:
        return out  # no retention index yet
    if row:
        last = json.loads(row[0])
        at = datetime.fromtimestamp(int(last.get("at", 0)), UTC)
        last["at_utc"] = at.strftime("%Y-%m-%dT%H:%M:%SZ")
        out["last_sweep"] = last
    return out


def record_sweep(db: sqlite3.Connection, result: Mapping[str, Any], at: int) -> None:
    """Keep a sweep's result (what `status` shows), with the epoch second it ended."""
    db.execute(
        "INSERT INTO retention_meta VALUES ('last_result', ?) ON CONFLICT (key) DO UPDATE "
        "SET value=excluded.value",
        (json.dumps(dict(result, at=at)),),
    )
    db.commit()


def deleted_entry(db: sqlite3.Connection, sha256: str) -> int | None:
    """The `delete` entry of an object retention deleted (an original, or an access copy
    or poster that went with it); None if it was not deleted or there is no index yet."""
    try:
        row = db.execute(
            "SELECT deleted_entry FROM retention_items WHERE sha256=? AND "
            "deleted_entry IS NOT NULL UNION ALL SELECT deleted_entry FROM "
            "retention_objects WHERE sha256=? AND deleted_entry IS NOT NULL",
            (sha256, sha256),
        ).fetchone()
    except sqlite3.OperationalError:
        return None  # no retention index yet: nothing was ever deleted
    return None if row is None else int(row[0])
