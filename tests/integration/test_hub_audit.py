"""The county audit against a real SeaweedFS bucket shared by several stations: objects
put by the station's own store code, then altered, deleted and frozen behind its back,
each caught by name; a station whose store is down is said once and the rest audited;
the reports per unit read back (Parquet with pyarrow and DuckDB)."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq

from archive.s3 import S3Store
from archive.settings import S3Settings
from archive.store import Lock, ObjectStore, Stored, object_key
from hub.audit import (
    ALTERED,
    DELETION_NOT_ALLOWED,
    MISSING,
    NOT_STORED,
    OK,
    STORED_WITHOUT_CAPTURE,
    UNREACHABLE,
    UNREADABLE,
    plan_audit,
    run_audit,
)
from hub.report import unit_slug, write_reports

from ..s3server import free_ports
from ..unit.hub.test_audit import Log, table


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def put(store: S3Store, log: Log, data: bytes | Path, at: datetime, lock: bool = False) -> str:
    """What a station does: ingest, upload (checksum confirmed), then a `store` entry
    naming the version the bucket gave it."""
    raw = data.read_bytes() if isinstance(data, Path) else data
    digest = sha(raw)
    log.add("ingest", at, sha256=digest, size=len(raw), unit=log.unit)
    until = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    st: Stored = store.put(
        object_key(digest), data, digest, Lock("COMPLIANCE", until) if lock else None
    )
    log.store(
        digest,
        at + timedelta(minutes=10),
        size=len(raw),
        store_key=st.key,
        version_id=st.version_id,
        retain_until=until if lock else None,
    )
    return digest


def test_county_audit_finds_each_problem_by_name(seaweed: Any, tmp_path: Path) -> None:
    bucket = seaweed.bucket(f"t-{uuid.uuid4().hex[:16]}", lock=True)
    settings = S3Settings(bucket=bucket, endpoint_url=seaweed.endpoint)
    now = datetime.now(UTC)
    day2 = now - timedelta(days=2)
    raw = seaweed.client()

    # Station A: two good objects (one big enough for ranged multipart reads), one
    # overwritten by a new version, one hidden by a delete marker, one version deleted.
    a = Log("custody.test/county/dock-a", unit="勐海县公安局")
    sa = S3Store(
        S3Settings(
            bucket=bucket,
            endpoint_url=seaweed.endpoint,
            multipart_threshold_mb=5,
            part_size_mb=5,
        )
    )
    big = tmp_path / "big.mp4"
    big.write_bytes(bytes(range(256)) * (11 * 4096 + 7))  # 11 MiB: three parts
    good = [put(sa, a, b"recording a-0" * 5000, day2), put(sa, a, big, day2)]
    altered = put(sa, a, b"recording a-1" * 5000, day2, lock=True)
    marker = put(sa, a, b"recording a-2" * 5000, day2)
    gone = put(sa, a, b"recording a-3" * 5000, day2)
    raw.put_object(Bucket=bucket, Key=object_key(altered), Body=b"an edited recording")
    raw.delete_object(Bucket=bucket, Key=object_key(marker))  # a delete marker on top
    (gone_version,) = [r["version_id"] for r in a.rows if r["sha256"] == gone and r["version_id"]]
    raw.delete_object(Bucket=bucket, Key=object_key(gone), VersionId=gone_version)

    # Station B (same bucket): a good object, one frozen in a cold class, and the
    # completeness findings: a capture never stored, a deletion with no rule, an object
    # stored without a capture.
    b = Log("custody.test/county/dock-b", unit="勐海县交警大队")
    sb = S3Store(settings)
    b_good = put(sb, b, b"recording b-0" * 3000, day2)
    cold = put(
        S3Store(S3Settings(bucket=bucket, endpoint_url=seaweed.endpoint, storage_class="GLACIER")),
        b,
        b"recording b-1 (cold)",
        day2,
    )
    unstored = sha(b"recording b-2")
    not_stored = b.add("ingest", day2, sha256=unstored, size=13, unit=b.unit)
    deleted = put(sb, b, b"recording b-3", now - timedelta(days=400))
    bad_delete = b.delete(deleted, now - timedelta(days=1), rule=None)
    stray = sha(b"never captured")
    st = sb.put(object_key(stray), b"never captured", stray)
    stray_store = b.store(stray, day2, size=14, version_id=st.version_id)

    # Station C: its store does not answer (a closed port).
    c = Log("custody.test/county/dock-c", unit="勐海县公安局")
    port = free_ports(1, grpc=False)[0]
    sc = S3Store(
        S3Settings(bucket=bucket, endpoint_url=f"http://127.0.0.1:{port}", connect_timeout_s=1)
    )
    for k in range(2):
        d = f"recording c-{k}".encode()
        c.capture(sha(d), day2, size=len(d))

    rows = table(a, b, c)
    plan = plan_audit(rows, now, 100, seed=11, sizes={a.origin: len(a.rows), b.origin: 99})
    assert plan.population == 9  # a: 5; b: 2 (the cold one counts); c: 2
    stores: dict[str, ObjectStore] = {a.origin: sa, b.origin: sb, c.origin: sc}
    res = run_audit(plan, stores, max_seconds=120)
    by = {ch.target.sha256: ch for ch in res.checks}
    for h in [*good, b_good]:
        assert by[h].status == OK, by[h]
    assert by[good[1]].bytes_read == big.stat().st_size
    assert by[altered].status == ALTERED
    assert sha(b"an edited recording") in by[altered].detail
    assert by[marker].status == MISSING and by[gone].status == MISSING
    assert by[cold].status == UNREADABLE and "GLACIER" in by[cold].detail
    assert [ch.status for ch in res.checks if ch.target.origin == c.origin] == [UNREACHABLE] * 2
    assert [o for o, _ in res.unreachable] == [c.origin]
    assert str(port) in res.unreachable[0][1]
    # The signed version is still in the bucket, under the lock: what the report says.
    signed = by[altered].target.version_id
    body = raw.get_object(Bucket=bucket, Key=object_key(altered), VersionId=signed)["Body"]
    assert sha(body.read()) == altered
    assert signed in by[altered].detail

    assert [(f.origin, f.leaf_index, f.kind) for f in plan.findings] == [
        (b.origin, not_stored, NOT_STORED),
        (b.origin, bad_delete, DELETION_NOT_ALLOWED),
        (b.origin, stray_store, STORED_WITHOUT_CAPTURE),
    ]
    assert not res.ok
    j = res.to_json()
    assert j["results"][ALTERED] == 1 and j["results"][MISSING] == 2
    assert j["completeness"] == {NOT_STORED: 1, DELETION_NOT_ALLOWED: 1, STORED_WITHOUT_CAPTURE: 1}
    assert sorted(f["sha256"] for f in j["failures"]) == sorted(
        [altered, marker, gone, unstored, deleted, stray]
    )
    sizes = {s["origin"]: (s["size"], s["size_verified"]) for s in j["stations"]}
    assert sizes == {
        a.origin: (len(a.rows), True),
        b.origin: (99, True),
        c.origin: (len(c.rows), False),
    }

    out = tmp_path / "reports"
    paths = write_reports(res, out)
    assert all(p.exists() for p in paths)
    ua, ub = unit_slug("勐海县公安局"), unit_slug("勐海县交警大队")
    assert {p.name for p in paths} == {
        "summary.md",
        "summary.json",
        f"unit-{ua}.md",
        f"unit-{ua}.parquet",
        f"unit-{ub}.md",
        f"unit-{ub}.parquet",
        "unit-no-unit.md",
        "unit-no-unit.parquet",
    }
    ta = pq.read_table(out / f"unit-{ua}.parquet").to_pylist()
    assert sorted((r["sha256"], r["status"]) for r in ta) == sorted(
        [(h, OK) for h in good]
        + [(altered, ALTERED), (marker, MISSING), (gone, MISSING)]
        + [(sha(f"recording c-{k}".encode()), UNREACHABLE) for k in range(2)]
    )
    tb = pq.read_table(out / f"unit-{ub}.parquet").to_pylist()
    assert [
        (r["record"], r["status"], r["leaf_index"]) for r in tb if r["record"] == "finding"
    ] == [
        ("finding", NOT_STORED, not_stored),
        ("finding", DELETION_NOT_ALLOWED, bad_delete),
    ]
    nu = pq.read_table(out / "unit-no-unit.parquet").to_pylist()
    assert [(r["status"], r["sha256"]) for r in nu] == [(STORED_WITHOUT_CAPTURE, stray)]
    # The query the report suggests works as written.
    counts = dict(
        duckdb.sql(
            f"SELECT status, count(*) FROM '{out / f'unit-{ua}.parquet'}' GROUP BY 1"
        ).fetchall()
    )
    assert counts == {OK: 2, ALTERED: 1, MISSING: 2, UNREACHABLE: 2}
    md = (out / f"unit-{ua}.md").read_text()
    assert "PROBLEMS FOUND" in md and altered in md and marker in md and c.origin in md
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] is False and summary["unreachable"][0].startswith(c.origin)
