"""The publication folder: figures as HTML, JSON and CSV, the logs' checkpoints, the
MANIFEST, and the signed ``disclose`` entry with its proof (docs/disclosure-format.md).

The folder is written under ``<out>.partial`` and renamed into place once whole, so a
crash leaves either nothing or a finished publication. The composition root signs: it
passes ``sign(payload) -> Signed``, which appends the ``disclose`` entry to its log,
integrates it into a signed checkpoint and returns the entry's leaf and tlog-proof.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from disclose.figures import (
    CATEGORIES,
    FIGURES,
    AuditFigures,
    Figures,
    Period,
    table,
)
from disclose.rules import Rules
from ledger.durable import fsync_dir

FORMAT = "custody-disclosure/v1"
MANIFEST = "MANIFEST"
ENTRY = "disclose.entry"
PROOF = "disclose.tlog-proof"
UNSIGNED = (MANIFEST, ENTRY, PROOF)  # the files MANIFEST does not list
NO_UNIT = ("未标明单位", "unit not recorded")


class PublishError(Exception):
    """A publication that cannot be written; one line a person can act on."""


@dataclass(frozen=True)
class LogRef:
    """A log whose latest witnessed checkpoint the publication carries."""

    origin: str
    vkey: str
    checkpoint: str  # the signed note, cosignature lines included
    size: int
    cosignatures: int


@dataclass(frozen=True)
class Publication:
    period: Period
    scope: str  # "station" | "county"
    origin: str  # the publisher's log (its `disclose` entry is there)
    rules: Rules
    figures: Figures
    audits: Sequence[AuditFigures]
    logs: Sequence[LogRef]
    witnesses: Sequence[str]  # witness vkeys
    sizes: Mapping[str, int]  # log sizes the figures were computed at
    generated: str  # RFC 3339 UTC
    policy: bytes | None = None
    publisher_vkey: str = ""
    complete: bool = True  # the period was over when the figures were made

    @property
    def publisher(self) -> str:
        return self.rules.publisher or self.origin


@dataclass(frozen=True)
class Signed:
    index: int
    leaf: bytes
    proof: str  # C2SP tlog-proof text
    checkpoint_size: int


@dataclass(frozen=True)
class DiscloseResult:
    out: Path
    period: str
    entry_index: int
    checkpoint_size: int
    files: int
    manifest_sha256: str
    seconds: float
    figures: dict[str, Any] = field(default_factory=dict)  # the period's all-unit totals


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def data_document(pub: Publication) -> dict[str, Any]:
    rows, totals = table(pub.figures, pub.rules.threshold)
    units = [
        {"code": u, "name": pub.rules.unit_name(u) if u else " ".join(NO_UNIT)}
        for u in pub.figures.units
    ]
    return {
        "format": FORMAT,
        "period": pub.period.label,
        "scope": pub.scope,
        "publisher": pub.publisher,
        "origin": pub.origin,
        "generated": pub.generated,
        "complete": pub.complete,
        "timezone": pub.rules.timezone,
        "threshold": pub.rules.threshold,
        "months": list(pub.period.months),
        "categories": [{"key": k, "zh": zh, "en": en} for k, zh, en in CATEGORIES],
        "units": units,
        "figures": list(FIGURES),
        "rows": rows,
        "totals": totals,
        "audits": [
            {
                "month": a.month,
                "audits": a.audits,
                "objects_checked": a.objects_checked,
                "failures": a.failures,
            }
            for a in pub.audits
        ],
        "logs": [
            {
                "origin": lg.origin,
                "size": lg.size,
                "checkpoint": f"logs/{i:02d}/checkpoint",
                "vkey": f"logs/{i:02d}/vkey",
                "cosignatures": lg.cosignatures,
            }
            for i, lg in enumerate(pub.logs, 1)
        ],
        "witnesses": list(pub.witnesses),
        "sizes": dict(sorted(pub.sizes.items())),
    }


def _cell(v: Any) -> str:
    return "" if v is None else str(v)


def data_csv(doc: Mapping[str, Any]) -> bytes:
    """One row per unit × category × month and period; then the all-unit totals (unit
    ``*``). UTF-8 with a byte order mark, so spreadsheet programs read the Chinese."""
    names = {u["code"]: u["name"] for u in doc["units"]}
    zh = {c["key"]: c["zh"] for c in doc["categories"]}
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(["unit", "unit_name", "category", "category_zh", "month", *doc["figures"]])
    for r in doc["rows"]:
        w.writerow(
            [r["unit"], names.get(r["unit"], ""), r["category"], zh[r["category"]], r["month"]]
            + [_cell(r[f]) for f in doc["figures"]]
        )
    for r in doc["totals"]:
        c = r["category"]
        w.writerow(
            ["*", "全部单位 all units", c or "*", zh.get(c, "全部类别 all categories"), r["month"]]
            + [_cell(r[f]) for f in doc["figures"]]
        )
    return ("\ufeff" + buf.getvalue()).encode("utf-8")


def audits_csv(doc: Mapping[str, Any]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(["month", "audits", "objects_checked", "failures"])
    for a in doc["audits"]:
        w.writerow([a["month"], a["audits"], a["objects_checked"], a["failures"]])
    return ("\ufeff" + buf.getvalue()).encode("utf-8")


def _html(doc: Mapping[str, Any]) -> bytes:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("disclose", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    cat = {c["key"]: c for c in doc["categories"]}
    totals = {(r["category"], r["month"]): r for r in doc["totals"]}
    by_unit: dict[str, dict[tuple[str, str], Mapping[str, Any]]] = {}
    for r in doc["rows"]:
        by_unit.setdefault(r["unit"], {})[(r["category"], r["month"])] = r
    return (
        env.get_template("index.html")
        .render(doc=doc, cat=cat, totals=totals, by_unit=by_unit)
        .encode("utf-8")
    )


def manifest_of(folder: Path) -> bytes:
    """``sha256sum`` lines for every file in ``folder`` but the three unsigned ones,
    sorted by path."""
    lines = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in filenames:
            p = Path(dirpath) / name
            rel = p.relative_to(folder).as_posix()
            if rel in UNSIGNED:
                continue
            h = hashlib.sha256()
            with p.open("rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            lines.append(f"{h.hexdigest()}  {rel}\n")
    return "".join(sorted(lines, key=lambda s: s[66:])).encode("utf-8")


def write_files(folder: Path, pub: Publication) -> dict[str, Any]:
    """Every file MANIFEST lists; returns data.json's document."""
    doc = data_document(pub)
    _write(folder / "data.json", (json.dumps(doc, ensure_ascii=False, indent=1) + "\n").encode())
    _write(folder / "data.csv", data_csv(doc))
    _write(folder / "audits.csv", audits_csv(doc))
    _write(folder / "index.html", _html(doc))
    style = Path(__file__).parent / "templates" / "style.css"
    _write(folder / "style.css", style.read_bytes())
    for i, lg in enumerate(pub.logs, 1):
        _write(folder / "logs" / f"{i:02d}" / "checkpoint", lg.checkpoint.encode())
        _write(folder / "logs" / f"{i:02d}" / "vkey", (lg.vkey + "\n").encode())
    _write(folder / "witnesses.txt", "".join(w + "\n" for w in pub.witnesses).encode())
    if pub.policy is not None:
        _write(folder / "policy.txt", pub.policy)
    _write(folder / "publisher.vkey", (pub.publisher_vkey + "\n").encode())
    return doc


def entry_payload(pub: Publication, manifest: bytes, files: int, operator: str) -> dict[str, Any]:
    return {
        "period": pub.period.label,
        "scope": pub.scope,
        "manifest_sha256": hashlib.sha256(manifest).hexdigest(),
        "files": files,
        "threshold": pub.rules.threshold,
        "timezone": pub.rules.timezone,
        "logs": len(pub.logs),
        "operator": operator,
    }


@contextmanager
def _partial(out: Path) -> Iterator[Path]:
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        raise PublishError(
            f"{tmp} exists (a publication interrupted by a crash, or another folder): "
            "look at it and remove it, then publish again"
        )
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def build(
    out: Path,
    pub: Publication,
    operator: str,
    sign: Callable[[dict[str, Any]], Signed],
) -> DiscloseResult:
    """Write the publication of ``pub`` to ``out`` (which must not exist)."""
    t0 = time.monotonic()
    if out.exists():
        raise PublishError(f"{out} already exists; choose a new folder for the publication")
    if any(c in operator for c in "\r\n\t") or any(ord(c) < 0x20 for c in operator):
        raise PublishError("the operator name holds a line break or control character")
    with _partial(out) as tmp:
        doc = write_files(tmp, pub)
        manifest = manifest_of(tmp)
        files = manifest.count(b"\n")
        _write(tmp / MANIFEST, manifest)
        signed = sign(entry_payload(pub, manifest, files, operator))
        _write(tmp / ENTRY, signed.leaf)
        _write(tmp / PROOF, signed.proof.encode())
        for d, _, _ in os.walk(tmp):
            fsync_dir(Path(d))
        os.replace(tmp, out)
        fsync_dir(out.parent)
    period_totals = {
        r["category"] or "all": {f: r[f] for f in FIGURES}
        for r in doc["totals"]
        if r["month"] == pub.period.label
    }
    return DiscloseResult(
        out=out,
        period=pub.period.label,
        entry_index=signed.index,
        checkpoint_size=signed.checkpoint_size,
        files=files,
        manifest_sha256=hashlib.sha256(manifest).hexdigest(),
        seconds=round(time.monotonic() - t0, 3),
        figures=period_totals,
    )


__all__ = [
    "ENTRY",
    "FORMAT",
    "MANIFEST",
    "PROOF",
    "UNSIGNED",
    "DiscloseResult",
    "LogRef",
    "Publication",
    "PublishError",
    "Signed",
    "build",
    "data_csv",
    "data_document",
    "entry_payload",
    "manifest_of",
    "write_files",
]
