"""The review site's defences, over real HTTP against the real `custody web` process.

One station (three captured recordings, two cases, five users: tests.webfix) serves the
whole module; each test uses its own users or leaves what others rely on as it found
it. The lockout test fails logins from another loopback address (127.0.0.77), so the
throttle it sets off never reaches the other tests' address.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.conftest import run_cli
from tests.webfix import CASE_A, CASE_B, PASSWORDS, WebServer, entries, start_web, web_station

from .webhttp import Answer, api_json, committed, form, of, raw

APP_PY = Path(__file__).resolve().parents[2] / "web" / "app.py"
STATIC = APP_PY.parent / "static"
NO_EXPORT = "0" * 32


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[WebServer, list[str]]]:
    yield from web_station(tmp_path_factory.mktemp("websec"))


def login(srv: WebServer, name: str) -> tuple[str, str]:
    return srv.login(name)


def data_dir(srv: WebServer) -> Path:
    from custody.config import load

    return load(srv.conf).data_dir


# -- the routes ---------------------------------------------------------------------------

ROUTE_RE = re.compile(r'^\s*(api|page)\(\s*"([^"]+)",\s*(.*?)\),?\s*$', re.M)
CONTRACT_API = {
    "/api/login",
    "/api/logout",
    "/api/find",
    "/api/objects/{sha}",
    "/api/objects/{sha}/content",
    "/api/objects/{sha}/access",
    "/api/cases/{case}",
    "/api/exports",
    "/api/exports/{id}",
    "/api/exports/{id}/approve",
    "/api/exports/{id}/bag.zip",
}


def routes() -> list[tuple[str, str, str]]:
    """(kind, method, path template) of every route declared in web/app.py: a route
    added later is covered without touching this test."""
    out = []
    for kind, path, rest in ROUTE_RE.findall(APP_PY.read_text()):
        m = re.search(r"\[([^\]]*)\]\s*$", rest)
        methods = re.findall(r'"([A-Z]+)"', m.group(1)) if m else ["GET", "HEAD"]
        out += [(kind, method, path) for method in methods]
    return out


def fill(path: str, sha: str) -> str:
    return (
        path.replace("{sha}", sha)
        .replace("{case}", quote(CASE_A, safe=""))
        .replace("{id}", NO_EXPORT)
        .replace("{lang}", "en")
        .replace("{rest:path}", "no/such/route")
    )


def test_route_list_is_read_from_the_app() -> None:
    found = {p for kind, _, p in routes() if kind == "api"}
    assert found >= CONTRACT_API, CONTRACT_API - found


def test_every_api_route_without_a_session_is_401(site: tuple[WebServer, list[str]]) -> None:
    srv, shas = site
    forged = "custody_session=" + "A" * 43 + "." + "B" * 43
    checked = 0
    for kind, method, path in routes():
        if kind != "api" or path == "/api/login":
            continue
        url = fill(path, shas[0])
        for cookie in (None, forged):
            body = b"{}" if method == "POST" else None
            r = raw(srv, method, url, cookie, {"Content-Type": "application/json"}, body)
            assert r.status == 401, (method, url, cookie, r.status, r.body[:200])
            if method != "HEAD":
                assert "error" in r.json(), (method, url)
            checked += 1
    assert checked >= 2 * len(CONTRACT_API)
    # An API route that does not exist (yet) is no way around the login either.
    for method, url in (
        ("GET", "/api/nope"),
        ("GET", "/api/users"),
        ("GET", "/api/exports"),
        ("POST", "/api/find"),
        ("DELETE", f"/api/objects/{shas[0]}"),
        ("GET", f"/api/objects/{shas[0]}/poster"),
        ("GET", "/api/"),
    ):
        r = raw(srv, method, url)
        assert r.status == 401, (method, url, r.status, r.body[:200])
    # Pages send the browser to the login form instead.
    for kind, method, path in routes():
        if kind != "page" or path in ("/", "/healthz", "/login", "/lang/{lang}"):
            continue
        r = raw(srv, method, fill(path, shas[0]))
        assert r.status == 303, (method, path, r.status)
        assert r.header("location").startswith("/login"), (path, r.header("location"))


# -- who may see what ---------------------------------------------------------------------


def footage_urls(sha: str) -> list[str]:
    return [
        f"/api/objects/{sha}",
        f"/api/objects/{sha}/content",
        f"/api/objects/{sha}/access",
        f"/objects/{sha}",
        f"/objects/{sha}/access",
        f"/objects/{sha}/poster",
        f"/objects/{sha}/content",
    ]


def test_footage_outside_ones_cases_or_units_is_403(site: tuple[WebServer, list[str]]) -> None:
    srv, shas = site
    before = committed(srv.conf)
    li, _ = login(srv, "li")  # reviewer of CASE_A (shas[0])
    zhao, _ = login(srv, "zhao")  # reviewer of no case
    chen, _ = login(srv, "chen")  # supervisor of another unit only
    root, _ = login(srv, "root")  # administrator
    denied = [(li, sha) for sha in shas[1:]]
    denied += [(who, sha) for who in (zhao, chen, root) for sha in shas]
    for cookie, sha in denied:
        for url in footage_urls(sha):
            r = raw(srv, "GET", url, cookie, {"Range": "bytes=0-99"})
            assert r.status == 403, (cookie[:30], url, r.status, r.body[:200])
    for cookie, case in ((li, CASE_B), (zhao, CASE_A), (chen, CASE_A), (root, CASE_A)):
        for url in (f"/api/cases/{quote(case)}", f"/cases/{quote(case)}"):
            r = raw(srv, "GET", url, cookie)
            assert r.status == 403, (url, r.status, r.body[:200])
    # Search finds nothing of theirs, and the administrator may not search at all.
    for cookie in (zhao, chen):
        r = raw(srv, "GET", "/api/find", cookie)
        assert r.status == 200 and r.json()["total"] == 0 and r.json()["items"] == []
    r = raw(srv, "GET", f"/api/find?case={quote(CASE_B)}", li)
    assert r.status == 200 and r.json()["total"] == 0
    assert raw(srv, "GET", "/api/find", root).status == 403
    assert raw(srv, "GET", "/api/audits", root).status == 403
    # The reviewer still sees their own case: the 403s above are not a broken site.
    assert raw(srv, "GET", f"/api/objects/{shas[0]}", li).status == 200
    # A refusal shows nothing and is no view: no access entry names a refused user's look.
    after = committed(srv.conf)[len(before) :]
    assert of(after, user="zhao") == of(after, user="chen") == of(after, user="root") == []
    assert [e["sha256"] for e in of(after, user="li")] == [shas[0]]


def test_an_export_of_footage_not_ones_own_is_403(site: tuple[WebServer, list[str]]) -> None:
    srv, shas = site
    li, li_csrf = login(srv, "li")
    chen, chen_csrf = login(srv, "chen")
    root, root_csrf = login(srv, "root")
    before = len(committed(srv.conf))
    for cookie, csrf, body in (
        (li, li_csrf, {"case": CASE_B, "purpose": "court"}),
        (li, li_csrf, {"sha256": [shas[1]], "purpose": "court"}),
        (li, li_csrf, {"sha256": [shas[0], shas[2]], "purpose": "court"}),
        (chen, chen_csrf, {"case": CASE_A, "purpose": "court"}),
        (root, root_csrf, {"case": CASE_A, "purpose": "court"}),
    ):
        r = api_json(srv, "POST", "/api/exports", body, cookie, csrf)
        assert r.status == 403, (body, r.status, r.body[:200])
    assert len(committed(srv.conf)) == before


# -- path traversal -------------------------------------------------------------------------


def traversals(srv: WebServer, sha: str) -> list[str]:
    """What an attacker types into a path parameter."""
    key = data_dir(srv) / "keys" / "station.key"
    up = os.path.relpath(key, STATIC)  # from the static folder to the station's key
    return [
        "../../../../../../etc/passwd",
        "..%2f..%2f..%2f..%2f..%2f..%2fetc%2fpasswd",
        "%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "%252e%252e%252f%252e%252e%252fetc%252fpasswd",
        "..%5c..%5c..%5c..%5cetc%5cpasswd",
        "..\\..\\..\\etc\\passwd".replace("\\", "%5c"),
        "..%c0%af..%c0%af..%c0%afetc%c0%afpasswd",  # overlong UTF-8 '/'
        "%c0%ae%c0%ae/%c0%ae%c0%ae/%c0%ae%c0%ae/etc/passwd",  # overlong UTF-8 '.'
        "%e0%80%ae%e0%80%ae%2fetc%2fpasswd",
        "....//....//....//etc/passwd",
        "..;/..;/..;/etc/passwd",
        "%00",
        "site.css%00",
        f"{sha}%00",
        f"{sha}%00.mp4",
        "..%00/..%00/etc/passwd",
        "%2fetc%2fpasswd",
        "/etc/passwd",
        quote(str(key), safe=""),
        quote(up, safe=""),
        up,
        "..%2fapp.py",
        "..%2f..%2fweb%2fapp.py",
        "..%2fusers.py",
        "%2e%2e%2fapp.py",
        "a" * 8000,  # overlong
        "%ff%fe%fd",
        "%ed%a0%80",  # a UTF-8 surrogate
        "~root",
        "%7e%2f.ssh%2fid_rsa",
    ]


def positions(sha: str) -> list[tuple[str, str]]:
    """(method, template) with X where each path parameter goes."""
    return [
        ("GET", "/api/objects/X"),
        ("GET", "/api/objects/X/content"),
        ("GET", "/api/objects/X/access"),
        ("GET", "/objects/X"),
        ("GET", "/objects/X/access"),
        ("GET", "/objects/X/poster"),
        ("GET", "/objects/X/content"),
        ("GET", "/api/cases/X"),
        ("GET", "/cases/X"),
        ("GET", "/api/exports/X"),
        ("GET", "/api/exports/X/bag.zip"),
        ("GET", "/exports/X/bag.zip"),
        ("POST", "/api/exports/X/approve"),
        ("GET", "/static/X"),
        ("GET", "/lang/X"),
    ]


def secrets_of(srv: WebServer) -> list[bytes]:
    d = data_dir(srv)
    key = (d / "keys" / "station.key").read_bytes().strip()
    return [
        b"root:x:0:0",  # /etc/passwd
        key,
        key.rsplit(b"+", 1)[-1],  # the private key's own bytes
        (d / "web" / "secret").read_bytes(),
        b"SQLite format 3",
        b"from starlette",  # web/app.py
        b"argon2",  # web/users.py
        b"-----BEGIN",
    ]


def assert_harmless(srv: WebServer, r: Answer, what: str, forbidden: list[bytes]) -> None:
    assert r.status < 500, f"{what}: {r.status} {r.body[:300]!r}"
    if r.status in (301, 302, 303, 307, 308):
        # A redirect stays on this site (the login form, a path without a trailing /).
        loc = r.header("location")
        assert loc.startswith("/") or loc.startswith(f"http://127.0.0.1:{srv.port}/"), (what, loc)
        assert not loc.startswith("//"), (what, loc)
    else:
        assert r.status in (400, 401, 403, 404, 405, 414), f"{what}: {r.status} {r.body[:300]!r}"
    for bad in forbidden:
        assert bad not in r.body, f"{what}: the answer holds {bad[:20]!r}"


def test_path_traversal_in_every_path_parameter(site: tuple[WebServer, list[str]]) -> None:
    srv, shas = site
    wang, csrf = login(srv, "wang")  # sees every recording: no role check stops anything
    forbidden = secrets_of(srv)
    before = len(committed(srv.conf))
    tried = 0
    for method, template in positions(shas[0]):
        for attack in traversals(srv, shas[0]):
            url = template.replace("X", attack)
            for cookie in (wang, None):
                h = {"X-CSRF-Token": csrf} if method == "POST" else {}
                body = b"" if method == "POST" else None
                r = raw(srv, method, url, cookie, h, body)
                assert_harmless(srv, r, f"{method} {url[:120]} ({bool(cookie)})", forbidden)
                tried += 1
    assert tried > 800
    # Nothing was viewed or downloaded: no attack named a recording.
    new = committed(srv.conf)[before:]
    assert [e for e in new if e["action"] != "login_failed"] == [], new[:3]
    assert srv.proc.poll() is None
    # The site still serves what it should.
    assert raw(srv, "GET", "/static/site.css").status == 200


def test_odd_input_in_queries_and_bodies_is_never_500(site: tuple[WebServer, list[str]]) -> None:
    """Input a person can send by mistake or on purpose: one line back, never a crash.
    Every case is tried and the wrong ones are listed together."""
    srv, shas = site
    li, csrf = login(srv, "li")
    wrong: list[str] = []

    def check(what: str, r: Answer, allowed: tuple[int, ...]) -> None:
        if r.status not in allowed:
            wrong.append(f"{what}: {r.status} {r.body[:120]!r}")
        elif r.status >= 400 and "error" not in r.json():
            wrong.append(f"{what}: {r.status} without an error line")

    for q in (
        "offset=%C2%B2",  # '²' is a digit to str.isdigit, not to int()
        "limit=%C2%B2",
        "offset=%D9%A3",  # Arabic-Indic three
        "offset=-1",
        "limit=99999999999999999999",
        "from=%00",
        "from=99999-01-01",
        "to=not-a-date",
        "officer=" + "9" * 500,
        "case=%ff%fe",
    ):
        check(f"GET /api/find?{q}", raw(srv, "GET", "/api/find?" + q, li), (200, 400))
    logins: list[object] = [
        {"username": "li", "password": "\ud800-not-valid-unicode"},
        {"username": "\ud800", "password": "x" * 12},
        {"username": "li\x00", "password": "x" * 12},
        {"username": "x" * 100_000, "password": "x" * 12},
        {"username": "li", "password": "x" * 100_000},
        {"username": 1, "password": []},
        ["li", "pw"],
    ]
    for body in logins:
        r = api_json(srv, "POST", "/api/login", body, source="127.0.0.66")
        check(f"POST /api/login {str(body)[:60]}", r, (400, 401))
    requests: list[object] = [
        {"case": CASE_A, "purpose": "\ud800 court"},
        {"case": "\ud800", "purpose": "court"},
        {"sha256": ["\ud800"], "purpose": "court"},
        {"sha256": [shas[0].upper()], "purpose": "court"},
        {"sha256": [], "purpose": "court"},
        {"case": CASE_A, "purpose": ""},
        {"case": CASE_A},
        {"case": CASE_A, "sha256": [shas[0]], "purpose": "court"},
    ]
    wang, wang_csrf = login(srv, "wang")  # a supervisor's request reaches the lookups
    for body in requests:
        for who, cookie, token in (("li", li, csrf), ("wang", wang, wang_csrf)):
            r = api_json(srv, "POST", "/api/exports", body, cookie, token)
            check(f"POST /api/exports as {who} {str(body)[:60]}", r, (400, 403, 404))
    for raw_body in (b"{", b"\xff\xfe", b"null", b"[]", b'"x"'):
        r = raw(srv, "POST", "/api/exports", li, {"X-CSRF-Token": csrf}, raw_body)
        check(f"POST /api/exports {raw_body!r}", r, (400,))
    assert srv.proc.poll() is None
    assert wrong == [], "\n".join(wrong)


# -- CSRF -------------------------------------------------------------------------------------


def test_state_changes_without_the_csrf_token_are_403_and_change_nothing(
    site: tuple[WebServer, list[str]],
) -> None:
    srv, _ = site
    li, li_csrf = login(srv, "li")
    wang, wang_csrf = login(srv, "wang")
    before = committed(srv.conf)
    holds = committed(srv.conf, "hold")
    notes = committed(srv.conf, "note")
    annotations = committed(srv.conf, "annotate")
    export_form = {"case": CASE_A, "purpose": "court hearing"}
    for fields in (export_form, {**export_form, "csrf": ""}, {**export_form, "csrf": "x" * 43}):
        r = form(srv, "/exports", fields, li)
        assert r.status == 403, (fields, r.status)
    # Another session's token is as wrong as a made-up one.
    r = form(srv, "/exports", {**export_form, "csrf": wang_csrf}, li)
    assert r.status == 403
    for headers in (
        {},
        {"X-CSRF-Token": ""},
        {"X-CSRF-Token": "x" * 43},
        {"X-CSRF-Token": wang_csrf},
    ):
        body = json.dumps({**export_form, "csrf": li_csrf}).encode()  # in the body: not enough
        r = raw(
            srv, "POST", "/api/exports", li, {"Content-Type": "application/json", **headers}, body
        )
        assert r.status == 403, (headers, r.status, r.body[:200])
    case = quote(CASE_A, safe="")
    for path, fields in (
        (f"/cases/{case}/annotate", {"remark": "checked", "category": "行政处罚"}),
        (f"/cases/{case}/annotate", {"remark": "checked"}),
        (f"/cases/{case}/hold", {"reason": "appeal"}),
    ):
        for extra in ({}, {"csrf": "wrong"}):
            r = form(srv, path, {**fields, **extra}, li)
            assert r.status == 403, (path, extra, r.status)
    # An export asked for properly, then approved without the token: still asked for.
    r = api_json(srv, "POST", "/api/exports", export_form, li, li_csrf)
    assert r.status == 201, r.body
    eid = r.json()["id"]
    r = raw(srv, "POST", f"/api/exports/{eid}/approve", wang)
    assert r.status == 403
    r = raw(srv, "POST", f"/api/exports/{eid}/approve", wang, {"X-CSRF-Token": li_csrf})
    assert r.status == 403
    assert form(srv, f"/exports/{eid}/approve", {}, wang).status == 403
    assert form(srv, f"/exports/{eid}/approve", {"csrf": "wrong"}, wang).status == 403
    assert raw(srv, "GET", f"/api/exports/{eid}", li).json()["state"] == "requested"
    # Logging out is a state change too.
    assert raw(srv, "POST", "/api/logout", li).status == 403
    assert form(srv, "/logout", {}, li).status == 403
    assert raw(srv, "GET", "/api/find", li).status == 200
    # The login form carries its own token (a cookie and a field that must agree).
    r = form(srv, "/login", {"username": "li", "password": PASSWORDS["li"]}, "")
    assert r.status == 403 and not any("custody_session" in c for c in r.cookies())
    # Exactly one thing was recorded: the export asked for with the token.
    new = committed(srv.conf)[len(before) :]
    assert [(e["action"], e["user"]) for e in new] == [("export_request", "li")], new
    assert committed(srv.conf, "hold") == holds
    assert committed(srv.conf, "note") == notes
    assert committed(srv.conf, "annotate") == annotations
    # With the token the same form works: the 403s above were the token's doing.
    r = form(srv, "/exports", {**export_form, "csrf": li_csrf}, li)
    assert r.status == 303, (r.status, r.body[:200])
    new = committed(srv.conf)[len(before) :]
    assert [e["action"] for e in new] == ["export_request", "export_request"]


# -- logins --------------------------------------------------------------------------------


def test_twenty_wrong_passwords_lock_the_user_and_are_signed_entries(
    site: tuple[WebServer, list[str]],
) -> None:
    srv, _ = site
    name, password = "target", "target-pass-1"
    run_cli("user", "add", name, "--role", "reviewer", config=srv.conf, input=password + "\n")
    attacker, elsewhere = "127.0.0.77", "127.0.0.78"
    statuses = []
    for i in range(20):
        r = api_json(
            srv,
            "POST",
            "/api/login",
            {"username": name, "password": f"guess-{i:06d}"},
            None,
            source=attacker,
        )
        statuses.append(r.status)
        assert not any("custody_session" in c for c in r.cookies())
    assert statuses[0] == 401 and set(statuses) <= {401, 423, 429}, statuses
    assert statuses[-1] in (423, 429), statuses
    # Locked: even the right password is refused now, from any address, with a wait.
    for source in (attacker, elsewhere):
        r = api_json(
            srv, "POST", "/api/login", {"username": name, "password": password}, source=source
        )
        assert r.status in (423, 429), (source, r.status, r.body)
        assert int(r.header("retry-after")) > 0, r.headers
        assert not any("custody_session" in c for c in r.cookies())
    r = api_json(
        srv, "POST", "/api/login", {"username": name, "password": password}, source=elsewhere
    )
    assert r.status == 423, "the user is locked, not only the attacker's address throttled"
    # The form login says no too.
    page = raw(srv, "GET", "/login", source=elsewhere)
    token = re.search(rb'name="login_token" value="([^"]+)"', page.body)
    assert token is not None, page.body[:500]
    jar = next(c for c in page.cookies() if c.startswith("custody_login="))
    r = raw(
        srv,
        "POST",
        "/login",
        jar.split(";")[0],
        {"Content-Type": "application/x-www-form-urlencoded"},
        f"username={name}&password={password}&login_token={token.group(1).decode()}".encode(),
        source=elsewhere,
    )
    assert r.status in (423, 429) and not any("custody_session" in c for c in r.cookies())
    # Every failure is a signed entry in the log, with the name as typed and the address.
    failed = of(entries(srv.conf), action="login_failed", user=name)
    assert len(failed) >= 20, failed
    assert {e["client"] for e in failed} >= {attacker, elsewhere}
    assert "bad password" in {e["reason"] for e in failed}
    assert {e["reason"] for e in failed} & {"locked", "throttled"}
    assert all(e["role"] == "" for e in failed)
    # An unknown name is counted and signed the same way, without telling it is unknown.
    r = api_json(
        srv, "POST", "/api/login", {"username": "nobody", "password": "x" * 12}, source=elsewhere
    )
    assert r.status == 401 and r.json()["error"] == "wrong user name or password"
    assert of(entries(srv.conf), action="login_failed", user="nobody")


# -- the session cookie ---------------------------------------------------------------------


def cookie_attrs(set_cookie: str) -> dict[str, str]:
    parts = [p.strip() for p in set_cookie.split(";")]
    out = {}
    for p in parts[1:]:
        k, _, v = p.partition("=")
        out[k.lower()] = v
    return out


def test_the_session_cookie_flags(site: tuple[WebServer, list[str]]) -> None:
    srv, _ = site
    r = api_json(srv, "POST", "/api/login", {"username": "li", "password": PASSWORDS["li"]})
    assert r.status == 200
    (sc,) = [c for c in r.cookies() if c.startswith("custody_session=")]
    a = cookie_attrs(sc)
    assert "httponly" in a and a.get("samesite", "").lower() == "strict" and a.get("path") == "/"
    assert "secure" not in a, "plain HTTP on loopback: a Secure cookie would never come back"
    assert "domain" not in a
    # The form login sets the same cookie.
    page = raw(srv, "GET", "/login")
    (lc,) = [c for c in page.cookies() if c.startswith("custody_login=")]
    assert "httponly" in cookie_attrs(lc) and cookie_attrs(lc)["samesite"].lower() == "strict"
    token = re.search(rb'name="login_token" value="([^"]+)"', page.body)
    assert token is not None
    r = raw(
        srv,
        "POST",
        "/login",
        lc.split(";")[0],
        {"Content-Type": "application/x-www-form-urlencoded"},
        f"username=li&password={PASSWORDS['li']}&login_token={token.group(1).decode()}".encode(),
    )
    assert r.status == 303, (r.status, r.body[:300])
    (sc,) = [c for c in r.cookies() if c.startswith("custody_session=")]
    a = cookie_attrs(sc)
    assert "httponly" in a and a["samesite"].lower() == "strict" and a["path"] == "/"
    assert "secure" not in a


def test_behind_a_proxy_the_cookie_is_secure(
    site: tuple[WebServer, list[str]], tmp_path: Path
) -> None:
    srv, _ = site
    conf = tmp_path / "proxied.toml"
    conf.write_text(srv.conf.read_text() + '\n[web]\nproxy = "127.0.0.1"\n')
    proxied = start_web(conf, tmp_path / "web.log")
    try:
        r = api_json(
            proxied,
            "POST",
            "/api/login",
            {"username": "li", "password": PASSWORDS["li"]},
        )
        assert r.status == 200
        (sc,) = [c for c in r.cookies() if c.startswith("custody_session=")]
        a = cookie_attrs(sc)
        assert "secure" in a and "httponly" in a and a["samesite"].lower() == "strict"
        assert r.header("strict-transport-security")
    finally:
        proxied.stop()


def test_logout_ends_the_session(site: tuple[WebServer, list[str]]) -> None:
    srv, _ = site
    cookie, csrf = login(srv, "li")
    assert raw(srv, "GET", "/api/find", cookie).status == 200
    r = raw(srv, "POST", "/api/logout", cookie, {"X-CSRF-Token": csrf})
    assert r.status == 200
    assert raw(srv, "GET", "/api/find", cookie).status == 401
    assert raw(srv, "GET", "/search", cookie).status == 303
    # The form logout too.
    cookie, csrf = login(srv, "wang")
    r = form(srv, "/logout", {"csrf": csrf}, cookie)
    assert r.status == 303
    assert any(c.startswith("custody_session=") for c in r.cookies())  # deleted
    assert raw(srv, "GET", "/api/find", cookie).status == 401


def _b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def test_forged_and_tampered_cookies_are_401(site: tuple[WebServer, list[str]]) -> None:
    srv, shas = site
    cookie, _ = login(srv, "wang")
    value = cookie.split("=", 1)[1]
    tok, mac = value.split(".")

    def flip(s: str, i: int) -> str:
        c = "A" if s[i] != "A" else "B"
        return s[:i] + c + s[i + 1 :]

    secret = (data_dir(srv) / "web" / "secret").read_bytes()
    token = secrets.token_bytes(32)
    signed_unknown = f"{_b64(token)}.{_b64(hmac.new(secret, token, hashlib.sha256).digest())}"
    other_key = secrets.token_bytes(32)
    raw_tok = base64.urlsafe_b64decode(tok + "=")
    other_site = f"{tok}.{_b64(hmac.new(other_key, raw_tok, hashlib.sha256).digest())}"
    forged = [
        f"{flip(tok, 0)}.{mac}",
        f"{flip(tok, len(tok) - 1)}.{mac}",
        f"{tok}.{flip(mac, 5)}",
        f"{tok}.{flip(mac, len(mac) - 1)}",
        f"{mac}.{tok}",
        tok,
        f"{tok}.",
        f".{mac}",
        f"{tok}.{mac}.{mac}",
        f"{tok}={mac}",
        value + "A",
        value[:-1],
        signed_unknown,  # signed right, but no such session
        other_site,  # the same token signed with another site's secret
        "",
        "x" * 5000,
        hashlib.sha256(tok.encode()).hexdigest(),  # what the database holds
    ]
    for f in forged:
        for url in ("/api/find", f"/api/objects/{shas[0]}"):
            r = raw(srv, "GET", url, f"custody_session={f}")
            assert r.status == 401, (f[:60], url, r.status)
        r = raw(srv, "GET", "/search", f"custody_session={f}")
        assert r.status == 303, (f[:60], r.status)
    assert raw(srv, "GET", "/api/find", cookie).status == 200


# -- security headers ------------------------------------------------------------------------


def assert_security_headers(r: Answer, what: str) -> None:
    csp = r.header("content-security-policy")
    assert csp, f"{what}: no CSP"
    assert "'unsafe-inline'" not in csp and "'unsafe-eval'" not in csp, (what, csp)
    assert "frame-ancestors 'none'" in csp, (what, csp)
    assert re.search(r"(^|;)\s*default-src 'none'", csp) or "script-src 'self'" in csp, csp
    assert r.header("x-frame-options") == "DENY", (what, r.headers)
    assert r.header("x-content-type-options") == "nosniff", (what, r.headers)


INLINE = [
    (re.compile(rb"<script(?![^>]*\bsrc=)[^>]*>", re.I), "an inline <script>"),
    (re.compile(rb"<script[^>]*>\s*[^<\s]", re.I), "script text inside <script>"),
    (re.compile(rb"\son[a-z]+\s*=", re.I), "an inline event handler"),
    (re.compile(rb"javascript:", re.I), "a javascript: address"),
]


def test_security_headers_everywhere_and_no_inline_script(
    site: tuple[WebServer, list[str]],
) -> None:
    srv, shas = site
    li, _ = login(srv, "li")
    wang, _ = login(srv, "wang")
    root, _ = login(srv, "root")
    case = quote(CASE_A, safe="")
    pages = [
        (None, "/login", 200),
        (li, "/search", 200),
        (li, "/search?officer=010203&from=2024-01-01", 200),
        (li, f"/objects/{shas[0]}", 200),
        (li, f"/cases/{case}", 200),
        (li, "/exports", 200),
        (wang, "/audits", 200),
        (wang, "/overview", 200),
        (root, "/search", 200),  # the administrator's page
        (li, f"/objects/{shas[1]}", 403),
        (li, "/no/such/page", 404),
        (li, f"/objects/{'f' * 64}", 404),
    ]
    for cookie, url, status in pages:
        r = raw(srv, "GET", url, cookie, {"Accept-Language": "en"})
        assert r.status == status, (url, r.status)
        assert_security_headers(r, url)
        assert r.header("content-type").startswith("text/html"), (url, r.headers)
        for pattern, what in INLINE:
            m = pattern.search(r.body)
            assert m is None, f"{url}: {what}: {r.body[max(0, m.start() - 80) : m.end() + 80]!r}"
    others = [
        (None, "GET", "/api/find", {}, 401),
        (li, "GET", "/api/find", {}, 200),
        (li, "GET", f"/api/objects/{shas[0]}", {}, 200),
        (li, "GET", f"/api/objects/{shas[1]}", {}, 403),
        (li, "GET", "/api/nope", {}, 404),
        (li, "GET", f"/api/objects/{shas[0]}/content", {"Range": "bytes=0-9"}, 206),
        (li, "GET", f"/api/objects/{shas[0]}/content", {"Range": "bytes=999999999-"}, 416),
        (li, "GET", f"/objects/{shas[0]}/poster", {}, 200),
        (None, "GET", "/static/site.css", {}, 200),
        (None, "GET", "/static/nope.js", {}, 404),
        (None, "GET", "/healthz", {}, 200),
        (None, "POST", "/api/login", {}, 400),
        (None, "GET", "/search", {}, 303),
    ]
    for cookie, method, url, headers, status in others:
        r = raw(srv, method, url, cookie, headers, b"" if method == "POST" else None)
        assert r.status == status, (url, r.status, r.body[:200])
        assert_security_headers(r, url)


# -- access entries --------------------------------------------------------------------------


def test_each_view_play_download_and_case_view_is_a_signed_entry(
    site: tuple[WebServer, list[str]],
) -> None:
    srv, shas = site
    sha = shas[0]
    cookie, _ = login(srv, "li")
    start = len(committed(srv.conf))

    def new() -> list[dict[str, object]]:
        return committed(srv.conf)[start:]

    # Each answer comes after its entry is committed: look right after it, no waiting.
    assert raw(srv, "GET", f"/api/objects/{sha}", cookie).status == 200
    assert of(new(), action="view", sha256=sha, user="li")
    assert raw(srv, "GET", f"/objects/{sha}", cookie).status == 200
    assert len(of(new(), action="view", sha256=sha, user="li")) == 2
    # One playback: many Range requests, page and API alike, are one `play` entry.
    for rng in ("bytes=0-", "bytes=0-1023", "bytes=1024-", "bytes=-4096", "bytes=2048-4095"):
        for url in (f"/api/objects/{sha}/access", f"/objects/{sha}/access"):
            r = raw(srv, "GET", url, cookie, {"Range": rng})
            assert r.status == 206, (url, rng, r.status)
            assert len(of(new(), action="play", sha256=sha, kind="access")) == 1
    assert raw(srv, "GET", f"/objects/{sha}/poster", cookie).status == 200
    assert len(of(new(), action="play", sha256=sha, kind="poster")) == 1
    for _ in range(3):
        assert raw(srv, "GET", f"/api/objects/{sha}/content", cookie).status == 200
        assert raw(srv, "GET", f"/objects/{sha}/content?download=1", cookie).status == 200
    assert len(of(new(), action="download", sha256=sha)) == 1
    assert raw(srv, "GET", f"/api/cases/{quote(CASE_A, safe='')}", cookie).status == 200
    assert of(new(), action="case_view", case=CASE_A)
    assert raw(srv, "GET", f"/cases/{quote(CASE_A, safe='')}", cookie).status == 200
    assert len(of(new(), action="case_view", case=CASE_A)) == 2
    # Another session is another playback.
    other, _ = login(srv, "li")
    assert (
        raw(srv, "GET", f"/api/objects/{sha}/access", other, {"Range": "bytes=0-9"}).status == 206
    )
    assert len(of(new(), action="play", sha256=sha, kind="access")) == 2
    # Every one is signed by the station and under a signed checkpoint, and names who,
    # in which role, from where.
    mine = {e["index"] for e in new()}
    got = [e for e in entries(srv.conf) if e["index"] in mine]
    assert [e["action"] for e in got] == [e["action"] for e in new()]
    for e in got:
        assert e["user"] == "li" and e["role"] == "reviewer" and e["client"] == "127.0.0.1", e
    assert {e["action"] for e in got} == {"view", "play", "download", "case_view"}
    # The recording's page names its viewers.
    r = raw(srv, "GET", f"/api/objects/{sha}", cookie)
    viewers = r.json()["viewers"]
    assert {(v["user"], v["action"]) for v in viewers} >= {
        ("li", "view"),
        ("li", "play"),
        ("li", "download"),
    }
