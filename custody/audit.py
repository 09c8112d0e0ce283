"""`custody audit`: show a supervisor that nothing was altered, lost or deleted early.

1. The ledger: every entry, leaf hash, tile, root and signature recomputed, and every
   checkpoint the station signed checked consistent with the latest (the local copy,
   and the cold store's copy when there is one).
2. Objects: each stored object (originals, access copies, posters, sidecars) re-hashed
   on the dock and in the cold store, all of them (``--full``) or a sample of N that
   continues where the last audit stopped, in a fixed random order, so repeated
   samples cover everything; ``--max-duration`` stops early and the next audit resumes.
3. Completeness: every original captured more than a day ago has its `store` entry (with
   a cold store); every original not deleted is still somewhere; every `delete` entry
   came on or after its due date and its retain-until, with no hold in force.

The result is a signed `fixity` entry, a Parquet table with one row per object checked,
and a Markdown report a supervisor can read, under ``state/audits/<time>/``.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from archive.errors import StoreError
from archive.store import object_key
from ledger.entry import decode_entry, parse_time

if TYPE_CHECKING:
    from archive.store import ColdStore
    from ingest.objects import LocalObjects
    from ledger.audit import Report
    from ledger.log import Ledger

DAY = 86400


@dataclass
class ObjectResult:
    sha256: str
    role: str
    where: str  # dock | cold
    status: str  # ok | altered | missing | unreadable | skipped
    detail: str = ""
    size: int = 0
    seconds: float = 0.0


@dataclass
class AuditResult:
    started: str = ""
    mode: str = ""
    ledger: dict[str, Any] = field(default_factory=dict)
    cold_ledger: dict[str, Any] | None = None
    objects: list[ObjectResult] = field(default_factory=list)
    completeness: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    covered: int = 0  # objects in the audit population
    bytes_hashed: int = 0
    hash_seconds: float = 0.0
    stopped_early: bool = False
    fixity_entry: int = -1
    out: Path | None = None

    @property
    def problems(self) -> list[str]:
        out = [f"ledger: {p}" for p in self.ledger.get("problems", [])]
        if self.cold_ledger:
            out += [f"cold-store ledger: {p}" for p in self.cold_ledger.get("problems", [])]
        out += [
            f"{o.where} copy of {o.sha256} ({o.role}): {o.status}"
            + (f": {o.detail}" if o.detail else "")
            for o in self.objects
            if o.status not in ("ok", "skipped")
        ]
        return out + self.completeness

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for o in self.objects:
            counts[f"{o.where}_{o.status}"] = counts.get(f"{o.where}_{o.status}", 0) + 1
        return {
            "ok": self.ok,
            "mode": self.mode,
            "started": self.started,
            "ledger_size": self.ledger.get("size"),
            "ledger_ok": not self.ledger.get("problems"),
            "cold_ledger_ok": None
            if self.cold_ledger is None
            else not self.cold_ledger.get("problems"),
            "objects_checked": len({o.sha256 for o in self.objects}),
            "population": self.covered,
            "results": counts,
            "bytes_hashed": self.bytes_hashed,
            "hash_mib_s": round(self.bytes_hashed / (1 << 20) / self.hash_seconds, 1)
            if self.hash_seconds
            else None,
            "completeness_problems": len(self.completeness),
            "problems": self.problems[:50],
            "stopped_early": self.stopped_early,
        }


def _report_json(rep: Report) -> dict[str, Any]:
    return {
        "size": rep.size,
        "entries": rep.entries_checked,
        "signatures": rep.signatures_checked,
        "checkpoints": rep.checkpoints_checked,
        "problems": rep.lines(),
    }


def _population(db: sqlite3.Connection) -> list[tuple[str, str, int, str | None]]:
    """(sha256, role, size, store key or None) of every object that should exist."""
    out: dict[str, tuple[str, str, int, str | None]] = {}
    for sha, size, key in db.execute(
        "SELECT sha256, size, key FROM retention_items WHERE deleted_entry IS NULL"
    ).fetchall():
        out[sha] = (sha, "original", int(size), key)
    queued: dict[str, tuple[str, int]] = {}
    try:
        for sha, role, size in db.execute(
            "SELECT sha256, role, size FROM archive_queue"
        ).fetchall():
            queued[sha] = (role, int(size))
    except sqlite3.OperationalError:
        pass
    deleted = {
        r[0]
        for r in db.execute(
            "SELECT sha256 FROM retention_items WHERE deleted_entry IS NOT NULL"
        ).fetchall()
    }
    for sha, (role, size) in queued.items():
        if sha not in out and sha not in deleted and role != "original":
            out[sha] = (sha, role, size, object_key(sha))
    for table, col in (
        ("ingest_derivatives", "output"),
        ("ingest_fingerprints", "sidecar"),
        ("ingest_packets_v2", "sidecar"),
        ("ingest_frames", "sidecar"),
        ("ingest_frames", "signature"),
    ):
        try:
            rows = db.execute(f"SELECT {col} FROM {table} WHERE {col} IS NOT NULL").fetchall()
        except sqlite3.OperationalError:
            continue
        for (sha,) in rows:
            if sha not in out and sha not in deleted:
                role = "derivative" if table == "ingest_derivatives" else "sidecar"
                out[sha] = (sha, role, queued.get(sha, (role, 0))[1], None)
    return sorted(out.values())


def _note_size(note: str | bytes) -> int:
    text = note.decode("utf-8", "replace") if isinstance(note, bytes) else note
    try:
        return int(text.split("\n")[1])
    except (IndexError, ValueError):
        return 0


def _order(salt: bytes, sha: str) -> bytes:
    return hashlib.sha256(salt + bytes.fromhex(sha)).digest()


def _hash_local(path: Path) -> tuple[str | None, int]:
    """SHA-256 of the dock's copy and the bytes read; (None, 0) when it is not there."""
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest(), f.tell()
    except FileNotFoundError:
        return None, 0


def _hash_cold(store: ColdStore, key: str) -> tuple[str | None, int, str]:
    from archive.s3 import COLD_CLASSES  # boto3: only when there is a store

    st = store.head(key)
    if st is None:
        return None, 0, "missing"
    if st.storage_class in COLD_CLASSES and not (st.restore or "").startswith("available"):
        return None, 0, f"skipped ({st.storage_class}: restore it to read)"
    h = hashlib.sha256()
    n = 0
    for chunk in store.get(key):
        h.update(chunk)
        n += len(chunk)
    return h.hexdigest(), n, ""


def run_audit(
    ledger: Ledger,
    db: sqlite3.Connection,
    local: LocalObjects,
    store: ColdStore | None,
    verifier: Any,
    ledger_dir: Path,
    out_root: Path,
    full: bool = False,
    sample: int | None = None,
    max_duration: float | None = None,
    cold_ledger_source: Any = None,
    history: list[str] | None = None,
    now: float | None = None,
) -> AuditResult:
    from verify.folder import FolderSource
    from verify.parallel import verify_log

    t_start = time.monotonic()
    res = AuditResult(
        started=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        mode="full" if full else f"sample {sample}",
    )
    # 1. The ledger, local and mirrored.
    src = FolderSource(ledger_dir)
    rep = verify_log(src, src.read_checkpoint(), [verifier], None, history or [])
    res.ledger = _report_json(rep)
    if cold_ledger_source is not None:
        try:
            mirrored = cold_ledger_source.read_checkpoint()
            msize = _note_size(mirrored) if mirrored else 0
            # The mirror may lag the dock (the daemon catches it up): only the station's
            # checkpoints up to the mirror's size must agree with it.
            known = [h for h in history or [] if _note_size(h) <= msize]
            crep = verify_log(
                cold_ledger_source,
                mirrored,
                [verifier],
                None,
                list(cold_ledger_source.checkpoints()) + known,
            )
            res.cold_ledger = _report_json(crep)
            if msize < res.ledger.get("size", 0):
                res.notes.append(
                    f"the cold store's ledger copy is at size {msize}, the dock's at "
                    f"{res.ledger.get('size')} (the daemon mirrors the rest)"
                )
        except Exception as e:  # the store away: said, not fatal
            res.cold_ledger = {"problems": [f"the cold store's copy cannot be read: {e}"]}
    # 2. Objects.
    db.execute("CREATE TABLE IF NOT EXISTS audit_state (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    row = db.execute("SELECT value FROM audit_state WHERE key='salt'").fetchone()
    if row is None:
        salt = os.urandom(16)
        db.execute("INSERT INTO audit_state VALUES ('salt', ?)", (salt.hex(),))
        db.commit()
    else:
        salt = bytes.fromhex(row[0])
    pop = sorted(_population(db), key=lambda x: _order(salt, x[0]))
    res.covered = len(pop)
    start = 0
    if not full:
        row = db.execute("SELECT value FROM audit_state WHERE key='cursor'").fetchone()
        cursor = bytes.fromhex(row[0]) if row else b""
        start = next((i for i, x in enumerate(pop) if _order(salt, x[0]) > cursor), 0)
    todo = pop[start:] + pop[:start] if pop else []
    if not full and sample is not None:
        todo = todo[:sample]
    items = db.execute("SELECT sha256, local, store_entry FROM retention_items").fetchall()
    local_flag = {s: bool(loc) for s, loc, _ in items}
    last: bytes | None = None
    for sha, role, _nbytes, key in todo:
        if max_duration is not None and time.monotonic() - t_start > max_duration:
            res.stopped_early = True
            break
        # On the dock: originals only where the index says they still are.
        if role != "original" or local_flag.get(sha, True):
            t = time.monotonic()
            got, n = _hash_local(local.path(sha))
            dt = time.monotonic() - t
            if got is None:
                status = "missing" if role == "original" and local_flag.get(sha) else "skipped"
                detail = "" if status == "missing" else "not on the dock (evicted or never kept)"
                res.objects.append(ObjectResult(sha, role, "dock", status, detail))
            else:
                _hashed(res, sha, role, "dock", got, n, dt)
        if store is not None:
            t = time.monotonic()
            try:
                got, n, why = _hash_cold(store, key or object_key(sha))
            except StoreError as e:
                got, n, why = None, 0, f"unreadable: {e}"
            dt = time.monotonic() - t
            queued_only = role == "original" and key is None
            if got is None:
                status = (
                    "skipped"
                    if why.startswith("skipped") or queued_only
                    else "missing"
                    if why == "missing"
                    else "unreadable"
                )
                detail = "not replicated yet" if queued_only else why
                res.objects.append(ObjectResult(sha, role, "cold", status, detail))
            else:
                _hashed(res, sha, role, "cold", got, n, dt)
        last = _order(salt, sha)
    if not full and last is not None:
        db.execute(
            "INSERT INTO audit_state VALUES ('cursor', ?) ON CONFLICT (key) DO UPDATE SET "
            "value=excluded.value",
            (last.hex(),),
        )
        db.commit()
    # 3. Completeness.
    _completeness(ledger, db, store is not None, res, now if now is not None else time.time())
    # 4. Record and write.
    summary = res.summary()
    payload = {k: v for k, v in summary.items() if k not in ("problems", "hash_mib_s")}
    if summary["hash_mib_s"] is not None:
        payload["hash_mib_s"] = str(summary["hash_mib_s"])  # entries hold no floats
    payload["problems"] = [p[:300] for p in res.problems[:20]]
    res.fixity_entry = ledger.append("fixity", payload)
    db.execute(
        "INSERT INTO audit_state VALUES ('last_fixity', ?) ON CONFLICT (key) DO UPDATE SET "
        "value=excluded.value",
        (str(res.fixity_entry),),
    )
    db.commit()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = out_root / stamp
    out.mkdir(parents=True, exist_ok=True)
    _write_parquet(res, out / "objects.parquet")
    (out / "report.md").write_text(_report_md(res), encoding="utf-8")
    res.out = out
    return res


def _hashed(res: AuditResult, sha: str, role: str, where: str, got: str, n: int, dt: float) -> None:
    """One copy read back: ok when it hashes to its name, else altered."""
    res.bytes_hashed += n
    res.hash_seconds += dt
    res.objects.append(
        ObjectResult(
            sha,
            role,
            where,
            "ok" if got == sha else "altered",
            "" if got == sha else f"reads as {got}",
            n,
            round(dt, 4),
        )
    )


def _completeness(
    ledger: Ledger, db: sqlite3.Connection, has_store: bool, res: AuditResult, now: float
) -> None:
    if has_store:
        for sha, captured in db.execute(
            "SELECT sha256, captured FROM retention_items WHERE store_entry IS NULL AND "
            "deleted_entry IS NULL"
        ).fetchall():
            if now - captured > DAY:
                res.completeness.append(
                    f"{sha}: captured {datetime.fromtimestamp(captured, UTC):%Y-%m-%d %H:%M} "
                    "UTC and still has no store entry (not in the cold store after a day)"
                )
            else:
                res.notes.append(f"{sha[:16]}: waiting for replication (captured < 1 day ago)")
    for sha, entry in db.execute(
        "SELECT sha256, deleted_entry FROM retention_items WHERE deleted_entry IS NOT NULL"
    ).fetchall():
        f = decode_entry(ledger.entry(int(entry))).fields
        at = parse_time(str(f["time"])).timestamp()
        due = f.get("due")
        if not isinstance(due, str) or parse_time(due).timestamp() > at:
            res.completeness.append(
                f"{sha}: deleted by entry {entry} before its rule allowed (due {due})"
            )
        ru = f.get("retain_until")
        if isinstance(ru, str) and parse_time(ru).timestamp() > at:
            res.completeness.append(f"{sha}: deleted by entry {entry} while locked until {ru}")
        holds = db.execute(
            "SELECT entry FROM retention_holds WHERE entry < ? AND (released_entry IS NULL OR "
            "released_entry > ?) AND ((scope='object' AND target=?) OR (scope='case' AND "
            "target IN (SELECT case_no FROM retention_cases WHERE sha256=?)))",
            (entry, entry, sha, sha),
        ).fetchall()
        if holds:
            res.completeness.append(
                f"{sha}: deleted by entry {entry} while hold entry {holds[0][0]} was in force"
            )
    # A copy deleted with its originals: only after every one of them.
    for sha, entry in db.execute(
        "SELECT sha256, deleted_entry FROM retention_objects WHERE deleted_entry IS NOT NULL"
    ).fetchall():
        f = decode_entry(ledger.entry(int(entry))).fields
        for orig in f.get("of", []):
            row = db.execute(
                "SELECT deleted_entry FROM retention_items WHERE sha256=?", (orig,)
            ).fetchone()
            if row is None or row[0] is None or int(row[0]) > int(entry):
                res.completeness.append(
                    f"{sha}: deleted by entry {entry} while its original {orig[:16]} was kept"
                )
    # An original not deleted must be somewhere: the dock or a confirmed cold copy.
    for sha, local_flag, store_entry in db.execute(
        "SELECT sha256, local, store_entry FROM retention_items WHERE deleted_entry IS NULL"
    ).fetchall():
        if not local_flag and store_entry is None:
            res.completeness.append(f"{sha}: neither on the dock nor confirmed in the cold store")


def _write_parquet(res: AuditResult, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    t = pa.table(
        {
            "sha256": [o.sha256 for o in res.objects],
            "role": [o.role for o in res.objects],
            "where": [o.where for o in res.objects],
            "status": [o.status for o in res.objects],
            "detail": [o.detail for o in res.objects],
            "size": pa.array([o.size for o in res.objects], pa.int64()),
            "seconds": pa.array([o.seconds for o in res.objects], pa.float64()),
            "audit_started": [res.started] * len(res.objects),
        }
    )
    pq.write_table(t, path)


def _report_md(res: AuditResult) -> str:
    s = res.summary()
    lines = [
        f"# Integrity audit {res.started}",
        "",
        f"**Result: {'everything holds' if res.ok else 'PROBLEMS FOUND'}** "
        f"(fixity entry {res.fixity_entry}, mode: {res.mode})",
        "",
        "## Ledger",
        "",
        f"- Entries recomputed: {res.ledger.get('entries')} of a log of size "
        f"{res.ledger.get('size')}; signatures checked: {res.ledger.get('signatures')}; "
        f"earlier checkpoints checked consistent: {res.ledger.get('checkpoints')}",
    ]
    if res.cold_ledger is not None:
        verdict = "verifies" if not res.cold_ledger.get("problems") else "PROBLEMS"
        lines.append(
            f"- The cold store's copy: {verdict} (size {res.cold_ledger.get('size', '?')})"
        )
    lines += [
        "",
        "## Stored objects",
        "",
        f"- Checked this time: {s['objects_checked']} of {res.covered} objects"
        + (" (stopped at the time limit; the next audit continues)" if res.stopped_early else ""),
        f"- Re-hashed: {res.bytes_hashed / (1 << 20):.1f} MiB"
        + (f" at {s['hash_mib_s']} MiB/s" if s["hash_mib_s"] else ""),
    ]
    for k, v in sorted(s["results"].items()):
        lines.append(f"- {k.replace('_', ': ')}: {v}")
    lines += ["", "## Completeness", ""]
    lines.append(
        "- Every original replicated within a day, present somewhere, and every deletion "
        "allowed by its rule, its lock and the holds: "
        + ("yes" if not res.completeness else f"NO ({len(res.completeness)} problems)")
    )
    if res.problems:
        lines += ["", "## Problems", ""]
        lines += [f"- {p}" for p in res.problems]
    lines += [
        "",
        "Per-object results: objects.parquet (DuckDB: "
        "`SELECT status, count(*) FROM 'objects.parquet' GROUP BY 1`).",
        "",
    ]
    return "\n".join(lines)


def last_fixity(db: sqlite3.Connection) -> int | None:
    """The index of the latest audit's `fixity` entry (None before the first audit)."""
    try:
        row = db.execute("SELECT value FROM audit_state WHERE key='last_fixity'").fetchone()
    except sqlite3.OperationalError:
        return None
    return int(row[0]) if row else None
