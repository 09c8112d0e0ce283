"""The county audit (专项监督检查): stored footage across stations checked from the bucket.

A supervisor hands its report to a special inspection. Two parts:

1. Fixity: a budgeted random sample of the objects the stations hold, each read back from
   its station's store and re-hashed, compared with the SHA-256 and size the station
   signed in its `ingest` entry. Outcomes: ``ok``; ``altered`` (the store's current
   version hashes to something else); ``missing`` (nothing under the key); ``unreadable``
   (the store answered but would not give the bytes, e.g. a cold storage class that must
   be restored first: not a failure of integrity); ``unreachable`` (the station's store
   cannot be reached: said once per station, the others are still audited).
2. Completeness, per station, from the catalogued entries alone: every capture stored in
   the bucket within a day (``not_stored``); every deletion allowed by a rule, after its
   retain-until and with no hold in force (``deletion_not_allowed``); nothing stored that
   the station never captured (``stored_without_capture``).

`plan_audit` is pure (rows in, a plan out; ``now`` and ``seed`` are arguments, so tests
travel in time); `run_audit` is the thin shell that reads the stores. Reports are written
by `hub.report.write_reports`.

Rows are those of the Iceberg table ``custody.entries`` (docs: hub contract), the types in
`AUDIT_TYPES`. A `hold` row names its target in ``sha256`` (scope object) or in ``cases``
(scope case); a `hold_release` row the same way.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import random
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from archive.errors import NotFound, RestoreRequired, StoreUnavailable
from archive.store import ObjectStore, object_key

DAY = timedelta(hours=24)
MAX_NOTES = 1000
NO_UNIT = "(no unit)"
# The entry types `plan_audit` reads: pass them to `CountyCatalog.scan(types=...)`.
AUDIT_TYPES = (
    "ingest",
    "sighting",
    "store",
    "lock",
    "annotate",
    "hold",
    "hold_release",
    "delete",
)

# Outcomes of one object read back, and the completeness findings, by name.
OK = "ok"
ALTERED = "altered"
MISSING = "missing"
UNREADABLE = "unreadable"
UNREACHABLE = "unreachable"
NOT_CHECKED = "not_checked"  # in the sample, but the budget ran out first
OUTCOMES = (OK, ALTERED, MISSING, UNREADABLE, UNREACHABLE)
NOT_STORED = "not_stored"  # a capture not stored within a day
DELETION_NOT_ALLOWED = "deletion_not_allowed"  # a deletion no rule allowed
STORED_WITHOUT_CAPTURE = "stored_without_capture"  # an object the station never captured
FINDINGS = (NOT_STORED, DELETION_NOT_ALLOWED, STORED_WITHOUT_CAPTURE)
# Failures of integrity: what makes an audit not ok. Unreadable and unreachable are said,
# but they prove nothing either way.
INTEGRITY = (ALTERED, MISSING)

WHAT = {
    ALTERED: "altered (改动): the stored bytes are not the ones the station signed",
    MISSING: "missing (缺失): nothing is stored under the object's key",
    UNREADABLE: "unreadable (无法读取): the store would not give the bytes",
    UNREACHABLE: "unreachable (无法连接): the station's store could not be reached",
    NOT_STORED: "not stored within a day (未按时归档): captured, but no store entry",
    DELETION_NOT_ALLOWED: "deletion not allowed by a rule (违规删除)",
    STORED_WITHOUT_CAPTURE: "stored object without a capture (无采集记录)",
}
TODO = {
    ALTERED: (
        "List the key's versions in the bucket (object lock keeps the signed version, "
        "see the version id); restore that version, and find out who overwrote it."
    ),
    MISSING: (
        "List the key's versions and delete markers in the bucket; remove a delete "
        "marker to bring a locked version back. If no version is left the footage is "
        "lost: report it to the inspection."
    ),
    UNREADABLE: (
        "Not a failure of integrity: restore the object (custody store restore) or fix "
        "the store's permissions, then audit again."
    ),
    UNREACHABLE: (
        "Check the station's [stations.store] endpoint, network and credentials in "
        "hub.toml, then audit again."
    ),
    NOT_STORED: (
        "Ask the station why the original was not replicated (custody status shows the "
        "upload queue); the dock must still hold it."
    ),
    DELETION_NOT_ALLOWED: (
        "Ask the station for the retention policy, the operator and the reason; the "
        "deletion is for the inspection to judge."
    ),
    STORED_WITHOUT_CAPTURE: (
        "Ask the station where the object came from: its log never captured it."
    ),
}


@dataclass(frozen=True)
class Target:
    """One stored original in the sample: what the station signed, and where it lies."""

    origin: str
    leaf_index: int  # the `ingest` entry (or the `sighting` that captured it again)
    sha256: str
    size: int
    unit: str
    key: str  # the store key its `store` entry names
    version_id: str  # the version its `store` entry names ("" when none)
    store_index: int  # the `store` entry


@dataclass(frozen=True)
class Finding:
    """A completeness finding about one entry of one station."""

    origin: str
    leaf_index: int  # the entry the finding is about
    sha256: str
    kind: str  # NOT_STORED | DELETION_NOT_ALLOWED | STORED_WITHOUT_CAPTURE
    detail: str
    unit: str = NO_UNIT

    @property
    def action(self) -> str:
        return TODO[self.kind]


@dataclass(frozen=True)
class StationPlan:
    """What one station holds, as far as its catalogued entries say."""

    origin: str
    size: int  # the verified tree size (or, without one, the highest leaf index seen + 1)
    size_verified: bool  # False: `size` comes from the rows, not from the hub's follow state
    objects: int  # originals held (captured, stored, not deleted)
    bytes: int
    captures: int
    deleted: int
    waiting: int  # captured less than a day ago, not stored yet (not a finding)
    units: tuple[str, ...]


@dataclass(frozen=True)
class AuditPlan:
    now: datetime
    seed: int  # the sample is reproducible from the rows and this seed
    requested: int  # the sample size asked for
    population: int  # originals held by all stations
    targets: tuple[Target, ...]  # the sample, in the order to check it
    stations: tuple[StationPlan, ...]  # by origin
    findings: tuple[Finding, ...]  # by origin, leaf index, kind
    notes: tuple[str, ...] = ()

    def station(self, origin: str) -> StationPlan | None:
        return next((s for s in self.stations if s.origin == origin), None)


# -- plan (pure) ----------------------------------------------------------------------


def _col(batch: pa.RecordBatch | pa.Table, name: str) -> list[Any]:
    if name in batch.schema.names:
        return list(batch.column(name).to_pylist())
    return [None] * batch.num_rows


def _unit(u: Any) -> str:
    return u if isinstance(u, str) and u else NO_UNIT


def _when(us: int | None) -> str:
    """A time in microseconds since the epoch, for people."""
    if us is None:
        return "?"
    return (_EPOCH + timedelta(microseconds=us)).strftime("%Y-%m-%d %H:%M UTC")


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DAY_US = DAY // timedelta(microseconds=1)
_TIMES = ("time", "retain_until")  # read as microseconds: datetimes cost far more to make


def _us(t: datetime) -> int:
    return (t - _EPOCH) // timedelta(microseconds=1)


@dataclass
class _Life:
    """One stored life of an object at a station: from its capture to its deletion."""

    capture: dict[str, Any]
    store: dict[str, Any] | None = None
    lock: tuple[int, int] | None = None  # the latest retain-until (µs) and its entry


@dataclass
class _Notes:
    """Remarks that are not findings (stored late, stored again), at most `MAX_NOTES` kept:
    a station that stores everything late must not fill the memory or the report."""

    kept: list[str] = field(default_factory=list)
    more: int = 0

    def add(self, line: str) -> None:
        if len(self.kept) < MAX_NOTES:
            self.kept.append(line)
        else:
            self.more += 1

    def lines(self) -> tuple[str, ...]:
        return (*self.kept, f"... and {self.more} more") if self.more else tuple(self.kept)


@dataclass
class _Station:
    size: int = 0
    objects: int = 0
    bytes: int = 0
    captures: int = 0
    deleted: int = 0
    waiting: int = 0
    units: set[str] = field(default_factory=set)


def _hold_rows(rows: pa.Table) -> dict[str, list[tuple[int, str, str, str]]]:
    """Per origin, (leaf index, type, scope, target) of every hold and release, in order."""
    types = rows.column("type")
    sel = rows.filter(pc.is_in(types, pa.array(["hold", "hold_release"])))
    out: dict[str, list[tuple[int, str, str, str]]] = {}
    for o, i, ty, sha, cases in zip(
        _col(sel, "origin"),
        _col(sel, "leaf_index"),
        _col(sel, "type"),
        _col(sel, "sha256"),
        _col(sel, "cases"),
        strict=True,
    ):
        lst = out.setdefault(o, [])
        if isinstance(sha, str) and sha:
            lst.append((int(i), ty, "object", sha))
        for c in cases or ():
            lst.append((int(i), ty, "case", c))
    for lst in out.values():
        lst.sort()
    return out


def _hold_in_force(
    holds: list[tuple[int, str, str, str]], at: int, sha: str, cases: set[str]
) -> int | None:
    """The first hold entry covering the object (by itself or a case) in force at entry
    ``at``: made before it and not released between."""
    active: dict[tuple[str, str], int] = {}
    for i, ty, scope, target in holds:
        if i >= at:
            break
        if not ((scope == "object" and target == sha) or (scope == "case" and target in cases)):
            continue
        if ty == "hold":
            active.setdefault((scope, target), i)
        else:
            active.pop((scope, target), None)
    return min(active.values()) if active else None


def plan_audit(
    rows: pa.Table,
    now: datetime,
    sample: int,
    seed: int | None = None,
    sizes: Mapping[str, int] | None = None,
) -> AuditPlan:
    """The objects each station holds, a random sample of them, and completeness findings.

    ``rows``: catalogued entries (at least the `AUDIT_TYPES`; other types are ignored).
    ``now``: the audit's time (timezone-aware): captures younger than a day are not late.
    ``sample``: how many objects to re-hash; stratified so that each station holding
    objects gets at least one when ``sample`` allows, otherwise uniform. ``seed`` makes
    the sample reproducible (None: a fresh one, kept in the plan). ``sizes``: each
    station's verified tree size (from the hub's follow state), for the report.
    """
    if now.tzinfo is None:
        raise ValueError("now must carry a time zone")
    if sample < 0:
        raise ValueError("the sample size must not be negative")
    if seed is None:
        seed = random.SystemRandom().randrange(1 << 62)
    rng = random.Random(seed)
    stations: dict[str, _Station] = {}
    for o, n in (sizes or {}).items():
        stations.setdefault(o, _Station()).size = int(n)
    findings: list[Finding] = []
    notes = _Notes()
    holds = _hold_rows(rows)
    # Every station seen, and the highest index seen where no verified size is known.
    for o, hi in _max_index(rows):
        st = stations.setdefault(o, _Station())
        if sizes is None or o not in sizes:
            st.size = max(st.size, hi + 1)
    # Sampling state: the k smallest priorities overall, and each station's smallest.
    heap: list[tuple[float, int, Target]] = []  # max-heap by -priority
    first: dict[str, tuple[float, int, Target]] = {}
    counter = 0

    def held(t: Target) -> None:
        nonlocal counter
        p = rng.random()
        counter += 1
        item = (p, counter, t)
        if t.origin not in first or p < first[t.origin][0]:
            first[t.origin] = item
        if sample:
            if len(heap) < sample:
                heapq.heappush(heap, (-p, counter, t))
            elif -heap[0][0] > p:
                heapq.heapreplace(heap, (-p, counter, t))

    objs = rows.filter(
        pc.and_(
            pc.is_valid(rows.column("sha256")),
            pc.is_in(rows.column("type"), pa.array(AUDIT_TYPES)),
        )
    )
    now_us = _us(now)
    objs = objs.sort_by(
        [("origin", "ascending"), ("sha256", "ascending"), ("leaf_index", "ascending")]
    )
    group: list[dict[str, Any]] = []
    for r in _iter_rows(objs):
        if group and (group[0]["origin"], group[0]["sha256"]) != (r["origin"], r["sha256"]):
            _object(group, now_us, stations, holds, findings, notes, held)
            group = []
        group.append(r)
    if group:
        _object(group, now_us, stations, holds, findings, notes, held)

    picks = _pick(heap, first, sample)
    population = sum(s.objects for s in stations.values())
    return AuditPlan(
        now=now,
        seed=seed,
        requested=sample,
        population=population,
        targets=tuple(picks),
        stations=tuple(
            StationPlan(
                origin=o,
                size=s.size,
                size_verified=sizes is not None and o in sizes,
                objects=s.objects,
                bytes=s.bytes,
                captures=s.captures,
                deleted=s.deleted,
                waiting=s.waiting,
                units=tuple(sorted(s.units)),
            )
            for o, s in sorted(stations.items())
        ),
        findings=tuple(sorted(findings, key=lambda f: (f.origin, f.leaf_index, f.kind))),
        notes=notes.lines(),
    )


def _max_index(rows: pa.Table) -> list[tuple[str, int]]:
    agg = (
        rows.select(["origin", "leaf_index"]).group_by("origin").aggregate([("leaf_index", "max")])
    )
    return list(zip(_col(agg, "origin"), _col(agg, "leaf_index_max"), strict=True))


_ROW_COLS = (
    "origin",
    "leaf_index",
    "type",
    "time",
    "unit",
    "sha256",
    "size",
    "cases",
    "role",
    "rule",
    "store_key",
    "version_id",
    "retain_until",
)


def _iter_rows(table: pa.Table) -> Iterator[dict[str, Any]]:
    for batch in table.to_batches(max_chunksize=65536):
        cols = [_times(batch, c) if c in _TIMES else _col(batch, c) for c in _ROW_COLS]
        for vals in zip(*cols, strict=True):
            yield dict(zip(_ROW_COLS, vals, strict=True))


def _times(batch: pa.RecordBatch, name: str) -> list[int | None]:
    if name not in batch.schema.names:
        return [None] * batch.num_rows
    col = batch.column(name).cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
    return list(col.to_pylist())


def _object(
    group: list[dict[str, Any]],
    now: int,
    stations: dict[str, _Station],
    holds: dict[str, list[tuple[int, str, str, str]]],
    findings: list[Finding],
    notes: _Notes,
    held: Any,
) -> None:
    """Walk one object's entries at one station in log order: its lives, from each
    capture to its deletion, and what each must show."""
    origin, sha = group[0]["origin"], group[0]["sha256"]
    st = stations.setdefault(origin, _Station())
    if len(group) == 2:
        # Most objects: captured, stored once, nothing since. The general walk below
        # gives the same answer, only slower.
        cap, sto = group
        if (
            cap["type"] == "ingest"
            and sto["type"] == "store"
            and sto["role"] in ("original", None)
            and cap["time"] is not None
            and sto["time"] is not None
            and sto["time"] - cap["time"] <= _DAY_US
        ):
            unit = _unit(cap["unit"])
            st.captures += 1
            st.units.add(unit)
            _count_held(st, _target(origin, sha, unit, cap, sto), held)
            return
    captured = any(r["type"] in ("ingest", "sighting") for r in group)
    life: _Life | None = None
    cases: set[str] = set()
    unit = NO_UNIT

    def end(life: _Life, until: int) -> None:
        cap = life.capture
        if cap["time"] is None:
            return  # no time to judge by (the catalog always has one)
        if life.store is None:
            if until - cap["time"] > _DAY_US:
                findings.append(
                    Finding(
                        origin,
                        cap["leaf_index"],
                        sha,
                        NOT_STORED,
                        f"{cap['type']} entry {cap['leaf_index']} captured it "
                        f"{_when(cap['time'])}; no store entry for the original in the bucket "
                        + ("before its deletion" if until != now else "since"),
                        unit,
                    )
                )
            elif until == now:
                st.waiting += 1  # still within its day: not late yet
        elif life.store["time"] is not None and life.store["time"] - cap["time"] > _DAY_US:
            notes.add(
                f"{origin}: {sha} stored {_when(life.store['time'])}, more than a day after "
                f"its capture {_when(cap['time'])} (store entry {life.store['leaf_index']})"
            )

    for r in group:
        ty = r["type"]
        if ty in ("ingest", "sighting"):
            if life is None:
                # A capture: a first ingest, or the same content captured again after its
                # deletion (an ingest, or a sighting when the station did not store it anew).
                life = _Life(r)
                unit = _unit(r["unit"])
                st.captures += 1
                st.units.add(unit)
        elif ty == "store" and r["role"] in ("original", None):
            if not captured:
                findings.append(
                    Finding(
                        origin,
                        r["leaf_index"],
                        sha,
                        STORED_WITHOUT_CAPTURE,
                        f"store entry {r['leaf_index']} ({_when(r['time'])}) names an "
                        "object no ingest or sighting entry of this station captured",
                    )
                )
                captured = True  # one finding per object
            elif life is None:
                notes.add(
                    f"{origin}: {sha} stored again by entry {r['leaf_index']} after its "
                    "deletion, with no new capture"
                )
            else:
                life.store = r
                _later_lock(life, r)
        elif ty == "lock" and life is not None:
            _later_lock(life, r)
        elif ty == "annotate":
            cases.update(r["cases"] or ())
        elif ty == "delete":
            _deletion(origin, sha, r, life, cases, holds.get(origin, []), unit, findings)
            if r["role"] in ("original", None):
                if life is not None:
                    end(life, r["time"] if r["time"] is not None else now)
                    st.deleted += 1
                life = None
    if life is not None:
        end(life, now)
        if life.store is not None:
            _count_held(st, _target(origin, sha, unit, life.capture, life.store), held)


def _target(origin: str, sha: str, unit: str, cap: dict[str, Any], sto: dict[str, Any]) -> Target:
    size = cap["size"] if cap["size"] is not None else sto["size"]
    return Target(
        origin=origin,
        leaf_index=int(cap["leaf_index"]),
        sha256=sha,
        size=int(size or 0),
        unit=unit,
        key=sto["store_key"] or object_key(sha),
        version_id=sto["version_id"] or "",
        store_index=int(sto["leaf_index"]),
    )


def _count_held(st: _Station, t: Target, held: Any) -> None:
    """An object the station holds: counted, and offered to the sample."""
    st.objects += 1
    st.bytes += t.size
    held(t)


def _later_lock(life: _Life, r: dict[str, Any]) -> None:
    ru = r["retain_until"]
    if ru is not None and (life.lock is None or ru > life.lock[0]):
        life.lock = (ru, int(r["leaf_index"]))


def _deletion(
    origin: str,
    sha: str,
    r: dict[str, Any],
    life: _Life | None,
    cases: set[str],
    holds: list[tuple[int, str, str, str]],
    unit: str,
    findings: list[Finding],
) -> None:
    """A `delete` entry must name its rule, come after every retain-until the object was
    given, and find no hold in force on the object or on a case it belongs to."""
    at, when = int(r["leaf_index"]), r["time"]
    why = []
    if not r["rule"]:
        why.append("it names no retention rule")
    ru = r["retain_until"]
    if ru is not None and when is not None and ru > when:
        why.append(f"its own retain-until {_when(ru)} had not passed")
    if life is not None and life.lock is not None and when is not None and life.lock[0] > when:
        why.append(f"entry {life.lock[1]} locked it until {_when(life.lock[0])}")
    if r["role"] in ("original", None):
        hold = _hold_in_force(holds, at, sha, cases)
        if hold is not None:
            why.append(f"hold entry {hold} was in force")
    if why:
        findings.append(
            Finding(
                origin,
                at,
                sha,
                DELETION_NOT_ALLOWED,
                f"delete entry {at} ({_when(when)}, rule {r['rule'] or '(none)'}): "
                + "; ".join(why),
                unit,
            )
        )


def _pick(
    heap: list[tuple[float, int, Target]],
    first: dict[str, tuple[float, int, Target]],
    sample: int,
) -> list[Target]:
    """Each station's first pick (so a budget stop still leaves every station checked),
    then the rest of a uniform sample, both in random order."""
    if sample <= 0:
        return []
    firsts = sorted(first.values())
    if sample <= len(firsts):
        # Fewer objects than stations to check: one object each from random stations.
        return [t for _, _, t in firsts[:sample]]
    chosen = {c for _, c, _ in firsts}
    # The k smallest priorities are a uniform k-sample; topping up the stations' firsts
    # from them keeps the rest uniform.
    rest = sorted((-p, c, t) for p, c, t in heap if c not in chosen)
    rest = rest[: sample - len(firsts)]
    return [t for _, _, t in firsts] + [t for _, _, t in rest]


# -- run (the shell: reads the stores) --------------------------------------------------


@dataclass(frozen=True)
class ObjectCheck:
    target: Target
    status: str  # one of OUTCOMES, or NOT_CHECKED
    detail: str = ""
    bytes_read: int = 0
    seconds: float = 0.0

    @property
    def action(self) -> str:
        return TODO.get(self.status, "")


@dataclass(frozen=True)
class AuditResult:
    plan: AuditPlan
    checks: tuple[ObjectCheck, ...]  # one per target, in the plan's order
    started: datetime
    seconds: float
    stopped_early: bool = False
    stop_reason: str = ""  # "time budget" | "byte budget" | ""
    unreachable: tuple[tuple[str, str], ...] = ()  # (origin, one line), by origin

    @property
    def checked(self) -> tuple[ObjectCheck, ...]:
        return tuple(c for c in self.checks if c.status != NOT_CHECKED)

    @property
    def bytes_read(self) -> int:
        return sum(c.bytes_read for c in self.checks)

    @property
    def failures(self) -> tuple[ObjectCheck, ...]:
        return tuple(c for c in self.checks if c.status in INTEGRITY)

    @property
    def ok(self) -> bool:
        """No object altered or missing, and no completeness finding."""
        return not self.failures and not self.plan.findings

    def counts(self, origin: str | None = None, unit: str | None = None) -> dict[str, int]:
        out = dict.fromkeys((*OUTCOMES, NOT_CHECKED), 0)
        for c in self.checks:
            if (origin is None or c.target.origin == origin) and (
                unit is None or c.target.unit == unit
            ):
                out[c.status] += 1
        return out

    def finding_counts(self, origin: str | None = None, unit: str | None = None) -> dict[str, int]:
        out = dict.fromkeys(FINDINGS, 0)
        for f in self.plan.findings:
            if (origin is None or f.origin == origin) and (unit is None or f.unit == unit):
                out[f.kind] += 1
        return out

    def units(self) -> list[str]:
        """Every unit the audit has something to say about, sorted ("(no unit)" last)."""
        us = {c.target.unit for c in self.checks} | {f.unit for f in self.plan.findings}
        for s in self.plan.stations:
            us.update(s.units)
        return sorted(us, key=lambda u: (u == NO_UNIT, u))

    def failure_lines(self) -> list[dict[str, Any]]:
        """Every integrity failure and completeness finding, by origin and leaf index."""
        out: list[dict[str, Any]] = [
            {
                "what": c.status,
                "origin": c.target.origin,
                "leaf_index": c.target.leaf_index,
                "sha256": c.target.sha256,
                "unit": c.target.unit,
                "detail": c.detail,
            }
            for c in self.failures
        ]
        out += [
            {
                "what": f.kind,
                "origin": f.origin,
                "leaf_index": f.leaf_index,
                "sha256": f.sha256,
                "unit": f.unit,
                "detail": f.detail,
            }
            for f in self.plan.findings
        ]
        out.sort(key=lambda d: (d["origin"], d["leaf_index"], d["what"]))
        return out

    def to_json(self, max_failures: int = 100) -> dict[str, Any]:
        """Counts per station and unit, and the failures (at most ``max_failures``).
        Integers, strings and booleans only, like a ledger entry."""
        fails = self.failure_lines()
        reach = dict(self.unreachable)
        return {
            "ok": self.ok,
            "started": _rfc3339(self.started),
            "as_of": _rfc3339(self.plan.now),
            "seed": str(self.plan.seed),
            "sample": {
                "requested": self.plan.requested,
                "planned": len(self.plan.targets),
                "checked": len(self.checked),
                "population": self.plan.population,
                "bytes": self.bytes_read,
                "ms": int(self.seconds * 1000),
                "stopped_early": self.stopped_early,
                "stop_reason": self.stop_reason,
            },
            "results": self.counts(),
            "completeness": self.finding_counts(),
            "stations": [
                {
                    "origin": s.origin,
                    "size": s.size,
                    "size_verified": s.size_verified,
                    "objects": s.objects,
                    "bytes": s.bytes,
                    "captures": s.captures,
                    "deleted": s.deleted,
                    "waiting": s.waiting,
                    "results": self.counts(origin=s.origin),
                    "completeness": self.finding_counts(origin=s.origin),
                    "unreachable": reach.get(s.origin, ""),
                }
                for s in self.plan.stations
            ],
            "units": [
                {
                    "unit": u,
                    "results": self.counts(unit=u),
                    "completeness": self.finding_counts(unit=u),
                }
                for u in self.units()
            ],
            "failures": fails[:max_failures],
            "failures_total": len(fails),
            "unreachable": [f"{o}: {line}" for o, line in self.unreachable],
        }

    def entry_payload(self, max_bytes: int = 32768) -> dict[str, Any]:
        """The summary for the hub's signed `audit` entry: totals, the stations with
        something to say, and the first failures, within ``max_bytes`` of JSON (entries
        hold at most 65,535 bytes). The reports hold the rest."""
        full = self.to_json()
        fails = [
            f"{d['what']} {d['origin']}#{d['leaf_index']} {d['sha256']}"[:300]
            for d in full["failures"]
        ]
        bad = [
            s["origin"]
            for s in full["stations"]
            if s["unreachable"]
            or any(s["results"][k] for k in (ALTERED, MISSING, UNREADABLE, UNREACHABLE))
            or any(s["completeness"].values())
        ]
        out: dict[str, Any] = {
            "ok": full["ok"],
            "as_of": full["as_of"],
            "seed": full["seed"],
            "sample": full["sample"],
            "results": full["results"],
            "completeness": full["completeness"],
            "stations": len(full["stations"]),
            "units": len(full["units"]),
            "stations_with_problems": bad,
            "failures": fails,
            "failures_total": full["failures_total"],
            "unreachable": [u[:300] for u in full["unreachable"]],
        }
        for key in ("failures", "stations_with_problems", "unreachable"):
            while len(json.dumps(out, ensure_ascii=False).encode()) > max_bytes and out[key]:
                out[key] = out[key][: len(out[key]) // 2]
        return out


def _rfc3339(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def run_audit(
    plan: AuditPlan,
    stores: Mapping[str, ObjectStore],
    max_seconds: float | None = None,
    max_bytes: int | None = None,
    threads: int = 4,
    chunk: int = 1 << 20,
) -> AuditResult:
    """Read back each sampled object from its station's store and hash it (constant
    memory), until the sample is done or a budget runs out.

    ``stores``: by origin; a station without one is ``unreachable``. ``max_seconds``:
    wall time; an object still being read when it runs out is left unchecked.
    ``max_bytes``: bytes to read; an object that would go past it is not started.
    """
    started = datetime.now(UTC)
    t0 = time.monotonic()
    lock = threading.Lock()
    state: dict[str, Any] = {"reserved": 0, "stop": ""}
    unreachable: dict[str, str] = {}

    def over_time() -> bool:
        return max_seconds is not None and time.monotonic() - t0 > max_seconds

    def check(t: Target) -> ObjectCheck:
        with lock:
            if not state["stop"] and over_time():
                state["stop"] = "time budget"
            if (
                not state["stop"]
                and max_bytes is not None
                and state["reserved"] + t.size > max_bytes
            ):
                state["stop"] = "byte budget"
            if state["stop"]:
                return ObjectCheck(t, NOT_CHECKED, f"not reached: the {state['stop']} ran out")
            if t.origin in unreachable:
                return ObjectCheck(t, UNREACHABLE, "not tried: " + unreachable[t.origin])
            state["reserved"] += t.size
        store = stores.get(t.origin)
        if store is None:
            with lock:
                unreachable.setdefault(t.origin, "no store configured for this station")
            return ObjectCheck(t, UNREACHABLE, "no store configured for this station")
        s0 = time.monotonic()
        h = hashlib.sha256()
        n = 0
        try:
            it = store.get(t.key, chunk)
            try:
                for part in it:
                    h.update(part)
                    n += len(part)
                    if over_time():
                        with lock:
                            state["stop"] = state["stop"] or "time budget"
                        return ObjectCheck(
                            t, NOT_CHECKED, "left unfinished: the time budget ran out", n
                        )
            finally:
                close = getattr(it, "close", None)
                if close is not None:
                    close()
        except NotFound:
            return _done(t, MISSING, f"nothing under {t.key}", n, s0)
        except RestoreRequired as e:
            return _done(t, UNREADABLE, f"{e} (a cold storage class; not a failure)", n, s0)
        except StoreUnavailable as e:
            line = str(e).split("\n")[0]
            with lock:
                unreachable.setdefault(t.origin, line)
            return _done(t, UNREACHABLE, line, n, s0)
        except Exception as e:  # any other store error: said, and the audit goes on
            return _done(t, UNREADABLE, f"{type(e).__name__}: {e}".split("\n")[0], n, s0)
        got = h.hexdigest()
        if got == t.sha256 and n == t.size:
            return _done(t, OK, "", n, s0)
        detail = f"reads as {got} ({n} bytes); signed {t.sha256} ({t.size} bytes)" + (
            f"; the signed version id is {t.version_id}" if t.version_id else ""
        )
        return _done(t, ALTERED, detail, n, s0)

    with ThreadPoolExecutor(max(1, threads), thread_name_prefix="audit") as pool:
        checks = tuple(pool.map(check, plan.targets))
    return AuditResult(
        plan=plan,
        checks=checks,
        started=started,
        seconds=time.monotonic() - t0,
        stopped_early=bool(state["stop"]),
        stop_reason=state["stop"],
        unreachable=tuple(sorted(unreachable.items())),
    )


def _done(t: Target, status: str, detail: str, n: int, s0: float) -> ObjectCheck:
    return ObjectCheck(t, status, detail, n, round(time.monotonic() - s0, 4))


__all__ = [
    "AUDIT_TYPES",
    "FINDINGS",
    "NO_UNIT",
    "OUTCOMES",
    "AuditPlan",
    "AuditResult",
    "Finding",
    "ObjectCheck",
    "StationPlan",
    "Target",
    "plan_audit",
    "run_audit",
]
