"""The review site's JSON API (docs/web.md), over real HTTP against `custody web`.

One station for the module (tests.webfix): three captured recordings, CASE_A (the
first, assigned to the reviewer li) and CASE_B (the second). Scripts use the API as a
browser uses the pages: log in, search, read a recording with its proof, fetch bytes,
ask for an export, have another person approve it, download the bag and verify it
offline with `python -m verify bag`.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest

from tests.webfix import CASE_A, CASE_B, PASSWORDS, WebServer, entries, web_station

from .webhttp import Answer, api_json, committed, of, raw

UNIT = "530822000000"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[WebServer, list[str]]]:
    yield from web_station(tmp_path_factory.mktemp("webapi"))


def conf_of(srv: WebServer) -> Any:
    from custody.config import load

    return load(srv.conf)


def original(srv: WebServer, sha: str) -> bytes:
    from ingest.objects import LocalObjects

    return LocalObjects(conf_of(srv).store_dir).path(sha).read_bytes()


def get(srv: WebServer, path: str, cookie: str) -> Any:
    r = raw(srv, "GET", path, cookie)
    assert r.status == 200, (path, r.status, r.body[:300])
    return r.json()


def find(srv: WebServer, cookie: str, **params: str) -> tuple[list[str], int]:
    d = get(srv, "/api/find?" + urlencode(params), cookie)
    return [it["sha256"] for it in d["items"]], d["total"]


def test_login_answers_user_role_and_csrf(site: tuple[WebServer, list[str]]) -> None:
    srv, _ = site
    for name, role in (("li", "reviewer"), ("wang", "supervisor"), ("root", "admin")):
        r = api_json(srv, "POST", "/api/login", {"username": name, "password": PASSWORDS[name]})
        assert r.status == 200, r.body
        d = r.json()
        assert d["user"] == name and d["role"] == role and len(d["csrf"]) >= 32
        assert any(c.startswith("custody_session=") for c in r.cookies())
    r = api_json(srv, "POST", "/api/login", {"username": "li", "password": "wrong-password"})
    assert r.status == 401 and r.json()["error"] and not r.cookies()
    r = raw(srv, "POST", "/api/login", None, {"Content-Type": "application/json"}, b"li:pw")
    assert r.status == 400 and "username" in r.json()["error"]


def test_find_filters_pages_and_totals(site: tuple[WebServer, list[str]]) -> None:
    srv, shas = site
    a, b, c = shas
    wang, _ = srv.login("wang")
    assert sorted(find(srv, wang)[0]) == sorted(shas) and find(srv, wang)[1] == 3
    assert sorted(find(srv, wang, officer="010203")[0]) == sorted([a, b])
    assert find(srv, wang, officer="999999") == ([], 0)
    assert sorted(find(srv, wang, unit=UNIT)[0]) == sorted(shas)
    assert find(srv, wang, unit="530822999999") == ([], 0)
    recorders = {it["sha256"]: it["recorder"] for it in get(srv, "/api/find", wang)["items"]}
    assert recorders[a] == recorders[b] == "ABC1234" and recorders[c] != "ABC1234"
    assert sorted(find(srv, wang, recorder="ABC1234")[0]) == sorted([a, b])
    assert find(srv, wang, case=CASE_A) == ([a], 1)
    assert find(srv, wang, case=CASE_B) == ([b], 1)
    assert find(srv, wang, category="administrative_penalty") == ([a], 1)
    # Recording time, [from, to): a was recorded 2024-11-25 08:30 in Shanghai (00:30 UTC),
    # b 2024-11-26 09:00 (01:00 UTC).
    assert find(srv, wang, **{"from": "2024-11-25", "to": "2024-11-26"}) == ([a], 1)
    assert find(srv, wang, **{"from": "2024-11-26", "to": "2024-11-27"}) == ([b], 1)
    assert find(srv, wang, **{"from": "2024-11-25T00:30:00Z", "to": "2024-11-25T00:30:01Z"}) == (
        [a],
        1,
    )
    assert find(srv, wang, **{"from": "2024-11-25T00:30:01Z", "to": "2024-11-26T01:00:00Z"}) == (
        [],
        0,
    )
    assert find(srv, wang, officer="010203", **{"from": "2024-11-26"})[0] == [b]
    # Pages: every item once, the total on each page.
    seen = []
    for offset in range(4):
        got, total = find(srv, wang, offset=str(offset), limit="1")
        assert total == 3
        seen += got
    assert sorted(seen) == sorted(shas)
    assert find(srv, wang, offset="3", limit="5") == ([], 3)
    assert len(find(srv, wang, offset="1", limit="5")[0]) == 2
    # The same query scoped by who asks: a reviewer sees their case's recording only.
    li, _ = srv.login("li")
    assert find(srv, li) == ([a], 1)
    assert find(srv, li, officer="010203") == ([a], 1)
    assert find(srv, li, case=CASE_B) == ([], 0)
    chen, _ = srv.login("chen")
    assert find(srv, chen) == ([], 0)
    # Items carry the search columns and the origin, times as epoch seconds.
    item = get(srv, f"/api/find?case={quote(CASE_A)}", wang)["items"][0]
    assert item["officer"] == "010203" and item["unit"] == UNIT and item["recorder"] == "ABC1234"
    assert item["recorded"] == 1732494600 and CASE_A in item["cases"]
    assert item["origin"] == conf_of(srv).origin
    for q in ("limit=1001", "offset=x", "from=yesterday"):
        r = raw(srv, "GET", "/api/find?" + q, wang)
        assert r.status == 400 and r.json()["error"], (q, r.status)


def test_object_item_entries_proof_and_viewers(site: tuple[WebServer, list[str]]) -> None:
    from custody.station import open_ledger, station_verifier
    from ledger.proof import TlogProof

    srv, shas = site
    a = shas[0]
    li, _ = srv.login("li")
    d = get(srv, f"/api/objects/{a}", li)
    assert set(d) >= {"item", "entries", "proof", "viewers"}
    assert d["item"]["sha256"] == a and d["item"]["size"] == len(original(srv, a))
    # Every entry about it, in log order, starting with its capture.
    idx = [e["index"] for e in d["entries"]]
    assert idx == sorted(idx) and len(set(idx)) == len(idx)
    types = [e["type"] for e in d["entries"]]
    assert types[0] == "ingest" and "annotate" in types, types
    assert d["entries"][0]["index"] == d["item"]["ingest_entry"]
    for e in d["entries"]:
        assert set(e) >= {"origin", "index", "type", "time", "fields"}
    # The proof checks, and checks again here, offline, against the station's key.
    p = d["proof"]
    assert p["ok"] is True and p["problems"] == [] and p["index"] == d["item"]["ingest_entry"]
    c = conf_of(srv)
    vkey = station_verifier(c)
    assert p["station_key"] == vkey.vkey()
    with open_ledger(c, writable=False) as ledger:
        leaf = ledger.entry(p["index"])
    sc = TlogProof.parse(p["proof"]).verify(leaf, [vkey], c.origin)
    assert sc.checkpoint.size == p["size"] and sc.checkpoint.root.hex() == p["root"]
    # Who has viewed it: this view is already there the next time.
    d2 = get(srv, f"/api/objects/{a}", li)
    views = [v for v in d2["viewers"] if v["user"] == "li" and v["action"] == "view"]
    assert views and views[-1]["role"] == "reviewer" and views[-1]["client"] == "127.0.0.1"
    assert [v["index"] for v in d2["viewers"]] == sorted(v["index"] for v in d2["viewers"])
    assert raw(srv, "GET", f"/api/objects/{'e' * 64}", li).status == 404


def test_content_and_access_copy(site: tuple[WebServer, list[str]]) -> None:
    srv, shas = site
    li, _ = srv.login("li")
    a = shas[0]
    r = raw(srv, "GET", f"/api/objects/{a}/content", li)
    assert r.status == 200 and r.body == original(srv, a)
    assert hashlib.sha256(r.body).hexdigest() == a
    assert r.header("content-type").startswith("video/mp4")
    assert r.header("accept-ranges") == "bytes"
    assert "no-store" in r.header("cache-control")
    r = raw(srv, "GET", f"/api/objects/{a}/content?download=1", li)
    assert r.status == 200 and f'filename="{a}.mp4"' in r.header("content-disposition")
    r = raw(srv, "GET", f"/api/objects/{a}/access", li)
    assert r.status == 200 and r.header("content-type") == "video/mp4"
    assert r.body[4:8] == b"ftyp" and r.body != original(srv, a)


def test_cases(site: tuple[WebServer, list[str]]) -> None:
    srv, shas = site
    li, _ = srv.login("li")
    wang, _ = srv.login("wang")
    d = get(srv, f"/api/cases/{quote(CASE_A, safe='')}", li)
    assert d["case"] == CASE_A and [it["sha256"] for it in d["items"]] == [shas[0]]
    d = get(srv, f"/api/cases/{quote(CASE_B, safe='')}", wang)
    assert [it["sha256"] for it in d["items"]] == [shas[1]]
    assert raw(srv, "GET", "/api/cases/2026-no-such-case", wang).status == 404


def wait_state(srv: WebServer, eid: str, cookie: str, want: str, timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        d = get(srv, f"/api/exports/{eid}", cookie)
        if d["state"] == want:
            return d
        assert d["state"] in ("requested", "building"), d
        assert time.monotonic() < deadline, d
        time.sleep(0.2)


def test_export_request_approve_download_verify(
    site: tuple[WebServer, list[str]], tmp_path: Path
) -> None:
    srv, shas = site
    li, li_csrf = srv.login("li")
    wang, wang_csrf = srv.login("wang")
    chen, chen_csrf = srv.login("chen")
    zhao, zhao_csrf = srv.login("zhao")
    purpose = "Court of Lancang County, hearing 2026-03-01"
    r = api_json(srv, "POST", "/api/exports", {"case": CASE_A, "purpose": purpose}, li, li_csrf)
    assert r.status == 201, r.body
    eid = r.json()["id"]
    assert r.json()["state"] == "requested" and len(eid) == 32
    d = get(srv, f"/api/exports/{eid}", li)
    assert d["requested_by"] == "li" and d["purpose"] == purpose and d["case"] == CASE_A
    assert d["shas"] == [shas[0]]
    # Nobody downloads what is not approved and built.
    assert raw(srv, "GET", f"/api/exports/{eid}/bag.zip", li).status == 409
    # Who may not approve: the reviewer who asked, another reviewer, a supervisor of
    # another unit. Each is refused and the export stays asked for.
    for cookie, csrf in ((li, li_csrf), (zhao, zhao_csrf), (chen, chen_csrf)):
        r = raw(srv, "POST", f"/api/exports/{eid}/approve", cookie, {"X-CSRF-Token": csrf})
        assert r.status == 403, (r.status, r.body)
    assert raw(srv, "GET", f"/api/exports/{eid}", zhao).status == 403
    assert raw(srv, "GET", f"/api/exports/{eid}", chen).status == 403
    assert get(srv, f"/api/exports/{eid}", li)["state"] == "requested"
    # A supervisor does not approve their own request.
    r = api_json(
        srv, "POST", "/api/exports", {"sha256": [shas[2]], "purpose": "audit"}, wang, wang_csrf
    )
    assert r.status == 201, r.body
    own = r.json()["id"]
    r = raw(srv, "POST", f"/api/exports/{own}/approve", wang, {"X-CSRF-Token": wang_csrf})
    assert r.status == 403, (r.status, r.body)
    assert raw(srv, "GET", f"/api/exports/{own}", li).status == 403  # not hers
    # Another supervisor approves; the bag is built.
    r = raw(srv, "POST", f"/api/exports/{eid}/approve", wang, {"X-CSRF-Token": wang_csrf})
    assert r.status == 200, r.body
    assert r.json()["approved_by"] == "wang" and r.json()["state"] in ("building", "ready")
    r = raw(srv, "POST", f"/api/exports/{eid}/approve", wang, {"X-CSRF-Token": wang_csrf})
    assert r.status == 409
    done = wait_state(srv, eid, li, "ready")
    assert done["zip_bytes"] > 0 and done["export_entry"] is not None
    # The reviewer downloads one zip, and it verifies offline with the station's key.
    r = raw(srv, "GET", f"/api/exports/{eid}/bag.zip", li)
    assert r.status == 200, (r.status, r.body[:300])
    assert r.header("content-type") == "application/zip" and len(r.body) == done["zip_bytes"]
    assert "attachment" in r.header("content-disposition")
    assert raw(srv, "GET", f"/api/exports/{eid}/bag.zip", li).status == 200  # again
    assert raw(srv, "GET", f"/api/exports/{eid}/bag.zip", chen).status == 403
    z = tmp_path / "bag.zip"
    z.write_bytes(r.body)
    with zipfile.ZipFile(z) as zf:
        names = zf.namelist()
        assert all(n.startswith("bag/") and ".." not in n for n in names), names
        zf.extractall(tmp_path / "out")
    bag = tmp_path / "out" / "bag"
    assert any(p.name == f"{shas[0]}.mp4" or shas[0] in p.name for p in bag.rglob("*")), names
    vkey = conf_of(srv).data_dir / "keys" / "station.vkey"
    p = subprocess.run(
        [sys.executable, "-m", "verify", "bag", str(bag), "--vkey", str(vkey)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    # A bag with one byte changed does not verify: the check above means something.
    media = next(
        q for q in bag.rglob("*") if q.is_file() and q.stat().st_size == len(original(srv, shas[0]))
    )
    data = bytearray(media.read_bytes())
    data[len(data) // 2] ^= 1
    media.write_bytes(bytes(data))
    p = subprocess.run(
        [sys.executable, "-m", "verify", "bag", str(bag), "--vkey", str(vkey)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 1, p.stdout + p.stderr
    # Each step is a signed access entry naming who, in which role, the export and why;
    # the bag itself is the station's signed `export` entry.
    es = entries(srv.conf)
    (req,) = of(es, action="export_request", export=eid)
    assert req["user"] == "li" and req["role"] == "reviewer" and req["purpose"] == purpose
    assert req["case"] == CASE_A and req["client"] == "127.0.0.1"
    (appr,) = of(es, action="export_approve", export=eid)
    assert appr["user"] == "wang" and appr["role"] == "supervisor"
    assert appr["index"] > req["index"]
    downloads = of(es, action="export_download", export=eid)
    assert [(e["user"], e["role"]) for e in downloads] == [("li", "reviewer")]
    assert downloads[0]["index"] > appr["index"]
    (own_req,) = of(es, action="export_request", export=own)
    assert own_req["user"] == "wang" and own_req["sha256s"] == [shas[2]]
    assert of(es, action="export_approve", export=own) == []
    bags = [e for e in entries(srv.conf, "export") if e["index"] == done["export_entry"]]
    assert len(bags) == 1, done
    # Nothing was recorded for the refused approvals.
    assert len(of(committed(srv.conf), action="export_approve")) == 1


def test_api_errors_are_json_with_one_line(site: tuple[WebServer, list[str]]) -> None:
    srv, shas = site
    li, _ = srv.login("li")
    for path, status in (
        ("/api/find", 401),
        (f"/api/objects/{shas[1]}", 403),
        (f"/api/objects/{'0' * 64}", 404),
        ("/api/objects/xyz", 404),
        ("/api/exports/" + "0" * 32, 404),
    ):
        r: Answer = raw(srv, "GET", path, None if status == 401 else li)
        assert r.status == status, (path, r.status)
        assert r.header("content-type").startswith("application/json")
        msg = r.json()["error"]
        assert msg and "\n" not in msg and "Traceback" not in msg
