"""The county audit's reports: one per unit for the inspection, and a county summary.

For each unit (the ``unit`` of the stations' `ingest` entries; "(no unit)" when they
name none): ``unit-<name>.md``, a report a supervisor hands to the special inspection
(专项监督检查), and ``unit-<name>.parquet``, one row per object checked and per
completeness finding. For the county: ``summary.md`` and ``summary.json``
(`AuditResult.to_json`). Everything is sorted, so the same audit writes the same files.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from hub.audit import (
    ALTERED,
    MISSING,
    NO_UNIT,
    NOT_CHECKED,
    OK,
    OUTCOMES,
    TODO,
    UNREACHABLE,
    UNREADABLE,
    WHAT,
    AuditResult,
    ObjectCheck,
)

TITLE = "县级执法记录 专项监督检查 · County audit report"
PARQUET_SCHEMA = pa.schema(
    [
        ("record", pa.string()),  # "object" (read back and hashed) or "finding"
        ("unit", pa.string()),
        ("origin", pa.string()),
        ("leaf_index", pa.int64()),  # the entry: ingest for objects, the one found for findings
        ("sha256", pa.string()),
        ("status", pa.string()),  # ok | altered | missing | unreadable | unreachable, or a finding
        ("detail", pa.string()),
        ("action", pa.string()),  # what to do
        ("size", pa.int64()),  # signed size (objects)
        ("bytes_read", pa.int64()),
        ("seconds", pa.float64()),
        ("store_key", pa.string()),
        ("store_entry", pa.int64()),
        ("audit_started", pa.string()),
        ("audit_as_of", pa.string()),
    ]
)


def unit_slug(unit: str) -> str:
    """A file-name part for a unit: its name when that is safe, else a safe form plus a
    short hash (so two units never share a file)."""
    if unit == NO_UNIT:
        return "no-unit"
    safe = re.sub(r"[^\w.-]+", "_", unit, flags=re.UNICODE).strip("._")[:60]
    if safe == unit and safe:
        return safe
    return f"{safe or 'unit'}-{hashlib.sha256(unit.encode()).hexdigest()[:8]}"


def write_reports(result: AuditResult, out_dir: Path) -> list[Path]:
    """Write the county summary (``summary.md``, ``summary.json``) and, per unit, a
    Markdown report and a Parquet table into ``out_dir``. Returns the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    units = result.units()
    slugs = {u: unit_slug(u) for u in units}
    written: list[Path] = []
    p = out_dir / "summary.md"
    p.write_text(county_markdown(result, slugs), encoding="utf-8")
    written.append(p)
    p = out_dir / "summary.json"
    p.write_text(
        json.dumps(result.to_json(), ensure_ascii=False, indent=1, sort_keys=True) + "\n",
        encoding="utf-8",
    )
    written.append(p)
    for u in units:
        md = out_dir / f"unit-{slugs[u]}.md"
        md.write_text(unit_markdown(result, u, slugs[u]), encoding="utf-8")
        pt = out_dir / f"unit-{slugs[u]}.parquet"
        pq.write_table(unit_table(result, u), pt)
        written += [md, pt]
    return written


def unit_table(result: AuditResult, unit: str) -> pa.Table:
    """One row per object of ``unit`` checked, then one per finding, by station and entry."""
    started = _time(result.started)
    as_of = _time(result.plan.now)
    rows: list[dict[str, Any]] = []
    for c in sorted(_checked(result, unit), key=lambda c: (c.target.origin, c.target.leaf_index)):
        t = c.target
        rows.append(
            {
                "record": "object",
                "unit": t.unit,
                "origin": t.origin,
                "leaf_index": t.leaf_index,
                "sha256": t.sha256,
                "status": c.status,
                "detail": c.detail,
                "action": c.action,
                "size": t.size,
                "bytes_read": c.bytes_read,
                "seconds": c.seconds,
                "store_key": t.key,
                "store_entry": t.store_index,
                "audit_started": started,
                "audit_as_of": as_of,
            }
        )
    for f in result.plan.findings:
        if f.unit != unit:
            continue
        rows.append(
            {
                "record": "finding",
                "unit": f.unit,
                "origin": f.origin,
                "leaf_index": f.leaf_index,
                "sha256": f.sha256,
                "status": f.kind,
                "detail": f.detail,
                "action": f.action,
                "size": None,
                "bytes_read": 0,
                "seconds": 0.0,
                "store_key": None,
                "store_entry": None,
                "audit_started": started,
                "audit_as_of": as_of,
            }
        )
    return pa.Table.from_pylist(rows, schema=PARQUET_SCHEMA)


def _checked(result: AuditResult, unit: str | None) -> list[ObjectCheck]:
    return [
        c
        for c in result.checks
        if c.status != NOT_CHECKED and (unit is None or c.target.unit == unit)
    ]


def _time(t: Any) -> str:
    return str(t.strftime("%Y-%m-%dT%H:%M:%SZ")) if t.utcoffset() is not None else str(t)


def _cell(s: object) -> str:
    """Text safe inside a Markdown table cell."""
    return str(s).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _verdict(ok: bool) -> str:
    return "合格 · everything checked holds" if ok else "发现问题 · PROBLEMS FOUND"


def _what_checked(result: AuditResult) -> list[str]:
    plan = result.plan
    budget = ""
    if result.stopped_early:
        budget = (
            f" The {result.stop_reason} ran out: {len(result.checked)} of "
            f"{len(plan.targets)} sampled objects were checked; the rest were not."
        )
    return [
        "## 检查内容 · What was checked",
        "",
        "- **Fixity (存储完整性)**: a random sample of the originals the stations hold was "
        "read back from each station's store and re-hashed (SHA-256), and compared with "
        "the hash and size the station signed in its `ingest` entry. The sample is "
        f"reproducible from the catalogue and seed `{plan.seed}`; each station holding "
        "objects is sampled at least once when the sample size allows." + budget,
        "- **Completeness (完整性)**, from every catalogued entry of each station: every "
        "capture stored in the bucket within a day; every deletion naming a retention "
        "rule, after its retain-until, with no hold in force; nothing stored that the "
        "station never captured.",
        f"- Audit started {_time(result.started)}; entries judged as of "
        f"{_time(plan.now)}; {len(result.checked)} objects read "
        f"({result.bytes_read / (1 << 20):.1f} MiB in {result.seconds:.1f} s).",
        "",
    ]


def _counts_line(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {counts[k]}" for k in (*OUTCOMES, NOT_CHECKED) if counts.get(k))


def _problem_table(rows: list[tuple[str, int, str, str, str, str]]) -> list[str]:
    out = [
        "| 站点 station | 条目 leaf index | sha256 | 问题 what is wrong | 处理 what to do |",
        "|---|---|---|---|---|",
    ]
    for origin, leaf, sha, what, detail, todo in rows:
        out.append(
            f"| {_cell(origin)} | {leaf} | `{sha}` | {_cell(what)}: {_cell(detail)} | "
            f"{_cell(todo)} |"
        )
    return [*out, ""]


def unit_markdown(result: AuditResult, unit: str, slug: str) -> str:
    plan = result.plan
    checked = _checked(result, unit)
    failures = [c for c in checked if c.status in (ALTERED, MISSING)]
    unread = [c for c in checked if c.status in (UNREADABLE, UNREACHABLE)]
    findings = [f for f in plan.findings if f.unit == unit]
    ok = not failures and not findings
    counts = result.counts(unit=unit)
    stations = [s for s in plan.stations if unit in s.units]
    sampled = sum(1 for t in plan.targets if t.unit == unit)
    lines = [
        f"# {TITLE}",
        "",
        f"**单位 Unit: {unit}**",
        "",
        f"**结论 Result: {_verdict(ok)}**",
        "",
        *_what_checked(result),
        "## 抽样 · Sample",
        "",
        f"- Objects sampled from this unit: {sampled}; checked: {len(checked)} "
        f"(county-wide: {len(plan.targets)} sampled of {plan.population} held)",
        f"- Outcomes: {_counts_line(counts) or 'none'}",
        "",
        "## 问题 · Failures of integrity (altered or missing)",
        "",
    ]
    if failures:
        lines += _problem_table(
            [
                (
                    c.target.origin,
                    c.target.leaf_index,
                    c.target.sha256,
                    WHAT[c.status],
                    c.detail,
                    c.action,
                )
                for c in sorted(failures, key=lambda c: (c.target.origin, c.target.leaf_index))
            ]
        )
    else:
        lines += ["None: every object checked holds the bytes its station signed.", ""]
    if unread:
        lines += [
            "## 无法读取 · Not read (not failures of integrity)",
            "",
            *_problem_table(
                [
                    (
                        c.target.origin,
                        c.target.leaf_index,
                        c.target.sha256,
                        WHAT[c.status],
                        c.detail,
                        c.action,
                    )
                    for c in sorted(unread, key=lambda c: (c.target.origin, c.target.leaf_index))
                ]
            ),
        ]
    lines += ["## 完整性 · Completeness findings", ""]
    if findings:
        lines += _problem_table(
            [(f.origin, f.leaf_index, f.sha256, WHAT[f.kind], f.detail, f.action) for f in findings]
        )
    else:
        lines += [
            "None: every capture was stored within a day, every deletion was allowed by a "
            "rule, and nothing was stored without a capture.",
            "",
        ]
    lines += _stations_table(result, stations)
    lines += [
        "## 明细 · Details",
        "",
        f"One row per object checked and per finding: `unit-{slug}.parquet` (DuckDB: "
        f"`SELECT status, count(*) FROM 'unit-{slug}.parquet' GROUP BY 1`). The county "
        "summary: `summary.md`, `summary.json`.",
        "",
    ]
    return "\n".join(lines)


def _stations_table(result: AuditResult, stations: list[Any]) -> list[str]:
    reach = dict(result.unreachable)
    lines = [
        "## 各站点 · Stations (verified log sizes)",
        "",
        "| 站点 station | 日志规模 verified size | 存储对象 objects held | 已检查 checked | "
        "ok | altered | missing | 未读 not read | 完整性 findings |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in stations:
        c = result.counts(origin=s.origin)
        nf = sum(result.finding_counts(origin=s.origin).values())
        size = f"{s.size}" if s.size_verified else f"≥ {s.size} (catalogued)"
        lines.append(
            f"| {_cell(s.origin)} | {size} | {s.objects} | "
            f"{sum(c[k] for k in OUTCOMES)} | {c[OK]} | {c[ALTERED]} | {c[MISSING]} | "
            f"{c[UNREADABLE] + c[UNREACHABLE]} | {nf} |"
        )
    lines.append("")
    for s in stations:
        if s.origin in reach:
            lines.append(f"- {s.origin}: store unreachable: {reach[s.origin]}")
        if s.waiting:
            lines.append(
                f"- {s.origin}: {s.waiting} captures less than a day old not stored yet (not late)"
            )
    if lines[-1] != "":
        lines.append("")
    return lines


def county_markdown(result: AuditResult, slugs: dict[str, str]) -> str:
    plan = result.plan
    lines = [
        f"# {TITLE}",
        "",
        "**县级汇总 County summary**",
        "",
        f"**结论 Result: {_verdict(result.ok)}**",
        "",
        *_what_checked(result),
        "## 结果 · Results",
        "",
        f"- Sampled {len(plan.targets)} of {plan.population} objects held by "
        f"{sum(1 for s in plan.stations if s.objects)} station(s); checked "
        f"{len(result.checked)}.",
        f"- Outcomes: {_counts_line(result.counts()) or 'none'}",
        "- Completeness findings: "
        + (", ".join(f"{k} {v}" for k, v in result.finding_counts().items() if v) or "none"),
        "",
    ]
    for o, line in result.unreachable:
        lines.append(f"- Store of {o} unreachable: {line}")
    if result.unreachable:
        lines.append("")
    lines += [
        "## 各单位 · Units",
        "",
        "| 单位 unit | 已检查 checked | altered | missing | 完整性 findings | report |",
        "|---|---|---|---|---|---|",
    ]
    for u in result.units():
        c = result.counts(unit=u)
        nf = sum(result.finding_counts(unit=u).values())
        lines.append(
            f"| {_cell(u)} | {sum(c[k] for k in OUTCOMES)} | {c[ALTERED]} | {c[MISSING]} | "
            f"{nf} | unit-{slugs[u]}.md |"
        )
    lines.append("")
    lines += _stations_table(result, list(plan.stations))
    fails = result.failure_lines()
    if fails:
        lines += [
            "## 问题清单 · Failures and findings",
            "",
            *_problem_table(
                [
                    (
                        d["origin"],
                        d["leaf_index"],
                        d["sha256"],
                        WHAT[d["what"]],
                        d["detail"],
                        TODO[d["what"]],
                    )
                    for d in fails
                ]
            ),
        ]
    if plan.notes:
        lines += ["## 备注 · Notes", ""]
        lines += [f"- {n}" for n in plan.notes[:200]]
        if len(plan.notes) > 200:
            lines.append(f"- … and {len(plan.notes) - 200} more")
        lines.append("")
    return "\n".join(lines)


__all__ = [
    "PARQUET_SCHEMA",
    "county_markdown",
    "unit_markdown",
    "unit_slug",
    "unit_table",
    "write_reports",
]
