"""The disclosed figures: counts by unit, enforcement category and month, from the log.

The figures are computed by one DuckDB query set over any relation with the county
catalog's columns (`hub.rows`: ``origin, leaf_index, type, time, unit, sha256, cases,
category, important, recorded, duration_ms, role``): the hub passes its Iceberg table
(``iceberg_scan``), a station an Arrow table made from its own ledger with the same row
function. So a station's publication and the county's count the same way.

What is counted (docs/disclosure.md has the public wording):

- a *recording* is the first ``ingest`` of a (log, SHA-256). Its unit is the recorder's
  unit code; its category the latest ``annotate`` category in the log, else the one its
  file name gave, else ``other``; it is *kept as evidence* when linked to a case or
  marked important. Recordings, hours, evidence and cases (distinct case numbers linked
  to them) count in the month the recording started.
- *deletions* (of originals by retention), *holds* and *exports* count in the month of
  their entry, under the unit and category of the recordings they concern (a hold or
  export of a case: once in each unit and category of the case's recordings).

Then ``withhold`` applies the rules: a count from 1 to threshold-1 is shown as ``"<5"``,
and where a total would let one withheld cell be worked out by subtraction, the
smallest other cell is withheld too (``"x"``). Pure apart from the query.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from fractions import Fraction
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

if TYPE_CHECKING:
    import duckdb

# The order of the issue and the provincial forms; Chinese and English names.
CATEGORIES: tuple[tuple[str, str, str], ...] = (
    ("licensing", "行政许可", "Licensing"),
    ("administrative_penalty", "行政处罚", "Administrative penalty"),
    ("coercive_measure", "行政强制", "Coercive measure"),
    ("expropriation", "行政征收征用", "Expropriation and requisition"),
    ("inspection", "行政检查", "Inspection"),
    ("other", "其他", "Other"),
)
CATEGORY_KEYS = tuple(c[0] for c in CATEGORIES)
FIGURES = ("recordings", "hours", "cases", "evidence", "deletions", "holds", "exports")
COUNTS = tuple(f for f in FIGURES if f != "hours")

# (unit, category, month): None = all of them (a total); month None = the whole period.
Key = tuple[str | None, str | None, str | None]
Shown = int | str


@dataclass(frozen=True)
class Period:
    label: str  # "2026" or "2026-03"
    start: datetime  # aware: midnight of the first day in the rules' time zone
    end: datetime  # exclusive
    months: tuple[str, ...]


def _month_start(year: int, month: int, tz: ZoneInfo) -> datetime:
    return datetime(year, month, 1, tzinfo=tz)


def parse_period(text: str, timezone: str) -> Period:
    """``YYYY`` (a year) or ``YYYY-MM`` (a month), in ``timezone``."""
    tz = ZoneInfo(timezone)
    t = text.strip()
    try:
        # ASCII digits only: int() also reads full-width ones, but the label goes into
        # the folder, the signed entry and the month keys, which use ASCII.
        if not re.fullmatch(r"[0-9]{4}(-[0-9]{2})?", t):
            raise ValueError
        if len(t) == 4:
            year = int(t)
            if not 2000 <= year <= 9998:
                raise ValueError
            months = tuple(f"{year:04d}-{m:02d}" for m in range(1, 13))
            return Period(t, _month_start(year, 1, tz), _month_start(year + 1, 1, tz), months)
        if len(t) == 7:
            year, month = int(t[:4]), int(t[5:])
            if not (2000 <= year <= 9998 and 1 <= month <= 12):
                raise ValueError
            nxt = (year + 1, 1) if month == 12 else (year, month + 1)
            return Period(t, _month_start(year, month, tz), _month_start(*nxt, tz), (t,))
    except ValueError:
        pass
    raise ValueError(f"period must be a year (2026) or a month (2026-03), not {text!r}")


def previous_month(now: datetime, timezone: str) -> Period:
    local = now.astimezone(ZoneInfo(timezone))
    first = local.replace(day=1) - timedelta(days=1)
    return parse_period(f"{first.year:04d}-{first.month:02d}", timezone)


def previous_year(now: datetime, timezone: str) -> Period:
    return parse_period(f"{now.astimezone(ZoneInfo(timezone)).year - 1:04d}", timezone)


def days_in(period: Period) -> int:
    return sum(calendar.monthrange(int(m[:4]), int(m[5:]))[1] for m in period.months)


@dataclass(frozen=True)
class Figures:
    """Raw counts (before withholding): ``values[figure][key]``; hours in milliseconds.
    Keys absent from a figure are zero."""

    period: Period
    units: tuple[str, ...]  # every unit with recordings in the log, "" (none recorded) last
    values: Mapping[str, Mapping[Key, int]]


_SETS = (
    "GROUPING SETS ((unit, category, month), (unit, category), (category, month), "
    "(category), (month), ())"
)
_CAT = "CASE WHEN {c} IN ({keys}) THEN {c} ELSE 'other' END".format(
    c="{c}", keys=", ".join(f"'{k}'" for k in CATEGORY_KEYS)
)


def _cat(expr: str) -> str:
    return _CAT.replace("{c}", expr)


_BASE = """
CREATE OR REPLACE TEMP TABLE d_e AS
  SELECT origin, leaf_index, type, time, unit, sha256, cases, category, important,
         recorded, duration_ms, role
  FROM {rel}
  WHERE type IN ('ingest', 'probe', 'annotate', 'delete', 'hold', 'export');
CREATE OR REPLACE TEMP TABLE d_links AS
  SELECT DISTINCT origin, sha256, unnest(cases) AS case_no
  FROM d_e WHERE type = 'annotate' AND sha256 IS NOT NULL AND cases IS NOT NULL;
CREATE OR REPLACE TEMP TABLE d_obj AS
  -- What the first ingest said, nulls included (arg_min skips nulls: a later capture
  -- of the same bytes with an identity must not rewrite the first one's).
  WITH rec AS (
    SELECT origin, sha256, arg_min_null(unit, leaf_index) AS unit,
           arg_min_null(category, leaf_index) AS cat0,
           arg_min_null(important, leaf_index) AS imp0,
           arg_min_null(recorded, leaf_index) AS recorded
    FROM d_e WHERE type = 'ingest' AND sha256 IS NOT NULL GROUP BY origin, sha256),
  ann AS (
    SELECT origin, sha256, arg_max(category, leaf_index) AS cat,
           arg_max(important, leaf_index) AS imp
    FROM d_e WHERE type = 'annotate' AND sha256 IS NOT NULL GROUP BY origin, sha256),
  dur AS (
    SELECT origin, sha256, max(duration_ms) AS ms
    FROM d_e WHERE type = 'probe' AND sha256 IS NOT NULL GROUP BY origin, sha256),
  linked AS (SELECT DISTINCT origin, sha256 FROM d_links)
  SELECT r.origin, r.sha256,
         CASE WHEN regexp_full_match(r.unit, '[0-9A-Z]{{12}}') OR r.unit IN ({named})
              THEN r.unit ELSE '' END AS unit,
         {cat} AS category,
         coalesce(a.imp, r.imp0, false) OR l.sha256 IS NOT NULL AS evidence,
         r.recorded, coalesce(p.ms, 0) AS ms
  FROM rec r
  LEFT JOIN ann a USING (origin, sha256)
  LEFT JOIN dur p USING (origin, sha256)
  LEFT JOIN linked l USING (origin, sha256);
"""

_MONTH = "strftime(timezone($tz, {t}), '%Y-%m')"

_RECORDINGS = """
SELECT unit, category, month, GROUPING(unit), GROUPING(category), GROUPING(month),
       count(*), sum(ms)::BIGINT, count(*) FILTER (WHERE evidence)
FROM (SELECT unit, category, {month} AS month, ms, evidence FROM d_obj
      WHERE recorded >= $start AND recorded < $end)
GROUP BY {sets}
"""

_CASES = """
SELECT unit, category, month, GROUPING(unit), GROUPING(category), GROUPING(month),
       count(DISTINCT case_no)
FROM (SELECT o.unit, o.category, {month} AS month, l.case_no
      FROM d_obj o JOIN d_links l USING (origin, sha256)
      WHERE o.recorded >= $start AND o.recorded < $end)
GROUP BY {sets}
"""

_DELETIONS = """
SELECT unit, category, month, GROUPING(unit), GROUPING(category), GROUPING(month), count(*)
FROM (SELECT coalesce(o.unit, '') AS unit, coalesce(o.category, 'other') AS category,
             {month} AS month
      FROM d_e d LEFT JOIN d_obj o USING (origin, sha256)
      WHERE d.type = 'delete' AND (d.role IS NULL OR d.role <> 'derivative')
        AND d.time >= $start AND d.time < $end)
GROUP BY {sets}
"""

# Holds and exports: an object's (holds) or a case's recordings' unit and category; an
# entry counts once in each cell and once in each total.
_EVENTS = """
WITH ev AS (
  SELECT origin, leaf_index, time, sha256, cases FROM d_e
  WHERE type = $type AND time >= $start AND time < $end),
cells AS (
  SELECT ev.origin, ev.leaf_index, ev.time, coalesce(o.unit, '') AS unit,
         coalesce(o.category, 'other') AS category
  FROM ev LEFT JOIN d_obj o USING (origin, sha256)
  WHERE ev.sha256 IS NOT NULL
  UNION
  SELECT c.origin, c.leaf_index, c.time, coalesce(o.unit, '') AS unit,
         coalesce(o.category, 'other') AS category
  FROM (SELECT origin, leaf_index, time, unnest(cases) AS case_no FROM ev
        WHERE sha256 IS NULL AND cases IS NOT NULL) c
  LEFT JOIN d_links l ON l.origin = c.origin AND l.case_no = c.case_no
  LEFT JOIN d_obj o ON o.origin = l.origin AND o.sha256 = l.sha256
  UNION
  SELECT origin, leaf_index, time, '' AS unit, 'other' AS category FROM ev
  WHERE sha256 IS NULL AND cases IS NULL)
SELECT unit, category, month, GROUPING(unit), GROUPING(category), GROUPING(month),
       count(DISTINCT (origin, leaf_index))
FROM (SELECT origin, leaf_index, unit, category, {month} AS month FROM cells)
GROUP BY {sets}
"""


def _key(row: Sequence[Any]) -> Key:
    u, c, m, gu, gc, gm = row[:6]
    return (None if gu else str(u), None if gc else str(c), None if gm else str(m))


MEMORY_LIMIT = "1GB"  # above it DuckDB spills to its temp_directory: memory stays flat


def limit_memory(con: duckdb.DuckDBPyConnection, spill: str) -> None:
    """Keep DuckDB under ``MEMORY_LIMIT``, spilling to the folder ``spill``: a county
    year of 10^7 entries otherwise takes some 3 GB (benchmarks/RESULTS-disclose.md)."""
    con.execute(f"SET memory_limit = '{MEMORY_LIMIT}'")
    con.execute("SET temp_directory = '" + spill.replace("'", "''") + "'")


UNIT_CODE = "[0-9A-Z]{12}"  # GA/T 380: a public-security unit's 12-character code


def compute(
    con: duckdb.DuckDBPyConnection, relation: str, period: Period, named: Sequence[str] = ()
) -> Figures:
    """The raw figures of ``period`` over ``relation`` (a DuckDB table expression with
    the catalog's columns: a table name, ``iceberg_scan('…')``, ``arrow_table``…).

    The relation is read once into a temporary table before anything filters on the
    list column ``cases``: DuckDB 1.4's iceberg_scan skips every data file when such a
    filter is pushed down into it (``cases IS NOT NULL`` gives no rows), so the
    figures would silently lose every case.

    A unit is published as it was captured only when it has a unit code's shape or the
    rules name it (``named``); anything else (a mis-set identity table that put an
    officer number where the unit goes, a free-text label) counts as "unit not
    recorded": the unit column never carries anything but a unit code."""
    listed = ", ".join("'" + u.replace("'", "''") + "'" for u in named) or "NULL"
    con.execute(_BASE.format(rel=relation, cat=_cat("coalesce(a.cat, r.cat0)"), named=listed))
    args = {"tz": period.start.tzinfo.key, "start": period.start, "end": period.end}  # type: ignore[union-attr]
    values: dict[str, dict[Key, int]] = {f: {} for f in FIGURES}
    fmt = {"sets": _SETS}
    for row in con.execute(
        _RECORDINGS.format(month=_MONTH.format(t="recorded"), **fmt), args
    ).fetchall():
        k = _key(row)
        values["recordings"][k] = int(row[6])
        values["hours"][k] = int(row[7] or 0)
        values["evidence"][k] = int(row[8])
    for row in con.execute(
        _CASES.format(month=_MONTH.format(t="o.recorded"), **fmt), args
    ).fetchall():
        values["cases"][_key(row)] = int(row[6])
    for row in con.execute(
        _DELETIONS.format(month=_MONTH.format(t="d.time"), **fmt), args
    ).fetchall():
        values["deletions"][_key(row)] = int(row[6])
    for name, ty in (("holds", "hold"), ("exports", "export")):
        q = _EVENTS.format(month=_MONTH.format(t="time"), **fmt)
        for row in con.execute(q, {**args, "type": ty}).fetchall():
            values[name][_key(row)] = int(row[6])
    known = {r[0] for r in con.execute("SELECT DISTINCT unit FROM d_obj").fetchall()}
    for fig in values.values():
        known.update(k[0] for k in fig if k[0] is not None)
    units = tuple(sorted(u for u in known if u)) + (("",) if "" in known else ())
    con.execute("DROP TABLE d_e; DROP TABLE d_links; DROP TABLE d_obj")
    return Figures(period, units, values)


# ---- withholding small counts -------------------------------------------------------


def _groups(units: Sequence[str], months: Sequence[str]) -> list[tuple[Key, list[Key]]]:
    """Each published total with the published cells that add up to it. A month's
    publication has no period rows apart from its month's (they would be the same)."""
    g: list[tuple[Key, list[Key]]] = []
    several = len(months) > 1
    for c in CATEGORY_KEYS:
        for m in months:
            g.append(((None, c, m), [(u, c, m) for u in units]))
        if several:
            for u in units:
                g.append(((u, c, None), [(u, c, m) for m in months]))
            g.append(((None, c, None), [(u, c, None) for u in units]))
            g.append(((None, c, None), [(None, c, m) for m in months]))
    for m in months:
        g.append(((None, None, m), [(None, c, m) for c in CATEGORY_KEYS]))
    if several:
        g.append(((None, None, None), [(None, None, m) for m in months]))
        g.append(((None, None, None), [(None, c, None) for c in CATEGORY_KEYS]))
    return g


def determined(hidden: Sequence[Key], groups: Sequence[tuple[Key, Sequence[Key]]]) -> set[Key]:
    """The withheld figures a reader could work out exactly from all the published
    equations together (every total = the sum of its cells, the shown values known):
    Gauss-Jordan elimination over the withheld figures, in exact fractions on sparse
    rows; a figure is worked out when a reduced row holds it alone."""
    col = {k: i for i, k in enumerate(hidden)}
    rows: list[dict[int, Fraction]] = []
    for total, parts in groups:
        row: dict[int, Fraction] = {}
        for k, c in ((total, 1), *((p, -1) for p in parts)):
            i = col.get(k)
            if i is not None:
                row[i] = row.get(i, Fraction(0)) + c
        row = {i: v for i, v in row.items() if v}
        if row:
            rows.append(row)
    pivots: dict[int, dict[int, Fraction]] = {}  # column -> its reduced row
    for row in rows:
        # Reduce the new row by the pivots so far, then make it a pivot and clear its
        # column from the others (kept fully reduced: Gauss-Jordan, one row at a time).
        for j in [j for j in row if j in pivots]:
            f = row.get(j)
            if f:
                for i, v in pivots[j].items():
                    row[i] = row.get(i, Fraction(0)) - f * v
        row = {i: v for i, v in row.items() if v}
        if not row:
            continue
        j = min(row)
        lead = row[j]
        row = {i: v / lead for i, v in row.items()}
        for other in pivots.values():
            f = other.get(j)
            if f:
                for i, v in row.items():
                    nv = other.get(i, Fraction(0)) - f * v
                    if nv:
                        other[i] = nv
                    else:
                        other.pop(i, None)
        pivots[j] = row
    return {hidden[j] for j, row in pivots.items() if len(row) == 1}


def withhold(
    values: Mapping[Key, int],
    groups: Sequence[tuple[Key, Sequence[Key]]],
    threshold: int,
    already: Mapping[Key, Shown] | None = None,
) -> dict[Key, Shown]:
    """Every key of ``groups`` shown: the count, ``"<T"`` for 1..T-1, or ``"x"`` where the
    published totals and cells would give a withheld count away.

    ``already``: figures another publication has made public as they stand there (a
    year's months, as their monthly publications showed them). Those are kept exactly:
    what one publication withheld stays withheld, and what it showed is never newly
    withheld here (it is public anyway), so only this publication's other figures are
    withheld to protect them."""
    small = f"<{threshold}"
    shown: dict[Key, Shown] = {}
    keys = {k for total, parts in groups for k in (total, *parts)}
    for k in keys:
        v = values.get(k, 0)
        shown[k] = small if 0 < v < threshold else v
    fixed = set(already or {})
    for k, public in (already or {}).items():
        if k in shown:
            shown[k] = public
    if threshold <= 2:
        return shown  # "<2" says 1: nothing is hidden, so nothing needs hiding around it
    of_key: dict[Key, list[int]] = {}
    for n, (total, parts) in enumerate(groups):
        for k in (total, *parts):
            of_key.setdefault(k, []).append(n)

    def hidden(k: Key) -> bool:
        return isinstance(shown[k], str)

    def free(k: Key) -> bool:
        return not hidden(k) and k not in fixed and values.get(k, 0) > 0

    def useful(k: Key) -> bool:
        """Withholding ``k`` hides something: no equation of it would then hold it as
        its only withheld figure (it would be worked out at once)."""
        return all(
            any(hidden(x) for x in (groups[n][0], *groups[n][1]) if x != k) for n in of_key[k]
        )

    def more(n: int) -> bool:
        """Withhold one more figure of equation ``n``: its smallest shown non-zero cell,
        else its total, preferring one whose withholding hides something. False when
        there is none."""
        total, parts = groups[n]
        for pick in (useful, lambda k: True):
            open_ = [p for p in parts if free(p) and pick(p)]
            if open_:
                shown[min(open_, key=lambda p: (values.get(p, 0), str(p)))] = "x"
                return True
            if free(total) and pick(total):
                shown[total] = "x"
                return True
        return False

    while True:
        # One equation at a time first (cheap): none may hold exactly one withheld
        # figure, which could be solved for, nor withheld cells whose sum, shown by the
        # total, makes each of them 1, or each "<T" of them T-1.
        changed = True
        while changed:
            changed = False
            for n, (total, parts) in enumerate(groups):
                h = [k for k in (total, *parts) if hidden(k)]
                if len(h) == 1:
                    changed |= more(n)
                elif h and not hidden(total):
                    rest = values.get(total, 0) - sum(
                        values.get(p, 0) for p in parts if not hidden(p)
                    )
                    if rest == len(h) or (
                        all(shown[k] == small for k in h) and rest == len(h) * (threshold - 1)
                    ):
                        changed |= more(n)
        # Then all equations together: a small count several totals pin down.
        solved = determined(sorted((k for k in keys if hidden(k)), key=str), groups)
        leaks = {k for k in solved if shown[k] == small}
        if not leaks:
            # An "x" a reader can work out anyway protects nothing: show it.
            for k in solved:
                if k not in fixed:
                    shown[k] = values.get(k, 0)
            return shown
        progress = False
        for k in sorted(leaks, key=str):
            for n in of_key[k]:
                if more(n):
                    progress = True
                    break
        if not progress:
            # Its own equations have nothing left to withhold: the value is pinned by a
            # chain of them. Withhold the smallest shown non-zero figure next to any
            # withheld one, and look again.
            edge = [
                k
                for k in keys
                if free(k)
                and any(hidden(x) for n in of_key[k] for x in (groups[n][0], *groups[n][1]))
            ]
            edge = [k for k in edge if useful(k)] or edge
            if not edge:
                return shown
            shown[min(edge, key=lambda k: (values.get(k, 0), str(k)))] = "x"


def hours_text(ms: int) -> str:
    """Milliseconds as hours with one decimal, rounded half up."""
    tenths = (ms + 180_000) // 360_000
    return f"{tenths // 10}.{tenths % 10}"


def table(fig: Figures, threshold: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(rows, totals)`` as data.json has them: every unit × category × month and the
    unit × category period totals; then the all-unit totals. Zeros included."""
    months = list(fig.period.months)
    groups = _groups(fig.units, months)
    shown: dict[str, dict[Key, Shown]] = {}
    for f in COUNTS:
        already: dict[Key, Shown] = {}
        if len(months) > 1:
            # A year repeats its months' cells, which their own publications show as
            # they withhold them: the year keeps those and withholds only its totals.
            for month in months:
                one = _groups(fig.units, [month])
                already.update(withhold(fig.values[f], one, threshold))
        shown[f] = withhold(fig.values[f], groups, threshold, already)
    hours = fig.values["hours"]

    def cell(k: Key) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in FIGURES:
            if f == "hours":
                hidden = isinstance(shown["recordings"][k], str)
                out[f] = None if hidden else hours_text(hours.get(k, 0))
            else:
                out[f] = shown[f][k]
        return out

    label = fig.period.label
    rows: list[dict[str, Any]] = []
    # A year: each month, then the year (None). A month: the month alone is the period.
    periods: list[str | None] = [*months, None] if len(months) > 1 else list(months)
    for u in fig.units:
        for c in CATEGORY_KEYS:
            for m in periods:
                rows.append({"unit": u, "category": c, "month": m or label, **cell((u, c, m))})
    totals: list[dict[str, Any]] = []
    every: list[str | None] = [*CATEGORY_KEYS, None]
    for cat in every:
        for m in periods:
            totals.append({"category": cat or "", "month": m or label, **cell((None, cat, m))})
    return rows, totals


# ---- audits -------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditFigures:
    month: str
    audits: int
    objects_checked: int
    failures: int


def _n(v: object) -> int:
    return v if type(v) is int and v >= 0 else 0


def audit_result(fields: Mapping[str, Any]) -> tuple[int, int] | None:
    """``(objects checked, failures)`` of a station's ``fixity`` or the hub's ``audit``
    entry; None for other entries."""
    ty = fields.get("type")
    results = fields.get("results")
    res: Mapping[str, Any] = results if isinstance(results, Mapping) else {}
    if ty == "fixity":
        bad = sum(_n(v) for k, v in res.items() if not str(k).endswith("_ok"))
        return _n(fields.get("objects_checked")), bad + _n(fields.get("completeness_problems"))
    if ty == "audit":
        checked = sum(_n(v) for k, v in res.items() if k != "not_checked")
        bad = sum(_n(res.get(k)) for k in ("altered", "missing", "unreadable"))
        return checked, bad
    return None


def audits(
    entries: Iterable[tuple[datetime, Mapping[str, Any]]], period: Period
) -> list[AuditFigures]:
    """Audits by month of ``period`` (every month, zeros too) from ``(time, fields)``."""
    tz = period.start.tzinfo
    acc = {m: [0, 0, 0] for m in period.months}
    for t, fields in entries:
        if not period.start <= t < period.end:
            continue
        r = audit_result(fields)
        if r is None:
            continue
        m = t.astimezone(tz).strftime("%Y-%m")
        if m in acc:
            acc[m][0] += 1
            acc[m][1] += r[0]
            acc[m][2] += r[1]
    return [AuditFigures(m, *acc[m]) for m in period.months]


__all__ = [
    "CATEGORIES",
    "CATEGORY_KEYS",
    "COUNTS",
    "FIGURES",
    "AuditFigures",
    "Figures",
    "Period",
    "audit_result",
    "audits",
    "compute",
    "days_in",
    "hours_text",
    "limit_memory",
    "parse_period",
    "previous_month",
    "previous_year",
    "table",
    "withhold",
]
