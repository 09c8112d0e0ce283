"""The county's disclosure (公示) from the hub: simulated stations in a real SeaweedFS
bucket, `custody hub sync`, then `custody hub disclose`, each a real subprocess.

The figures are checked against a count made here, in plain Python, from the entries
the simulated stations signed (the contract's definitions: a recording is the first
ingest of a hash, counted in the Asia/Shanghai month it started; deletions, holds and
exports in the month of their entry, under the unit and category of the footage they
concern). The publication carries each station's checkpoint at the size the hub
verified, cosigned by the hub; its `disclose` entry is in the hub's own log with a
proof that verifies; and no officer number, recorder serial, file name, case number or
footage hash of the simulated entries is in any file.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from archive.s3 import S3Store
from archive.settings import S3Settings
from ledger.checkpoint import open_checkpoint
from ledger.cosignature import CosignatureVerifier, verify_cosignatures
from ledger.entry import decode_entry
from ledger.log import Ledger
from ledger.note import Verifier
from ledger.proof import TlogProof
from ledger.tree import leaf_hash

from ..conftest import run_cli
from ..stationsim import SimStation, hub_stations_toml, station_signer

TZ = ZoneInfo("Asia/Shanghai")
HUB = "witness.test/county-hub"
U1 = "530822000000"  # two stations' unit, named in the rules
U2 = "530823000000"  # a unit the rules do not name: shown as its code
U1_NAME = "勐海县公安局交通警察大队"
PUBLISHER = "勐海县公安局"
THRESHOLD = 3
KEYS = (
    "licensing",
    "administrative_penalty",
    "coercive_measure",
    "expropriation",
    "inspection",
    "other",
)
COUNTS = ("recordings", "cases", "evidence", "deletions", "holds", "exports")
START = datetime(2025, 12, 29, 6, 0, tzinfo=UTC)  # recordings on both sides of New Year


class Recorded(SimStation):
    """A simulated station that also keeps every leaf it signed, in order."""

    def _add(self, type_: str, payload: Mapping[str, Any], fast: bool = False) -> int:
        index = super()._add(type_, payload, fast)
        self.__dict__.setdefault("leaves", []).append(self._pending[-1])
        return index

    def entries(self) -> list[dict[str, Any]]:
        leaves: list[bytes] = self.__dict__.get("leaves", [])
        assert len(leaves) == self.size
        return [dict(decode_entry(leaf).fields) for leaf in leaves]


# -- the county ---------------------------------------------------------------------------


def _export(case: str | None, sim: SimStation) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "purpose": "court request",
        "operator": "root",
        "bytes": 1000,
        "file_count": 1,
        "manifest_sha256": hashlib.sha256(uuid.uuid4().bytes).hexdigest(),
        "files_tsv_sha256": hashlib.sha256(b"tsv").hexdigest(),
        "entries_sha256": hashlib.sha256(b"entries").hexdigest(),
        "entry_count": 3,
        "out": "/tmp/bag",
    }
    if case is not None:
        payload["case"] = case
    return payload


def grow(sim: Recorded, seed: int) -> None:
    """About four months of a station: captures across New Year, in February, then a
    March of annotations, holds, deletions by rule, exports, and the odd entries the
    figures must get right."""
    sim.append(220)  # the realistic mix: late December 2025 into January 2026
    sim.append(12, kinds=["annotate"])
    sim.clock = datetime(2026, 2, 27, 20, 0, tzinfo=UTC)  # near a month's end in Shanghai
    sim.append(160)
    sim.append(14, kinds=["annotate"])
    sim.clock = datetime(2026, 3, 10, 2, 0, tzinfo=UTC)
    sim.append(6, kinds=["hold"])
    sim.append(8, kinds=["delete"])  # the oldest recordings, some from 2025
    recs = sim.recordings()
    cases = sorted({c for r in recs for c in r.cases})
    assert cases, "the simulated station linked no footage to a case"
    sha0 = recs[0].sha256
    odd: list[tuple[str, Mapping[str, Any]]] = [
        ("export", _export(cases[0], sim)),
        ("export", _export(cases[-1], sim)),
        ("export", _export(cases[0], sim)),
        ("export", _export(None, sim)),  # no case: unit not recorded, other
        (
            "hold",
            {"scope": "case", "target": "2026-no-footage-9999", "reason": "r", "operator": "root"},
        ),
        (
            "hold_release",
            {"scope": "object", "target": sha0, "reason": "r", "holds": [1], "operator": "root"},
        ),
        # A derivative deleted with its original: not a deletion of an original.
        (
            "delete",
            {
                "sha256": hashlib.sha256(f"poster {seed}".encode()).hexdigest(),
                "role": "derivative",
                "kind": "poster",
                "of": [sha0],
                "rule": "follows its original",
                "operator": "custody retention sweep",
                "local": "deleted",
            },
        ),
        # The same content captured again later: still one recording (its first ingest).
        (
            "ingest",
            {
                "sha256": recs[-1].sha256,
                "size": recs[-1].size,
                "media_type": "video/mp4",
                "source": {"dock": "dock-9", "recorder": "slot09", "path": "slot09/x.MP4"},
                "recorder": {
                    "unit": "530899999999",
                    "officer": "999999",
                    "claimed_start": "2026-03-09T23:30:00",
                    "claimed_start_offset": "+08:00",
                    "identified_by": ["table"],
                },
                "times": {
                    "dock_received": "2026-03-10T01:59:00.000Z",
                    "file_mtime": "2026-03-10T01:58:00.000Z",
                },
            },
        ),
    ]
    if seed == 3:
        # A recording with no identity at all: its unit is not recorded, its month the
        # dock's receipt time in Shanghai (31 March 17:00 UTC is 1 April there).
        odd.append(
            (
                "ingest",
                {
                    "sha256": hashlib.sha256(b"anonymous").hexdigest(),
                    "size": 5,
                    "media_type": "video/mp4",
                    "source": {"dock": "dock-1", "recorder": "", "path": "VID_0001.mp4"},
                    "recorder": {"identified_by": ["unknown"]},
                    "times": {
                        "dock_received": "2026-03-31T17:00:00.000Z",
                        "file_mtime": "2026-03-31T16:50:00.000Z",
                    },
                },
            )
        )
        odd.append(
            (
                "probe",
                {
                    "sha256": hashlib.sha256(b"anonymous").hexdigest(),
                    "tool": "x",
                    "summary": {"duration_ms": 1_800_000},
                },
            )
        )
    sim.append_entries(odd, time=datetime(2026, 3, 20, 3, 0, tzinfo=UTC))


@dataclass
class County:
    tmp: Path
    sims: list[Recorded]
    hub_cfg: Path
    rules: Path
    bucket: str
    sync: dict[str, Any] = field(default_factory=dict)

    def hub(self, *args: str, check: bool = True) -> Any:
        return run_cli("hub", "-c", str(self.hub_cfg), *args, check=check)


def make_county(tmp: Path, seaweed: Any) -> County:
    bucket = seaweed.bucket(f"disclose-{uuid.uuid4().hex[:12]}", lock=False)
    store = S3Store(S3Settings(bucket=bucket, endpoint_url=seaweed.endpoint))
    sims = [
        Recorded(
            f"custody.example/menghai/dock-{i:02d}",
            store=store,
            seed=i,
            start=START,
            entries_per_day=60,
            unit=(U1 if i < 3 else U2),
            with_objects=True,
            object_bytes=(64, 256),
        )
        for i in (1, 2, 3)
    ]
    for i, s in enumerate(sims, 1):
        grow(s, i)
    run_cli("hub", "init", "--data", str(tmp / "hub"), "--name", HUB)
    cfg = tmp / "hub" / "hub.toml"
    text = cfg.read_text().replace('listen = "127.0.0.1:8710"', 'listen = ""')
    store_conf = {"kind": "s3", "bucket": bucket, "endpoint_url": seaweed.endpoint}
    cfg.write_text(text + hub_stations_toml([(s.origin, s.vkey(), "") for s in sims], store_conf))
    rules = tmp / "disclose.toml"
    rules.write_text(
        f'threshold = {THRESHOLD}\ntimezone = "Asia/Shanghai"\npublisher = "{PUBLISHER}"\n'
        f'[units]\n"{U1}" = "{U1_NAME}"\n'
    )
    return County(tmp, sims, cfg, rules, bucket)


# -- the count made here --------------------------------------------------------------


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def _started(e: Mapping[str, Any]) -> datetime:
    rec = e.get("recorder") or {}
    if rec.get("claimed_start"):
        return datetime.fromisoformat(rec["claimed_start"] + rec.get("claimed_start_offset", ""))
    docked = (e.get("times") or {}).get("dock_received")
    return _utc(docked) if docked else _utc(e["time"])


def _month(t: datetime) -> str:
    return t.astimezone(TZ).strftime("%Y-%m")


@dataclass(frozen=True)
class Rec:
    unit: str
    category: str
    evidence: bool
    month: str  # Asia/Shanghai month the recording started
    ms: int
    cases: frozenset[str]


Cell = tuple[str, str]  # (unit, category)
Key = tuple[str | None, str | None, str | None]


@dataclass
class Count:
    """Raw counts by (unit, category, month); None = all of them."""

    values: dict[str, dict[Key, int]] = field(default_factory=lambda: defaultdict(dict))
    hours_ms: dict[Key, int] = field(default_factory=dict)
    units: set[str] = field(default_factory=set)


def _keys(unit: str, cat: str, month: str) -> list[Key]:
    return [
        (u, c, m)
        for u in (unit, None)
        for c in (cat, None)
        for m in (month, None)
        if not (u is not None and c is None)  # no unit x all-categories figure
    ]


def recordings_of(entries: Iterable[Mapping[str, Any]]) -> dict[str, Rec]:
    """sha256 -> the recording, by the contract's definitions, for one station's log."""
    first: dict[str, Mapping[str, Any]] = {}
    cat: dict[str, str] = {}
    imp: dict[str, bool] = {}
    cases: dict[str, set[str]] = defaultdict(set)
    ms: dict[str, list[int]] = defaultdict(list)
    for e in entries:
        t, sha = e["type"], str(e.get("sha256"))
        if t == "ingest":
            first.setdefault(sha, e)
        elif t == "annotate":
            if isinstance(e.get("category"), str):
                cat[sha] = e["category"]
            if isinstance(e.get("important"), bool):
                imp[sha] = e["important"]
            cases[sha].update(e.get("cases_added") or ())
        elif t == "probe" and "summary" in e:
            ms[sha].append(int(e["summary"]["duration_ms"]))
    out = {}
    for sha, e in first.items():
        rec = e.get("recorder") or {}
        c = cat.get(sha) or rec.get("category") or "other"
        important = imp[sha] if sha in imp else bool(rec.get("important", False))
        assert len(ms[sha]) <= 1, f"{sha}: probed twice, the hours would be ambiguous"
        out[sha] = Rec(
            rec.get("unit") or "",
            c if c in KEYS else "other",
            important or bool(cases[sha]),
            _month(_started(e)),
            sum(ms[sha]),
            frozenset(cases[sha]),
        )
    return out


def count(stations: Iterable[list[dict[str, Any]]], year: str) -> Count:
    cnt = Count()
    rec_groups: dict[Key, list[Rec]] = defaultdict(list)
    events: dict[str, dict[Key, set[tuple[int, int]]]] = {
        f: defaultdict(set) for f in ("deletions", "holds", "exports")
    }
    for n, entries in enumerate(stations):
        recs = recordings_of(entries)
        cnt.units.update(r.unit for r in recs.values())
        for r in recs.values():
            if r.month.startswith(year):
                for k in _keys(r.unit, r.category, r.month):
                    rec_groups[k].append(r)

        def cells_of_case(case: str, recs: dict[str, Rec] = recs) -> set[Cell]:
            cells = {(r.unit, r.category) for r in recs.values() if case in r.cases}
            return cells or {("", "other")}

        def cell_of(sha: str, recs: dict[str, Rec] = recs) -> set[Cell]:
            r = recs.get(sha)
            return {(r.unit, r.category)} if r else {("", "other")}

        for i, e in enumerate(entries):
            month = _month(_utc(e["time"]))
            if not month.startswith(year):
                continue
            t = e["type"]
            if t == "delete" and e.get("role") != "derivative":
                fig, cells = "deletions", cell_of(e["sha256"])
            elif t == "hold":
                target = e["target"]
                fig = "holds"
                cells = cell_of(target) if e["scope"] == "object" else cells_of_case(target)
            elif t == "export":
                fig = "exports"
                cells = cells_of_case(e["case"]) if "case" in e else {("", "other")}
            else:
                continue
            for u, c in cells:
                for k in _keys(u, c, month):
                    events[fig][k].add((n, i))
    for k, rs in rec_groups.items():
        cnt.values["recordings"][k] = len(rs)
        cnt.values["evidence"][k] = sum(r.evidence for r in rs)
        cnt.values["cases"][k] = len({c for r in rs for c in r.cases})
        cnt.hours_ms[k] = sum(r.ms for r in rs)
    for fig, groups in events.items():
        for k, ids in groups.items():
            cnt.values[fig][k] = len(ids)
    return cnt


def hours_text(ms: int) -> str:
    return str((Decimal(ms) / 3_600_000).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


def check_cell(where: str, shown: Mapping[str, Any], cnt: Count, key: Key) -> int:
    """One published row against the count; returns how many figures were shown as
    plain numbers."""
    plain = 0
    for f in COUNTS:
        v, n = shown[f], cnt.values[f].get(key, 0)
        if isinstance(v, int):
            assert v == n, f"{where} {f}: published {v}, counted {n}"
            plain += 1
        elif v == f"<{THRESHOLD}":
            assert 1 <= n < THRESHOLD, f"{where} {f}: published {v}, counted {n}"
        else:
            assert v == "x" and n >= 1, f"{where} {f}: published {v!r}, counted {n}"
    if isinstance(shown["recordings"], int):
        assert shown["hours"] == hours_text(cnt.hours_ms.get(key, 0)), (where, shown)
    else:
        assert shown["hours"] is None, (where, shown)
    return plain


# -- the tests ----------------------------------------------------------------------------


def _files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def _secrets(entries: Iterable[Mapping[str, Any]]) -> dict[str, set[str]]:
    """What no published file may hold: officer numbers, recorder serials, file names,
    case numbers, footage hashes (and their first 16 hex digits)."""
    out: dict[str, set[str]] = defaultdict(set)
    for e in entries:
        rec = e.get("recorder") or {}
        if rec.get("officer"):
            out["officer"].add(rec["officer"])
        if rec.get("serial"):
            out["serial"].add(rec["serial"])
        operator = e.get("operator")
        if isinstance(operator, str) and re.fullmatch(r"[0-9]{5,6}", operator):
            out["officer"].add(operator)
        source = e.get("source")
        path = source.get("path") if isinstance(source, dict) else None
        if path:
            out["file name"].add(path.rsplit("/", 1)[-1])
        out["case"].update(e.get("cases_added") or ())
        if e["type"] == "hold" and e["scope"] == "case":
            out["case"].add(e["target"])
        if e.get("case"):
            out["case"].add(e["case"])
        for h in (e.get("sha256"), e.get("target") if e.get("scope") == "object" else None):
            if h:
                out["hash"].update((h, h[:16]))
    return out


def test_county_disclosure_counts_what_the_stations_signed(tmp_path: Path, seaweed: Any) -> None:
    county = make_county(tmp_path, seaweed)
    p = county.hub("sync", "--json")
    synced = {s["origin"]: s for s in json.loads(p.stdout)["stations"]}
    assert {o: (s["state"], s["size"]) for o, s in synced.items()} == {
        s.origin: ("ok", s.size) for s in county.sims
    }, synced
    # One object altered behind the station's back: the hub's audit finds it (exit 1, as
    # for the captures the simulation never stored), and the figures count one failure.
    altered = county.sims[0].recordings()[5]
    seaweed.client().put_object(Bucket=county.bucket, Key=altered.key, Body=b"edited")
    p = county.hub("audit", "--sample", "100000", "--json", check=False)
    assert p.returncode == 1, p.stderr
    audit = json.loads(p.stdout)
    assert audit["results"]["altered"] == 1, audit["results"]
    status = json.loads(county.hub("status", "--json").stdout)
    witness = CosignatureVerifier.parse(status["hub"]["witness_vkey"])
    before = int(status["hub"]["ledger_size"])

    out = tmp_path / "public" / "2026"
    p = county.hub(
        "disclose", "--out", str(out), "--period", "2026", "--rules", str(county.rules),
        "--operator", "county office", "--json",
    )  # fmt: skip
    res = json.loads(p.stdout)
    doc = json.loads((out / "data.json").read_text())
    assert (doc["format"], doc["scope"], doc["period"]) == (
        "custody-disclosure/v1",
        "county",
        "2026",
    )
    assert (doc["publisher"], doc["origin"], doc["threshold"]) == (PUBLISHER, HUB, THRESHOLD)
    assert doc["months"] == [f"2026-{m:02d}" for m in range(1, 13)]

    # -- the figures, against the count made here from what the stations signed
    entries = [s.entries() for s in county.sims]
    cnt = count(entries, "2026")
    assert cnt.values["recordings"][(None, None, "2026-01")] > 20  # a real sample
    assert cnt.values["recordings"][(None, None, "2026-02")] > 0
    assert cnt.values["recordings"][(None, None, "2026-04")] == 1  # the anonymous one
    assert cnt.values["recordings"][(None, None, None)] < sum(
        len(recordings_of(e)) for e in entries
    ), "no recording of 2025 to leave out"
    for f in ("deletions", "holds", "exports"):
        assert cnt.values[f][(None, None, "2026-03")] >= THRESHOLD, (f, cnt.values[f])
    assert [u["code"] for u in doc["units"]] == [U1, U2, ""]
    assert [u["name"] for u in doc["units"]][:2] == [U1_NAME, U2]
    assert "530899999999" not in json.dumps(doc), "a second ingest gave a recording a unit"

    totals = {(t["category"] or None, t["month"]): t for t in doc["totals"]}
    assert len(totals) == 7 * 13 == len(doc["totals"])
    grand = totals[(None, "2026")]
    for f in ("recordings", "evidence", "cases", "deletions", "holds", "exports"):
        assert grand[f] == cnt.values[f][(None, None, None)], (f, grand, cnt.values[f])
    assert grand["hours"] == hours_text(cnt.hours_ms[(None, None, None)])
    assert res["totals"]["all"] == {**{f: grand[f] for f in COUNTS}, "hours": grand["hours"]}
    plain = 0
    for (c, m), row in totals.items():
        key = (None, c, None if m == "2026" else m)
        plain += check_cell(f"totals {c or 'all'} {m}", row, cnt, key)
    assert len(doc["rows"]) == 3 * 6 * 13
    for row in doc["rows"]:
        m = None if row["month"] == "2026" else row["month"]
        plain += check_cell(
            f"unit {row['unit'] or '-'} {row['category']} {row['month']}",
            row,
            cnt,
            (row["unit"], row["category"], m),
        )
    shown_nonzero = sum(
        1
        for r in doc["rows"]
        for f in COUNTS
        if isinstance(r[f], int) and r[f] > 0 and r["month"] != "2026"
    )
    assert plain > 400 and shown_nonzero >= 10, (plain, shown_nonzero)

    # data.csv says what data.json says: one line per unit row and per total
    csv_lines = (out / "data.csv").read_bytes().decode("utf-8-sig").splitlines()
    assert len(csv_lines) == 1 + len(doc["rows"]) + len(doc["totals"])
    assert csv_lines[0].split(",")[:5] == ["unit", "unit_name", "category", "category_zh", "month"]

    # the hub's own audit (entries of its log), by the month of the audit in Shanghai
    assert audit["results"]["ok"] > 0, audit
    hub_entries = _ledger_entries(county)
    audits = [e for e in hub_entries if e["type"] == "audit"]
    assert len(audits) == 1
    by_month = {a["month"]: a for a in doc["audits"]}
    for a in audits:
        m = _month(_utc(a["time"]))
        if m.startswith("2026"):
            checked = sum(v for k, v in a["results"].items() if k != "not_checked")
            bad = sum(a["results"].get(k, 0) for k in ("altered", "missing", "unreadable"))
            assert by_month[m] == {
                "month": m, "audits": 1, "objects_checked": checked, "failures": bad,
            }, (by_month[m], a)  # fmt: skip

    # -- the logs: each station's at the size the hub verified, cosigned by the hub
    logs = {lg["origin"]: lg for lg in doc["logs"]}
    assert set(logs) == {HUB} | {s.origin for s in county.sims}
    assert doc["witnesses"] == [witness.vkey()]
    assert (out / "witnesses.txt").read_text() == witness.vkey() + "\n"
    for i, lg in enumerate(doc["logs"], 1):
        assert (lg["checkpoint"], lg["vkey"]) == (f"logs/{i:02d}/checkpoint", f"logs/{i:02d}/vkey")
    for s in county.sims:
        lg = logs[s.origin]
        assert lg["size"] == synced[s.origin]["size"] == s.size == doc["sizes"][s.origin]
        assert (out / lg["vkey"]).read_text() == s.vkey() + "\n"
        note = (out / lg["checkpoint"]).read_bytes()
        cp = open_checkpoint(note, [Verifier.parse(s.vkey())], s.origin).checkpoint
        assert (cp.size, cp.root) == (s.size, s.root())
        good = verify_cosignatures(note, [witness])
        assert [w.vkey() for w, _ in good] == [witness.vkey()], f"{s.origin}: not cosigned"
        assert lg["cosignatures"] == 1
    hub_vkey = (out / "publisher.vkey").read_text().strip()
    assert logs[HUB]["size"] == before and (out / logs[HUB]["vkey"]).read_text().strip() == hub_vkey

    # -- the disclose entry: in the hub's own log, with a proof that verifies
    leaf = (out / "disclose.entry").read_bytes()
    fields = dict(decode_entry(leaf).fields)
    manifest = (out / "MANIFEST").read_bytes()
    assert fields["type"] == "disclose" and fields["station"] == HUB
    assert fields["manifest_sha256"] == hashlib.sha256(manifest).hexdigest()
    assert (fields["period"], fields["scope"], fields["logs"]) == ("2026", "county", 4)
    # Who ran it stays in the hub's log (a note after the entry), not in the publication.
    assert (fields["threshold"], fields["operator"]) == (THRESHOLD, "custody disclose")
    assert not [f for f in out.rglob("*") if f.is_file() and b"county office" in f.read_bytes()]
    assert fields["files"] == len(manifest.splitlines()) == res["files"]
    assert decode_entry(leaf).verify(Verifier.parse(hub_vkey))
    proof = TlogProof.parse((out / "disclose.tlog-proof").read_bytes())
    sc = proof.verify(leaf, [Verifier.parse(hub_vkey)], HUB)
    assert proof.index == res["entry"] >= before and sc.checkpoint.size == res["checkpoint_size"]
    with Ledger(county.tmp / "hub" / "ledger", county.tmp / "hub" / "state", HUB, None) as led:
        assert led.entry(proof.index) == leaf
        note = dict(decode_entry(led.entry(proof.index + 1)).fields)
    assert (note["type"], note["operator"]) == ("note", "county office")
    assert leaf_hash(leaf).hex() == hashlib.sha256(b"\x00" + leaf).hexdigest()
    after = json.loads(county.hub("status", "--json").stdout)["hub"]
    assert int(after["ledger_size"]) == proof.index + 2 == sc.checkpoint.size
    v = run_cli("verify", str(out), "--vkey", hub_vkey, check=False)
    assert v.returncode == 0, v.stdout + v.stderr

    # -- no personal data, anywhere in the folder
    files = _files(out)
    assert {"index.html", "style.css", "data.json", "data.csv", "audits.csv", "MANIFEST"} <= set(
        files
    )
    secrets = _secrets(e for st in entries for e in st)
    assert len(secrets["officer"]) > 20 and len(secrets["case"]) > 3, secrets.keys()
    officer = re.compile(
        "(?<![0-9A-Za-z+/])(?:" + "|".join(sorted(secrets["officer"])) + ")(?![0-9A-Za-z+/])"
    )

    def leaks(text: str) -> list[str]:
        found = [f"officer number {m.group()}" for m in officer.finditer(text)]
        low = text.lower()
        for kind, values in secrets.items():
            if kind != "officer":
                found += [f"{kind} {s}" for s in values if s.lower() in low]
        return found

    ingest = next(e for e in entries[0] if e["type"] == "ingest")
    assert len(leaks(json.dumps(ingest, ensure_ascii=False))) >= 4  # the scan does find
    for name, data in files.items():
        assert not leaks(data.decode("utf-8", errors="replace")), (name, leaks(data.decode()))


def _ledger_entries(county: County) -> list[dict[str, Any]]:
    with Ledger(county.tmp / "hub" / "ledger", county.tmp / "hub" / "state", HUB, None) as led:
        rec = led.latest()
        return [dict(decode_entry(led.entry(i)).fields) for i in range(rec.size if rec else 0)]


def test_a_hub_that_never_synced_publishes_zeros(tmp_path: Path) -> None:
    run_cli("hub", "init", "--data", str(tmp_path / "hub"), "--name", HUB)
    cfg = tmp_path / "hub" / "hub.toml"
    sim_vkey = station_signer("custody.example/menghai/dock-01", 1).verifier().vkey()
    cfg.write_text(
        cfg.read_text().replace('listen = "127.0.0.1:8710"', 'listen = ""')
        + hub_stations_toml(
            [("custody.example/menghai/dock-01", sim_vkey, "")],
            {"kind": "local", "path": str(tmp_path / "nothing-here")},
        )
    )
    out = tmp_path / "public"
    p = run_cli("hub", "-c", str(cfg), "disclose", "--out", str(out), "--period", "2026-03",
                "--json", check=False)  # fmt: skip
    assert p.returncode == 0, p.stdout + p.stderr
    doc = json.loads((out / "data.json").read_text())
    assert doc["months"] == ["2026-03"] and doc["units"] == [] and doc["rows"] == []
    for t in doc["totals"]:
        assert {f: t[f] for f in COUNTS} == dict.fromkeys(COUNTS, 0), t
        assert t["hours"] == "0.0", t
    assert doc["audits"] == [{"month": "2026-03", "audits": 0, "objects_checked": 0, "failures": 0}]
    assert [lg["origin"] for lg in doc["logs"]] in ([], [HUB])  # no station vouched for
    assert doc["sizes"].get("custody.example/menghai/dock-01", 0) == 0
    res = json.loads(p.stdout)
    assert res["totals"]["all"]["recordings"] == 0
    html = (out / "index.html").read_text()
    assert "执法全过程记录公示" in html and "No recordings in this period" in html
    hub_vkey = (out / "publisher.vkey").read_text().strip()
    v = run_cli("verify", str(out), "--vkey", hub_vkey, check=False)
    assert v.returncode == 0, v.stdout + v.stderr
    proof = TlogProof.parse((out / "disclose.tlog-proof").read_bytes())
    proof.verify((out / "disclose.entry").read_bytes(), [Verifier.parse(hub_vkey)], HUB)


def _ingest(sha: str, received: str, recorder: dict[str, Any]) -> dict[str, Any]:
    return {
        "sha256": sha,
        "size": 5,
        "media_type": "video/mp4",
        "source": {"dock": "dock-1", "recorder": "", "path": "VID_0001.mp4"},
        "recorder": {**recorder, "identified_by": (recorder and ["table"]) or ["unknown"]},
        "times": {"dock_received": received, "file_mtime": received},
    }


def test_a_recording_keeps_what_its_first_ingest_said(tmp_path: Path) -> None:
    """The contract: a recording is its first ingest; its unit is that ingest's (none:
    "unit not recorded"), its category and importance too unless annotated. The same
    content captured again later with an identity (after a deletion, on another dock)
    changes none of it."""
    from archive.local import LocalFolderStore

    store = tmp_path / "store"
    sim = SimStation("custody.example/menghai/dock-07", store=LocalFolderStore(store), seed=7)
    sim.append(20)  # December 2025
    shas = [hashlib.sha256(f"anonymous {i}".encode()).hexdigest() for i in range(2)]
    first = [("ingest", _ingest(h, "2026-03-05T02:00:00.000Z", {})) for h in shas]
    sim.append_entries(first, time=datetime(2026, 3, 5, 2, 0, tzinfo=UTC))
    identified = {"unit": U2, "category": "licensing", "important": True}
    again = [("ingest", _ingest(h, "2026-04-05T02:00:00.000Z", identified)) for h in shas]
    sim.append_entries(again, time=datetime(2026, 4, 5, 2, 0, tzinfo=UTC))

    run_cli("hub", "init", "--data", str(tmp_path / "hub"), "--name", HUB)
    cfg = tmp_path / "hub" / "hub.toml"
    cfg.write_text(
        cfg.read_text().replace('listen = "127.0.0.1:8710"', 'listen = ""')
        + hub_stations_toml([(sim.origin, sim.vkey(), "")], {"kind": "local", "path": str(store)})
    )
    run_cli("hub", "-c", str(cfg), "sync")
    rules = tmp_path / "disclose.toml"
    rules.write_text("threshold = 2\n")
    out = tmp_path / "public"
    run_cli("hub", "-c", str(cfg), "disclose", "--out", str(out), "--period", "2026-03",
            "--rules", str(rules))  # fmt: skip
    doc = json.loads((out / "data.json").read_text())
    # Failing today: disclose/figures.py `_BASE` takes the first ingest's unit, category
    # and importance with DuckDB's arg_min, which skips nulls: the later ingest's win.
    assert [u["code"] for u in doc["units"]] == [sim.unit, ""], doc["units"]
    rows = {(r["unit"], r["category"], r["month"]): r for r in doc["rows"]}
    march = rows[("", "other", "2026-03")]
    assert (march["recordings"], march["evidence"]) == (2, 0), march
