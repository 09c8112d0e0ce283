"""Export requests on the review site: a reviewer asks, with a purpose; a supervisor
(never the one who asked) approves; the bag is built and zipped; the reviewer downloads it.

The requests are kept in ``<data_dir>/web/web.sqlite``; what happened to each is also in
the log (`access` entries export_request, export_approve, export_download, and the
station's own `export` entry for the bag). The bag is made by the same code as
`custody export`, so `python -m verify bag` checks it offline.
"""

from __future__ import annotations

import builtins
import json
import logging
import os
import secrets
import shutil
import sqlite3
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from web.source import Source

log = logging.getLogger("custody.web")

STATES = ("requested", "building", "ready", "failed")
SCHEMA = """
CREATE TABLE IF NOT EXISTS exports (
    id TEXT PRIMARY KEY,
    requested_by TEXT NOT NULL,
    role TEXT NOT NULL,
    purpose TEXT NOT NULL,
    case_no TEXT,
    shas TEXT NOT NULL,            -- JSON list of SHA-256s
    units TEXT NOT NULL,           -- JSON list: the units the footage belongs to
    state TEXT NOT NULL,
    created INTEGER NOT NULL,
    request_entry INTEGER,
    approved_by TEXT,
    approved INTEGER,
    approve_entry INTEGER,
    export_entry INTEGER,
    zip_bytes INTEGER,
    error TEXT
);
"""


@dataclass(frozen=True)
class Export:
    id: str
    requested_by: str
    role: str
    purpose: str
    case: str | None
    shas: tuple[str, ...]
    units: tuple[str, ...]
    state: str
    created: int
    request_entry: int | None
    approved_by: str | None
    approved: int | None
    approve_entry: int | None
    export_entry: int | None
    zip_bytes: int | None
    error: str | None

    def public(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["shas"], d["units"] = list(self.shas), list(self.units)
        return d


def _row(r: tuple[Any, ...]) -> Export:
    return Export(
        r[0], r[1], r[2], r[3], r[4], tuple(json.loads(r[5])), tuple(json.loads(r[6])), *r[7:]
    )


def new_id() -> str:
    return secrets.token_hex(16)


class Exports:
    def __init__(self, folder: Path, source: Source) -> None:
        self.folder = folder
        self.source = source
        (folder / "exports").mkdir(parents=True, exist_ok=True, mode=0o700)
        db_path = folder / "web.sqlite"
        db_path.touch(mode=0o600, exist_ok=True)  # purposes and names: not for other users
        db_path.chmod(0o600)
        self._db = sqlite3.connect(db_path, timeout=30, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()
        # A build cut short by a restart is started again.
        for e in self.list():
            if e.state == "building":
                self._start(e.id)

    def close(self) -> None:
        self._db.close()

    def _one(self, sql: str, args: tuple[Any, ...]) -> Export | None:
        with self._lock:
            r = self._db.execute(f"SELECT * FROM exports {sql}", args).fetchone()
        return _row(r) if r else None

    def get(self, export_id: str) -> Export | None:
        return self._one("WHERE id=?", (export_id,))

    def list(self) -> builtins.list[Export]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM exports ORDER BY created DESC, id").fetchall()
        return [_row(r) for r in rows]

    def request(
        self,
        user: str,
        role: str,
        purpose: str,
        case: str | None,
        shas: builtins.list[str],
        units: builtins.list[str],
        entry: int,
        eid: str,
    ) -> Export:
        with self._lock:
            self._db.execute(
                "INSERT INTO exports (id, requested_by, role, purpose, case_no, shas, units, "
                "state, created, request_entry) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    eid,
                    user,
                    role,
                    purpose,
                    case,
                    json.dumps(shas),
                    json.dumps(sorted(set(units))),
                    "requested",
                    int(time.time()),
                    entry,
                ),
            )
            self._db.commit()
        got = self.get(eid)
        assert got is not None
        return got

    def approve(self, export_id: str, user: str, entry: int) -> Export:
        with self._lock:
            cur = self._db.execute(
                "UPDATE exports SET state='building', approved_by=?, approved=?, approve_entry=? "
                "WHERE id=? AND state='requested'",
                (user, int(time.time()), entry, export_id),
            )
            self._db.commit()
        if cur.rowcount:
            self._start(export_id)
        got = self.get(export_id)
        assert got is not None
        return got

    def bag_dir(self, export_id: str) -> Path:
        return self.folder / "exports" / export_id / "bag"

    def zip_path(self, export_id: str) -> Path:
        return self.folder / "exports" / export_id / "bag.zip"

    def _start(self, export_id: str) -> None:
        threading.Thread(
            target=self._build, args=(export_id,), name=f"export-{export_id[:8]}", daemon=True
        ).start()

    def _build(self, export_id: str) -> None:
        e = self.get(export_id)
        if e is None:
            return
        top = self.folder / "exports" / export_id
        try:
            # A build cut off earlier leaves a partial bag: start that export afresh.
            shutil.rmtree(top, ignore_errors=True)
            top.mkdir(parents=True, mode=0o700)
            who = f"{e.approved_by} (approved) for {e.requested_by} ({e.role})"
            res = self.source.export(list(e.shas), e.case, e.purpose, who, self.bag_dir(export_id))
            size = zip_folder(self.bag_dir(export_id), self.zip_path(export_id))
            with self._lock:
                self._db.execute(
                    "UPDATE exports SET state='ready', export_entry=?, zip_bytes=? WHERE id=?",
                    (res.get("export_entry"), size, export_id),
                )
                self._db.commit()
            log.info("export %s ready: %d bytes", export_id, size)
        except Exception as ex:  # the request stays, with the reason a person can act on
            msg = getattr(ex, "message", None) or str(ex) or type(ex).__name__
            log.error("export %s failed: %s", export_id, msg)
            with self._lock:
                self._db.execute(
                    "UPDATE exports SET state='failed', error=? WHERE id=?",
                    (str(msg)[:500], export_id),
                )
                self._db.commit()


def zip_folder(folder: Path, dest: Path) -> int:
    """Zip ``folder`` as ``bag/...`` into ``dest`` (footage stored, text deflated), file by
    file in chunks, then fsync and rename: memory does not grow with the footage."""
    tmp = dest.with_name(dest.name + ".partial")
    with zipfile.ZipFile(tmp, "w", allowZip64=True) as zf:
        for d, dirs, files in os.walk(folder):
            dirs.sort()
            for name in sorted(files):
                p = Path(d) / name
                arc = "bag/" + p.relative_to(folder).as_posix()
                small_text = p.suffix in (".txt", ".json", ".tsv", ".md", "") and (
                    p.stat().st_size < 64 << 20
                )
                zf.write(
                    p, arc, compress_type=zipfile.ZIP_DEFLATED if small_text else zipfile.ZIP_STORED
                )
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, dest)
    return dest.stat().st_size
