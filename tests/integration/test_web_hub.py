"""The review site's hub source over real stations in one SeaweedFS bucket.

Two real stations (`custody init`, their docks configured with the GA/T 947 file-name
pattern and a unit each) capture generated clips with `custody ingest`, which
replicates them and mirrors the ledger into one shared bucket; one is annotated into a
case that both stations' footage belongs to, and held. A real hub (`custody hub
init`, `custody hub sync`) follows both, and `web.hubsource.HubSource` reads what the
hub verified: search across the stations, entries read back from the bucket, originals
streamed with ranged GETs, inclusion proofs from the bucket's tiles with the hub's
cosignature, and access entries signed into the hub's own ledger while `custody hub
run` works on it in another process.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from custody.errors import CustodyError
from hub.config import load_hub
from ledger.entry import decode_entry
from ledger.log import Ledger
from ledger.note import Verifier
from ledger.proof import ProofError, TlogProof
from web.hubsource import HubSource
from web.source import FindQuery

from ..conftest import make_clip, run_cli
from .hubfix import Hub, HubServer, RealStation, closed_port, free_port, new_station

UNITS = {1: "530822000000", 2: "530823000000"}
CASE = "2026-行政处罚-0042"
OTHER_CASE = "2026-行政检查-0007"
DOCK = """
[[docks]]
path = "{dock}"
[[docks.patterns]]
vendor = "gat947"
regex = '^(?P<serial>[A-Z0-9]{{7}})_(?P<officer>[0-9]{{6}})_(?P<start>[0-9]{{14}})'
[docks.recorders.slot01]
unit = "{unit}"
"""


@dataclass
class Clip:
    station: RealStation
    name: str
    data: bytes

    @property
    def sha(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass
class County:
    tmp: Path
    seaweed: Any
    ffmpeg: str
    bucket: str
    stations: list[RealStation]
    hub: Hub
    clips: dict[str, Clip]
    src: HubSource


_tone = iter(range(500, 5000, 7))


def capture(county_tmp: Path, ffmpeg: str, st: RealStation, names: list[str]) -> list[Clip]:
    """Record clips named as a GA/T 947 recorder names them, capture them with
    `custody ingest` (which replicates and mirrors), keep their bytes."""
    out = []
    for name in names:
        made = make_clip(
            ffmpeg, county_tmp / "made" / name, seconds=1, tone=next(_tone), size="96x64"
        )
        slot = st.dock / "slot01"
        slot.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(made, slot / name)
        out.append(Clip(st, name, made.read_bytes()))
    # The ingest mirrors the ledger too; the hub's sync checks the mirror is complete.
    run_cli("ingest", str(st.dock), "--settle-ms", "0", config=st.conf)
    return out


def mirror(st: RealStation) -> None:
    """Mirror what the station signed since (an ingest of an empty folder does only that)."""
    empty = st.data.parent / f"{st.data.name}-empty"
    empty.mkdir(exist_ok=True)
    run_cli("ingest", str(empty), "--settle-ms", "0", config=st.conf)


@pytest.fixture(scope="module")
def county(tmp_path_factory: pytest.TempPathFactory, seaweed: Any, ffmpeg: str) -> Iterator[County]:
    tmp = tmp_path_factory.mktemp("webhub")
    bucket = seaweed.bucket("webhub")

    def station(i: int, names: list[str]) -> tuple[RealStation, list[Clip]]:
        st = new_station(tmp, i, seaweed.endpoint, bucket)
        with st.conf.open("a") as f:
            f.write(DOCK.format(dock=st.dock, unit=UNITS[i]))
        return st, capture(tmp, ffmpeg, st, names)

    # The two stations are set up side by side (each step is a subprocess).
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(
            station,
            1,
            ["ABC1234_010203_20241125083000.mp4", "ABC1234_010204_20241126090000.mp4"],
        )
        second = pool.submit(station, 2, ["XYZ9876_010203_20241127100000.mp4"])
        (one, (a, b)), (two, (c,)) = first.result(), second.result()
        stations = [one, two]

        # One case with footage of both stations, held at the second only (a hold is
        # the station's: it covers that station's footage of the case).
        def first_station() -> None:
            run_cli("annotate", a.sha, "--case", CASE, "--category", "行政处罚", config=one.conf)
            run_cli("annotate", b.sha, "--case", OTHER_CASE, config=one.conf)
            mirror(one)

        def second_station() -> None:
            run_cli("annotate", c.sha, "--case", CASE, config=two.conf)
            run_cli("hold", "--case", CASE, "--reason", "appeal period", config=two.conf)
            mirror(two)

        for f in [pool.submit(first_station), pool.submit(second_station)]:
            f.result()
    hub = Hub.init(tmp)
    hub.follow(stations, seaweed.endpoint, bucket)
    _, doc = hub.sync()
    assert {s["state"] for s in doc["stations"]} == {"ok"}, doc
    src = HubSource(load_hub(hub.cfg))
    try:
        yield County(tmp, seaweed, ffmpeg, bucket, stations, hub, {"a": a, "b": b, "c": c}, src)
    finally:
        src.close()


def shas(items: list[dict[str, Any]]) -> set[str]:
    return {i["sha256"] for i in items}


def test_find_by_officer_unit_and_case_across_stations(county: County) -> None:
    src, c = county.src, county.clips
    one, two = county.stations
    items, total = src.find(FindQuery(officer="010203"), 0, 50)
    assert total == 2 and shas(items) == {c["a"].sha, c["c"].sha}
    assert {i["origin"] for i in items} == {one.origin, two.origin}
    # Ordered by when the recording started (the file name's start, here).
    assert [i["sha256"] for i in items] == [c["a"].sha, c["c"].sha]
    a = next(i for i in items if i["sha256"] == c["a"].sha)
    assert a["unit"] == UNITS[1] and a["recorder"] == "ABC1234" and a["officer"] == "010203"
    assert a["cases"] == [CASE] and a["held"] is False and a["deleted"] is False
    c2 = next(i for i in items if i["sha256"] == c["c"].sha)
    assert c2["cases"] == [CASE] and c2["held"] is True and c2["category"] is None
    assert a["category"] == "administrative_penalty" and a["category_from"] == "annotation"
    assert a["size"] == len(c["a"].data) and a["media_type"] == "video/mp4"
    assert a["store"] and a["store_entry"] is not None and a["ingest_entry"] is not None
    assert isinstance(a["recorded"], int) and isinstance(a["captured"], int)
    # 2024-11-25 08:30:00 as the file name says, in the station's time zone.
    assert abs(a["recorded"] - 1732523400) <= 14 * 3600

    items, total = src.find(FindQuery(unit=UNITS[1]), 0, 50)
    assert total == 2 and shas(items) == {c["a"].sha, c["b"].sha}
    b = next(i for i in items if i["sha256"] == c["b"].sha)
    assert b["held"] is False and b["cases"] == [OTHER_CASE]

    items, total = src.find(FindQuery(case=CASE), 0, 50)
    assert total == 2 and shas(items) == {c["a"].sha, c["c"].sha}
    assert src.case_objects(CASE) == [c["a"].sha, c["c"].sha]
    assert src.cases_of(c["b"].sha) == [OTHER_CASE]

    # A supervisor's units and a reviewer's objects restrict any query; paging.
    items, total = src.find(FindQuery(officer="010203", units=(UNITS[2],)), 0, 50)
    assert total == 1 and shas(items) == {c["c"].sha}
    items, total = src.find(FindQuery(shas=frozenset({c["b"].sha})), 0, 50)
    assert total == 1 and shas(items) == {c["b"].sha}
    assert src.find(FindQuery(shas=frozenset()), 0, 50) == ([], 0)
    items, total = src.find(FindQuery(), 1, 1)
    assert total == 3 and len(items) == 1
    # Recording time: [since, until).
    t = a["recorded"]
    items, _ = src.find(FindQuery(since=t, until=t + 1), 0, 50)
    assert shas(items) == {c["a"].sha}
    assert src.find(FindQuery(officer="999999"), 0, 50) == ([], 0)

    rows = {(r["origin"], r["unit"]): r for r in src.overview()}
    assert rows[(one.origin, UNITS[1])]["recordings"] == 2
    assert rows[(one.origin, UNITS[1])]["cases"] == 2
    assert rows[(one.origin, UNITS[1])]["held"] == 0
    assert rows[(two.origin, UNITS[2])]["recordings"] == 1
    assert rows[(two.origin, UNITS[2])]["held"] == 1
    hours = rows[(two.origin, UNITS[2])]["hours"]
    assert hours is not None and 0 < hours < 0.01  # one one-second clip


def test_item_and_entries_read_back_from_the_bucket(county: County) -> None:
    src, a = county.src, county.clips["a"]
    one = county.stations[0]
    it = src.item(a.sha)
    assert it is not None and it["origin"] == one.origin
    assert it["file_name"] == a.name  # from the ingest entry read back from the bucket
    assert src.item("0" * 64) is None and src.item("../../etc/passwd") is None

    entries = src.entries(a.sha)
    types = [e["type"] for e in entries]
    for t in ("ingest", "probe", "derive", "store", "annotate"):
        assert t in types, types
    assert "hold" not in types  # the case is held at the other station only
    assert all(e["origin"] == one.origin for e in entries)
    assert all(e["fields"] is not None for e in entries), entries
    ingest = next(e for e in entries if e["type"] == "ingest")
    assert ingest["index"] == it["ingest_entry"]
    assert ingest["fields"]["sha256"] == a.sha and "sig" not in ingest["fields"]
    # The case's hold at the station that holds the footage is among its entries.
    held = src.entries(county.clips["c"].sha)
    hold = next(e for e in held if e["type"] == "hold")
    assert hold["fields"]["target"] == CASE and hold["origin"] == county.stations[1].origin
    # The same entry as the station's own ledger holds it, byte for byte.
    with Ledger(one.data / "ledger", one.data / "state", one.origin, None) as led:
        fields = dict(decode_entry(led.entry(ingest["index"])).fields)
    fields.pop("sig")
    assert ingest["fields"] == fields
    # In time order.
    times = [e["time"] for e in entries]
    assert times == sorted(times)


def test_blob_streams_the_original_in_ranges(
    county: County, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, a = county.src, county.clips["a"]
    blob = src.blob(a.sha, "original")
    assert blob is not None and blob.path is None and blob.read is not None
    assert blob.size == len(a.data) and blob.media_type == "video/mp4"
    assert b"".join(blob.read(0, blob.size)) == a.data
    assert b"".join(blob.read(1000, 5000)) == a.data[1000:5000]
    assert b"".join(blob.read(blob.size - 10, blob.size + 100)) == a.data[-10:]
    # Many small windows: one ranged GET each, the bytes still the original's.
    import web.hubsource as hs

    monkeypatch.setattr(hs, "WINDOW", 4096)
    monkeypatch.setattr(hs, "CHUNK", 1024)
    small = src.blob(a.sha, "original")
    assert small is not None and small.read is not None
    chunks = list(small.read(3, small.size))
    assert max(len(ch) for ch in chunks) <= 1024 and len(chunks) >= small.size // 1024
    assert b"".join(chunks) == a.data[3:]

    access = src.blob(a.sha, "access")
    assert access is not None and access.media_type == "video/mp4" and access.read is not None
    body = b"".join(access.read(0, access.size))
    assert len(body) == access.size and body[4:8] == b"ftyp"
    derive = next(
        e
        for e in src.entries(a.sha)
        if e["type"] == "derive" and e["fields"]["kind"] == "access_copy"
    )
    assert hashlib.sha256(body).hexdigest() == derive["fields"]["output"]["sha256"]
    poster = src.blob(a.sha, "poster")
    assert poster is not None and poster.media_type == "image/jpeg" and poster.read is not None
    assert b"".join(poster.read(0, 3)) == b"\xff\xd8\xff"
    assert src.blob("0" * 64, "original") is None
    assert src.blob(a.sha, "sidecar") is None


def test_export_is_refused_on_the_hub(county: County) -> None:
    with pytest.raises(CustodyError, match="exports are made on the station"):
        county.src.export([county.clips["a"].sha], CASE, "court", "clerk", county.tmp / "bag")
    assert not (county.tmp / "bag").exists()


def test_new_captures_reach_the_index_once(county: County) -> None:
    """After the hub follows more entries, the index adds only the new rows: every
    object once, exactly as the catalog says."""
    src = county.src
    two = county.stations[1]
    (d,) = capture(county.tmp, county.ffmpeg, two, ["XYZ9876_010205_20241128110000.mp4"])
    county.clips["d"] = d
    county.hub.sync()
    assert src.refresh(force=True)
    items, total = src.find(FindQuery(officer="010205"), 0, 10)
    assert total == 1 and items[0]["sha256"] == d.sha and items[0]["origin"] == two.origin
    _, total = src.find(FindQuery(), 0, 10)
    assert total == 4
    cat = county.hub.catalog()
    ingests = cat.scan(types=["ingest"], columns=["origin", "sha256"])
    assert ingests.num_rows == 4
    rows = cat.scan(columns=["origin", "leaf_index", "sha256", "type"])
    want = sum(
        1
        for s, t in zip(
            rows.column("sha256").to_pylist(), rows.column("type").to_pylist(), strict=True
        )
        if s is not None or t in ("hold", "hold_release")
    )
    cur = src._db.cursor()
    got = cur.execute("SELECT count(*), count(DISTINCT (origin, leaf_index)) FROM idx.rows")
    assert got.fetchone() == (want, want)
    assert not src.refresh(force=True)  # nothing new: nothing read


def test_proof_verifies_and_a_tampered_tile_is_caught(county: County) -> None:
    src, c = county.src, county.clips["c"]
    two = county.stations[1]
    p = src.proof(c.sha)
    assert p["ok"] is True, p["problems"]
    assert p["problems"] == []
    assert p["origin"] == two.origin and p["index"] == src.item(c.sha)["ingest_entry"]  # type: ignore[index]
    size = p["size"]
    assert size == json.loads(county.hub.run("status", "--json").stdout)["stations"][1]["size"]
    assert p["station_key"] == two.vkey
    # The hub's own cosignature is on the checkpoint, verified; the quorum is the hub.
    hub_w = [w for w in p["witnesses"] if w["name"] == county.hub.name]
    assert len(hub_w) == 1 and hub_w[0]["checked"] is True and hub_w[0]["time"]
    assert p["quorum"] is not None and p["quorum"]["met"] is True
    # The proof stands on its own: any verifier with the station's key accepts it.
    with Ledger(two.data / "ledger", two.data / "state", two.origin, None) as led:
        leaf = led.entry(p["index"])
    TlogProof.parse(p["proof"]).verify(leaf, [Verifier.parse(two.vkey)], two.origin)
    # A proof whose path was altered does not verify.
    lines = p["proof"].split("\n")
    k = next(i for i, ln in enumerate(lines) if ln.startswith("index ")) + 1
    assert lines[k], "a proof of one hash at least"
    lines[k] = ("A" if lines[k][0] != "A" else "B") + lines[k][1:]
    with pytest.raises(ProofError):
        TlogProof.parse("\n".join(lines)).verify(leaf, [Verifier.parse(two.vkey)], two.origin)

    # Someone replaces the station's hash tile in the bucket (a new version over it):
    # the proof built from it no longer verifies, and the page says so.
    s3 = county.seaweed.client()
    key = f"ledger/{two.origin}/tile/0/000.p/{size}"
    original = s3.get_object(Bucket=county.bucket, Key=key)["Body"].read()
    assert len(original) == 32 * size
    j = 0 if p["index"] != 0 else 1
    forged = original[: 32 * j] + bytes(32) + original[32 * (j + 1) :]
    s3.put_object(Bucket=county.bucket, Key=key, Body=forged)
    try:
        bad = src.proof(c.sha)
        assert bad["ok"] is False
        assert any("does not verify" in line for line in bad["problems"]), bad["problems"]
    finally:
        s3.put_object(Bucket=county.bucket, Key=key, Body=original)
    assert src.proof(c.sha)["ok"] is True


def test_record_signs_into_the_hub_ledger_while_the_hub_runs(county: County) -> None:
    src, hub = county.src, county.hub
    port = free_port()
    hub.set(listen=f"127.0.0.1:{port}", sync_interval_s=1)
    server = HubServer(hub, port)
    try:
        entry = {
            "action": "view",
            "user": "clerk",
            "role": "reviewer",
            "client": "127.0.0.1",
            "sha256": county.clips["a"].sha,
            "origin": county.stations[0].origin,
        }
        got = []
        for _ in range(5):
            got += src.record([("access", entry), ("access", {**entry, "action": "play"})])
        assert got == sorted(got) and len(set(got)) == 10
    finally:
        assert server.stop() == 0, server.log.read_text()[-3000:]
        hub.set(listen="")
    vkey = Verifier.parse((hub.data / "keys" / "hub.vkey").read_text().strip())
    with Ledger(hub.data / "ledger", hub.data / "state", hub.name, None) as led:
        for i in got:
            leaf = led.entry(i)
            e = decode_entry(leaf)
            assert e.type == "access" and e.station == hub.name and e.verify(vkey)
            assert e.payload()["user"] == "clerk"
            led.proof(i).verify(leaf, [vkey], hub.name)
    # The hub's alarms and audits read back: none here.
    assert src.alarms() == []
    assert src.audits() == []


def test_audits_and_alarms_as_the_hub_recorded_them(county: County) -> None:
    """The last county audit per station, from its reports; a station whose store
    cannot be read is an alarm, named with when the hub recorded it."""
    hub = county.hub
    p = hub.run("audit", "--sample", "4", "--seed", "7", "--json")
    assert p.returncode == 0, p.stderr
    got = {a["origin"]: a for a in county.src.audits()}
    assert set(got) == {st.origin for st in county.stations}
    _, held = county.src.find(FindQuery(), 0, 1)
    assert sum(a["checked"] for a in got.values()) == min(4, held)
    for a in got.values():
        assert a["ok"] is True and a["failures"] == 0 and a["problems"] == []
        assert a["time"] and a["summary"]["results"]["ok"] == a["checked"]

    away = new_station(county.tmp, 9, county.seaweed.endpoint, county.bucket)
    hub.add_station(away.origin, away.vkey, f"http://127.0.0.1:{closed_port()}", county.bucket)
    hub.sync(expect=0)  # not an integrity alarm
    src = HubSource(load_hub(hub.cfg))
    try:
        alarms = src.alarms()
        assert [(a["origin"], a["state"]) for a in alarms] == [(away.origin, "unreachable")]
        assert alarms[0]["problems"] and isinstance(alarms[0]["since"], int)
        entry = next(e for e in hub.alarms() if e["origin"] == away.origin)
        assert alarms[0]["since"] == int(
            datetime.fromisoformat(entry["time"].replace("Z", "+00:00")).timestamp()
        )
    finally:
        src.close()


def test_the_hub_serves_the_county_over_http(county: County) -> None:
    """`custody hub web` as a process: a supervisor of one unit logs in, finds only that
    unit's footage across stations, opens a recording verified with the hub's own
    cosignature, streams a byte range of it from the bucket, and is then named as a
    viewer by a signed entry in the hub's log; holds and exports are refused with the
    reason (they are the station's), and the county overview lists both stations."""
    import subprocess
    import sys
    import time

    import urllib3

    from tests.webfix import free_port as port_free

    cfg, c = county.hub.cfg, county.clips
    for name, role, unit in (("wang", "supervisor", UNITS[2]), ("zhou", "supervisor", "")):
        args = ["hub", "-c", str(cfg), "user", "add", name, "--role", role]
        run_cli(*args, *(["--unit", unit] if unit else []), input="supervisor-pass-1\n")
    port = port_free()
    log = county.tmp / "hub-web.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "custody", "hub", "-c", str(cfg), "web", "--listen",
         f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=open(log, "wb"),  # noqa: SIM115 - the child keeps it
    )  # fmt: skip
    http = urllib3.PoolManager(retries=False, timeout=30)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if http.request("GET", base + "/healthz").status == 200:
                    break
            except urllib3.exceptions.HTTPError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)

        def login(name: str) -> tuple[dict[str, str], str]:
            r = http.request(
                "POST",
                base + "/api/login",
                body=json.dumps({"username": name, "password": "supervisor-pass-1"}),
                headers={"Content-Type": "application/json"},
            )
            assert r.status == 200, r.data
            cookie = r.headers["set-cookie"].split(";")[0]
            return {"Cookie": cookie}, json.loads(r.data)["csrf"]

        wang, csrf = login("wang")
        r = http.request("GET", base + "/api/find?officer=010203", headers=wang)
        found = json.loads(r.data)
        assert r.status == 200 and [i["sha256"] for i in found["items"]] == [c["c"].sha]
        # Another unit's recording: not this supervisor's.
        r = http.request("GET", base + f"/api/objects/{c['a'].sha}", headers=wang)
        assert r.status == 403
        r = http.request("GET", base + f"/api/objects/{c['c'].sha}", headers=wang)
        doc = json.loads(r.data)
        assert r.status == 200 and doc["proof"]["ok"] is True, doc["proof"]
        assert any(w.get("name") == county.hub.name for w in doc["proof"]["witnesses"])
        r = http.request(
            "GET",
            base + f"/api/objects/{c['c'].sha}/content",
            headers={**wang, "Range": "bytes=100-1099"},
        )
        assert r.status == 206 and r.data == c["c"].data[100:1100]
        # The view and the download are signed into the hub's log, and listed.
        r = http.request("GET", base + f"/objects/{c['c'].sha}", headers=wang)
        assert r.status == 200 and "wang" in r.data.decode()
        doc = json.loads(
            http.request("GET", base + f"/api/objects/{c['c'].sha}", headers=wang).data
        )
        actions = [(v["user"], v["action"]) for v in doc["viewers"]]
        assert ("wang", "view") in actions and ("wang", "download") in actions, actions
        # Exports and holds are the station's: refused with the reason, nothing recorded.
        r = http.request(
            "POST",
            base + "/api/exports",
            body=json.dumps({"case": CASE, "purpose": "court"}),
            headers={**wang, "Content-Type": "application/json", "X-CSRF-Token": csrf},
        )
        assert r.status == 409 and b"station" in r.data
        zhou, _ = login("zhou")
        r = http.request("GET", base + "/overview", headers=zhou)
        page = r.data.decode()
        assert r.status == 200
        assert all(st.origin in page for st in county.stations), page[:2000]
        assert http.request("GET", base + "/audits", headers=zhou).status == 200
    finally:
        http.clear()
        proc.terminate()
        proc.wait(15)
    hub = load_hub(cfg)
    with Ledger(hub.ledger_dir, hub.state_dir, hub.name, None) as ledger:
        kinds = [dict(decode_entry(ledger.entry(i)).fields) for i in range(ledger.next_index())]
    access = [(f["user"], f["action"]) for f in kinds if f["type"] == "access"]
    assert ("wang", "view") in access and ("wang", "download") in access
    assert not any(f["type"] == "access" and f["action"] == "export_request" for f in kinds)
