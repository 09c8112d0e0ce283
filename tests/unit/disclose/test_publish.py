"""The publication folder, built with a stand-in for the log's signer: MANIFEST, the CSV
and JSON shapes, the page (no script, nothing from outside), and the folder appearing
whole or not at all."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from disclose.figures import CATEGORY_KEYS, FIGURES, AuditFigures, Figures, parse_period
from disclose.publish import (
    ENTRY,
    FORMAT,
    MANIFEST,
    PROOF,
    LogRef,
    Publication,
    PublishError,
    Signed,
    build,
)
from disclose.rules import Rules, parse_rules

ORIGIN = "custody.test/menghai/dock-01"
U, V = "530822000000", "530822111111"
VKEY = ORIGIN + "+1234abcd+AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcdefgh"
CHECKPOINT = f"{ORIGIN}\n42\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n— {ORIGIN} sig\n"


def _figures(label: str, units: tuple[str, ...]) -> Figures:
    p = parse_period(label, "Asia/Shanghai")
    m = p.months[0]
    rec = {
        (units[0], "licensing", m): 7,
        (units[0], "licensing", None): 7,
        (None, "licensing", m): 7,
        (None, "licensing", None): 7,
        (None, None, m): 7,
        (None, None, None): 7,
    }
    values = {f: dict(rec) for f in FIGURES}
    values["hours"] = {k: 7 * 360_000 for k in rec}
    return Figures(p, units, values)


def _pub(
    label: str = "2026",
    units: tuple[str, ...] = (U, V, ""),
    rules: Rules | None = None,
    policy: bytes | None = b"log " + VKEY.encode() + b"\nquorum none\n",
) -> Publication:
    fig = _figures(label, units)
    return Publication(
        period=fig.period,
        scope="station",
        origin=ORIGIN,
        rules=rules or Rules(),
        figures=fig,
        audits=[AuditFigures(m, 1, 10, 0) for m in fig.period.months],
        logs=[LogRef(ORIGIN, VKEY, CHECKPOINT, 42, 0)],
        witnesses=["witness.test/a+0000beef+AAAA"],
        sizes={ORIGIN: 42},
        generated="2027-01-03T02:00:00Z",
        policy=policy,
        publisher_vkey=VKEY,
    )


class FakeSigner:
    """Records what it was asked to sign; returns a fixed leaf and proof."""

    def __init__(self, fail: bool = False) -> None:
        self.payloads: list[dict[str, Any]] = []
        self.fail = fail

    def __call__(self, payload: dict[str, Any]) -> Signed:
        self.payloads.append(payload)
        if self.fail:
            raise RuntimeError("the log is not writable")
        return Signed(43, b'{"type":"disclose"}', "c2sp.org/tlog-proof@v1\nindex 43\n", 44)


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_manifest_lists_every_file_but_the_three_unsigned_ones(tmp_path: Path) -> None:
    sign = FakeSigner()
    out = tmp_path / "pub"
    res = build(out, _pub(), "root", sign)
    manifest = (out / MANIFEST).read_bytes()
    lines = manifest.decode().splitlines(keepends=True)
    listed = []
    for ln in lines:
        m = re.fullmatch(r"([0-9a-f]{64})  ([^\n]+)\n", ln)
        assert m, repr(ln)
        path = m.group(2)
        assert hashlib.sha256((out / path).read_bytes()).hexdigest() == m.group(1), path
        listed.append(path)
    assert listed == sorted(listed)
    assert set(listed) == set(_files(out)) - {MANIFEST, ENTRY, PROOF}
    assert {MANIFEST, ENTRY, PROOF} <= set(_files(out))
    assert set(listed) == {
        "audits.csv",
        "data.csv",
        "data.json",
        "index.html",
        "logs/01/checkpoint",
        "logs/01/vkey",
        "policy.txt",
        "publisher.vkey",
        "style.css",
        "witnesses.txt",
    }
    # The signed entry names exactly this MANIFEST.
    (payload,) = sign.payloads
    digest = hashlib.sha256(manifest).hexdigest()
    assert payload == {
        "period": "2026",
        "scope": "station",
        "manifest_sha256": digest,
        "files": len(listed),
        "threshold": 5,
        "timezone": "Asia/Shanghai",
        "logs": 1,
        "operator": "root",
    }
    assert (res.manifest_sha256, res.files, res.entry_index, res.checkpoint_size) == (
        digest,
        len(listed),
        43,
        44,
    )
    assert (out / ENTRY).read_bytes() == b'{"type":"disclose"}'
    assert (out / PROOF).read_text() == "c2sp.org/tlog-proof@v1\nindex 43\n"
    assert (out / "logs/01/checkpoint").read_text() == CHECKPOINT
    assert (out / "logs/01/vkey").read_text() == VKEY + "\n"
    assert (out / "publisher.vkey").read_text() == VKEY + "\n"
    assert (out / "witnesses.txt").read_text() == "witness.test/a+0000beef+AAAA\n"
    assert not (tmp_path / "pub.partial").exists()


def test_without_a_witness_policy_there_is_no_policy_file(tmp_path: Path) -> None:
    out = tmp_path / "pub"
    build(out, _pub(policy=None), "root", FakeSigner())
    assert "policy.txt" not in _files(out)
    assert "policy.txt" not in (out / MANIFEST).read_text()


@pytest.mark.parametrize(("label", "months"), [("2026", 12), ("2026-03", 1)])
def test_data_csv_has_a_row_per_unit_category_and_month_and_the_totals(
    tmp_path: Path, label: str, months: int
) -> None:
    out = tmp_path / "pub"
    units = (U, V, "")
    build(out, _pub(label, units), "root", FakeSigner())
    raw = (out / "data.csv").read_bytes()
    assert raw.startswith("\ufeff".encode())
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"), newline="")))
    assert rows[0] == ["unit", "unit_name", "category", "category_zh", "month", *FIGURES]
    body = rows[1:]
    periods = months + 1 if months > 1 else 1  # a year's months and the year; a month
    assert len(body) == len(units) * 6 * periods + 7 * periods
    assert all(len(r) == 5 + len(FIGURES) for r in body)
    by_unit = [r for r in body if r[0] != "*"]
    assert {r[0] for r in by_unit} == set(units)
    assert {r[2] for r in by_unit} == set(CATEGORY_KEYS)
    # The figures as data.json has them (7 recordings in one cell, zeros elsewhere).
    doc = json.loads((out / "data.json").read_text())
    first = doc["months"][0]
    cell = next(r for r in by_unit if r[0] == U and r[2] == "licensing" and r[4] == first)
    assert cell[5:] == ["7", "0.7", "7", "7", "7", "7", "7"]
    zero = next(r for r in by_unit if r[0] == V and r[2] == "other" and r[4] == first)
    assert zero[5:] == ["0", "0.0", "0", "0", "0", "0", "0"]
    assert [r for r in body if r[0] == "*" and r[2] == "*" and r[4] == label][-1][5] == "7"
    assert (out / "audits.csv").read_bytes().decode("utf-8-sig").splitlines()[0] == (
        "month,audits,objects_checked,failures"
    )
    assert len((out / "audits.csv").read_text().splitlines()) == 1 + months


def test_data_json_follows_the_contract(tmp_path: Path) -> None:
    out = tmp_path / "pub"
    rules = parse_rules({"units": {U: "交警大队"}, "threshold": 3})
    build(out, _pub(rules=rules), "root", FakeSigner())
    doc = json.loads((out / "data.json").read_text(encoding="utf-8"))
    assert doc["format"] == FORMAT == "custody-disclosure/v1"
    assert (doc["period"], doc["scope"], doc["origin"]) == ("2026", "station", ORIGIN)
    assert doc["publisher"] == ORIGIN  # no public name in the rules: the log's origin
    assert (doc["timezone"], doc["threshold"]) == ("Asia/Shanghai", 3)
    assert doc["generated"] == "2027-01-03T02:00:00Z" and doc["complete"] is True
    assert [c["key"] for c in doc["categories"]] == list(CATEGORY_KEYS)
    assert doc["units"] == [
        {"code": U, "name": "交警大队"},
        {"code": V, "name": V},
        {"code": "", "name": "未标明单位 unit not recorded"},
    ]
    assert doc["figures"] == list(FIGURES)
    assert len(doc["rows"]) == 3 * 6 * 13 and len(doc["totals"]) == 7 * 13
    assert doc["logs"] == [
        {
            "origin": ORIGIN,
            "size": 42,
            "checkpoint": "logs/01/checkpoint",
            "vkey": "logs/01/vkey",
            "cosignatures": 0,
        }
    ]
    assert doc["sizes"] == {ORIGIN: 42}
    assert doc["witnesses"] == ["witness.test/a+0000beef+AAAA"]
    assert doc["audits"][0] == {
        "month": "2026-01",
        "audits": 1,
        "objects_checked": 10,
        "failures": 0,
    }


class Tags(HTMLParser):
    """Every start tag with its attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def _tags(html: str) -> list[tuple[str, dict[str, str | None]]]:
    p = Tags()
    p.feed(html)
    p.close()
    return p.tags


def _check_page(folder: Path) -> str:
    html = (folder / "index.html").read_text(encoding="utf-8")
    tags = _tags(html)
    assert "script" not in {t for t, _ in tags}
    assert not any(k.startswith("on") for _, a in tags for k in a)  # no event handlers
    loads = [a.get("src") for _, a in tags if "src" in a]
    assert loads == [], loads
    assert [a.get("href") for t, a in tags if t == "link"] == ["style.css"]
    for _, a in tags:
        href = a.get("href")
        if href is not None:  # links stay in the folder (the checkpoints, the data)
            assert ":" not in href and not href.startswith(("/", "\\")), href
            assert ".." not in href and (href.startswith("#") or (folder / href).is_file()), href
    return html


def test_the_page_has_no_script_and_loads_nothing_from_outside(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    build(plain, _pub(), "root", FakeSigner())
    html = _check_page(plain)
    assert "<script" not in html.lower()
    assert "http://" not in html and "https://" not in html
    assert "执法全过程记录公示" in html and "Enforcement recording disclosure" in html
    css = (plain / "style.css").read_text()
    assert "url(" not in css and "@import" not in css and "http" not in css
    # Names from the rules file are shown as text, never as markup.
    out = tmp_path / "pub"
    hostile = "<script>alert(1)</script><img src=https://evil.example/x.png>"
    rules = parse_rules({"units": {U: hostile}, "publisher": hostile})
    build(out, _pub(rules=rules), "root", FakeSigner())
    html = _check_page(out)
    assert "<script" not in html.lower() and "<img" not in html.lower()
    assert "&lt;script&gt;" in html


def test_an_existing_folder_is_refused_and_left_alone(tmp_path: Path) -> None:
    out = tmp_path / "pub"
    out.mkdir()
    (out / "keep").write_text("mine")
    with pytest.raises(PublishError) as e:
        build(out, _pub(), "root", FakeSigner())
    assert str(out) in str(e.value) and "\n" not in str(e.value)
    assert _files(out) == ["keep"]


def test_a_folder_left_by_a_crash_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "pub"
    (tmp_path / "pub.partial").mkdir()
    sign = FakeSigner()
    with pytest.raises(PublishError) as e:
        build(out, _pub(), "root", sign)
    assert "pub.partial" in str(e.value) and "\n" not in str(e.value)
    assert not out.exists() and sign.payloads == []


def test_a_failed_signature_leaves_no_folder(tmp_path: Path) -> None:
    out = tmp_path / "pub"
    with pytest.raises(RuntimeError):
        build(out, _pub(), "root", FakeSigner(fail=True))
    assert not out.exists() and not (tmp_path / "pub.partial").exists()


@pytest.mark.parametrize("operator", ["root\nfake line", "a\tb", "x\x00"])
def test_an_operator_with_a_line_break_is_refused(tmp_path: Path, operator: str) -> None:
    with pytest.raises(PublishError):
        build(tmp_path / "pub", _pub(), operator, FakeSigner())
    assert not (tmp_path / "pub").exists()
