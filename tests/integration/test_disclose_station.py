"""`custody disclose` on a real station: the figures match a count made here by hand
from what the test did (captures of ffmpeg-made recordings named as GA/T 947 recorders
name them, annotations, holds, exports, an audit, deletions by rule after a jump of 200
days of the sweeper's clock), no file of the publication holds an officer number,
recorder serial, file name, case number, footage hash or path, small counts are
withheld, and bad input is one line with exit 2.

Recording months go by the start in the file name read in Asia/Shanghai (the dock's
zone and the rules'); holds, exports and deletions by their entries' time."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from retention.plan import DAY

from ..conftest import make_clip, run_cli
from .daemon import entries, make_station
from .test_fingerprints import sha
from .test_retention import sweep_at

SH = ZoneInfo("Asia/Shanghai")
U1, U2 = "530822000000", "530822111111"  # slot01, slot02; slot03 has no unit
OFFICERS = {"slot01": "010203", "slot02": "040506", "slot03": "070809"}
SERIALS = {"slot01": "XYZ1234", "slot02": "QRS5678", "slot03": "MNP9012"}
UNITS = {"slot01": U1, "slot02": U2, "slot03": ""}
CASE_A = "2026-行政处罚-0042"  # recordings in both units
CASE_B = "2026-行政检查-0007"
CASE_C = "2026-行政强制-0113"
CODES = {"XZCF": "行政处罚", "XZXK": "行政许可", "XZJC": "行政检查", "XZQZ": "行政强制"}
KEYS = {
    "XZCF": "administrative_penalty",
    "XZXK": "licensing",
    "XZJC": "inspection",
    "XZQZ": "coercive_measure",
    "": "other",
}
PEN, LIC, INS, OTH = "administrative_penalty", "licensing", "inspection", "other"
CATEGORIES: tuple[str, ...] = ("licensing", "administrative_penalty", "coercive_measure")
CATEGORIES += ("expropriation", "inspection", "other")
FIGURES = ("recordings", "hours", "cases", "evidence", "deletions", "holds", "exports")
COUNTS = tuple(f for f in FIGURES if f != "hours")
PATTERN = (
    "regex = '^(?P<serial>[A-Z0-9]{7})_(?P<officer>[0-9]{6})_(?P<start>[0-9]{14})"
    "(?:_(?P<category>[A-Z]{4}))?(?P<important>_IMP)?'"
)
POLICY = """
[[rules]]
name = "case"
match = { case = true }
keep = "permanent"

[[rules]]
name = "important"
match = { important = true }
keep = "permanent"

[[rules]]
name = "ordinary"
keep_days = 180
"""
REASONS = ("complaint about the stop 投诉", "court asked 法院调取", "appeal review 复议")


@dataclass
class Rec:
    """One recording as the test made it, and what the test did to it."""

    name: str  # r1, r2, ... (the test's own label)
    slot: str
    start: datetime  # local (Asia/Shanghai) start written in the file name
    code: str  # category code in the file name ("" = none)
    important_in_name: bool = False
    seconds: int = 2
    category: str = ""  # after annotation ("" = as the name says)
    important: bool = False  # marked with annotate --important
    cases: set[str] = field(default_factory=set)
    derived: bool = False
    held: bool = False
    sha: str = ""
    file: str = ""
    ms: int = 0  # its duration as probed

    @property
    def unit(self) -> str:
        return UNITS[self.slot]

    @property
    def cat(self) -> str:
        return self.category or KEYS[self.code]

    @property
    def evidence(self) -> bool:
        return bool(self.cases) or self.important or self.important_in_name

    @property
    def month(self) -> str:
        return self.start.strftime("%Y-%m")

    @property
    def kept(self) -> bool:
        """Kept past 180 days by the policy (case, important) or a hold."""
        return self.evidence or self.held


@dataclass(frozen=True)
class Event:
    figure: str  # holds, exports, deletions
    time: datetime  # the entry's time (UTC)
    cells: frozenset[tuple[str, str]]  # (unit, category) it counts in
    entry: int


@dataclass
class Station:
    conf: Path
    dock: Path
    recs: list[Rec]
    events: list[Event]
    year: int  # the local year the test runs in
    now: float

    def month_of(self, figure: str) -> str:
        """The local month the test's entries of ``figure`` were made in."""
        (month,) = {
            e.time.astimezone(SH).strftime("%Y-%m") for e in self.events if e.figure == figure
        }
        return month


def _recordings(year: int) -> list[Rec]:
    y, p = year, year - 1

    def at(yy: int, mo: int, d: int, h: int, mi: int = 0) -> datetime:
        return datetime(yy, mo, d, h, mi, tzinfo=SH)

    return [
        # Six recordings of unit 1 in one cell (administrative penalty, January): r4 is
        # annotated to inspection, leaving r1-r3 and r5-r7.
        Rec("r1", "slot01", at(y, 1, 5, 8), "XZCF", cases={CASE_A}),
        Rec("r2", "slot01", at(y, 1, 6, 9), "XZCF", cases={CASE_B}, important=True),
        Rec("r3", "slot01", at(y, 1, 7, 10), "XZCF", important_in_name=True),
        Rec("r4", "slot01", at(y, 1, 8, 11), "XZCF", category=INS),
        Rec("r5", "slot01", at(y, 1, 9, 12), "XZCF", derived=True),
        Rec("r6", "slot01", at(y, 1, 10, 13), "XZCF"),
        Rec("r7", "slot01", at(y, 1, 11, 14), "XZCF"),
        Rec("r8", "slot01", at(y, 1, 12, 15), "XZCF"),
        # 00:30 on 1 January in Shanghai is 16:30 UTC on 31 December: January's.
        Rec("r9", "slot01", at(y, 1, 1, 0, 30), "XZXK"),
        # 23:30 on 31 December: the year before's.
        Rec("r10", "slot01", at(p, 12, 31, 23, 30), "XZXK"),
        Rec("r11", "slot02", at(y, 1, 5, 15), "XZCF", cases={CASE_A}),
        Rec("r15", "slot02", at(y, 1, 6, 16), "XZCF", cases={CASE_C}),
        Rec("r12", "slot02", at(p, 6, 15, 10), "XZJC", seconds=400, derived=True),
        Rec("r13", "slot02", at(p, 6, 16, 10), "", held=True),
        Rec("r14", "slot03", at(p, 7, 1, 9), "XZQZ"),
    ]


def _file_name(r: Rec) -> str:
    parts = [SERIALS[r.slot], OFFICERS[r.slot], r.start.strftime("%Y%m%d%H%M%S")]
    if r.code:
        parts.append(r.code)
    return "_".join(parts) + ("_IMP" if r.important_in_name else "") + ".mp4"


def _long_clip(ffmpeg: str, out: Path, seconds: int, tone: int) -> Path:
    """A long recording made small: one frame a second, thin audio."""
    out.parent.mkdir(parents=True, exist_ok=True)
    src = [
        "-f",
        "lavfi",
        "-i",
        f"testsrc=size=64x48:rate=1:duration={seconds}",
        "-f",
        "lavfi",
        "-i",
        f"sine=frequency={tone}:duration={seconds}:sample_rate=8000",
    ]
    enc = ["-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-b:a", "8k", "-ac", "1"]
    cmd = [ffmpeg, "-v", "error", "-y", *src, *enc, "-shortest", str(out)]
    subprocess.run(cmd, check=True, timeout=120)
    return out


def _configure(conf: Path) -> None:
    text = conf.read_text()
    codes = ", ".join(f'{k} = "{v}"' for k, v in CODES.items())
    text = text.replace(
        "[[docks.patterns]]",
        f'timezone = "Asia/Shanghai"\ncategory_map = {{ {codes} }}\n[[docks.patterns]]',
        1,
    )
    conf.write_text(
        "\n".join(PATTERN if ln.startswith("regex = ") else ln for ln in text.split("\n"))
    )


def _json(p: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(p.stdout)
    return doc


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def log(conf: Path) -> list[dict[str, Any]]:
    """Every entry of the station's ledger with its index."""
    return [{"index": i, **e} for i, e in enumerate(entries(conf))]


def build_station(tmp: Path, ffmpeg: str) -> Station:
    dock = tmp / "dock"
    cold = tmp / "cold"
    extra = (
        f'[docks.recorders.slot02]\nunit = "{U2}"\n'
        f'\n[store]\nkind = "local"\npath = "{cold}"\nretain_days = 1\n'
    )
    conf = make_station(tmp, dock, extra=extra)
    _configure(conf)
    year = datetime.now(SH).year
    recs = _recordings(year)
    for i, r in enumerate(recs):
        r.file = _file_name(r)
        out = dock / r.slot / r.file
        if r.seconds > 10:
            _long_clip(ffmpeg, out, r.seconds, 200 + 37 * i)
        else:
            make_clip(ffmpeg, out, seconds=r.seconds, tone=200 + 37 * i, size="96x64")
        r.sha = sha(out)
    assert len({r.sha for r in recs}) == len(recs)
    run_cli("ingest", str(dock), "--settle-ms", "0", config=conf)
    policy = tmp / "policy.toml"
    policy.write_text(POLICY)
    run_cli("retention", "apply", "--policy", str(policy), config=conf)
    run_cli("derive", *[r.sha for r in recs if r.derived], config=conf)
    for r in recs:
        if r.category:  # first to another category: the latest annotation decides
            run_cli(
                "annotate", r.sha, "--category", "行政强制", "--reason", REASONS[0], config=conf
            )
        args = []
        for c in sorted(r.cases):
            args += ["--case", c]
        if r.important:
            args.append("--important")
        if r.category:
            args += ["--category", {INS: "行政检查"}[r.category]]
        if args:
            run_cli("annotate", r.sha, *args, "--reason", REASONS[0], config=conf)
    events: list[Event] = []

    def entry_time(index: int) -> datetime:
        (e,) = [e for e in log(conf) if e["index"] == index]
        return _utc(e["time"])

    def cells(rs: Iterable[Rec]) -> frozenset[tuple[str, str]]:
        return frozenset((r.unit, r.cat) for r in rs)

    # A hold of one recording, a hold of a case with recordings in two units.
    held = [r for r in recs if r.held]
    for r in held:
        i = _json(run_cli("hold", r.sha, "--reason", REASONS[0], "--json", config=conf))["entry"]
        events.append(Event("holds", entry_time(i), cells([r]), i))
    h = _json(run_cli("hold", "--case", CASE_A, "--reason", REASONS[2], "--json", config=conf))
    case_a = [r for r in recs if CASE_A in r.cases]
    events.append(Event("holds", entry_time(h["entry"]), cells(case_a), h["entry"]))
    # An export of a case, and one of named recordings (no case: unit "", other).
    for args, rs in (
        (["--case", CASE_B], [r for r in recs if CASE_B in r.cases]),
        ([by_name(recs, "r14").sha], []),
    ):
        out = tmp / f"export-{len(events)}"
        e = _json(
            run_cli(
                "export", *args, "--out", str(out), "--purpose", REASONS[1], "--json", config=conf
            )
        )
        n = e["export_entry"]
        events.append(
            Event("exports", entry_time(n), cells(rs) if rs else frozenset({("", OTH)}), n)
        )
    # An audit before the deletions.
    run_cli("audit", "--full", "--json", config=conf)
    # Day 200 of the sweeper's clock: every original neither in a case, nor important,
    # nor held is deleted by its rule (180 days), with the access copies and posters
    # made of them. (The ledger stamps the delete entries with the station's own clock.)
    now = time.time()
    res = sweep_at(conf, now + 200 * DAY, accept_clock=True)
    assert not res.refused and not res.failed, res
    deleted = {e["sha256"]: e for e in log(conf) if e["type"] == "delete"}
    originals = {s: e for s, e in deleted.items() if e.get("role") != "derivative"}
    assert set(originals) == {r.sha for r in recs if not r.kept}
    assert any(e.get("role") == "derivative" for e in deleted.values())
    for r in recs:
        if r.sha in originals:
            e = originals[r.sha]
            events.append(Event("deletions", _utc(e["time"]), cells([r]), e["index"]))
    # Durations as the station probed them.
    for e in log(conf):
        if e["type"] == "probe":
            for r in recs:
                if r.sha == e["sha256"]:
                    r.ms = max(r.ms, int(e["summary"]["duration_ms"]))
    assert all(r.ms > 0 for r in recs)
    assert by_name(recs, "r12").ms >= 399_000
    return Station(conf, dock, recs, events, year, now)


def by_name(recs: list[Rec], name: str) -> Rec:
    return next(r for r in recs if r.name == name)


@pytest.fixture(scope="module")
def station(tmp_path_factory: pytest.TempPathFactory, ffmpeg: str) -> Iterator[Station]:
    yield build_station(tmp_path_factory.mktemp("disclose"), ffmpeg)


# ---- the count by hand --------------------------------------------------------------

Key = tuple[str | None, str | None, str | None]


def _levels(unit: str, cat: str, month: str) -> list[Key]:
    """The published keys a cell adds to: itself, its period total, the all-unit ones."""
    return [
        (unit, cat, month),
        (unit, cat, None),
        (None, cat, month),
        (None, cat, None),
        (None, None, month),
        (None, None, None),
    ]


@dataclass
class Count:
    n: dict[str, dict[Key, int]] = field(default_factory=dict)
    ms: dict[Key, int] = field(default_factory=dict)


def hand_count(st: Station, months: tuple[str, ...]) -> Count:
    """What the publication of ``months`` must say, from what the test did."""
    c = Count({f: {} for f in COUNTS})
    cases: dict[Key, set[str]] = {}
    ids: dict[str, dict[Key, set[int]]] = {f: {} for f in ("holds", "exports", "deletions")}
    for r in st.recs:
        if r.month not in months:
            continue
        for k in _levels(r.unit, r.cat, r.month):
            c.n["recordings"][k] = c.n["recordings"].get(k, 0) + 1
            c.n["evidence"][k] = c.n["evidence"].get(k, 0) + int(r.evidence)
            c.ms[k] = c.ms.get(k, 0) + r.ms
            cases.setdefault(k, set()).update(r.cases)
    for k, v in cases.items():
        c.n["cases"][k] = len(v)
    for e in st.events:
        m = e.time.astimezone(SH).strftime("%Y-%m")
        if m not in months:
            continue
        for unit, cat in e.cells:
            for k in _levels(unit, cat, m):
                ids[e.figure].setdefault(k, set()).add(e.entry)
    for f, by in ids.items():
        c.n[f] = {k: len(v) for k, v in by.items()}
    return c


def hours(ms: int) -> str:
    return str((Decimal(ms) / 3_600_000).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


def published(doc: Mapping[str, Any]) -> dict[Key, Mapping[str, Any]]:
    """data.json's rows and totals by key; a year's own rows have month None (a month's
    publication has the month alone)."""
    label = doc["period"]
    out: dict[Key, Mapping[str, Any]] = {}
    rows = [(r["unit"], r) for r in doc["rows"]] + [(None, r) for r in doc["totals"]]
    for unit, r in rows:
        m = None if len(label) == 4 and r["month"] == label else r["month"]
        k: Key = (unit, r["category"] or None, m)
        assert k not in out, f"two rows for {k}"
        out[k] = r
    return out


def _periods(months: list[str]) -> list[str | None]:
    return [*months, None] if len(months) > 1 else list(months)


def check(doc: Mapping[str, Any], want: Count) -> int:
    """Every figure of every row and total against the hand count; returns how many
    non-zero counts were compared exactly (the rest withheld)."""
    threshold = doc["threshold"]
    small = f"<{threshold}"
    months = doc["months"]
    units = [u["code"] for u in doc["units"]]
    keys: list[Key] = [(u, c, m) for u in units for c in CATEGORIES for m in _periods(months)]
    keys += [(None, c, m) for c in [*CATEGORIES, None] for m in _periods(months)]
    shown = published(doc)
    assert set(shown) == set(keys), set(shown) ^ set(keys)
    exact = 0
    for k in keys:
        row = shown[k]
        for f in COUNTS:
            v, n = row[f], want.n[f].get(k, 0)
            where = f"{f} of {k}: shown {v!r}, counted {n}"
            if isinstance(v, int):
                assert v == n, where
                exact += n > 0
            elif v == small:
                assert 1 <= n < threshold, where
            else:
                # Withheld only so that a small count elsewhere cannot be worked out.
                assert v == "x" and n >= threshold, where
            if 1 <= n < threshold:
                assert v == small, where
        withheld = isinstance(row["recordings"], str)
        assert row["hours"] == (None if withheld else hours(want.ms.get(k, 0))), (k, row)
    return exact


def no_total_gives_one_away(doc: Mapping[str, Any]) -> None:
    """No published total and its parts leave exactly one figure withheld (it would be
    the total minus the others). At threshold 2 nothing is withheld around a "<2",
    which says 1 by itself."""
    if doc["threshold"] <= 2:
        return
    shown = published(doc)
    months = doc["months"]
    units = [u["code"] for u in doc["units"]]
    several = len(months) > 1
    groups: list[tuple[Key, list[Key]]] = []
    for c in CATEGORIES:
        for m in months:
            groups.append(((None, c, m), [(u, c, m) for u in units]))
        if several:
            for u in units:
                groups.append(((u, c, None), [(u, c, m) for m in months]))
            groups.append(((None, c, None), [(u, c, None) for u in units]))
            groups.append(((None, c, None), [(None, c, m) for m in months]))
    for m in months:
        groups.append(((None, None, m), [(None, c, m) for c in CATEGORIES]))
    if several:
        groups.append(((None, None, None), [(None, None, m) for m in months]))
        groups.append(((None, None, None), [(None, c, None) for c in CATEGORIES]))
    for f in COUNTS:
        for total, parts in groups:
            hidden = [k for k in (total, *parts) if isinstance(shown[k][f], str)]
            assert len(hidden) != 1, (f, total, hidden)


def disclose(
    st: Station, out: Path, period: str, rules: Path | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    args = ["disclose", "--out", str(out), "--period", period, "--json"]
    if rules is not None:
        args += ["--rules", str(rules)]
    return run_cli(*args, config=st.conf, check=check)


def data_of(out: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((out / "data.json").read_text(encoding="utf-8"))
    return doc


def rules_file(tmp: Path, text: str) -> Path:
    p = tmp / f"rules-{abs(hash(text))}.toml"
    p.write_text(text, encoding="utf-8")
    return p


# ---- the tests ----------------------------------------------------------------------


def test_the_year_matches_the_hand_count(station: Station, tmp_path: Path) -> None:
    y = str(station.year)
    months = tuple(f"{y}-{m:02d}" for m in range(1, 13))
    want = hand_count(station, months)
    # The hand count itself, where it matters: seven recordings of unit 1 in January
    # under administrative penalty (r4 annotated away), ten in the year; r9 (16:30 UTC
    # on 31 December) in January, r10 (15:30 UTC) not in the year at all.
    jan = f"{y}-01"
    assert want.n["recordings"][(U1, PEN, jan)] == 7
    assert want.n["recordings"][(U1, LIC, jan)] == 1
    assert want.n["recordings"][(None, None, None)] == 11
    assert want.n["cases"][(None, PEN, jan)] == 3  # CASE_A in two units counts once
    assert want.n["deletions"][(None, None, None)] == 9
    assert want.n["holds"][(None, None, None)] == 2
    assert want.n["exports"][(None, None, None)] == 2

    out = tmp_path / "year"
    res = json.loads(disclose(station, out, y).stdout)
    doc = data_of(out)
    assert (doc["period"], doc["scope"], doc["threshold"]) == (y, "station", 5)
    assert doc["timezone"] == "Asia/Shanghai" and doc["months"] == list(months)
    assert doc["complete"] is False  # the year is not over
    assert doc["units"] == [
        {"code": U1, "name": U1},
        {"code": U2, "name": U2},
        {"code": "", "name": "未标明单位 unit not recorded"},
    ]
    assert check(doc, want) >= 8
    no_total_gives_one_away(doc)
    rows = published(doc)
    # Unit 2's two penalty recordings of January are "<5"; beside them in the all-unit
    # total of 9, unit 1's 7 would give them away, so the 7 is withheld too (and, as
    # unit 1's year of penalties is that same 7, what pins it down in turn).
    assert rows[(U2, PEN, jan)]["recordings"] == "<5"
    assert rows[(U1, PEN, jan)]["recordings"] == "x"
    assert rows[(None, None, None)]["recordings"] == 11
    assert rows[(None, None, None)]["deletions"] == 9
    assert res["totals"]["all"]["recordings"] == 11 and res["period"] == y

    # With a threshold of 2 only counts of 1 are withheld: nearly every figure exact.
    two = rules_file(tmp_path, f'threshold = 2\n[units]\n"{U1}" = "交警大队"\n')
    out2 = tmp_path / "year-2"
    disclose(station, out2, y, two)
    doc2 = data_of(out2)
    assert doc2["threshold"] == 2 and doc2["units"][0] == {"code": U1, "name": "交警大队"}
    assert check(doc2, want) >= 30
    no_total_gives_one_away(doc2)
    rows2 = published(doc2)
    assert rows2[(U1, PEN, jan)]["recordings"] == 7
    assert rows2[(U2, PEN, jan)]["recordings"] == 2
    assert rows2[(None, PEN, jan)]["cases"] == 3
    assert rows2[(U1, PEN, jan)]["evidence"] == 3  # r1 and r2 (cases, important), r3 (_IMP)

    # The audit: one in the month it ran, every object checked, no failure.
    (fixity,) = [e for e in log(station.conf) if e["type"] == "fixity"]
    month = _utc(fixity["time"]).astimezone(SH).strftime("%Y-%m")
    assert [a for a in doc["audits"] if a["audits"]] == [
        {"month": month, "audits": 1, "objects_checked": fixity["objects_checked"], "failures": 0}
    ]
    assert fixity["objects_checked"] >= len(station.recs)


def test_the_year_before_and_single_months_match_the_hand_count(
    station: Station, tmp_path: Path
) -> None:
    prev = str(station.year - 1)
    two = rules_file(tmp_path, "threshold = 2\n")
    out = tmp_path / "prev"
    disclose(station, out, prev, two)
    want = hand_count(station, tuple(f"{prev}-{m:02d}" for m in range(1, 13)))
    # r10 (December), r12 (inspection, 400 s), r13, r14; nothing was held, exported or
    # deleted in that year.
    assert want.n["recordings"][(None, None, None)] == 4
    assert want.n["recordings"][(U1, LIC, f"{prev}-12")] == 1
    assert want.n["deletions"] == {} and want.n["holds"] == {}
    doc = data_of(out)
    assert doc["complete"] is True
    assert check(doc, want) >= 2  # single recordings: withheld but for the totals
    assert published(doc)[(U2, INS, None)]["hours"] is None  # one recording: withheld
    assert published(doc)[(None, None, None)]["hours"] == hours(want.ms[(None, None, None)])
    assert hours(want.ms[(None, None, None)]) != "0.0"  # the 400-second recording

    jan = f"{station.year}-01"
    for month in sorted({jan, station.month_of("deletions")}):
        o = tmp_path / f"month-{month}"
        disclose(station, o, month, two)
        d = data_of(o)
        assert d["months"] == [month] and d["period"] == month
        w = hand_count(station, (month,))
        assert check(d, w) >= 3
        no_total_gives_one_away(d)
    d = data_of(tmp_path / f"month-{jan}")
    assert published(d)[(U1, PEN, jan)]["recordings"] == 7
    assert (U1, PEN, None) not in published(d)  # the month is the period


def _hex64(v: Any) -> Iterator[str]:
    if isinstance(v, str):
        yield from re.findall(r"(?<![0-9a-f])[0-9a-f]{64}(?![0-9a-f])", v)
    elif isinstance(v, Mapping):
        for x in v.values():
            yield from _hex64(x)
    elif isinstance(v, list):
        for x in v:
            yield from _hex64(x)


def personal_data(st: Station) -> tuple[dict[str, str], set[str]]:
    """What must never be published, with what it is: ``(strings, short numbers)``;
    the short numbers (officer numbers) are looked for outside hex runs."""
    found: dict[str, str] = {}
    numbers: set[str] = set(OFFICERS.values())
    for serial in SERIALS.values():
        found[serial] = "recorder serial"
    for r in st.recs:
        found[r.file] = "file name"
        found[Path(r.file).stem] = "file name stem"
    rows = json.loads(run_cli("find", "--json", "--deleted", config=st.conf).stdout)
    assert {r["sha256"] for r in rows} == {r.sha for r in st.recs}
    for row in rows:
        found[row["file_name"]] = "file name"
        found[Path(row["file_name"]).stem] = "file name stem"
        found[row["recorder"]] = "recorder serial"
        numbers.add(row["officer"])
        for c in row["cases"]:
            found[c] = "case number"
    for c in (CASE_A, CASE_B, CASE_C):
        found[c] = "case number"
    hashes: set[str] = set()
    for e in log(st.conf):
        if e["type"] == "disclose":  # the publications' own entries
            continue
        hashes.update(_hex64(e))
    # Every original's and derivative's hash is among them (and more: policies, bags).
    assert {r.sha for r in st.recs} <= hashes
    derived = {e["output"]["sha256"] for e in log(st.conf) if e["type"] == "derive"}
    assert derived and derived <= hashes
    for h in hashes:
        raw = bytes.fromhex(h)
        found[h] = "SHA-256"
        found[h.upper()] = "SHA-256 (upper case)"
        found[base64.b64encode(raw).decode()] = "SHA-256 (base64)"
        found[base64.b64encode(raw).decode().rstrip("=")] = "SHA-256 (base64)"
        found[base64.urlsafe_b64encode(raw).decode().rstrip("=")] = "SHA-256 (base64url)"
    data = st.conf.parent
    for path, what in ((st.dock, "dock path"), (data, "data_dir path")):
        found[str(path)] = what
        found[str(path.resolve())] = what
    for reason in REASONS:
        found[reason] = "free text of a hold, annotation or export"
    return found, numbers


def scan(folder: Path, found: Mapping[str, str], numbers: Iterable[str]) -> int:
    """Every file of the publication, as bytes and as UTF-8 text; returns the count."""
    files = [p for p in sorted(folder.rglob("*")) if p.is_file()]
    scanned = set()
    for p in files:
        rel = p.relative_to(folder).as_posix()
        raw = p.read_bytes()
        text = raw.decode("utf-8")  # every published file is UTF-8 text
        for s, what in found.items():
            assert s.encode() not in raw, f"{rel} holds a {what}: {s}"
            assert s not in text, f"{rel} holds a {what}: {s}"
            assert s not in rel, f"a file name holds a {what}: {s}"
        # Officer numbers are six digits: outside the hex of hashes (the MANIFEST's, the
        # entry's), where six digits can occur by chance.
        bare = re.sub(r"[0-9a-fA-F]{64}", "", text)
        for n in numbers:
            assert n not in bare, f"{rel} holds an officer number: {n}"
        scanned.add(rel)
    return len(scanned)


def test_no_file_of_the_publication_holds_personal_data(station: Station, tmp_path: Path) -> None:
    found, numbers = personal_data(station)
    assert len(found) > 100
    names = tmp_path / "rules.toml"
    names.write_text(f'[units]\n"{U1}" = "勐海县公安局交通警察大队"\n', encoding="utf-8")
    for period, rules in ((str(station.year), None), (f"{station.year}-01", names)):
        out = tmp_path / f"pub-{period}"
        disclose(station, out, period, rules)
        n = scan(out, found, numbers)
        assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
            "MANIFEST",
            "audits.csv",
            "data.csv",
            "data.json",
            "disclose.entry",
            "disclose.tlog-proof",
            "index.html",
            "logs/01/checkpoint",
            "logs/01/vkey",
            "publisher.vkey",
            "style.css",
            "witnesses.txt",
        ]
        assert n == 12
    # The scan finds what it looks for: a copy of the page with a file name in it fails.
    out = tmp_path / f"pub-{station.year}"
    bad = tmp_path / "bad"
    bad.mkdir()
    leak = station.recs[0].file
    (bad / "index.html").write_text((out / "index.html").read_text() + leak)
    with pytest.raises(AssertionError, match=r"holds a (recorder serial|file name)"):
        scan(bad, found, numbers)
    (bad / "index.html").write_text(f"<p>{station.recs[0].sha.upper()}</p>")
    with pytest.raises(AssertionError, match="SHA-256"):
        scan(bad, found, numbers)
    (bad / "index.html").write_text(f"<p>警号 {OFFICERS['slot02']}</p>")
    with pytest.raises(AssertionError, match="officer number"):
        scan(bad, found, numbers)


def test_small_counts_are_withheld_by_the_rules_threshold(station: Station, tmp_path: Path) -> None:
    # The deletions' month: four of unit 1's penalty recordings (r5-r8) and its two
    # licensing ones (r9, r10) went; January: unit 2's two penalty recordings.
    month = station.month_of("deletions")
    jan = f"{station.year}-01"
    shown: dict[tuple[str, int], dict[Key, Mapping[str, Any]]] = {}
    for period in sorted({month, jan}):
        want = hand_count(station, (period,))
        for t in (5, 3):
            out = tmp_path / f"{period}-t{t}"
            rules = None if t == 5 else rules_file(tmp_path, f"threshold = {t}\n")
            disclose(station, out, period, rules)
            doc = data_of(out)
            assert doc["threshold"] == t
            check(doc, want)
            no_total_gives_one_away(doc)
            shown[(period, t)] = published(doc)
            html = (out / "index.html").read_text(encoding="utf-8")
            assert f"&lt;{t}" in html
    assert hand_count(station, (month,)).n["deletions"][(U1, PEN, month)] == 4
    assert hand_count(station, (month,)).n["deletions"][(U1, LIC, month)] == 2
    assert shown[(month, 5)][(U1, PEN, month)]["deletions"] == "<5"
    assert shown[(month, 3)][(U1, PEN, month)]["deletions"] == 4
    assert shown[(month, 5)][(U1, LIC, month)]["deletions"] == "<5"
    assert shown[(month, 3)][(U1, LIC, month)]["deletions"] == "<3"
    assert shown[(month, 3)][(None, None, month)]["deletions"] == 9
    assert hand_count(station, (jan,)).n["recordings"][(U2, PEN, jan)] == 2
    assert shown[(jan, 5)][(U2, PEN, jan)]["recordings"] == "<5"
    assert shown[(jan, 5)][(U2, PEN, jan)]["hours"] is None
    assert shown[(jan, 3)][(U2, PEN, jan)]["recordings"] == "<3"
    csv_text = (tmp_path / f"{jan}-t3" / "data.csv").read_text(encoding="utf-8-sig")
    assert f"{U2},{U2},administrative_penalty,行政处罚,{jan},<3,," in csv_text


def _one_line_error(p: subprocess.CompletedProcess[str], *words: str) -> None:
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert "Traceback" not in p.stderr and p.stdout == ""
    for w in words:
        assert w in lines[0], lines[0]


def test_bad_input_is_one_line_and_exit_2(station: Station, tmp_path: Path) -> None:
    before = len(entries(station.conf))
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "index.html").write_text("someone else's page")
    _one_line_error(disclose(station, taken, str(station.year), check=False), str(taken))
    assert [p.name for p in taken.iterdir()] == ["index.html"]
    _one_line_error(disclose(station, tmp_path / "a", "2099", check=False), "2099")
    _one_line_error(disclose(station, tmp_path / "b", "garbage", check=False), "garbage")
    _one_line_error(disclose(station, tmp_path / "c", "2026-13", check=False), "2026-13")
    for text, key in (
        ("threshold = 1\n", "threshold"),
        ('threshold = "5"\n', "threshold"),
        ("thresold = 5\n", "thresold"),
        ('timezone = "Mars/Olympus_Mons"\n', "timezone"),
        ('[units]\n"530822000000" = "交警\\n大队"\n', "units.530822000000"),
        ("threshold = \n", "not valid TOML"),
    ):
        rules = rules_file(tmp_path, text)
        p = disclose(station, tmp_path / "d", str(station.year), rules, check=False)
        _one_line_error(p, key, str(rules))
    _one_line_error(
        disclose(station, tmp_path / "e", str(station.year), tmp_path / "none.toml", check=False),
        "none.toml",
    )
    p = run_cli(
        "disclose",
        *("--out", str(tmp_path / "f"), "--period", str(station.year)),
        *("--operator", "root\nforged line"),
        config=station.conf,
        check=False,
    )
    _one_line_error(p, "operator")
    # Inside a dock it would be captured as footage; inside the ledger or store, mixed
    # with evidence.
    for inside, said in (
        (station.dock / "pub", "dock"),
        (station.conf.parent / "ledger" / "pub", "ledger"),
    ):
        _one_line_error(disclose(station, inside, str(station.year), check=False), said)
        assert not inside.exists()
    for name in "abcdef":
        assert not (tmp_path / name).exists()
        assert not (tmp_path / f"{name}.partial").exists()
    assert len(entries(station.conf)) == before  # nothing signed
