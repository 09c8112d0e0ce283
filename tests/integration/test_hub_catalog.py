"""The county catalog custody.entries: pyiceberg's SQL catalog on real SQLite and a real
warehouse (a folder, and SeaweedFS), read back with pyiceberg and with DuckDB's iceberg
extension from its pip package; exactly-once under SIGKILL."""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pyiceberg.transforms import IdentityTransform, MonthTransform
from pyiceberg.types import TimestamptzType

import hub.catalog as hub_catalog
from hub.catalog import (
    ICEBERG_SCHEMA,
    PROGRESS_PROPERTY,
    CatalogError,
    CountyCatalog,
    duckdb_connect,
    duckdb_count_by_unit_month,
    duckdb_entries_sql,
    duckdb_extension_path,
    months,
)
from hub.config import CatalogConfig
from hub.rows import ARROW_SCHEMA, RowBuffer

REPO = Path(__file__).resolve().parents[2]
A, B, C = (
    "custody.test/menghai/dock-01",
    "custody.test/menghai/dock-02",
    "custody.test/jinghong/dock-01",
)


def conf_in(folder: Path, *props: tuple[str, str], warehouse: str = "") -> CatalogConfig:
    return CatalogConfig(
        f"sqlite:///{folder / 'catalog.db'}",
        warehouse or f"file://{folder / 'warehouse'}",
        tuple(props),
    )


def fields_for(origin: str, i: int) -> dict[str, Any]:
    """A varied entry: several types, units, months (2025-11 .. 2026-02) and a null time."""
    month = ("2025-11", "2025-12", "2026-01", "2026-02")[(i // 7) % 4]
    base: dict[str, Any] = {
        "station": origin,
        "time": f"{month}-{1 + i % 28:02d}T0{i % 10}:00:00.000Z",
    }
    kind = i % 5
    if kind == 0:
        return {
            **base,
            "type": "ingest",
            "sha256": f"{i:064x}",
            "size": 1000 + i,
            "recorder": {"unit": f"53082{i % 3}", "officer": f"{i % 11:06d}", "serial": "R1"},
        }
    if kind == 1:
        return {**base, "type": "probe", "sha256": f"{i:064x}", "summary": {"duration_ms": i}}
    if kind == 2:
        return {**base, "type": "store", "sha256": f"{i:064x}", "role": "original", "key": "k"}
    if kind == 3:
        return {**base, "type": "annotate", "sha256": f"{i:064x}", "cases_added": [f"c{i % 4}"]}
    if i % 2:
        return {**base, "type": "note", "text": "x", "time": None}  # hostile: no time
    return {**base, "type": "delete", "sha256": f"{i:064x}", "rule": "ordinary"}


def batch(ranges: dict[str, range]) -> pa.Table:
    buf = RowBuffer()
    for origin, r in ranges.items():
        for i in r:
            buf.add_entry(origin, i, f"{origin}#{i}".encode(), fields_for(origin, i))
    return buf.to_arrow()


def indices(cat: CountyCatalog) -> dict[str, list[int]]:
    t = cat.scan(columns=["origin", "leaf_index"])
    out: dict[str, list[int]] = {}
    for o, i in zip(
        t.column("origin").to_pylist(), t.column("leaf_index").to_pylist(), strict=True
    ):
        out.setdefault(o, []).append(i)
    return {o: sorted(v) for o, v in out.items()}


def assert_exactly_once(cat: CountyCatalog) -> int:
    """Every origin's rows are exactly indices 0 .. catalogued-1: none missing, none twice."""
    done = cat.catalogued()
    got = indices(cat)
    assert set(got) <= set(done)
    for origin, n in done.items():
        assert got.get(origin, []) == list(range(n)), origin
    assert cat.count() == sum(done.values())
    return sum(done.values())


def test_open_creates_the_table_once(tmp_path: Path) -> None:
    conf = conf_in(tmp_path / "hub")
    cat = CountyCatalog.open(conf)
    assert cat.table.name() == ("custody", "entries")
    assert cat.table.schema().as_struct() == ICEBERG_SCHEMA.as_struct()
    assert [f.name for f in ICEBERG_SCHEMA.fields] == ARROW_SCHEMA.names
    spec = cat.table.spec()
    assert [(f.source_id, f.transform) for f in spec.fields] == [
        (1, IdentityTransform()),
        (5, MonthTransform()),
    ]
    assert (cat.catalogued(), cat.count()) == ({}, 0)
    first = cat.metadata_location
    again = CountyCatalog.open(conf)
    assert again.metadata_location == first
    assert (tmp_path / "hub" / "catalog.db").is_file()


def test_an_unusable_catalog_place_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    bad = CatalogConfig(
        f"sqlite:///{tmp_path / 'file' / 'catalog.db'}", f"file://{tmp_path / 'warehouse'}"
    )
    with pytest.raises(CatalogError, match=r"^catalog: cannot create .*/file") as e:
        CountyCatalog.open(bad)
    assert "\n" not in str(e.value)
    (tmp_path / "ro").mkdir()
    db = tmp_path / "ro" / "catalog.db"
    db.write_bytes(b"this is not an SQLite database, it is text " * 100)
    with pytest.raises(CatalogError, match=r"^catalog sqlite:///.*: file is not a database") as e:
        CountyCatalog.open(CatalogConfig(f"sqlite:///{db}", f"file://{tmp_path / 'warehouse'}"))
    assert "\n" not in str(e.value)


def test_concurrent_first_opens_all_succeed(tmp_path: Path) -> None:
    conf = conf_in(tmp_path / "hub")
    # Each child imports everything first, then all open at one signal: a real race.
    code = (
        "import sys\n"
        "from hub.config import CatalogConfig\n"
        "from hub.catalog import CountyCatalog\n"
        "print('ready', flush=True)\n"
        "sys.stdin.readline()\n"
        "c = CountyCatalog.open(CatalogConfig(sys.argv[1], sys.argv[2]))\n"
        "print(c.metadata_location)\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, conf.uri, conf.warehouse],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(6)
    ]
    for p in procs:
        _wait_for(p, "ready", 1, timeout=120)
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (_out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    # Every process ends up on the one table the winner created.
    cat = CountyCatalog.open(conf)
    assert {o.strip() for o, _ in outs} == {cat.metadata_location}


def test_append_commits_rows_and_progress_in_one_snapshot(tmp_path: Path) -> None:
    conf = conf_in(tmp_path / "hub")
    cat = CountyCatalog.open(conf)
    cat.append(batch({A: range(0, 40), B: range(0, 25)}), {A: 40, B: 25})
    assert len(cat.table.metadata.snapshots) == 1
    cat.append(batch({A: range(40, 90)}), {A: 90})
    cat.append(batch({}), {C: 0})  # progress without rows (a station with nothing new)
    assert len(cat.table.metadata.snapshots) == 3

    cat = CountyCatalog.open(conf)
    assert cat.catalogued() == {A: 90, B: 25, C: 0}
    snap = cat.table.current_snapshot()
    assert snap is not None and snap.summary is not None
    assert snap.summary[PROGRESS_PROPERTY] == '{"custody.test/jinghong/dock-01":0,' + (
        '"custody.test/menghai/dock-01":90,"custody.test/menghai/dock-02":25}'
    )
    assert assert_exactly_once(cat) == 115
    # Rows read back as they were written (the null-time rows included).
    back = cat.scan(origins=[B]).sort_by("leaf_index")
    assert back.select(ARROW_SCHEMA.names).to_pylist() == batch({B: range(25)}).to_pylist()
    assert back.column("time").null_count == 2


def test_progress_never_goes_back(tmp_path: Path) -> None:
    cat = CountyCatalog.open(conf_in(tmp_path / "hub"))
    cat.append(batch({A: range(10)}), {A: 10})
    with pytest.raises(CatalogError, match="would go back from 10 to 5"):
        cat.append(batch({A: range(5)}), {A: 5})
    assert len(cat.table.metadata.snapshots) == 1
    assert assert_exactly_once(cat) == 10


def test_scan_filters_are_pushed_down(tmp_path: Path) -> None:
    cat = CountyCatalog.open(conf_in(tmp_path / "hub"))
    cat.append(batch({A: range(60), B: range(60), C: range(60)}), {A: 60, B: 60, C: 60})
    ingest_a = cat.scan(types=["ingest"], origins=[A])
    assert set(ingest_a.column("type").to_pylist()) == {"ingest"}
    assert set(ingest_a.column("origin").to_pylist()) == {A}
    assert sorted(ingest_a.column("leaf_index").to_pylist()) == list(range(0, 60, 5))
    two = cat.scan(types=["probe", "store"], origins=[A, C])
    assert Counter(two.column("origin").to_pylist()) == {A: 24, C: 24}
    assert cat.scan(types=[]).num_rows == 0
    # The station filter prunes whole partitions: only A's files are planned.
    all_files = list(cat.table.scan().plan_files())
    a_files = list(cat.table.scan(row_filter=f"origin = '{A}'").plan_files())
    assert 0 < len(a_files) < len(all_files)
    assert all("dock-01" in t.file.file_path and "menghai" in t.file.file_path for t in a_files)


def test_months_are_icebergs_month_transform() -> None:
    rng = random.Random(7)
    base = datetime(1970, 1, 1, tzinfo=UTC)
    times: list[datetime | None] = [
        base + timedelta(seconds=rng.randint(-(10**10), 10**10)) for _ in range(2000)
    ]
    times += [
        datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        None,
    ]
    arr = pa.array(times, type=pa.timestamp("us", tz="UTC"))
    theirs = MonthTransform().pyarrow_transform(TimestamptzType())(arr)
    assert months(arr).to_pylist() == theirs.to_pylist()


def test_duckdb_reads_exactly_what_pyiceberg_reads(tmp_path: Path) -> None:
    conf = conf_in(tmp_path / "hub")
    cat = CountyCatalog.open(conf)
    cat.append(batch({A: range(0, 300), B: range(0, 120)}), {A: 300, B: 120})
    cat.append(batch({A: range(300, 420), C: range(0, 77)}), {A: 420, C: 77})

    con = duckdb_connect()
    # The extension came from the pip package's file, and nothing may be fetched.
    loaded = dict(
        con.execute(
            "SELECT extension_name, loaded FROM duckdb_extensions() "
            "WHERE extension_name IN ('iceberg', 'avro')"
        ).fetchall()
    )
    assert loaded == {"iceberg": True, "avro": True}
    assert duckdb_extension_path("iceberg").is_relative_to(Path(sys.prefix))
    assert con.execute("SELECT current_setting('autoinstall_known_extensions')").fetchone() == (
        False,
    )

    rows = cat.scan()
    expect = Counter(
        (u, t.strftime("%Y-%m") if t is not None else None)
        for u, t in zip(
            rows.column("unit").to_pylist(), rows.column("time").to_pylist(), strict=True
        )
    )
    got = {(u, m): n for u, m, n in duckdb_count_by_unit_month(con, cat.table)}
    assert got == dict(expect)
    assert sum(got.values()) == 420 + 120 + 77
    assert len({u for u, _ in got}) == 4  # three units and the rows without one

    entries = duckdb_entries_sql(cat.table)
    ids = con.execute(f"SELECT origin, leaf_index, leaf_hash FROM {entries}").fetchall()
    assert sorted(ids) == sorted(
        zip(
            rows.column("origin").to_pylist(),
            rows.column("leaf_index").to_pylist(),
            rows.column("leaf_hash").to_pylist(),
            strict=True,
        )
    )
    cases = con.execute(
        f"SELECT count(*) FROM {entries} WHERE list_contains(cases, 'c3')"
    ).fetchone()
    assert cases == (sum(1 for c in rows.column("cases").to_pylist() if c and "c3" in c),)


def test_old_snapshots_are_expired_and_progress_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hub_catalog, "SNAPSHOTS_KEPT", 2)
    cat = CountyCatalog.open(conf_in(tmp_path / "hub"))
    for k in range(7):
        cat.append(batch({A: range(10 * k, 10 * k + 10)}), {A: 10 * k + 10})
    assert len(cat.table.metadata.snapshots) <= 4
    cat = CountyCatalog.open(cat.conf)
    assert assert_exactly_once(cat) == 70
    con = duckdb_connect()
    assert con.execute(f"SELECT count(*) FROM {duckdb_entries_sql(cat.table)}").fetchone() == (70,)


# A stand-in for the sync: catalogue from catalogued() on, in batches, forever.
CHILD = r"""
import random, sys
from hub.config import CatalogConfig
from hub.catalog import CountyCatalog
from hub.rows import RowBuffer
from tests.integration.test_hub_catalog import fields_for

conf = CatalogConfig(sys.argv[1], sys.argv[2])
origins = sys.argv[3:]
cat = CountyCatalog.open(conf)
buf = RowBuffer()
while True:
    done = cat.catalogued()
    progress = {}
    for o in random.sample(origins, 2):
        start = done.get(o, 0)
        n = random.randint(1, 400)
        for i in range(start, start + n):
            buf.add_entry(o, i, f"{o}#{i}".encode(), fields_for(o, i))
        progress[o] = start + n
    print("appending", flush=True)
    cat.append(buf.to_arrow(), progress)
    buf.clear()
    print("committed", flush=True)
"""


def _wait_for(proc: subprocess.Popen[str], word: str, count: int, timeout: float) -> None:
    assert proc.stdout is not None
    seen = 0
    end = time.monotonic() + timeout
    while seen < count:
        left = end - time.monotonic()
        assert left > 0, f"the child did not print {word!r} {count} times"
        ready, _, _ = select.select([proc.stdout], [], [], left)
        if not ready:
            continue
        line = proc.stdout.readline()
        assert line, (
            f"the child exited ({proc.wait()}): {proc.stderr.read() if proc.stderr else ''}"
        )
        if line.strip() == word:
            seen += 1


def test_a_killed_append_leaves_the_old_or_the_new_snapshot(tmp_path: Path) -> None:
    conf = conf_in(tmp_path / "hub")
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    totals = []
    for kill in range(6):
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, conf.uri, conf.warehouse, A, B, C],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            if kill == 0:
                time.sleep(rng.uniform(0.05, 0.6))  # possibly while the table is created
            else:
                # Into an append: after its rows are built, at a random point of the write.
                _wait_for(proc, "appending", rng.randint(1, 3), timeout=120)
                time.sleep(rng.uniform(0.0, 0.35))
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(30)
            assert proc.stdout is not None and proc.stderr is not None
            proc.stdout.close()
            proc.stderr.close()
        totals.append(assert_exactly_once(CountyCatalog.open(conf)))
    assert totals == sorted(totals)
    assert totals[-1] > 0


def test_s3_warehouse_on_seaweedfs(tmp_path: Path, seaweed: Any) -> None:
    from tests.s3server import ACCESS_KEY, SECRET_KEY

    seaweed.bucket("county-catalog", lock=False)
    seaweed.bucket("county-evidence", lock=True)
    props = (
        ("s3.endpoint", seaweed.endpoint),
        ("s3.access-key-id", ACCESS_KEY),
        ("s3.secret-access-key", SECRET_KEY),
    )
    locked = conf_in(tmp_path / "locked", *props, warehouse="s3://county-evidence/catalog")
    with pytest.raises(CatalogError, match="has object lock on") as e:
        CountyCatalog.open(locked)
    assert "\n" not in str(e.value)
    missing = conf_in(tmp_path / "missing", *props, warehouse="s3://no-such-bucket/catalog")
    with pytest.raises(CatalogError, match="does not exist"):
        CountyCatalog.open(missing)

    conf = conf_in(tmp_path / "hub", *props, warehouse="s3://county-catalog/county")
    cat = CountyCatalog.open(conf)
    cat.append(batch({A: range(0, 150), B: range(0, 40)}), {A: 150, B: 40})
    cat.append(batch({B: range(40, 90)}), {B: 90})
    cat = CountyCatalog.open(conf)
    assert cat.metadata_location.startswith("s3://county-catalog/county/")
    assert assert_exactly_once(cat) == 240

    s3 = seaweed.client()
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="county-catalog")["Contents"]]
    assert any(k.endswith(".parquet") for k in keys)
    assert any(k.endswith(".metadata.json") for k in keys)
    assert s3.list_objects_v2(Bucket="county-evidence").get("KeyCount", 0) == 0

    con = duckdb_connect(conf)  # httpfs from its pip package, an S3 secret from the properties
    rows = cat.scan()
    expect = Counter(
        (u, t.strftime("%Y-%m") if t is not None else None)
        for u, t in zip(
            rows.column("unit").to_pylist(), rows.column("time").to_pylist(), strict=True
        )
    )
    got = {(u, m): n for u, m, n in duckdb_count_by_unit_month(con, cat.table)}
    assert got == dict(expect)
