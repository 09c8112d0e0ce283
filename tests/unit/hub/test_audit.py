"""The county audit's pure plan (hand-made catalogue rows, time travel through ``now``),
its run over a real folder store, and its reports."""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from archive.errors import RestoreRequired, StoreUnavailable
from archive.local import LocalFolderStore
from archive.store import ObjectStore, Stored, object_key
from hub.audit import (
    ALTERED,
    DELETION_NOT_ALLOWED,
    MAX_NOTES,
    MISSING,
    NO_UNIT,
    NOT_CHECKED,
    NOT_STORED,
    OK,
    STORED_WITHOUT_CAPTURE,
    UNREACHABLE,
    UNREADABLE,
    AuditPlan,
    plan_audit,
    run_audit,
)
from hub.report import unit_slug, write_reports

NOW = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
TS = pa.timestamp("us", tz="UTC")
# The columns of custody.entries (hub contract), built here so that these tests need
# nothing of the catalog's code.
SCHEMA = pa.schema(
    [
        pa.field("origin", pa.string(), nullable=False),
        pa.field("leaf_index", pa.int64(), nullable=False),
        pa.field("leaf_hash", pa.string(), nullable=False),
        ("type", pa.string()),
        ("time", TS),
        ("station", pa.string()),
        ("unit", pa.string()),
        ("officer", pa.string()),
        ("recorder", pa.string()),
        ("sha256", pa.string()),
        ("size", pa.int64()),
        ("media_type", pa.string()),
        ("cases", pa.list_(pa.string())),
        ("category", pa.string()),
        ("important", pa.bool_()),
        ("recorded", TS),
        ("duration_ms", pa.int64()),
        ("deleted", pa.bool_()),
        ("role", pa.string()),
        ("rule", pa.string()),
        ("store_key", pa.string()),
        ("version_id", pa.string()),
        ("retain_until", TS),
    ]
)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Log:
    """One station's entries as catalogue rows, indices in order."""

    def __init__(self, origin: str, unit: str = "530822000000") -> None:
        self.origin = origin
        self.unit = unit
        self.rows: list[dict[str, Any]] = []

    def add(self, type: str, time: datetime, **kw: Any) -> int:
        i = len(self.rows)
        row: dict[str, Any] = {n: None for n in SCHEMA.names}
        row.update(
            origin=self.origin,
            leaf_index=i,
            leaf_hash=f"{i:064x}",
            type=type,
            time=time,
            station=self.origin,
            deleted=type == "delete",
        )
        row.update(kw)
        self.rows.append(row)
        return i

    def capture(self, digest: str, at: datetime, size: int = 100, stored: bool = True) -> int:
        i = self.add("ingest", at, sha256=digest, size=size, unit=self.unit)
        if stored:
            self.store(digest, at + timedelta(minutes=5), size)
        return i

    def store(self, digest: str, at: datetime, size: int = 100, **kw: Any) -> int:
        args: dict[str, Any] = {
            "sha256": digest,
            "size": size,
            "role": "original",
            "store_key": object_key(digest),
            "version_id": f"v{len(self.rows)}",
            "retain_until": at + timedelta(days=180),
        }
        args.update(kw)
        return self.add("store", at, **args)

    def delete(self, digest: str, at: datetime, **kw: Any) -> int:
        args: dict[str, Any] = {"sha256": digest, "rule": "ordinary", "retain_until": at}
        args.update(kw)
        return self.add("delete", at, **args)


def table(*logs: Log) -> pa.Table:
    return pa.Table.from_pylist([r for log in logs for r in log.rows], schema=SCHEMA)


def h(n: int) -> str:
    return sha(f"object {n}".encode())


def kinds(plan: AuditPlan) -> list[tuple[str, int, str]]:
    return [(f.origin, f.leaf_index, f.kind) for f in plan.findings]


# -- the plan: what is held, and the sample ----------------------------------------------


def stations(n: int, objects: int) -> list[Log]:
    logs = []
    for s in range(n):
        log = Log(f"custody.test/county/dock-{s:02d}", unit=f"unit-{s % 2}")
        for k in range(objects):
            log.capture(h(s * 1000 + k), NOW - timedelta(days=10 - k % 5))
        logs.append(log)
    return logs


def test_every_station_holding_objects_is_sampled_when_the_budget_allows() -> None:
    logs = stations(4, 6)
    rows = table(*logs)
    for n in (4, 5, 9):
        plan = plan_audit(rows, NOW, n, seed=7)
        assert len(plan.targets) == n
        assert len({t.sha256 for t in plan.targets}) == n
        assert {t.origin for t in plan.targets} == {log.origin for log in logs}
        # The stations' first picks come first: a budget stop still covers each station.
        assert {t.origin for t in plan.targets[:4]} == {log.origin for log in logs}
    assert plan.population == 24
    assert [s.objects for s in plan.stations] == [6, 6, 6, 6]
    # Reproducible from the seed; another seed, another sample.
    assert plan_audit(rows, NOW, 9, seed=7).targets == plan.targets
    assert plan_audit(rows, NOW, 9, seed=8).targets != plan.targets
    # A budget as large as the population takes everything.
    assert len(plan_audit(rows, NOW, 100, seed=1).targets) == 24
    # Without a seed one is drawn and kept, so the sample can be drawn again.
    fresh = plan_audit(rows, NOW, 5)
    assert plan_audit(rows, NOW, 5, seed=fresh.seed).targets == fresh.targets


def test_a_sample_smaller_than_the_stations_takes_one_object_from_distinct_stations() -> None:
    rows = table(*stations(5, 3))
    plan = plan_audit(rows, NOW, 2, seed=3)
    assert len(plan.targets) == 2
    assert len({t.origin for t in plan.targets}) == 2
    assert plan_audit(rows, NOW, 0, seed=3).targets == ()


def test_the_sample_is_uniform_over_a_stations_objects() -> None:
    rows = table(*stations(1, 10))
    seen: Counter[str] = Counter()
    runs = 1000
    for seed in range(runs):
        seen.update(t.sha256 for t in plan_audit(rows, NOW, 3, seed=seed).targets)
    assert len(seen) == 10
    for n in seen.values():
        assert 0.24 < n / runs < 0.36, seen  # 3 of 10: 0.3 each


def test_a_target_carries_what_was_signed_and_where_it_was_stored() -> None:
    log = Log("custody.test/county/dock-a", unit="")
    i = log.capture(h(1), NOW - timedelta(days=3), size=12345, stored=False)
    log.store(h(1), NOW - timedelta(days=3), size=12345, version_id="old")
    s = log.store(h(1), NOW - timedelta(days=2), size=12345, version_id="new", store_key="k/1")
    log.store(h(1), NOW - timedelta(days=2), role="derivative", version_id="deriv")
    plan = plan_audit(table(log), NOW, 10, seed=1, sizes={log.origin: 40, "custody.test/x": 9})
    (t,) = plan.targets
    assert (t.origin, t.leaf_index, t.sha256, t.size) == (log.origin, i, h(1), 12345)
    assert (t.key, t.version_id, t.store_index, t.unit) == ("k/1", "new", s, NO_UNIT)
    # Verified sizes come from the hub; a station with no rows yet is still listed.
    assert [(s.origin, s.size, s.size_verified) for s in plan.stations] == [
        ("custody.test/county/dock-a", 40, True),
        ("custody.test/x", 9, True),
    ]
    assert plan_audit(table(log), NOW, 1, seed=1).stations[0].size == len(log.rows)


def test_deleted_objects_are_not_held_and_a_recapture_is() -> None:
    log = Log("custody.test/county/dock-a")
    log.capture(h(1), NOW - timedelta(days=200))
    log.delete(h(1), NOW - timedelta(days=10))
    log.capture(h(2), NOW - timedelta(days=200))
    log.delete(h(2), NOW - timedelta(days=10))
    again = log.capture(h(2), NOW - timedelta(days=5))
    plan = plan_audit(table(log), NOW, 10, seed=1)
    assert [(t.sha256, t.leaf_index) for t in plan.targets] == [(h(2), again)]
    assert plan.findings == ()
    assert (plan.stations[0].captures, plan.stations[0].deleted) == (3, 2)


def test_the_common_case_and_the_full_walk_agree() -> None:
    # Captured and stored once takes a short cut; an annotation sends the same objects
    # through the full walk of their entries, which must come to the same plan.
    log = Log("custody.test/county/dock-a")
    for k in range(6):
        log.capture(h(k), NOW - timedelta(days=3), size=100 + k)
    for k in range(6):
        log.add("annotate", NOW - timedelta(days=1), sha256=h(k), category="inspection")
    full = plan_audit(table(log), NOW, 4, seed=5, sizes={log.origin: 12})
    short = plan_audit(table(log)[:12], NOW, 4, seed=5, sizes={log.origin: 12})
    assert short.targets == full.targets and short.stations == full.stations
    assert len(short.targets) == 4 and short.findings == full.findings == ()


# -- completeness -------------------------------------------------------------------------


def test_a_capture_not_stored_within_a_day_is_found_once_the_day_is_over() -> None:
    log = Log("custody.test/county/dock-a")
    late = log.capture(h(1), NOW - timedelta(hours=25), stored=False)
    fresh = log.capture(h(2), NOW - timedelta(hours=2), stored=False)
    log.capture(h(3), NOW - timedelta(days=3))  # stored: fine
    rows = table(log)
    plan = plan_audit(rows, NOW, 5, seed=1)
    assert kinds(plan) == [(log.origin, late, NOT_STORED)]
    assert plan.findings[0].unit == "530822000000"
    assert plan.stations[0].waiting == 1
    assert [t.sha256 for t in plan.targets] == [h(3)]  # not in the bucket: not sampled
    # A day later the fresh one is late too.
    later = plan_audit(rows, NOW + timedelta(days=1), 5, seed=1)
    assert kinds(later) == [(log.origin, late, NOT_STORED), (log.origin, fresh, NOT_STORED)]
    # Stored late counts as stored, with a note.
    log.store(h(1), NOW)
    plan = plan_audit(table(log), NOW, 5, seed=1)
    assert kinds(plan) == []
    assert any("more than a day after" in n for n in plan.notes)


def test_notes_are_capped() -> None:
    log = Log("custody.test/county/dock-a")
    for k in range(MAX_NOTES + 5):
        log.add("ingest", NOW - timedelta(days=9), sha256=h(k), size=1)
        log.store(h(k), NOW - timedelta(days=2), size=1)
    plan = plan_audit(table(log), NOW, 1, seed=1)
    assert len(plan.notes) == MAX_NOTES + 1 and plan.notes[-1] == "... and 5 more"
    assert plan.findings == () and plan.population == MAX_NOTES + 5


def test_a_capture_after_deletion_must_be_stored_again() -> None:
    log = Log("custody.test/county/dock-a")
    log.capture(h(1), NOW - timedelta(days=300))
    log.delete(h(1), NOW - timedelta(days=100))
    again = log.capture(h(1), NOW - timedelta(days=3), stored=False)
    log.capture(h(2), NOW - timedelta(days=300))
    log.delete(h(2), NOW - timedelta(days=100))
    seen = log.add("sighting", NOW - timedelta(days=2), sha256=h(2), size=100)
    plan = plan_audit(table(log), NOW, 5, seed=1)
    assert kinds(plan) == [(log.origin, again, NOT_STORED), (log.origin, seen, NOT_STORED)]
    assert plan.targets == ()


def test_a_capture_deleted_before_it_was_ever_stored_is_found() -> None:
    log = Log("custody.test/county/dock-a")
    i = log.capture(h(1), NOW - timedelta(days=200), stored=False)
    log.delete(h(1), NOW - timedelta(days=1))
    assert kinds(plan_audit(table(log), NOW, 5, seed=1)) == [(log.origin, i, NOT_STORED)]


def test_a_deletion_is_allowed_only_by_a_rule_after_its_retain_until() -> None:
    log = Log("custody.test/county/dock-a")
    at = NOW - timedelta(days=1)
    for k in range(5):
        log.capture(h(k), NOW - timedelta(days=400))
    fine = log.delete(h(0), at)
    no_rule = log.delete(h(1), at, rule=None)
    empty_rule = log.delete(h(2), at, rule="")
    locked = log.delete(h(3), at, retain_until=at + timedelta(days=30))
    log.add(
        "lock",
        NOW - timedelta(days=300),
        sha256=h(4),
        rule="case",
        retain_until=NOW + timedelta(days=3000),
    )
    lock_row = log.delete(h(4), at)
    plan = plan_audit(table(log), NOW, 5, seed=1)
    assert kinds(plan) == [
        (log.origin, no_rule, DELETION_NOT_ALLOWED),
        (log.origin, empty_rule, DELETION_NOT_ALLOWED),
        (log.origin, locked, DELETION_NOT_ALLOWED),
        (log.origin, lock_row, DELETION_NOT_ALLOWED),
    ]
    assert fine not in [f.leaf_index for f in plan.findings]
    by = {f.leaf_index: f.detail for f in plan.findings}
    assert "names no retention rule" in by[no_rule]
    assert "retain-until" in by[locked]
    assert f"entry {lock_row - 1} locked it" in by[lock_row]
    assert all(f.unit == "530822000000" for f in plan.findings)


def test_a_deletion_under_a_hold_is_found_and_a_released_hold_allows_it() -> None:
    log = Log("custody.test/county/dock-a")
    old = NOW - timedelta(days=400)
    for k in range(5):
        log.capture(h(k), old)
    obj_hold = log.add("hold", old, sha256=h(0))
    log.add("annotate", old, sha256=h(1), cases=["2026-行政处罚-0042"])
    case_hold = log.add("hold", old, cases=["2026-行政处罚-0042"])
    log.add("hold", old, sha256=h(2))
    log.add("hold_release", old, sha256=h(2))
    # A case hold made before the footage joined the case holds it too.
    log.add("hold", old, cases=["2026-行政处罚-0099"])
    log.add("annotate", old, sha256=h(3), cases=["2026-行政处罚-0099"])
    held_obj = log.delete(h(0), NOW)
    held_case = log.delete(h(1), NOW)
    log.delete(h(2), NOW)  # released before: allowed
    held_later = log.delete(h(3), NOW)
    log.delete(h(4), NOW)
    log.add("hold", NOW, sha256=h(4))  # a hold after the deletion does not undo it
    # Another station's hold on the same object does not hold it here.
    other = Log("custody.test/county/dock-b")
    other.add("hold", old, sha256=h(2))
    plan = plan_audit(table(log, other), NOW, 5, seed=1)
    assert kinds(plan) == [
        (log.origin, held_obj, DELETION_NOT_ALLOWED),
        (log.origin, held_case, DELETION_NOT_ALLOWED),
        (log.origin, held_later, DELETION_NOT_ALLOWED),
    ]
    by = {f.leaf_index: f.detail for f in plan.findings}
    assert f"hold entry {obj_hold} was in force" in by[held_obj]
    assert f"hold entry {case_hold} was in force" in by[held_case]


def test_an_object_stored_without_a_capture_is_found() -> None:
    log = Log("custody.test/county/dock-a")
    log.capture(h(1), NOW - timedelta(days=3))
    s = log.store(h(9), NOW - timedelta(days=2))
    log.store(h(9), NOW - timedelta(days=1))
    log.store(h(8), NOW - timedelta(days=1), role="derivative")  # copies are not captured
    # Captured at another station does not count here.
    other = Log("custody.test/county/dock-b")
    other.capture(h(9), NOW - timedelta(days=3))
    plan = plan_audit(table(log, other), NOW, 5, seed=1)
    assert kinds(plan) == [(log.origin, s, STORED_WITHOUT_CAPTURE)]
    assert plan.findings[0].unit == NO_UNIT
    assert sorted((t.origin, t.sha256) for t in plan.targets) == [
        (log.origin, h(1)),
        (other.origin, h(9)),
    ]


def test_now_must_carry_a_time_zone() -> None:
    with pytest.raises(ValueError):
        plan_audit(table(), datetime(2027, 1, 1), 1)


# -- the run, over a real folder store ------------------------------------------------------


class ColdClassStore:
    """A store whose objects sit in a cold class (what S3 says for GLACIER)."""

    def get(self, key: str, chunk: int = 8 << 20) -> Iterator[bytes]:
        raise RestoreRequired(f"{key}: in GLACIER; request a restore")

    def put(self, *a: Any, **kw: Any) -> Stored:
        raise NotImplementedError

    def head(self, key: str) -> Stored | None:
        return None

    def delete(self, key: str, version_id: str | None = None) -> None:
        raise NotImplementedError

    def list(self, prefix: str) -> Iterator[str]:
        return iter(())


class DownStore(ColdClassStore):
    """A store that cannot be reached (what S3Store raises when the endpoint is down)."""

    def __init__(self) -> None:
        self.calls = 0

    def get(self, key: str, chunk: int = 8 << 20) -> Iterator[bytes]:
        self.calls += 1
        raise StoreUnavailable("cannot reach the store at http://10.0.0.9:8333")


def folder_station(tmp: Path, name: str, blobs: list[bytes], unit: str) -> tuple[Log, Any]:
    store = LocalFolderStore(tmp / name)
    log = Log(f"custody.test/county/{name}", unit=unit)
    for b in blobs:
        store.put(object_key(sha(b)), b, sha(b))
        log.capture(sha(b), NOW - timedelta(days=2), size=len(b))
    return log, store


def overwrite(store: LocalFolderStore, digest: str, data: bytes) -> None:
    p = store.root / object_key(digest)
    os.chmod(p, 0o644)
    p.write_bytes(data)


def test_run_names_each_outcome_and_goes_on_past_an_unreachable_store(tmp_path: Path) -> None:
    blobs = [f"footage {k}".encode() * 1000 for k in range(4)]
    a, sa = folder_station(tmp_path, "dock-a", blobs, "unit-a")
    overwrite(sa, sha(blobs[1]), b"something else")
    (sa.root / object_key(sha(blobs[2]))).unlink()
    b, _ = folder_station(tmp_path, "dock-b", [b"cold"], "unit-b")
    c, _ = folder_station(tmp_path, "dock-c", [b"c1", b"c2", b"c3"], "unit-b")
    d, _ = folder_station(tmp_path, "dock-d", [b"nowhere"], "unit-b")
    plan = plan_audit(table(a, b, c, d), NOW, 100, seed=1)
    down = DownStore()
    stores: dict[str, ObjectStore] = {a.origin: sa, b.origin: ColdClassStore(), c.origin: down}
    res = run_audit(plan, stores, threads=1)
    got = {(ch.target.origin, ch.target.sha256): ch for ch in res.checks}
    assert got[a.origin, sha(blobs[0])].status == OK
    assert got[a.origin, sha(blobs[0])].bytes_read == len(blobs[0])
    assert got[a.origin, sha(blobs[1])].status == ALTERED
    assert sha(b"something else") in got[a.origin, sha(blobs[1])].detail
    assert got[a.origin, sha(blobs[2])].status == MISSING
    assert got[b.origin, sha(b"cold")].status == UNREADABLE
    assert "not a failure" in got[b.origin, sha(b"cold")].detail
    assert {got[c.origin, sha(x)].status for x in (b"c1", b"c2", b"c3")} == {UNREACHABLE}
    assert down.calls == 1  # said once; the station's other objects are not tried
    assert got[d.origin, sha(b"nowhere")].status == UNREACHABLE
    assert [o for o, _ in res.unreachable] == [c.origin, d.origin]
    assert not res.ok
    assert sorted((c.status, c.target.sha256) for c in res.failures) == [
        (ALTERED, sha(blobs[1])),
        (MISSING, sha(blobs[2])),
    ]
    j = res.to_json()
    assert j["ok"] is False
    assert j["results"] == {
        OK: 2,
        ALTERED: 1,
        MISSING: 1,
        UNREADABLE: 1,
        UNREACHABLE: 4,
        NOT_CHECKED: 0,
    }
    assert [f["what"] for f in j["failures"]] == [ALTERED, MISSING]
    by_unit = {u["unit"]: u["results"] for u in j["units"]}
    assert by_unit["unit-a"][ALTERED] == 1 and by_unit["unit-b"][UNREACHABLE] == 4


def test_unreadable_and_unreachable_alone_leave_the_audit_ok(tmp_path: Path) -> None:
    a, sa = folder_station(tmp_path, "dock-a", [b"fine"], "u")
    b, _ = folder_station(tmp_path, "dock-b", [b"cold"], "u")
    res = run_audit(plan_audit(table(a, b), NOW, 10, seed=1), {a.origin: sa})
    assert res.ok and res.counts()[UNREACHABLE] == 1


def test_the_byte_budget_stops_the_run_and_says_how_much_was_done(tmp_path: Path) -> None:
    blobs = [bytes([k]) * 1000 for k in range(10)]
    a, sa = folder_station(tmp_path, "dock-a", blobs, "u")
    plan = plan_audit(table(a), NOW, 10, seed=1)
    res = run_audit(plan, {a.origin: sa}, max_bytes=3500, threads=1)
    assert res.stopped_early and res.stop_reason == "byte budget"
    assert res.counts()[OK] == 3 and res.counts()[NOT_CHECKED] == 7
    assert res.bytes_read == 3000 and len(res.checked) == 3
    assert res.to_json()["sample"]["checked"] == 3
    assert res.ok  # nothing checked was wrong
    res = run_audit(plan, {a.origin: sa}, max_seconds=0.0)
    assert res.stopped_early and res.stop_reason == "time budget"
    assert res.counts()[NOT_CHECKED] == 10


def test_the_entry_summary_stays_small(tmp_path: Path) -> None:
    log = Log("custody.test/county/dock-" + "x" * 200)
    for k in range(2000):
        log.capture(h(k), NOW - timedelta(days=5), stored=False)
    res = run_audit(plan_audit(table(log), NOW, 0, seed=1), {})
    assert len(res.plan.findings) == 2000
    j = res.to_json()
    assert len(j["failures"]) == 100 and j["failures_total"] == 2000
    payload = res.entry_payload()
    assert len(json.dumps(payload, ensure_ascii=False).encode()) <= 32768
    assert payload["failures_total"] == 2000 and payload["failures"]
    assert payload["stations_with_problems"] == [log.origin]

    def plain(v: Any) -> bool:  # what a ledger entry holds: no floats, no nulls
        if isinstance(v, dict):
            return all(isinstance(k, str) and plain(x) for k, x in v.items())
        if isinstance(v, list):
            return all(plain(x) for x in v)
        return isinstance(v, (str, int, bool))

    assert plain(payload) and plain(j)


# -- reports ----------------------------------------------------------------------------------


def test_reports_per_unit_read_back_and_are_deterministic(tmp_path: Path) -> None:
    blobs = [f"footage {k}".encode() for k in range(3)]
    a, sa = folder_station(tmp_path, "dock-a", blobs, "勐海县公安局")
    overwrite(sa, sha(blobs[0]), b"changed")
    b, sb = folder_station(tmp_path, "dock-b", [b"b"], "")
    late = b.capture(h(1), NOW - timedelta(days=2), stored=False)
    res = run_audit(plan_audit(table(a, b), NOW, 10, seed=1), {a.origin: sa, b.origin: sb})
    out1 = write_reports(res, tmp_path / "r1")
    out2 = write_reports(res, tmp_path / "r2")
    names = [p.name for p in out1]
    assert names == [
        "summary.md",
        "summary.json",
        f"unit-{unit_slug('勐海县公安局')}.md",
        f"unit-{unit_slug('勐海县公安局')}.parquet",
        "unit-no-unit.md",
        "unit-no-unit.parquet",
    ]
    assert unit_slug("勐海县公安局") == "勐海县公安局"
    assert unit_slug("a/b") != unit_slug("a_b")
    for p, q in zip(out1, out2, strict=True):
        assert p.read_bytes() == q.read_bytes(), p.name
    md = (tmp_path / "r1" / "unit-勐海县公安局.md").read_text()
    assert "专项监督检查" in md and "PROBLEMS FOUND" in md
    assert sha(blobs[0]) in md and "altered" in md
    t = pq.read_table(tmp_path / "r1" / "unit-勐海县公安局.parquet").to_pylist()
    assert [(r["record"], r["status"]) for r in t] == [("object", ALTERED)] + [("object", OK)] * 2
    assert (t[0]["leaf_index"], t[0]["sha256"]) == (0, sha(blobs[0]))
    nu = pq.read_table(tmp_path / "r1" / "unit-no-unit.parquet").to_pylist()
    assert [(r["record"], r["status"], r["leaf_index"]) for r in nu] == [
        ("object", OK, 0),
        ("finding", NOT_STORED, late),
    ]
    assert nu[1]["action"]
    summary = json.loads((tmp_path / "r1" / "summary.json").read_text())
    assert summary["ok"] is False
    assert summary["completeness"][NOT_STORED] == 1
    county = (tmp_path / "r1" / "summary.md").read_text()
    assert a.origin in county and b.origin in county and "unit-no-unit.md" in county
