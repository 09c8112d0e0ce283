"""Disclosure benchmark: a county of 200 stations and 10^7 entries in the hub's Iceberg
table; the figures of a year (公示) computed from it, in seconds and peak memory.

1. The table: a real pyiceberg SQL catalog (`hub.catalog.CountyCatalog` over a SQLite
   URI and a ``file://`` warehouse), filled with synthetic rows of `hub.rows.ARROW_SCHEMA`
   made column by column with pyarrow (no entry is signed: `tests/stationsim.py` signs
   about 7,000 entries a second, 25 minutes for 10^7, and the figures read only the
   table). The rows follow the shape stationsim writes: per recording an ``ingest``
   (unit, officer, recorder, sha256, recorded; a category on 15 %, important on 3 %), a
   ``probe`` (duration), a ``store`` and on 80 % a ``wipe``; annotations on 5 % (a case on
   half of them, a category on 60 %), holds on 1 % (of a case or of an object), exports
   on 0.4 % (of a case, or none), notes on 0.2 %; retention deletes each unprotected
   recording 180 days after capture (an access copy, role ``derivative``, with a fifth of
   them); one ``fixity`` a day per station. 200 stations (origins) serve 40 units; the
   time runs from 2025-12-01 to mid-January 2027 (the year 2026 in Asia/Shanghai is
   whole). Rows are appended as the hub's catch-up appends them (`CountyCatalog.append`,
   batches of 200,000 rows = ``batch_rows``, each commit carrying every station's
   progress), so files and partitions (station x month) are the hub's. The table is
   built once and kept under ``benchmarks/work/disclose/`` (``--rebuild`` makes it again).
2. Measured, each in a fresh process (so its peak memory is its own), interleaved
   ``--reps`` times: (a) `disclose.figures.compute` for the year over
   `hub.catalog.duckdb_entries_sql` of the table (DuckDB, `hub.catalog.duckdb_connect`);
   (b) the whole command ``custody hub -c HUBCFG disclose --out DIR --period 2026``;
   (c) the baselines: DuckDB's plain count by unit and month
   (`hub.catalog.duckdb_count_by_unit_month`) and a pyiceberg ``scan().to_arrow()`` of the
   columns the figures read; and the floor (Python with DuckDB, pyiceberg and the
   extensions loaded, nothing read). At 10^7 rows and at 10^6 (the same county and year,
   a tenth of the entries) so memory's growth with size shows.
3. The figures are checked against counts of this file's own DuckDB SQL over the same
   table (recordings, hours, deletions, holds, exports, evidence, cases of the year).

Run from the repository root::

    .venv/bin/python benchmarks/disclose_bench.py               # 10^7 and 10^6, 3 reps
    .venv/bin/python benchmarks/disclose_bench.py --quick       # 10^6 and 10^5, 1 rep

Writes ``benchmarks/RESULTS-disclose.md`` (``--out``).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from _common import cpu_model, load_average, shell  # noqa: E402

WORK_ROOT = Path(__file__).resolve().parent / "work" / "disclose"
DEFAULT_OUT = Path(__file__).resolve().parent / "RESULTS-disclose.md"
PERIOD = "2026"
TIMEZONE = "Asia/Shanghai"
HUB_NAME = "witness.example/county-hub"
DOMAIN = "custody.example/county"
UNITS = 40
BATCH_ROWS = 200_000  # the hub's batch_rows: rows per Iceberg commit
# The time the county's logs cover (UTC); generation aims past the end and keeps each
# station's first N entries, so the last entries fall in mid-January 2027.
START = datetime(2025, 12, 1, tzinfo=UTC)
END = datetime(2027, 1, 31, tzinfo=UTC)
# The columns the figures read (what a pyiceberg scan must bring for the same work).
NEEDED = (
    "origin",
    "leaf_index",
    "type",
    "time",
    "unit",
    "sha256",
    "cases",
    "category",
    "important",
    "recorded",
    "duration_ms",
    "role",
)
CATEGORIES = (
    "administrative_penalty",
    "coercive_measure",
    "inspection",
    "expropriation",
    "licensing",
    "other",
)
US = 1_000_000
CAP = "500MB"  # DuckDB memory_limit of the (a') variant
DAY_US = 86_400 * US
KEEP_DAYS = 180


def log(what: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {what}", file=sys.stderr, flush=True)


def fmt(x: float, digits: int = 0) -> str:
    return f"{x:,.{digits}f}"


def vm_status_kb(pid: int | str, key: str) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


# -- the synthetic county ----------------------------------------------------------------


def origin_of(i: int) -> str:
    return f"{DOMAIN}/station-{i:03d}"


def unit_of(i: int) -> str:
    """40 units, five stations each (a county's traffic, public order, ... brigades)."""
    return f"530822{i % UNITS:03d}000"


def unit_names() -> dict[str, str]:
    return {unit_of(u): f"勐海县公安局第{u + 1}大队" for u in range(UNITS)}


class Draws:
    """Uniform draws for one station: each call a fresh deterministic pyarrow stream."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.k = 0

    def uniform(self, n: int) -> Any:
        import pyarrow.compute as pc

        self.k += 1
        return pc.random(n, initializer=self.seed * 1009 + self.k)

    def ints(self, n: int, lo: int, hi: int) -> Any:
        """Integers in [lo, hi)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        x = pc.add(pc.multiply(self.uniform(n), float(hi - lo)), float(lo))
        return pc.cast(pc.floor(x), pa.int64())


def hexes(n: int, rng: random.Random) -> Any:
    """n random 64-digit hex strings as one Arrow string array (one buffer, no objects)."""
    import pyarrow as pa

    data = rng.randbytes(32 * n).hex().encode()
    offsets = pa.array(range(0, 64 * n + 1, 64), pa.int32())
    return pa.StringArray.from_buffers(n, offsets.buffers()[1], pa.py_buffer(data))


def station_rows(i: int, entries: int) -> Any:
    """The first ``entries`` rows of station ``i``'s log, in leaf order."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from hub.rows import ARROW_SCHEMA

    start_us = int(START.timestamp()) * US
    end_us = int(END.timestamp()) * US
    span = end_us - start_us
    days = span // DAY_US
    # Entries per recording: ingest, probe, store, 0.8 wipe, small kinds, and about half
    # a deletion (plus a fifth of that for access copies); fixity once a day.
    per_rec = 3.8 + 0.05 + 0.01 + 0.004 + 0.002 + 0.55 * 1.2
    recs = max(10, int((entries - days - 2) / per_rec * 1.04))
    while True:
        table = _station_table(i, recs, start_us, end_us, days)
        if table.num_rows >= entries:
            break
        recs = int(recs * entries / table.num_rows * 1.03) + 10
    order = pc.sort_indices(table, sort_keys=[("_t", "ascending"), ("_k", "ascending")])
    table = table.take(order.slice(0, entries))
    n = table.num_rows
    rng = random.Random(f"leaves/{i}")
    origin = origin_of(i)
    cols = {name: table.column(name) for name in ARROW_SCHEMA.names if name in table.schema.names}
    cols["origin"] = pa.repeat(pa.scalar(origin), n)
    cols["station"] = pa.repeat(pa.scalar(origin), n)
    cols["leaf_index"] = pa.array(range(n), pa.int64())
    cols["leaf_hash"] = hexes(n, rng)
    cols["time"] = pc.cast(table.column("_t"), pa.timestamp("us", tz="UTC"))
    cols["deleted"] = pc.equal(table.column("type"), "delete")
    arrays = [cols[f.name] for f in ARROW_SCHEMA]
    return pa.Table.from_arrays(arrays, schema=ARROW_SCHEMA)


def _station_table(i: int, recs: int, start_us: int, end_us: int, days: int) -> Any:
    import pyarrow as pa
    import pyarrow.compute as pc

    from hub.rows import ARROW_SCHEMA

    d = Draws(1_000_003 + i)
    rng = random.Random(f"station/{i}")
    unit = unit_of(i)
    span = end_us - start_us
    ts = pa.timestamp("us", tz="UTC")

    def at(n: int, values: Any) -> Any:
        return values if isinstance(values, pa.Array | pa.ChunkedArray) else pa.repeat(values, n)

    kinds: list[Any] = []
    order_of = {
        k: j
        for j, k in enumerate(
            (
                "key",
                "policy",
                "ingest",
                "probe",
                "store",
                "wipe",
                "annotate",
                "hold",
                "export",
                "note",
                "delete",
                "fixity",
            )
        )
    }

    def add(kind: str, t_us: Any, **cols: Any) -> None:
        n = len(t_us)
        if n == 0:
            return
        arrays = {"_t": pc.cast(t_us, pa.int64()), "_k": pa.repeat(order_of[kind], n)}
        arrays["type"] = pa.repeat(pa.scalar(kind), n)
        for f in ARROW_SCHEMA:
            if f.name in ("origin", "station", "leaf_index", "leaf_hash", "time", "deleted"):
                continue
            if f.name == "type":
                continue
            v = cols.get(f.name)
            if v is None:
                arrays[f.name] = pa.nulls(n, f.type)
            elif isinstance(v, pa.Array | pa.ChunkedArray):
                arrays[f.name] = v.cast(f.type) if v.type != f.type else v
            else:
                arrays[f.name] = pa.repeat(pa.scalar(v, f.type), n)
        kinds.append(pa.table(arrays))

    # Recordings: docked at evenly spread times with jitter (sorted by construction).
    step = span / recs
    idx = pa.array(range(recs), pa.float64())
    dock = pc.cast(
        pc.floor(pc.add(pc.multiply(pc.add(idx, d.uniform(recs)), step), float(start_us))),
        pa.int64(),
    )
    dock_list = dock.to_pylist()
    shas = hexes(recs, rng)
    sha_list = shas.to_pylist()
    people = [
        (
            f"{rng.randint(10000, 999999):06d}",
            f"DSJ{rng.choice('ABCKT')}{rng.randint(10**6, 10**7)}",
        )
        for _ in range(rng.randint(8, 30))
    ]
    who = d.ints(recs, 0, len(people))
    officers = pc.take(pa.array([p[0] for p in people]), who)
    serials = pc.take(pa.array([p[1] for p in people]), who)
    media = pc.take(
        pa.array(["video/mp4", "video/quicktime", "audio/wav", "video/x-msvideo"]),
        pc.cast(
            pc.add(
                pc.cast(pc.greater_equal(d.uniform(recs), 0.90), pa.int8()),
                pc.add(
                    pc.cast(pc.greater_equal(d.uniform(recs), 0.96), pa.int8()),
                    pc.cast(pc.greater_equal(d.uniform(recs), 0.98), pa.int8()),
                ),
            ),
            pa.int32(),
        ),
    )
    sizes = d.ints(recs, 20 << 20, 2 << 30)
    # The recorder's claimed start: 10 min to 12 h before docking.
    recorded = pc.subtract(dock, d.ints(recs, 600 * US, 12 * 3600 * US))
    important_at_ingest = pc.less(d.uniform(recs), 0.03)
    cat_draw = d.ints(recs, 0, len(CATEGORIES))
    with_cat = pc.less(d.uniform(recs), 0.15)
    category = pc.if_else(with_cat, pc.take(pa.array(CATEGORIES), cat_draw), None)
    # About 1 % of recorders are not identified: no unit on the ingest.
    units = pc.if_else(pc.less(d.uniform(recs), 0.01), None, pa.repeat(pa.scalar(unit), recs))
    add(
        "ingest",
        dock,
        unit=units,
        officer=officers,
        recorder=serials,
        sha256=shas,
        size=sizes,
        media_type=media,
        category=category,
        important=pc.if_else(important_at_ingest, True, None),
        recorded=pc.cast(recorded, ts),
    )
    # probe: its duration (0.5 % fail and carry none).
    dur = pc.if_else(pc.less(d.uniform(recs), 0.005), None, d.ints(recs, 5_000, 40 * 60_000))
    add("probe", pc.add(dock, d.ints(recs, 1 * US, 30 * US)), sha256=shas, duration_ms=dur)
    store_t = pc.add(dock, d.ints(recs, 30 * US, 600 * US))
    versions = hexes(recs, rng)
    keys = pc.binary_join_element_wise("objects/sha256/", shas, "")
    retain = pc.add(store_t, KEEP_DAYS * DAY_US)
    add(
        "store",
        store_t,
        sha256=shas,
        size=sizes,
        role="original",
        store_key=keys,
        version_id=versions,
        retain_until=pc.cast(retain, ts),
    )
    wiped = pc.less(d.uniform(recs), 0.8)
    add(
        "wipe",
        pc.filter(pc.add(store_t, d.ints(recs, 60 * US, 1200 * US)), wiped),
        sha256=pc.filter(shas, wiped),
        rule="after_replication",
    )
    # The rare kinds, one by one (a few hundred per station): annotations make cases.
    protected = set(i for i, v in enumerate(important_at_ingest.to_pylist()) if v)
    cases: list[tuple[int, str]] = []  # (time made, case number), in time order
    ann: dict[str, list[Any]] = {k: [] for k in ("t", "sha", "cases", "cat", "imp")}
    kinds_cn = ("行政处罚", "行政强制", "行政检查")
    year_of = {}
    for r in range(recs):
        if rng.random() >= 0.05:
            continue
        t = dock_list[r] + rng.randint(360 * US, 72 * 3600 * US)
        linked = None
        if rng.random() < 0.5 or not cases:
            made = [c for tm, c in cases if tm < t]
            if rng.random() < 0.6 or not made:
                y = datetime.fromtimestamp(t / US, UTC).year
                year_of[y] = year_of.get(y, 0) + 1
                case = f"{y}-{rng.choice(kinds_cn)}-{i:03d}{year_of[y]:04d}"
                cases.append((t, case))
                cases.sort()
            else:
                case = rng.choice(made)
            linked = [case]
        cat = rng.choice(CATEGORIES) if rng.random() < 0.6 else None
        imp = True if rng.random() < 0.3 or (linked is None and cat is None) else None
        if linked or imp:
            protected.add(r)
        ann["t"].append(t)
        ann["sha"].append(sha_list[r])
        ann["cases"].append(linked)
        ann["cat"].append(cat)
        ann["imp"].append(imp)
    add(
        "annotate",
        pa.array(ann["t"], pa.int64()),
        sha256=pa.array(ann["sha"], pa.string()),
        cases=pa.array(ann["cases"], ARROW_SCHEMA.field("cases").type),
        category=pa.array(ann["cat"], pa.string()),
        important=pa.array(ann["imp"], pa.bool_()),
    )
    hold: dict[str, list[Any]] = {"t": [], "sha": [], "cases": []}
    export: dict[str, list[Any]] = {"t": [], "cases": []}
    note_t: list[int] = []
    for r in range(recs):
        u = rng.random()
        if u < 0.01:
            t = dock_list[r] + rng.randint(3600 * US, 10 * DAY_US)
            made = [c for tm, c in cases if tm < t]
            if made and rng.random() < 0.7:
                hold["t"].append(t)
                hold["sha"].append(None)
                hold["cases"].append([rng.choice(made)])
            else:
                hold["t"].append(t)
                hold["sha"].append(sha_list[r])
                hold["cases"].append(None)
                protected.add(r)
        elif u < 0.014:
            t = dock_list[r] + rng.randint(DAY_US, 30 * DAY_US)
            made = [c for tm, c in cases if tm < t]
            export["t"].append(t)
            export["cases"].append([rng.choice(made)] if made and rng.random() < 0.8 else None)
        elif u < 0.016:
            note_t.append(dock_list[r] + rng.randint(US, 3600 * US))
    lt = ARROW_SCHEMA.field("cases").type
    add(
        "hold",
        pa.array(hold["t"], pa.int64()),
        sha256=pa.array(hold["sha"], pa.string()),
        cases=pa.array(hold["cases"], lt),
    )
    add("export", pa.array(export["t"], pa.int64()), cases=pa.array(export["cases"], lt))
    add("note", pa.array(note_t, pa.int64()))
    # Retention: every unprotected recording goes 180 days (and up to 3 days) after it
    # was stored; a fifth had an access copy, deleted a second later.
    keep = pa.array([r in protected for r in range(recs)], pa.bool_())
    del_t = pc.add(retain, d.ints(recs, 3600 * US, 3 * DAY_US))
    gone = pc.and_(pc.invert(keep), pc.less(del_t, end_us))
    add(
        "delete",
        pc.filter(del_t, gone),
        sha256=pc.filter(shas, gone),
        rule="ordinary",
        store_key=pc.filter(keys, gone),
        version_id=pc.filter(versions, gone),
        retain_until=pc.cast(pc.filter(retain, gone), ts),
    )
    copies = pc.and_(gone, pc.less(d.uniform(recs), 0.2))
    n_copies = int(pc.sum(pc.cast(copies, pa.int64())).as_py() or 0)
    add(
        "delete",
        pc.add(pc.filter(del_t, copies), US),
        sha256=hexes(n_copies, rng),
        role="derivative",
        rule="follows its original",
    )
    # fixity: 02:00 China time (18:00 UTC) every day.
    fx = [
        start_us + day * DAY_US + 18 * 3600 * US + rng.randint(0, 600 * US) for day in range(days)
    ]
    add("fixity", pa.array(fx, pa.int64()))
    add("key", pa.array([start_us - 2 * DAY_US], pa.int64()))
    add("policy", pa.array([start_us - 2 * DAY_US + US], pa.int64()))
    return pa.concat_tables(kinds)


def catalog_config(folder: Path) -> Any:
    from hub.config import CatalogConfig

    return CatalogConfig(f"sqlite:///{folder / 'catalog.db'}", f"file://{folder / 'warehouse'}")


def stage_build(p: dict[str, Any]) -> dict[str, Any]:
    """Make the table: stations in order, appended as the hub's catch-up appends them."""
    import pyarrow as pa

    from hub.catalog import CountyCatalog

    folder = Path(p["folder"])
    cat = CountyCatalog.open(catalog_config(folder))
    if cat.count():
        raise RuntimeError(f"{folder} already holds a table; remove it first")
    t0 = time.perf_counter()
    gen_s = append_s = 0.0
    buffer: list[Any] = []
    progress: dict[str, int] = {}
    rows = commits = 0
    for i in range(p["stations"]):
        g0 = time.perf_counter()
        t = station_rows(i, p["entries"])
        gen_s += time.perf_counter() - g0
        buffer.append(t)
        progress[origin_of(i)] = t.num_rows
        if sum(b.num_rows for b in buffer) >= BATCH_ROWS or i == p["stations"] - 1:
            a0 = time.perf_counter()
            batch = pa.concat_tables(buffer)
            cat.append(batch, progress)
            append_s += time.perf_counter() - a0
            rows += batch.num_rows
            commits += 1
            buffer, progress = [], {}
            if commits % 5 == 0:
                log(f"built {rows:,} rows ({i + 1} stations), {time.perf_counter() - t0:.0f} s")
    total = time.perf_counter() - t0
    files = cat.table.inspect.files().num_rows
    out = {
        "rows": rows,
        "commits": commits,
        "files": files,
        "stations": p["stations"],
        "entries": p["entries"],
        "generate_s": gen_s,
        "append_s": append_s,
        "seconds": total,
        "metadata": cat.metadata_location,
        "bytes": sum(f.stat().st_size for f in (folder / "warehouse").rglob("*") if f.is_file()),
        "built": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    return out


# -- the measured stages, each in a process of its own ---------------------------------


def _own_memory() -> dict[str, float]:
    """This process's peak and current resident memory (MB), from /proc."""
    return {
        "hwm_mb": vm_status_kb("self", "VmHWM") / 1024,
        "rss_mb": vm_status_kb("self", "VmRSS") / 1024,
    }


def _metadata(folder: Path) -> str:
    from hub.catalog import CountyCatalog

    return CountyCatalog.open(catalog_config(folder)).metadata_location


def stage_floor(p: dict[str, Any]) -> dict[str, Any]:
    """What every reader pays before reading a row: Python, DuckDB with its iceberg
    extension, pyiceberg with the catalog opened."""
    t0 = time.perf_counter()
    from hub.catalog import CountyCatalog, duckdb_connect

    con = duckdb_connect()
    cat = CountyCatalog.open(catalog_config(Path(p["folder"])))
    out = {"seconds": time.perf_counter() - t0, "rows": cat.count()}
    con.close()
    return out | _own_memory()


def stage_count(p: dict[str, Any]) -> dict[str, Any]:
    """Baseline: DuckDB's plain count by unit and month over the whole table."""
    from hub.catalog import duckdb_connect, duckdb_count_by_unit_month

    con = duckdb_connect()
    meta = _metadata(Path(p["folder"]))
    t0 = time.perf_counter()
    rows = duckdb_count_by_unit_month(con, meta)
    seconds = time.perf_counter() - t0
    counted = sum(int(r[2]) for r in rows)
    return {"seconds": seconds, "rows": counted, "groups": len(rows)} | _own_memory()


def stage_scan(p: dict[str, Any]) -> dict[str, Any]:
    """Baseline: pyiceberg reads the columns the figures read into one Arrow table."""
    from hub.catalog import CountyCatalog

    cat = CountyCatalog.open(catalog_config(Path(p["folder"])))
    t0 = time.perf_counter()
    table = cat.table.scan(selected_fields=NEEDED).to_arrow()
    seconds = time.perf_counter() - t0
    out = {"seconds": seconds, "rows": table.num_rows, "arrow_mb": table.nbytes / 2**20}
    del table
    return out | _own_memory()


def _figures_call(compute: Any, con: Any, relation: str, period: Any, rules: Any) -> Any:
    """``compute(con, relation, period, rules)`` as the contract has it; an earlier
    ``compute(con, relation, period)`` is called without the rules."""
    import inspect

    if len(inspect.signature(compute).parameters) >= 4:
        return compute(con, relation, period, rules)
    return compute(con, relation, period)


def _summary(values: Any, period: Any, units: list[str]) -> dict[str, Any]:
    """The figures the check compares: period totals, months, units (JSON-able)."""
    out: dict[str, Any] = {}
    for fig in ("recordings", "hours", "evidence", "cases", "deletions", "holds", "exports"):
        v = values[fig]
        out[fig] = int(v.get((None, None, None), 0))
        out[fig + "_by_month"] = {m: int(v.get((None, None, m), 0)) for m in period.months}
    # The figures have unit x category totals (no unit total): the unit's is their sum.
    out["recordings_by_unit"] = {
        u: sum(int(values["recordings"].get((u, c, None), 0)) for c in CATEGORIES) for u in units
    }
    out["recordings_by_category"] = {
        c: int(values["recordings"].get((None, c, None), 0)) for c in CATEGORIES
    }
    return out


def stage_compute(p: dict[str, Any]) -> dict[str, Any]:
    """(a) `disclose.figures.compute` for the year over the Iceberg table; with
    ``memory_limit``, DuckDB told to stay under it (spilling to the work folder)."""
    from disclose.figures import compute, parse_period
    from disclose.rules import Rules
    from hub.catalog import duckdb_connect, duckdb_entries_sql

    rules = Rules(timezone=TIMEZONE, publisher="勐海县公安局", units=unit_names())
    period = parse_period(PERIOD, TIMEZONE)
    con = duckdb_connect()
    if p.get("memory_limit"):
        spill = Path(p["folder"]) / "spill"
        con.execute(f"SET memory_limit = '{p['memory_limit']}'")
        con.execute(f"SET temp_directory = '{spill}'")
    relation = duckdb_entries_sql(_metadata(Path(p["folder"])))
    t0 = time.perf_counter()
    fig = _figures_call(compute, con, relation, period, rules)
    seconds = time.perf_counter() - t0
    units = sorted({unit_of(i) for i in range(UNITS)} | {""})
    out = {"seconds": seconds, "units": len(fig.units)}
    out["summary"] = _summary(fig.values, period, units)
    return out | _own_memory()


# The check's own SQL: written apart from disclose/figures.py (window functions and
# ordered aggregates where it uses arg_min/arg_max and joins), from the contract's
# definitions, so a slip in either shows as a difference.
CHECK_SQL = """
CREATE TEMP TABLE c_rec AS
WITH firsts AS (
  SELECT origin, sha256, unit, category, important, recorded,
         row_number() OVER (PARTITION BY origin, sha256 ORDER BY leaf_index) AS k
  FROM {rel} WHERE type = 'ingest' AND sha256 IS NOT NULL),
notes AS (
  SELECT origin, sha256,
         last(category ORDER BY leaf_index) FILTER (WHERE category IS NOT NULL) AS cat,
         last(important ORDER BY leaf_index) FILTER (WHERE important IS NOT NULL) AS imp,
         bool_or(len(cases) > 0) AS in_case
  FROM {rel} WHERE type = 'annotate' GROUP BY ALL),
probes AS (
  SELECT origin, sha256, max(duration_ms) AS ms FROM {rel} WHERE type = 'probe' GROUP BY ALL)
SELECT f.origin, f.sha256, ifnull(f.unit, '') AS unit,
       CASE WHEN ifnull(n.cat, f.category) IN ({cats}) THEN ifnull(n.cat, f.category)
            ELSE 'other' END AS category,
       ifnull(n.imp, ifnull(f.important, false)) OR ifnull(n.in_case, false) AS evidence,
       strftime(f.recorded AT TIME ZONE '{tz}', '%Y-%m') AS month,
       ifnull(p.ms, 0) AS ms
FROM firsts f LEFT JOIN notes n USING (origin, sha256) LEFT JOIN probes p USING (origin, sha256)
WHERE f.k = 1 AND f.recorded >= $start AND f.recorded < $end
"""


def stage_check(p: dict[str, Any]) -> dict[str, Any]:
    """Independent counts of the year, in this file's own SQL over the same table."""
    from disclose.figures import parse_period
    from hub.catalog import duckdb_connect, duckdb_entries_sql

    period = parse_period(PERIOD, TIMEZONE)
    con = duckdb_connect()
    rel = duckdb_entries_sql(_metadata(Path(p["folder"])))
    args = {"start": period.start, "end": period.end}
    cats = ", ".join(f"'{c}'" for c in CATEGORIES)
    t0 = time.perf_counter()
    con.execute(CHECK_SQL.format(rel=rel, cats=cats, tz=TIMEZONE), args)

    def one(sql: str, a: dict[str, Any] | None = None) -> Any:
        return con.execute(sql, a if a is not None else args).fetchall()

    out: dict[str, Any] = {}
    rec = one("SELECT count(*), sum(ms), count(*) FILTER (WHERE evidence) FROM c_rec", {})[0]
    out["recordings"], out["hours"], out["evidence"] = int(rec[0]), int(rec[1] or 0), int(rec[2])
    # The annotations first, then their cases: DuckDB 1.4.4's iceberg_scan prunes every
    # file on any filter of the list column ``cases`` pushed into it (IS NOT NULL, IS NULL
    # give 0 rows; len(cases) an internal error): duckdb-iceberg issues 782 and 760.
    con.execute(
        f"CREATE TEMP TABLE c_ann AS SELECT origin, sha256, cases FROM {rel} "
        "WHERE type = 'annotate'"
    )
    out["cases"] = int(
        one(
            """SELECT count(DISTINCT c) FROM (
                 SELECT unnest(a.cases) AS c FROM c_ann a
                 WHERE a.cases IS NOT NULL AND (a.origin, a.sha256) IN
                   (SELECT (origin, sha256) FROM c_rec))""",
            {},
        )[0][0]
    )
    in_year = "time >= $start AND time < $end"
    month = f"strftime(time AT TIME ZONE '{TIMEZONE}', '%Y-%m')"
    for fig, where in (
        ("deletions", "type = 'delete' AND role IS DISTINCT FROM 'derivative'"),
        ("holds", "type = 'hold'"),
        ("exports", "type = 'export'"),
    ):
        rows = one(f"SELECT {month}, count(*) FROM {rel} WHERE {where} AND {in_year} GROUP BY 1")
        by = dict.fromkeys(period.months, 0) | {str(m): int(n) for m, n in rows}
        out[fig] = sum(by.values())
        out[fig + "_by_month"] = by
    for fig, expr in (
        ("recordings", "count(*)"),
        ("hours", "sum(ms)"),
        ("evidence", "count(*) FILTER (WHERE evidence)"),
    ):
        rows = one(f"SELECT month, {expr} FROM c_rec GROUP BY 1", {})
        out[fig + "_by_month"] = dict.fromkeys(period.months, 0) | {
            str(m): int(n or 0) for m, n in rows
        }
    rows = one("SELECT unit, count(*) FROM c_rec GROUP BY 1", {})
    units = sorted({unit_of(i) for i in range(UNITS)} | {""})
    out["recordings_by_unit"] = dict.fromkeys(units, 0) | {str(u): int(n) for u, n in rows}
    rows = one("SELECT category, count(*) FROM c_rec GROUP BY 1", {})
    out["recordings_by_category"] = dict.fromkeys(CATEGORIES, 0) | {str(c): int(n) for c, n in rows}
    # Not compared (the figures have no such total), shown for scale.
    out["entries_in_year"] = int(one(f"SELECT count(*) FROM {rel} WHERE {in_year}")[0][0])
    out["seconds"] = time.perf_counter() - t0
    return out


STAGES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "build": stage_build,
    "floor": stage_floor,
    "count": stage_count,
    "scan": stage_scan,
    "compute": stage_compute,
    "capped": lambda p: stage_compute({**p, "memory_limit": CAP}),
    "check": stage_check,
}


def stage_cmd(stage: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--stage", stage]


def run_stage(stage: str, params: dict[str, Any]) -> dict[str, Any]:
    """One stage in a fresh process; its result is the last line of its output (JSON)."""
    p = subprocess.run(stage_cmd(stage), input=json.dumps(params), capture_output=True, text=True)
    sys.stderr.write(p.stderr)
    if p.returncode != 0:
        raise RuntimeError(f"stage {stage} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(p.stdout.strip().splitlines()[-1])
    return result


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{p}/task").iterdir():
                kids = [int(k) for k in (task / "children").read_text().split()]
                out += kids
                todo += kids
    return out


@dataclass
class Measured:
    """One process, measured from outside: wall time, CPU and peak memory."""

    rc: int
    wall_s: float
    cpu_s: float  # user + system of the process and the children it reaped (wait4)
    ru_maxrss_mb: float  # wait4's ru_maxrss (never below this parent's own peak)
    tree_mb: float  # peak sum of VmRSS over the process and its descendants (0.1 s samples)
    stdout: str
    stderr: str


def run_measured(cmd: list[str], stdin: str = "", cwd: Path = REPO) -> Measured:
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
    )
    peak = {"tree": 0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.1):
            pids = [proc.pid, *descendants(proc.pid)]
            peak["tree"] = max(peak["tree"], sum(vm_status_kb(p, "VmRSS") for p in pids))

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    out: dict[str, str] = {}

    def drain(name: str, stream: Any) -> None:
        out[name] = stream.read()

    readers = [
        threading.Thread(target=drain, args=("out", proc.stdout)),
        threading.Thread(target=drain, args=("err", proc.stderr)),
    ]
    for r in readers:
        r.start()
    assert proc.stdin is not None
    proc.stdin.write(stdin)
    proc.stdin.close()
    # wait4 on this pid (not RUSAGE_CHILDREN, which mixes every child this parent reaped).
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    stop.set()
    t.join()
    for r in readers:
        r.join()
    return Measured(
        proc.returncode,
        wall,
        ru.ru_utime + ru.ru_stime,
        ru.ru_maxrss / 1024,
        peak["tree"] / 1024,
        out.get("out", ""),
        out.get("err", ""),
    )


@dataclass
class Sample:
    what: str
    rows: int
    op_s: float  # the operation alone, timed inside the process
    m: Measured
    result: dict[str, Any]


def measure_stage(stage: str, folder: Path) -> Sample:
    m = run_measured(stage_cmd(stage), json.dumps({"folder": str(folder)}))
    if m.rc != 0:
        raise RuntimeError(f"stage {stage} failed ({m.rc}):\n{m.stderr[-3000:]}")
    res: dict[str, Any] = json.loads(m.stdout.strip().splitlines()[-1])
    return Sample(stage, int(res.get("rows", 0)), float(res["seconds"]), m, res)


# -- (b): the whole command, over a hub whose catalog is the table -------------------------


def custody(*args: str) -> list[str]:
    return [sys.executable, "-m", "custody", *args]


def hub_folder(folder: Path, stations: int) -> Path | None:
    """A hub (`custody hub init`) whose [catalog] is the built table and whose
    [[stations]] name the county's origins with their keys; None when this checkout's
    hub has no `disclose` command yet. Kept with the table."""
    hub = folder / "hub"
    conf = hub / "hub.toml"
    if conf.exists():
        return conf
    shutil.rmtree(hub, ignore_errors=True)
    p = subprocess.run(
        custody("hub", "init", "--data", str(hub), "--name", HUB_NAME),
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    if p.returncode != 0:
        raise RuntimeError(f"custody hub init failed: {p.stderr.strip()}")
    from ledger.note import Signer  # the parent's one import of the project: small

    lines = [
        f'data_dir = "{hub}"',
        f'name = "{HUB_NAME}"',
        'listen = ""',
        "",
        "[catalog]",
        f'uri = "sqlite:///{folder / "catalog.db"}"',
        f'warehouse = "file://{folder / "warehouse"}"',
        "",
        "[disclose]",
        'rules = "disclose.toml"',
        "",
    ]
    cold = hub / "station-stores"
    for i in range(stations):
        origin = origin_of(i)
        seed = hashlib.sha256(f"disclose-bench/{origin}".encode()).digest()
        vkey = Signer(origin, seed).verifier().vkey()
        lines += [
            "[[stations]]",
            f'origin = "{origin}"',
            f'vkey = "{vkey}"',
            f'unit = "{unit_of(i)}"',
            "[stations.store]",
            'kind = "local"',
            f'path = "{cold / f"station-{i:03d}"}"',
            "",
        ]
    rules = ["threshold = 5", f'timezone = "{TIMEZONE}"', 'publisher = "勐海县公安局"', "[units]"]
    rules += [f'"{code}" = "{name}"' for code, name in unit_names().items()]
    (hub / "disclose.toml").write_text("\n".join(rules) + "\n", encoding="utf-8")
    conf.write_text("\n".join(lines), encoding="utf-8")
    return conf


def has_hub_disclose() -> bool:
    p = subprocess.run(
        custody("hub", "disclose", "--help"), capture_output=True, text=True, cwd=REPO
    )
    return p.returncode == 0


def measure_cli(conf: Path, out: Path) -> Sample:
    shutil.rmtree(out, ignore_errors=True)
    cmd = custody("hub", "-c", str(conf), "disclose", "--out", str(out), "--period", PERIOD)
    m = run_measured([*cmd, "--json"])
    if m.rc != 0:
        raise RuntimeError(f"{shlex.join(cmd)} exited {m.rc}: {m.stderr.strip()[-2000:]}")
    res: dict[str, Any] = {}
    with contextlib.suppress(ValueError, IndexError):
        res = json.loads(m.stdout.strip().splitlines()[-1])
    files = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    res["listing"] = files
    with contextlib.suppress(OSError, ValueError):
        res["data"] = json.loads((out / "data.json").read_text(encoding="utf-8"))
    shutil.rmtree(out, ignore_errors=True)
    return Sample("cli", 0, float(res.get("seconds", m.wall_s)), m, res)


def ensure_table(stations: int, entries: int, rebuild: bool) -> tuple[Path, dict[str, Any]]:
    """The cached table for this size (made when missing or asked to)."""
    folder = WORK_ROOT / f"{stations}x{entries}"
    marker = folder / "built.json"
    if marker.exists() and not rebuild:
        built: dict[str, Any] = json.loads(marker.read_text())
        log(f"table {folder.name}: {built['rows']:,} rows, kept from {built['built']}")
        return folder, built
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    log(f"building table {folder.name} ({stations * entries:,} rows)")
    built = run_stage("build", {"folder": str(folder), "stations": stations, "entries": entries})
    marker.write_text(json.dumps(built, indent=1))
    log(f"built {built['rows']:,} rows in {built['seconds']:.0f} s, {built['files']} files")
    return folder, built


# -- the run ----------------------------------------------------------------------------


@dataclass
class SizeRun:
    label: str
    folder: Path
    built: dict[str, Any]
    check: dict[str, Any]
    samples: dict[str, list[Sample]]
    cli_note: str = ""


def compare(check: dict[str, Any], summary: dict[str, Any]) -> list[str]:
    """Every figure the check counted that compute() gives differently (empty: all equal)."""
    bad = []
    for k, want in check.items():
        if k in ("seconds", "entries_in_year") or k not in summary:
            continue
        got = summary[k]
        if got != want:
            if isinstance(want, dict):
                diff = {m: (got.get(m), v) for m, v in want.items() if got.get(m) != v}
                bad.append(f"{k}: {len(diff)} differ, e.g. {sorted(diff.items())[:3]}")
            else:
                bad.append(f"{k}: figures {got:,}, check {want:,}")
    return bad


def cli_total_mismatches(check: dict[str, Any], doc: dict[str, Any]) -> list[str]:
    """(b)'s published period totals (data.json) against the independent counts."""
    total = next(
        (t for t in doc.get("totals", []) if t.get("category") == "" and t.get("month") == PERIOD),
        None,
    )
    if total is None:
        return ["(b)'s data.json has no period total"]
    bad = []
    for fig in ("recordings", "evidence", "cases", "deletions", "holds", "exports"):
        got, want = total.get(fig), check[fig]
        if (got == "<5" and 0 < want < 5) or got == "x":
            continue  # withheld as the rules say (the default threshold, 5)
        if got != want:
            bad.append(f"(b)'s data.json total {fig} {got!r}, check {want:,}")
    shown = total.get("hours")
    if shown is not None and shown != hours_text(check["hours"]):
        bad.append(
            f"(b)'s data.json total hours {total.get('hours')!r}, check "
            f"{hours_text(check['hours'])}"
        )
    return bad


def mismatches(r: SizeRun) -> list[str]:
    """Every figure of (a) and (b) at this size that the independent counts disagree with."""
    bad = []
    for what in ("compute", "capped"):
        for s in (r.samples.get(what) or [])[:1]:
            bad += [f"({what}) {b}" for b in compare(r.check, s.result["summary"])]
    for s in (r.samples.get("cli") or [])[:1]:
        bad += cli_total_mismatches(r.check, s.result.get("data") or {})
    return bad


MEASURED = ("floor", "count", "scan", "compute", "capped", "cli")


def run_size(stations: int, entries: int, reps: int, rebuild: bool, with_cli: bool) -> SizeRun:
    folder, built = ensure_table(stations, entries, rebuild)
    label = f"{stations} × {entries:,} = {stations * entries:,}"
    log(f"{label}: independent check counts")
    check = run_stage("check", {"folder": str(folder)})
    samples: dict[str, list[Sample]] = {k: [] for k in MEASURED}
    conf = None
    note = ""
    if with_cli:
        conf = hub_folder(folder, stations)
    else:
        note = "this checkout's `custody hub` has no `disclose` command"
    for rep in range(reps):
        # Interleaved, the order turned each rep: a warm page cache favours no one.
        order = list(MEASURED[rep % len(MEASURED) :] + MEASURED[: rep % len(MEASURED)])
        for what in order:
            if what == "cli":
                if conf is None:
                    continue
                s = measure_cli(conf, folder / "publication")
            else:
                s = measure_stage(what, folder)
            samples[what].append(s)
            log(
                f"{label} rep {rep + 1}: {what} {s.op_s:.2f} s (process {s.m.wall_s:.2f} s), "
                f"ru_maxrss {s.m.ru_maxrss_mb:.0f} MB"
            )
    return SizeRun(label, folder, built, check, samples, note)


def machine_description() -> dict[str, str]:
    mem = "?"
    with contextlib.suppress(OSError):
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024 / 1024:.0f} GiB"
    versions = shell(
        [
            sys.executable,
            "-c",
            "import duckdb, pyarrow, pyiceberg; "
            "print(duckdb.__version__, pyarrow.__version__, pyiceberg.__version__)",
        ]
    ).split()
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": shell(["nproc"]),
        "cpu": cpu_model(),
        "kernel": platform.release(),
        "mem": mem,
        "python": sys.version.split()[0],
        "duckdb": versions[0] if versions else "?",
        "pyarrow": versions[1] if len(versions) > 1 else "?",
        "pyiceberg": versions[2] if len(versions) > 2 else "?",
        "load_start": load_average(),
    }


def hours_text(ms: int) -> str:
    """Hours with one decimal, half up (as data.json shows them)."""
    tenths = (ms + 180_000) // 360_000
    return f"{tenths // 10}.{tenths % 10}"


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


@dataclass(frozen=True)
class Row:
    what: str
    n: int
    op_s: float
    wall_s: float
    cpu_s: float
    rss_mb: float
    tree_mb: float
    spread: str


NAMES = {
    "compute": "(a) `disclose.figures.compute`, the year",
    "capped": f"(a') the same, DuckDB `SET memory_limit = '{CAP}'`",
    "cli": "(b) `custody hub disclose --period 2026` (whole command)",
    "count": "(c) baseline: DuckDB count by unit and month",
    "scan": "(c) baseline: pyiceberg `scan().to_arrow()`, 12 columns",
    "floor": "floor: Python + DuckDB + pyiceberg loaded, nothing read",
}


def rows_of(r: SizeRun) -> dict[str, Row]:
    out = {}
    for what, ss in r.samples.items():
        if not ss:
            continue
        ops = sorted(s.op_s for s in ss)
        spread = " / ".join(f"{x:.2f}" for x in ops)
        out[what] = Row(
            what,
            len(ss),
            med(ops),
            med([s.m.wall_s for s in ss]),
            med([s.m.cpu_s for s in ss]),
            max(s.m.ru_maxrss_mb for s in ss),
            max(s.m.tree_mb for s in ss),
            spread,
        )
    return out


def growth(small: float, large: float, n_small: int, n_large: int) -> str:
    """How a peak grew from ``n_small`` to ``n_large`` entries: flat (under 1.5×), or
    linear with a slope (bytes per entry) over a fixed part, from the two points."""
    ratio = large / small if small else float("nan")
    if ratio < 1.5:
        return f"{ratio:.1f}×: flat"
    per = (large - small) * 2**20 / max(1, n_large - n_small)
    fixed = small - per * n_small / 2**20
    return f"{ratio:.1f}×: linear, ≈{per:,.0f} bytes an entry over {fixed:,.0f} MB"


def report(runs: list[SizeRun], machine: dict[str, str], command: str, parent_mb: float) -> str:
    big = runs[0]
    rb = rows_of(big)
    lines = [
        "# Disclosure benchmark results",
        "",
        f"- Date: {machine['date']}; total runtime {machine['minutes']} min",
        f"- Command: `{command}`",
        f"- Machine: {machine['nproc']} cores (`nproc`), {machine['cpu']}, Linux "
        f"{machine['kernel']}, {machine['mem']} RAM",
        f"- Python {machine['python']}, DuckDB {machine['duckdb']}, pyarrow {machine['pyarrow']}, "
        f"pyiceberg {machine['pyiceberg']}",
        f"- Load average (1/5/15 min) at start: {machine['load_start']}; at end: "
        f"{machine['load_end']}",
        "",
    ]
    n_big = big.built["rows"]
    if "compute" in rb:
        c = rb["compute"]
        text = (
            f"The figures of a whole year for a county of {big.built['stations']} stations and "
            f"{n_big:,} log entries take {c.op_s:.1f} s of DuckDB work "
            f"({n_big / c.op_s:,.0f} entries/s) and at most {c.rss_mb:,.0f} MB of memory"
        )
        if "count" in rb:
            text += (
                f", {c.op_s / rb['count'].op_s:.1f}× the time of DuckDB's plain count by unit "
                f"and month over the same table ({rb['count'].op_s:.1f} s)"
            )
        text += "."
        if "cli" in rb:
            k = rb["cli"]
            text += (
                f" The whole `custody hub disclose` command, from start to a signed folder, "
                f"takes {k.wall_s:.1f} s and {k.rss_mb:,.0f} MB (the command keeps DuckDB under "
                "its 1 GB limit, `disclose.figures.MEMORY_LIMIT`, spilling to the hub's state "
                "folder)."
            )
        if len(runs) > 1 and "compute" in rows_of(runs[1]):
            s = rows_of(runs[1])["compute"]
            text += (
                f" With ten times the entries ({runs[1].built['rows']:,} → {n_big:,}) the "
                f"unlimited query's time "
                f"grew {c.op_s / s.op_s:.1f}× and its peak memory "
                f"{growth(s.rss_mb, c.rss_mb, runs[1].built['rows'], n_big)}"
                + ("" if c.rss_mb < 1.5 * s.rss_mb else " (it holds the rows it counts in memory)")
                + "."
            )
        if "capped" in rb:
            k = rb["capped"]
            text += (
                f" Told to stay under {CAP} (`SET memory_limit`), DuckDB spills to disk and "
                f"gives the same figures in {k.op_s:.1f} s with a peak of {k.rss_mb:,.0f} MB "
                "(the limit bounds DuckDB's buffers, not the whole process)."
            )
        ops = [
            max(x.op_s for x in ss) / min(x.op_s for x in ss)
            for what, ss in big.samples.items()
            if ss and what != "floor"
        ]
        cores = int(machine["nproc"]) if machine["nproc"].isdigit() else 2
        if ops and float(machine["load_start"].split(" / ")[0]) > cores - 0.5:
            text += (
                f" The machine was shared with other work (load average "
                f"{machine['load_start'].split(' / ')[0]} on {cores} cores at the start): one "
                f"workload's seconds spread up to {max(ops):.1f}× between runs, "
                "so compare medians loosely; peak memory does not move."
            )
        lines += [text, ""]
    lines += [
        "Synthetic rows: the table is made column by column with pyarrow, not by signing "
        "entries (tests/stationsim.py signs about 7,000 entries a second: 25 minutes for "
        "10^7, and what is measured here reads only the table). The rows follow the shape "
        "stationsim writes (per recording ingest, probe, store and usually wipe; annotations, "
        "holds, exports, notes; retention deletions after 180 days; daily fixity), appended "
        "through `CountyCatalog.append` in the hub's catch-up batches, so the files and "
        "partitions are the hub's. Each workload ran in a fresh process, interleaved, the "
        "order turned each rep.",
        "",
    ]
    for r in runs:
        rr = rows_of(r)
        n = r.built["rows"]
        lines += [
            f"## The year {PERIOD} from the county table: {r.label} entries",
            "",
            "| workload | runs | seconds (median) | entries/s | process wall s | CPU s | "
            "peak RSS MB | × count's time | × count's RSS |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        base = rr.get("count")
        for what in MEASURED:
            if what not in rr:
                continue
            x = rr[what]
            rate = "–" if what == "floor" else fmt(n / x.op_s)
            t_ratio = f"{x.op_s / base.op_s:.2f}×" if base and what != "floor" else "–"
            m_ratio = f"{x.rss_mb / base.rss_mb:.2f}×" if base else "–"
            lines.append(
                f"| {NAMES[what]} | {x.n} | {x.op_s:.2f} | {rate} | {x.wall_s:.2f} | "
                f"{x.cpu_s:.1f} | {x.rss_mb:,.0f} | {t_ratio} | {m_ratio} |"
            )
        lines.append("")
        lines.append(
            "Seconds: the operation alone, timed inside its process (after imports and "
            "opening the catalog); for (b) the command's own `seconds` (its JSON), the "
            "process wall time beside it; (a') spills to the table's folder. Each run's "
            "seconds: " + "; ".join(f"{w} {x.spread}" for w, x in rr.items()) + "."
        )
        if r.cli_note:
            lines.append(f"(b) not measured: {r.cli_note}.")
        lines.append("")
    if len(runs) > 1:
        small = rows_of(runs[1])
        lines += [
            "## Peak memory against size",
            "",
            f"| workload | peak RSS MB at {runs[1].built['rows']:,} | at {n_big:,} | growth "
            "with 10× the entries | the same above the floor process | seconds at each |",
            "|---|---:|---:|---|---|---|",
        ]
        f_small = small["floor"].rss_mb if "floor" in small else 0.0
        f_big = rb["floor"].rss_mb if "floor" in rb else 0.0
        for what in MEASURED:
            if what in rb and what in small:
                a, b = small[what], rb[what]
                above = (
                    "–"
                    if what == "floor" or a.rss_mb <= f_small
                    else f"{(b.rss_mb - f_big) / max(1.0, a.rss_mb - f_small):.1f}×"
                )
                lines.append(
                    f"| {NAMES[what]} | {a.rss_mb:,.0f} | {b.rss_mb:,.0f} | "
                    f"{growth(a.rss_mb, b.rss_mb, runs[1].built['rows'], n_big)} | {above} | "
                    f"{a.op_s:.2f} / {b.op_s:.2f} |"
                )
        lines += [
            "",
            "Peak RSS is `ru_maxrss` from `os.wait4` on each process (DuckDB's threads are "
            "in it). Linux carries `ru_maxrss` over `execve` from the parent's pages, so it "
            f"cannot read below this benchmark's own peak ({parent_mb:.0f} MB VmHWM); the "
            'parent imports no data library to keep that floor low. Growth: "flat" under '
            "1.5×, else the line through the two points (bytes an entry, and the part that "
            "does not grow).",
            "",
        ]
    lines += ["## Figures checked against independent counts", ""]
    lines += [
        "| table | figures compared | recordings | hours | evidence | cases | deletions | "
        "holds | exports | result |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    notes = []
    for r in runs:
        ss = r.samples.get("compute") or []
        if not ss:
            lines.append(f"| {r.label} | 0 | – | – | – | – | – | – | – | not run |")
            continue
        summary = ss[0].result["summary"]
        bad = mismatches(r)
        same_each = all(
            s.result["summary"] == summary for s in ss + (r.samples.get("capped") or [])
        )
        compared = sum(
            len(v) if isinstance(v, dict) else 1
            for k, v in r.check.items()
            if k not in ("seconds", "entries_in_year") and k in summary
        )
        c = r.check
        verdict = "all equal" if not bad else f"**MISMATCH** ({len(bad)})"
        if not same_each:
            verdict += "; **runs differ**"
        lines.append(
            f"| {r.label} | {compared} | {c['recordings']:,} | {c['hours'] / 3_600_000:,.1f} | "
            f"{c['evidence']:,} | {c['cases']:,} | {c['deletions']:,} | {c['holds']:,} | "
            f"{c['exports']:,} | {verdict} |"
        )
        notes += [f"- {r.label}: {b}" for b in mismatches(r)]
    lines += [
        "",
        "The check counts with its own DuckDB SQL over the same table (window functions and "
        "ordered aggregates, apart from `disclose/figures.py`'s query), from the contract's "
        "definitions: recordings = first `ingest` of each (origin, sha256) whose recording "
        "started in the year (Asia/Shanghai); hours = their probes' durations; evidence = "
        "linked to a case or marked important (latest annotation, else the ingest); cases = "
        "distinct case numbers annotated on them; deletions = `delete` entries of the year "
        "that are not of a derivative; holds and exports = their entries of the year. Period "
        "totals, each month, each unit (recordings) and each category (recordings) are "
        "compared, and the period totals of (b)'s data.json.",
        "",
        "Found on the way: DuckDB 1.4.4's `iceberg_scan` drops every data file when a "
        "filter on the list column `cases` is pushed into it (`cases IS NOT NULL` and `cases "
        "IS NULL` both give 0 rows; `len(cases) > 0` is an internal error; scalar columns "
        "are fine; plain `read_parquet` of the same files is right): duckdb-iceberg issues "
        "782 and 760. `compute()` is safe because it copies the rows into a temporary table "
        "before it looks at `cases`; the check does the same.",
        "",
    ]
    if notes:
        lines += ["Differences:", "", *notes, ""]
    lines += [
        "## The tables",
        "",
        "| table | stations | units | entries | entries in the year | Iceberg commits | data "
        "files | Parquet MB | build s (generate / append) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in runs:
        b = r.built
        lines.append(
            f"| {r.label} | {b['stations']} | {UNITS} | {b['rows']:,} | "
            f"{r.check['entries_in_year']:,} | {b['commits']} | {b['files']:,} | "
            f"{b['bytes'] / 2**20:,.0f} | {b['seconds']:.0f} ({b['generate_s']:.0f} / "
            f"{b['append_s']:.0f}) |"
        )
    lines += [
        "",
        "Built once (the date is in `built.json` beside each table) under "
        "`benchmarks/work/disclose/` and kept between runs; `--rebuild` makes them again. "
        "Commits of 200,000 rows (the hub's `batch_rows`), each carrying the stations' "
        "progress, partitioned by station and month as the hub writes them. A hub that "
        "catalogued the year as it happened, a sync a minute, would have written many more, "
        "smaller files for the same rows until compacted.",
        "",
    ]
    for r in runs:
        ss = r.samples.get("cli") or []
        if ss and "listing" in ss[0].result:
            res = ss[0].result
            logs = len(res.get("data", {}).get("logs", []))
            lines.append(
                f"(b) at {r.label}: exit 0, a folder of {len(res['listing'])} entries "
                f"({', '.join(res['listing'])}); its data.json lists {logs} log(s). The "
                "table was made, not synced, so the hub's state knows no station as verified "
                "and the folder carries the hub's own log's checkpoint only (a synced hub "
                "adds a station's checkpoint and key per station: small files read from the "
                "hub's own state)."
            )
            lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--stations", type=int, default=200, help="stations (origins), 200")
    ap.add_argument(
        "--entries", type=int, default=50_000, help="entries per station (50,000: 10^7 in all)"
    )
    ap.add_argument("--reps", type=int, default=3, help="runs of each workload (3)")
    ap.add_argument("--quick", action="store_true", help="a tenth of the entries, one rep")
    ap.add_argument("--rebuild", action="store_true", help="make the cached tables again")
    ap.add_argument("--build-only", action="store_true", help="make the tables, measure nothing")
    ap.add_argument("--skip-cli", action="store_true", help="do not run (b), the command")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="Markdown results file")
    ap.add_argument("--stage", choices=sorted(STAGES), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.stage:
        params = json.loads(sys.stdin.read())
        print(json.dumps(STAGES[args.stage](params)))
        return 0
    entries = args.entries // 10 if args.quick else args.entries
    reps = 1 if args.quick else args.reps
    sizes = [(args.stations, entries), (args.stations, max(10, entries // 10))]
    if args.build_only:
        for st, en in sizes:
            ensure_table(st, en, args.rebuild)
        return 0
    command = f"cd {shlex.quote(os.getcwd())} && {shlex.join([sys.executable, *sys.argv])}"
    machine = machine_description()
    t0 = time.perf_counter()
    with_cli = not args.skip_cli and has_hub_disclose()
    runs = [run_size(st, en, reps, args.rebuild, with_cli) for st, en in sizes]
    machine["minutes"] = f"{(time.perf_counter() - t0) / 60:.1f}"
    machine["load_end"] = load_average()
    parent_mb = vm_status_kb("self", "VmHWM") / 1024
    text = report(runs, machine, command, parent_mb)
    args.out.write_text(text, encoding="utf-8")
    print(text)
    bad = [f"{r.label}: {b}" for r in runs for b in mismatches(r)]
    if bad:
        print("MISMATCH between the disclosed figures and the independent counts:", file=sys.stderr)
        for b in bad:
            print("  " + b, file=sys.stderr)
        return 1
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
