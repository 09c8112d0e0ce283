"""The disclosed figures: periods in the rules' time zone, withholding small counts, and
``compute`` over catalog rows made by the hub's own row function from hand-made entries,
checked against numbers counted here by hand."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from disclose.figures import (
    CATEGORY_KEYS,
    COUNTS,
    FIGURES,
    Figures,
    Key,
    Period,
    compute,
    hours_text,
    parse_period,
    previous_month,
    previous_year,
    table,
    withhold,
)
from hub.rows import RowBuffer

SH = "Asia/Shanghai"
TZ = ZoneInfo(SH)

# ---- periods ------------------------------------------------------------------------


def test_a_year_is_twelve_months_from_local_midnight() -> None:
    p = parse_period("2026", SH)
    assert p.label == "2026"
    assert p.start == datetime(2026, 1, 1, tzinfo=TZ)
    assert p.end == datetime(2027, 1, 1, tzinfo=TZ)
    assert p.start.utcoffset() is not None
    assert p.months == tuple(f"2026-{m:02d}" for m in range(1, 13))
    # Midnight in Shanghai is 16:00 UTC the day before.
    assert p.start.astimezone(UTC) == datetime(2025, 12, 31, 16, 0, tzinfo=UTC)


def test_a_month_is_itself_and_december_ends_in_the_next_year() -> None:
    p = parse_period("2026-03", SH)
    assert (p.label, p.months) == ("2026-03", ("2026-03",))
    assert (p.start, p.end) == (datetime(2026, 3, 1, tzinfo=TZ), datetime(2026, 4, 1, tzinfo=TZ))
    d = parse_period("2026-12", "UTC")
    assert (d.start, d.end) == (
        datetime(2026, 12, 1, tzinfo=ZoneInfo("UTC")),
        datetime(2027, 1, 1, tzinfo=ZoneInfo("UTC")),
    )


@pytest.mark.parametrize(
    "text",
    [
        "",
        "26",
        "202",
        "20261",
        "2026-3",
        "2026-13",
        "2026-00",
        "2026-013",
        "2026/03",
        "2026-03-01",
        "1999",
        "0000",
        "9999",
        "abcd",
        "2026-ab",
        "-2026",
        "+202",
    ],
)
def test_bad_periods_are_one_line_naming_the_text(text: str) -> None:
    with pytest.raises(ValueError) as e:
        parse_period(text, SH)
    msg = str(e.value)
    assert "\n" not in msg and repr(text) in msg, msg


@pytest.mark.parametrize("text", ["２０２６", "2026-１２", "２０２６-03"])
def test_a_period_in_other_digits_is_refused(text: str) -> None:
    # str.isdigit() is true for full-width digits and int() reads them, but the label
    # goes into the folder, the signed entry and the month keys, where the figures are
    # "2026-12": a label in other digits matches no figure.
    with pytest.raises(ValueError):
        parse_period(text, SH)


def _in(p: Period, t: datetime) -> bool:
    return p.start <= t < p.end


def test_the_time_zone_decides_the_month_at_the_edges() -> None:
    t = datetime(2025, 12, 31, 16, 30, tzinfo=UTC)  # 00:30 on 1 January in Shanghai
    assert _in(parse_period("2026-01", SH), t)
    assert _in(parse_period("2026", SH), t)
    assert not _in(parse_period("2025-12", SH), t)
    assert not _in(parse_period("2025", SH), t)
    assert _in(parse_period("2025-12", "UTC"), t)
    # The last instant of a Shanghai year is 15:59:59 UTC on 31 December.
    assert _in(parse_period("2025", SH), datetime(2025, 12, 31, 15, 59, 59, tzinfo=UTC))
    assert not _in(parse_period("2025", SH), datetime(2025, 12, 31, 16, 0, tzinfo=UTC))


def test_previous_month_and_year_across_a_year_boundary() -> None:
    new_year = datetime(2025, 12, 31, 16, 30, tzinfo=UTC)  # 2026-01-01 00:30 in Shanghai
    assert previous_month(new_year, SH).label == "2025-12"
    assert previous_year(new_year, SH).label == "2025"
    # The same instant is still 2025 in UTC.
    assert previous_month(new_year, "UTC").label == "2025-11"
    assert previous_year(new_year, "UTC").label == "2024"
    assert previous_month(datetime(2026, 1, 15, tzinfo=UTC), SH).label == "2025-12"
    assert previous_month(datetime(2026, 3, 31, 23, 0, tzinfo=UTC), SH).label == "2026-03"
    assert previous_month(datetime(2026, 3, 1, 0, 0, tzinfo=TZ), SH).label == "2026-02"
    p = previous_month(new_year, SH)
    assert p.start == datetime(2025, 12, 1, tzinfo=TZ) and p.end == datetime(2026, 1, 1, tzinfo=TZ)


def test_hours_have_one_decimal_rounded_half_up() -> None:
    assert hours_text(0) == "0.0"
    assert hours_text(179_999) == "0.0"
    assert hours_text(180_000) == "0.1"  # 0.05 h
    assert hours_text(3_600_000) == "1.0"
    assert hours_text(45_000_000) == "12.5"


# ---- withholding --------------------------------------------------------------------

U, V = "530822000000", "530822111111"
P = "administrative_penalty"


def test_a_small_count_is_shown_as_under_the_threshold() -> None:
    a, b, t = (U, P, "2026-01"), (U, P, "2026-02"), (U, P, None)
    shown = withhold({a: 3, b: 0, t: 3}, [(t, [a, b])], 5)
    assert shown[a] == "<5"
    assert shown[b] == 0
    assert shown[t] == "<5"  # the total of one small cell is as small
    assert withhold({a: 3, t: 3}, [(t, [a, b])], 3) == {a: 3, b: 0, t: 3}
    assert withhold({a: 2, t: 2}, [(t, [a, b])], 3)[a] == "<3"
    assert withhold({a: 5, t: 5}, [(t, [a, b])], 5)[a] == 5  # 5 is not under 5


def test_one_small_cell_in_a_row_withholds_the_smallest_other_one() -> None:
    cells: list[Key] = [(U, P, f"2026-0{m}") for m in (1, 2, 3, 4)]
    t: Key = (U, P, None)
    values: dict[Key, int] = dict(zip(cells, [3, 10, 7, 0], strict=True)) | {t: 20}
    shown = withhold(values, [(t, cells)], 5)
    # 3 alone withheld would be 20 - 10 - 7 - 0; the 7 goes with it.
    assert [shown[c] for c in cells] == ["<5", 10, "x", 0]
    assert shown[t] == 20


def test_two_small_cells_need_nothing_more() -> None:
    cells: list[Key] = [(U, P, f"2026-0{m}") for m in (1, 2, 3)]
    t: Key = (U, P, None)
    values: dict[Key, int] = dict(zip(cells, [3, 2, 9], strict=True)) | {t: 14}
    shown = withhold(values, [(t, cells)], 5)
    assert [shown[c] for c in cells] == ["<5", "<5", 9] and shown[t] == 14


def test_a_group_whose_only_other_cells_are_zero_withholds_its_total() -> None:
    # b (3) is alone withheld in the first group. Withholding a (10) would not do: in
    # the second group a is the only non-zero cell, so t2 would give it away. The total
    # t1 goes instead, which nothing else gives away.
    a, b, c = (U, P, "2026-01"), (V, P, "2026-01"), (U, P, "2026-02")
    t1, t2 = (None, P, "2026-01"), (U, P, None)
    shown = withhold({a: 10, b: 3, c: 0, t1: 13, t2: 10}, [(t1, [a, b]), (t2, [a, c])], 5)
    assert shown == {a: 10, b: "<5", c: 0, t1: "x", t2: 10}


# The equations a reader can solve: each published total with its published parts. (A
# month's publication has no period rows: the month is the period.)
def _published_groups(
    units: Sequence[str], months: Sequence[str]
) -> Iterator[tuple[Key, list[Key]]]:
    several = len(months) > 1
    for c in CATEGORY_KEYS:
        for m in months:
            yield (None, c, m), [(u, c, m) for u in units]
        if several:
            for u in units:
                yield (u, c, None), [(u, c, m) for m in months]
            yield (None, c, None), [(u, c, None) for u in units]
            yield (None, c, None), [(None, c, m) for m in months]
    for m in months:
        yield (None, None, m), [(None, c, m) for c in CATEGORY_KEYS]
    if several:
        yield (None, None, None), [(None, None, m) for m in months]
        yield (None, None, None), [(None, c, None) for c in CATEGORY_KEYS]


def _rolled_up(cells: Mapping[tuple[str, str, str], int]) -> dict[Key, int]:
    """Every published key's raw value, totals being sums of cells."""
    out: dict[Key, int] = {}
    for (u, c, m), v in cells.items():
        for k in ((u, c, m), (u, c, None), (None, c, m), (None, c, None), (None, None, m)):
            out[k] = out.get(k, 0) + v
        out[(None, None, None)] = out.get((None, None, None), 0) + v
    return out


def _shown_by_key(
    rows: Sequence[Mapping[str, Any]], totals: Sequence[Mapping[str, Any]], label: str
) -> dict[Key, Mapping[str, Any]]:
    """Each row by its key; a year's own rows have month None."""
    out: dict[Key, Mapping[str, Any]] = {}
    for unit, r in [(r["unit"], r) for r in rows] + [(None, r) for r in totals]:
        m = None if len(label) == 4 and r["month"] == label else r["month"]
        k: Key = (unit, r["category"] or None, m)
        assert k not in out, f"two rows for {k}"
        out[k] = r
    return out


@st.composite
def grids(draw: st.DrawFn) -> tuple[list[str], Period, dict[tuple[str, str, str], int], int]:
    units = [U, V, ""][: draw(st.integers(1, 3))]
    if draw(st.booleans()):
        period = parse_period("2026-03", SH)
    else:
        n = draw(st.integers(2, 4))
        year = parse_period("2026", SH)
        months = tuple(f"2026-0{m}" for m in range(1, n + 1))
        period = Period("2026", year.start, year.end, months)
    cats = CATEGORY_KEYS[: draw(st.integers(1, 3))]
    cells = {
        (u, c, m): draw(st.integers(0, 12) | st.integers(0, 4))
        for u in units
        for c in cats
        for m in period.months
    }
    return units, period, cells, draw(st.integers(2, 6))


@settings(max_examples=400, deadline=None)
@given(grids())
def test_no_withheld_count_can_be_worked_out_from_a_total(
    grid: tuple[list[str], Period, dict[tuple[str, str, str], int], int],
) -> None:
    units, period, cells, threshold = grid
    threshold = max(threshold, 3)  # "<2" says 1: at 2 nothing is withheld around it
    raw = _rolled_up(cells)
    fig = Figures(period, tuple(units), {f: raw for f in FIGURES})
    rows, totals = table(fig, threshold)
    n = len(period.months)
    periods = n + 1 if n > 1 else 1  # a year's months and the year; a month alone
    assert len(rows) == len(units) * 6 * periods
    assert len(totals) == 7 * periods
    shown = _shown_by_key(rows, totals, period.label)
    small = f"<{threshold}"
    for f in COUNTS:
        for k, r in shown.items():
            v, want = r[f], raw.get(k, 0)
            if isinstance(v, int):
                assert v == want, (f, k, v, want)
            elif v == small:
                assert 1 <= want < threshold, (f, k, v, want)
            else:
                # Withheld only to protect another: a count that could have been shown.
                assert v == "x" and want >= threshold, (f, k, v, want)
            if 1 <= want < threshold:
                assert v == small, (f, k, v, want)
        for total, parts in _published_groups(units, period.months):
            hidden = [p for p in parts if isinstance(shown[p][f], str)]
            if isinstance(shown[total][f], int):
                # A shown total over one withheld part would give it away.
                assert len(hidden) != 1, (f, total, [(p, shown[p][f]) for p in parts])
            else:
                # A withheld total over parts all shown is their sum.
                assert hidden, (f, total, shown[total][f], [(p, shown[p][f]) for p in parts])
    for k, r in shown.items():
        withheld = isinstance(r["recordings"], str)
        assert r["hours"] == (None if withheld else hours_text(raw.get(k, 0))), (k, r)


def _solvable(
    shown: Mapping[Key, Mapping[str, Any]], groups: Sequence[tuple[Key, Sequence[Key]]], f: str
) -> set[Key]:
    """The withheld figures a reader can work out exactly from all the published
    equations together (total = sum of parts, shown values known): Gauss-Jordan over
    the unknowns; an unknown is solved when its reduced row holds it alone."""
    unknowns = sorted({k for k, r in shown.items() if isinstance(r[f], str)}, key=str)
    col = {k: i for i, k in enumerate(unknowns)}
    rows: list[list[Fraction]] = []
    for total, parts in groups:
        row = [Fraction(0)] * len(unknowns)
        for k, c in [(total, 1), *[(p, -1) for p in parts]]:
            if k in col:
                row[col[k]] += c
        if any(row):
            rows.append(row)
    pivots: list[int] = []
    for j in range(len(unknowns)):
        r = next((i for i in range(len(pivots), len(rows)) if rows[i][j] != 0), None)
        if r is None:
            continue
        top = len(pivots)
        rows[top], rows[r] = rows[r], rows[top]
        rows[top] = [x / rows[top][j] for x in rows[top]]
        for i in range(len(rows)):
            if i != top and rows[i][j] != 0:
                factor = rows[i][j]
                rows[i] = [a - factor * b for a, b in zip(rows[i], rows[top], strict=True)]
        pivots.append(j)
    return {
        unknowns[j]
        for i, j in enumerate(pivots)
        if all(x == 0 for n, x in enumerate(rows[i]) if n != j)
    }


def test_no_withheld_count_can_be_solved_from_all_the_totals_together() -> None:
    # Three units, three months, one category (threshold 5). Unit C has 2 recordings in
    # each month, units A and B 2 each in March. Each equation alone has two withheld
    # figures or none, but together they give C's March away:
    #   C's year (6) - March's all-unit total (6) = C-Jan + C-Feb - A-Mar - B-Mar, and
    #   the year (10) = Jan + Feb + 6 = C-Jan + C-Feb + 6, and 10 = A + B + C's 6:
    #   so A-Mar + B-Mar = 4, C-Jan + C-Feb = 4, and C-Mar = 6 - 4 = 2.
    months = ("2026-01", "2026-02", "2026-03")
    year = parse_period("2026", SH)
    period = Period("2026", year.start, year.end, months)
    lic = "licensing"
    cells = {
        ("A", lic, "2026-03"): 2,
        ("B", lic, "2026-03"): 2,
        ("C", lic, "2026-01"): 2,
        ("C", lic, "2026-02"): 2,
        ("C", lic, "2026-03"): 2,
    }
    raw = _rolled_up(cells)
    units = ["A", "B", "C"]
    rows, totals = table(Figures(period, tuple(units), {f: raw for f in FIGURES}), 5)
    shown = _shown_by_key(rows, totals, "2026")
    assert shown[("C", lic, "2026-03")]["recordings"] == "<5"
    groups = list(_published_groups(units, months))
    assert _solvable(shown, groups, "recordings") == set()


@settings(max_examples=150, deadline=None)
@given(grids())
def test_no_withheld_count_can_be_solved_from_the_published_equations(
    grid: tuple[list[str], Period, dict[tuple[str, str, str], int], int],
) -> None:
    units, period, cells, threshold = grid
    threshold = max(threshold, 3)  # "<2" says 1: nothing to work out
    raw = _rolled_up(cells)
    rows, totals = table(Figures(period, tuple(units), {f: raw for f in FIGURES}), threshold)
    shown = _shown_by_key(rows, totals, period.label)
    groups = list(_published_groups(units, period.months))
    # No small count can be worked out. (An "x" may be: it is a count of at least the
    # threshold, kept as its month's own publication showed it.)
    small = f"<{threshold}"
    solved = {k for k in _solvable(shown, groups, "recordings") if shown[k]["recordings"] == small}
    assert solved == set(), {k: (raw.get(k, 0), shown[k]["recordings"]) for k in solved}


# ---- compute over catalog rows ------------------------------------------------------

O1, O2 = "custody.test/a/dock-01", "custody.test/b/dock-02"
SHA_A, SHA_B, SHA_C, SHA_D, SHA_E, SHA_F, SHA_G = (f"{n:x}" * 64 for n in range(10, 17))
SHA_COPY = "1" * 64  # an access copy
LIC, PEN, INS, OTH = "licensing", "administrative_penalty", "inspection", "other"


def _ingest(sha: str, t: str, start: str, **rec: Any) -> dict[str, Any]:
    recorder: dict[str, Any] = dict(rec)
    if start:
        recorder.update(claimed_start=start, claimed_start_offset="+08:00")
    out: dict[str, Any] = {"type": "ingest", "time": t, "sha256": sha, "size": 1000}
    if recorder:
        out["recorder"] = {"serial": "XYZ1234", "officer": "010203", **recorder}
    return out


def _probe(sha: str, t: str, ms: int) -> dict[str, Any]:
    return {"type": "probe", "time": t, "sha256": sha, "summary": {"duration_ms": ms}}


def _annotate(sha: str, t: str, **kw: Any) -> dict[str, Any]:
    return {"type": "annotate", "time": t, "sha256": sha, **kw}


T0 = "2026-01-31T01:00:00.000Z"

LOG1: list[dict[str, Any]] = [
    # A: 00:30 on 1 January in Shanghai (16:30 UTC on 31 December): January.
    _ingest(SHA_A, T0, "2026-01-01T00:30:00", unit=U, category=P),
    _probe(SHA_A, T0, 1_800_000),
    _ingest(SHA_B, T0, "2026-01-10T10:00:00", unit=U, category=P, important=True),
    _probe(SHA_B, T0, 3_000_000),
    _probe(SHA_B, T0, 3_600_000),  # probed again: its duration counts once
    _ingest(SHA_C, T0, "2026-02-05T09:00:00", unit=V),  # no category: other
    _probe(SHA_C, T0, 600_000),
    # D: 23:30 on 31 December in Shanghai: 2025, outside the year.
    _ingest(SHA_D, T0, "2025-12-31T23:30:00", unit=U, category=INS),
    _probe(SHA_D, T0, 900_000),
    _ingest(SHA_E, T0, "2026-01-20T08:00:00", unit=V, category=P),
    _ingest(SHA_F, T0, "2026-01-25T08:00:00", unit=V, category=P),
    {"type": "derive", "time": T0, "sha256": SHA_A, "output": {"sha256": SHA_COPY}},
    _annotate(SHA_A, T0, category=LIC, cases_added=["CASE-1"]),  # A moves to licensing
    _annotate(SHA_C, T0, cases_added=["CASE-1"]),  # CASE-1: units U and V
    _annotate(SHA_B, T0, important=False),  # B is no longer important
    _annotate(SHA_B, T0, reason="a note only"),  # says nothing of importance
    _annotate(SHA_E, T0, category="coercive_measure", cases_added=["CASE-2"]),
    _annotate(SHA_E, T0, category=P, cases_added=["CASE-2"]),  # the latest category wins
    _annotate(SHA_F, T0, cases_added=["CASE-2"]),  # CASE-2: E and F, both V / penalty
    _ingest(SHA_B, T0, "2026-05-01T00:00:00", unit=V, category=INS),  # again: not counted
    {"type": "hold", "time": "2026-03-01T00:00:00.000Z", "scope": "object", "target": SHA_A},
    {"type": "hold", "time": "2026-03-02T00:00:00.000Z", "scope": "case", "target": "CASE-1"},
    {"type": "hold", "time": "2026-03-03T00:00:00.000Z", "scope": "case", "target": "CASE-9"},
    {"type": "hold", "time": "2026-03-04T00:00:00.000Z", "scope": "case", "target": "CASE-2"},
    {
        "type": "hold_release",
        "time": "2026-03-05T00:00:00.000Z",
        "scope": "object",
        "target": SHA_A,
    },
    {"type": "export", "time": "2026-04-01T00:00:00.000Z", "case": "CASE-2", "files": [SHA_E]},
    {"type": "export", "time": "2026-04-02T00:00:00.000Z", "files": [SHA_B]},  # no case
    {"type": "delete", "time": "2026-05-01T00:00:00.000Z", "sha256": SHA_A, "rule": "ordinary"},
    {
        "type": "delete",
        "time": "2026-05-01T00:00:00.000Z",
        "sha256": SHA_COPY,
        "role": "derivative",
    },
    # 16:30 UTC on 31 December 2025 is January in Shanghai: this deletion is in 2026-01.
    {"type": "delete", "time": "2025-12-31T16:30:00.000Z", "sha256": SHA_D, "rule": "ordinary"},
    # 16:30 UTC on 31 December 2026 is 2027 in Shanghai: outside the year.
    {"type": "delete", "time": "2026-12-31T16:30:00.000Z", "sha256": SHA_C, "rule": "ordinary"},
    {"type": "fixity", "time": T0, "objects_checked": 7, "results": {"dock_ok": 7}},
]
LOG2: list[dict[str, Any]] = [
    # The same footage captured at a second station is that station's recording.
    _ingest(SHA_A, T0, "2026-01-15T12:00:00", unit=V, category=LIC),
    _annotate(SHA_A, T0, cases_added=["CASE-7"]),
    # No recorder identity: unit "", category other; starts when the dock received it
    # (00:00 on 1 July in Shanghai).
    {**_ingest(SHA_G, T0, ""), "times": {"dock_received": "2026-06-30T16:00:00Z"}},
    _annotate(SHA_G, T0, category="not_a_category", important=True),
    # A hold on CASE-1 here finds no CASE-1 of this log: unit "", other.
    {"type": "hold", "time": "2026-03-02T00:00:00.000Z", "scope": "case", "target": "CASE-1"},
]


def _arrow() -> Any:
    buf = RowBuffer()
    for origin, log in ((O1, LOG1), (O2, LOG2)):
        for i, fields in enumerate(log):
            buf.add_entry(origin, i, repr(fields).encode(), fields)
    return buf.to_arrow()


def _compute(period: str) -> Figures:
    con = duckdb.connect()
    try:
        con.register("log_rows", _arrow())
        return compute(con, "log_rows", parse_period(period, SH))
    finally:
        con.close()


def _sums(cells: Mapping[tuple[str, str, str], int]) -> dict[Key, int]:
    return {k: v for k, v in _rolled_up(cells).items() if v}


def _nonzero(values: Mapping[Key, int]) -> dict[Key, int]:
    return {k: v for k, v in values.items() if v}


def test_compute_counts_as_counted_by_hand() -> None:
    fig = _compute("2026")
    assert fig.units == (U, V, "")
    # Recordings of 2026 by (unit, category, month): A, B (O1); C, E, F (O1); A, G (O2).
    recordings = {
        (U, LIC, "2026-01"): 1,  # A (annotated to licensing; 16:30 UTC 31 Dec)
        (U, P, "2026-01"): 1,  # B
        (V, OTH, "2026-02"): 1,  # C
        (V, P, "2026-01"): 2 + 0,  # E, F
        (V, LIC, "2026-01"): 1,  # A at the second station
        ("", OTH, "2026-07"): 1,  # G
    }
    assert _nonzero(fig.values["recordings"]) == _sums(recordings)
    hours = {
        (U, LIC, "2026-01"): 1_800_000,
        (U, P, "2026-01"): 3_600_000,
        (V, OTH, "2026-02"): 600_000,
    }
    assert _nonzero(fig.values["hours"]) == _sums(hours)
    # Evidence: A, C (CASE-1), E, F (CASE-2), A at O2 (CASE-7), G (important); B is not.
    evidence = {
        (U, LIC, "2026-01"): 1,
        (V, OTH, "2026-02"): 1,
        (V, P, "2026-01"): 2,
        (V, LIC, "2026-01"): 1,
        ("", OTH, "2026-07"): 1,
    }
    assert _nonzero(fig.values["evidence"]) == _sums(evidence)
    # Distinct case numbers: CASE-1 (A in U/licensing/01, C in V/other/02), CASE-2 (E
    # and F, counted once), CASE-7 (O2's A in V/licensing/01).
    cases = {
        (U, LIC, "2026-01"): 1,
        (V, OTH, "2026-02"): 1,
        (V, P, "2026-01"): 1,
        (V, LIC, "2026-01"): 1,
        (U, LIC, None): 1,
        (V, OTH, None): 1,
        (V, P, None): 1,
        (V, LIC, None): 1,
        (None, LIC, "2026-01"): 2,  # CASE-1, CASE-7
        (None, OTH, "2026-02"): 1,
        (None, P, "2026-01"): 1,
        (None, LIC, None): 2,
        (None, OTH, None): 1,
        (None, P, None): 1,
        (None, None, "2026-01"): 3,  # CASE-1 (A), CASE-2, CASE-7
        (None, None, "2026-02"): 1,  # CASE-1 (C)
        (None, None, None): 3,  # CASE-1 once
    }
    assert _nonzero(fig.values["cases"]) == cases
    # Deletions of originals: A (May), D (January in Shanghai); not the access copy, not
    # C (2027 in Shanghai).
    deletions = {(U, LIC, "2026-05"): 1, (U, INS, "2026-01"): 1}
    assert _nonzero(fig.values["deletions"]) == _sums(deletions)
    # Holds in March: object A (U/licensing); CASE-1 (once in U/licensing through A, once
    # in V/other through C); CASE-9 (no footage: ""/other); CASE-2 (E and F: once in
    # V/penalty); O2's CASE-1 (none there: ""/other). Five hold entries.
    m = "2026-03"
    holds = {
        (U, LIC, m): 2,
        (V, OTH, m): 1,
        ("", OTH, m): 2,
        (V, P, m): 1,
        (U, LIC, None): 2,
        (V, OTH, None): 1,
        ("", OTH, None): 2,
        (V, P, None): 1,
        (None, LIC, m): 2,
        (None, OTH, m): 3,  # CASE-1 (C), CASE-9, O2's CASE-1
        (None, P, m): 1,
        (None, LIC, None): 2,
        (None, OTH, None): 3,
        (None, P, None): 1,
        (None, None, m): 5,
        (None, None, None): 5,
    }
    assert _nonzero(fig.values["holds"]) == holds
    # Exports in April: CASE-2 (E and F: once in V/penalty); one with no case (""/other).
    a = "2026-04"
    exports = {
        (V, P, a): 1,
        ("", OTH, a): 1,
        (V, P, None): 1,
        ("", OTH, None): 1,
        (None, P, a): 1,
        (None, OTH, a): 1,
        (None, P, None): 1,
        (None, OTH, None): 1,
        (None, None, a): 2,
        (None, None, None): 2,
    }
    assert _nonzero(fig.values["exports"]) == exports


def test_compute_for_one_month_counts_only_that_month() -> None:
    fig = _compute("2026-01")
    assert fig.period.months == ("2026-01",)
    m = "2026-01"
    recordings = {(U, LIC, m): 1, (U, P, m): 1, (V, P, m): 2, (V, LIC, m): 1}
    assert _nonzero(fig.values["recordings"]) == _sums(recordings)
    assert _nonzero(fig.values["deletions"]) == _sums({(U, INS, m): 1})
    assert _nonzero(fig.values["holds"]) == {}
    assert _nonzero(fig.values["exports"]) == {}
    assert fig.values["cases"].get((None, None, None)) == 3
    # A unit with recordings only outside the month is still listed (zeros shown).
    assert fig.units == (U, V, "")


def test_compute_in_utc_moves_the_edges() -> None:
    con = duckdb.connect()
    try:
        con.register("log_rows", _arrow())
        fig = compute(con, "log_rows", parse_period("2025-12", "UTC"))
    finally:
        con.close()
    m = "2025-12"
    # A (16:30 UTC on 31 December) and D (15:30 UTC) are December's in UTC; so is the
    # deletion of D.
    assert _nonzero(fig.values["recordings"]) == _sums({(U, LIC, m): 1, (U, INS, m): 1})
    assert _nonzero(fig.values["deletions"]) == _sums({(U, INS, m): 1})


def test_a_table_of_no_rows_gives_zeros() -> None:
    con = duckdb.connect()
    try:
        con.register("log_rows", RowBuffer().to_arrow())
        fig = compute(con, "log_rows", parse_period("2026", SH))
    finally:
        con.close()
    assert fig.units == ()
    assert all(_nonzero(v) == {} for v in fig.values.values())
    rows, totals = table(fig, 5)
    assert rows == [] and len(totals) == 7 * 13
    assert all(t[f] == 0 for t in totals for f in COUNTS)
    assert all(t["hours"] == "0.0" for t in totals)


def test_the_database_session_time_zone_changes_nothing() -> None:
    want = _compute("2026")
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'Pacific/Kiritimati'")  # UTC+14
        con.register("log_rows", _arrow())
        got = compute(con, "log_rows", parse_period("2026", SH))
    finally:
        con.close()
    assert {f: _nonzero(v) for f, v in got.values.items()} == {
        f: _nonzero(v) for f, v in want.values.items()
    }


def test_a_unit_that_is_not_a_unit_code_is_published_as_not_recorded() -> None:
    """An identity table that put an officer number (or a free label) where the unit
    goes must not publish it: only a 12-character unit code, or a unit the rules name,
    is a unit; anything else counts as "unit not recorded"."""
    buf = RowBuffer()
    leaves = [
        _ingest("a" * 64, "2026-03-02T01:00:00.000Z", "", unit="010203"),
        _ingest("b" * 64, "2026-03-02T01:00:00.000Z", "", unit="交警大队"),
        _ingest("c" * 64, "2026-03-02T01:00:00.000Z", "", unit="530822000000"),
        _ingest("d" * 64, "2026-03-02T01:00:00.000Z", "", unit="brigade-7"),
    ]
    for i, e in enumerate(leaves):
        buf.add_entry(O1, i, repr(e).encode(), e)
    con = duckdb.connect()
    try:
        con.register("log_rows", buf.to_arrow())
        fig = compute(con, "log_rows", parse_period("2026-03", SH), named=("brigade-7",))
    finally:
        con.close()
    assert fig.units == ("530822000000", "brigade-7", "")
    rec = fig.values["recordings"]
    assert (rec[("", "other", "2026-03")], rec[("530822000000", "other", "2026-03")]) == (2, 1)
