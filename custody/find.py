"""Finding evidence, and the catalog: queries over the index folded from the ledger.

`custody find` filters originals by officer (警号), recorder serial, unit, when the
recording started, category, case and hash prefix; `custody reindex` rebuilds the index
from the entries alone; `custody catalog export` writes every original as Parquet
partitioned by unit and capture date, for DuckDB, Trino or Spark.

When a recording started (``recorded``) comes from the recorder's file name (its
pattern's ``start``), else the container's creation time (the `probe` entry), else the
time the dock received the file; ``recorded_from`` says which ("file name",
"container", "docking"). ``complete`` is the probe's verdict (false: cut short, or
FFmpeg could not read it; null: not probed), ``damage`` what it found missing.
``important_from`` and ``category_from`` say who marked it: "file name pattern" (the
station, from the name) or "annotation" (a person, `custody annotate`).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

COLUMNS = (
    "sha256",
    "file_name",
    "recorded",
    "recorded_from",
    "captured",
    "size",
    "media_type",
    "unit",
    "recorder",
    "officer",
    "category",
    "important",
    "cases",
    "ingest_entry",
    "store_entry",
    "store",
    "storage_class",
    "retain_until",
    "local",
    "deleted_entry",
    "held",
    "complete",
    "damage",
    "important_from",
    "category_from",
)


@dataclass(frozen=True)
class Query:
    officer: str = ""
    recorder: str = ""
    unit: str = ""
    since: int | None = None  # recording started at or after (seconds, UTC)
    until: int | None = None  # ... and before
    category: str = ""
    case: str = ""
    sha_prefix: str = ""
    include_deleted: bool = False
    units: tuple[str, ...] = ()  # only these units (a supervisor's on the review site)
    shas: frozenset[str] | None = None  # only these originals (a reviewer's cases)


def _where(q: Query) -> tuple[str, list[Any]]:
    where: list[str] = []
    args: list[Any] = []
    for col, v in (
        ("officer", q.officer),
        ("recorder", q.recorder),
        ("unit", q.unit),
        ("category", q.category),
    ):
        if v:
            where.append(f"i.{col} = ?")
            args.append(v)
    if q.since is not None:
        where.append("i.recorded >= ?")
        args.append(q.since)
    if q.until is not None:
        where.append("i.recorded < ?")
        args.append(q.until)
    if q.sha_prefix:
        where.append("i.sha256 >= ? AND i.sha256 < ?")
        args += [q.sha_prefix, q.sha_prefix + "g"]
    if q.case:
        where.append(
            "EXISTS (SELECT 1 FROM retention_cases c WHERE c.sha256 = i.sha256 AND c.case_no = ?)"
        )
        args.append(q.case)
    if not q.include_deleted:
        where.append("i.deleted_entry IS NULL")
    if q.units:
        where.append(f"i.unit IN ({','.join('?' * len(q.units))})")
        args += list(q.units)
    if q.shas is not None:
        where.append(f"i.sha256 IN ({','.join('?' * len(q.shas))})" if q.shas else "0")
        args += sorted(q.shas)
    return (" WHERE " + " AND ".join(where) if where else ""), args


def count(db: sqlite3.Connection, q: Query) -> int:
    """How many originals `find` would list without a limit."""
    where, args = _where(q)
    return int(db.execute(f"SELECT COUNT(*) FROM retention_items i{where}", args).fetchone()[0])


def find(
    db: sqlite3.Connection, q: Query, limit: int | None = None, offset: int = 0
) -> list[dict[str, Any]]:
    where, args = _where(q)
    sql = (
        "SELECT i.sha256, i.file_name, i.recorded, i.recorded_from, i.captured, i.size, "
        "i.media_type, i.unit, i.recorder, i.officer, "
        "i.category, i.important, (SELECT group_concat(case_no, ',') FROM retention_cases c "
        "WHERE c.sha256 = i.sha256), i.ingest_entry, i.store_entry, i.store, i.storage_class, "
        "i.retain_until, i.local, i.deleted_entry, (SELECT COUNT(*) FROM retention_holds h "
        "WHERE h.released_entry IS NULL AND ((h.scope = 'object' AND h.target = i.sha256) OR "
        "(h.scope = 'case' AND h.target IN (SELECT case_no FROM retention_cases c2 WHERE "
        "c2.sha256 = i.sha256)))), i.complete, i.damage, i.important_from, i.category_from "
        "FROM retention_items i"
    )
    sql += where + " ORDER BY i.recorded, i.sha256"
    if limit is not None or offset:
        sql += f" LIMIT {-1 if limit is None else int(limit)} OFFSET {int(offset)}"
    out = []
    for row in db.execute(sql, args).fetchall():
        d = dict(zip(COLUMNS, row, strict=True))
        d["cases"] = sorted(d["cases"].split(",")) if d["cases"] else []
        d["important"], d["local"], d["held"] = (
            bool(d["important"]),
            bool(d["local"]),
            bool(d["held"]),
        )
        d["complete"] = None if d["complete"] is None else bool(d["complete"])
        out.append(d)
    return out


def iso(t: int | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def export_catalog(db: sqlite3.Connection, out: Path) -> tuple[int, list[str]]:
    """Every original (deleted ones too, marked) as Parquet under ``out``, partitioned by
    unit and capture date (hive style: ``unit=.../date=.../part-0.parquet``)."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    rows = find(db, Query(include_deleted=True))
    table = pa.table(
        {
            "sha256": pa.array([r["sha256"] for r in rows], pa.string()),
            "file_name": pa.array([r["file_name"] for r in rows], pa.string()),
            "recorded": pa.array(
                [datetime.fromtimestamp(r["recorded"], UTC) for r in rows], pa.timestamp("s", "UTC")
            ),
            "recorded_from": pa.array([r["recorded_from"] for r in rows], pa.string()),
            "complete": pa.array([r["complete"] for r in rows], pa.bool_()),
            "damage": pa.array([r["damage"] or None for r in rows], pa.string()),
            "captured": pa.array(
                [datetime.fromtimestamp(r["captured"], UTC) for r in rows], pa.timestamp("s", "UTC")
            ),
            "size": pa.array([r["size"] for r in rows], pa.int64()),
            "media_type": pa.array([r["media_type"] for r in rows], pa.string()),
            "recorder": pa.array([r["recorder"] for r in rows], pa.string()),
            "officer": pa.array([r["officer"] for r in rows], pa.string()),
            "category": pa.array([r["category"] for r in rows], pa.string()),
            "important": pa.array([r["important"] for r in rows], pa.bool_()),
            "important_from": pa.array([r["important_from"] or None for r in rows], pa.string()),
            "category_from": pa.array([r["category_from"] or None for r in rows], pa.string()),
            "cases": pa.array([r["cases"] for r in rows], pa.list_(pa.string())),
            "ingest_entry": pa.array([r["ingest_entry"] for r in rows], pa.int64()),
            "store_entry": pa.array([r["store_entry"] for r in rows], pa.int64()),
            "storage_class": pa.array([r["storage_class"] for r in rows], pa.string()),
            "on_dock": pa.array([r["local"] for r in rows], pa.bool_()),
            "held": pa.array([r["held"] for r in rows], pa.bool_()),
            "deleted_entry": pa.array([r["deleted_entry"] for r in rows], pa.int64()),
            "unit": pa.array([r["unit"] or "unknown" for r in rows], pa.string()),
            "date": pa.array(
                [datetime.fromtimestamp(r["captured"], UTC).strftime("%Y-%m-%d") for r in rows],
                pa.string(),
            ),
        }
    )
    out.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    ds.write_dataset(
        table,
        out,
        format="parquet",
        partitioning=["unit", "date"],
        partitioning_flavor="hive",
        existing_data_behavior="delete_matching",
        basename_template="part-{i}.parquet",
        file_visitor=lambda f: written.append(f.path),
    )
    return len(rows), written
