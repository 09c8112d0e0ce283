"""The review site: server-rendered pages and a JSON API over one `Source`.

Who may see what: a reviewer sees the recordings of the cases assigned to them; a
supervisor sees every recording of their units (all units when none are set) and
approves others' export requests; an administrator manages users and sees no footage.
Every view of footage, download, export request, approval and failed login is a signed
`access` entry, committed before the answer is sent.

Security: sessions are signed HttpOnly SameSite=Strict cookies backed by the user
store (web/users.py); every state-changing request carries a CSRF token (a form field,
or the X-CSRF-Token header for the API); every answer carries a CSP without inline
script and forbids framing; path parameters are checked against their exact shapes
before anything is looked up, and no path parameter is ever a file name.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from starlette.applications import Starlette
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from web import i18n
from web.access import AccessLog, clip
from web.exports import Exports, new_id
from web.source import SHA256_RE, Blob, FindQuery, Item, Source
from web.users import LoginRefused, Session, UserStore, WebError

log = logging.getLogger("custody.web")

HERE = Path(__file__).parent
COOKIE = "custody_session"
LOGIN_COOKIE = "custody_login"  # double-submit token of the login form
EXPORT_ID_RE = re.compile(r"[0-9a-f]{32}")
PAGE_SIZE = 50
MAX_CASE = 200

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "media-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


class LargeFileResponse(FileResponse):
    """Footage from the dock's store read in 1 MiB pieces (Starlette reads 64 KiB)."""

    chunk_size = 1 << 20


def text_field(value: Any, name: str) -> str:
    """A JSON string that can be stored and signed: UTF-8, so no lone surrogate."""
    if not isinstance(value, str):
        raise Refused(400, f'"{name}" must be a string')
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise Refused(400, f'"{name}" is not valid Unicode text') from None
    return value


class Refused(Exception):
    """An answer other than the page: 401, 403, 404, 400, ... with one line why."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


@dataclass
class Site:
    source: Source
    users: UserStore
    folder: Path  # <data_dir>/web
    secure: bool = False  # served over TLS (itself or behind a proxy): Secure cookies, HSTS
    timezone: str = "Asia/Shanghai"  # times on the pages; the log and the API keep UTC


class SecurityHeaders:
    """Headers every answer carries, pages, API and files alike."""

    def __init__(self, app: ASGIApp, secure: bool) -> None:
        self.app = app
        self.extra = [
            (b"content-security-policy", CSP.encode()),
            (b"x-frame-options", b"DENY"),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
            (b"cross-origin-opener-policy", b"same-origin"),
            (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
        ]
        if secure:
            self.extra.append((b"strict-transport-security", b"max-age=31536000"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                have = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in self.extra if k not in have]
                if b"cache-control" not in have:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with)


def _epoch(text: str, field: str) -> int | None:
    text = text.strip()
    if not text:
        return None
    try:
        if len(text) == 10:
            return int(
                datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC).timestamp()
            )
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return int((t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp())
    except ValueError:
        raise Refused(400, f"{field}: {text[:40]!r} is not a date (YYYY-MM-DD)") from None


def _iso(t: Any) -> str:
    if isinstance(t, int | float) and t:
        return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return "" if t is None else str(t)


def _when(tz: ZoneInfo) -> Callable[[Any], str]:
    """Times on the pages: an epoch or an RFC 3339 string, in the site's time zone."""

    def when(t: Any) -> str:
        if t is None or t == "" or t == 0:
            return ""
        if isinstance(t, int | float):
            dt = datetime.fromtimestamp(t, UTC)
        elif isinstance(t, str):
            try:
                dt = datetime.fromisoformat(t.replace("Z", "+00:00"))
            except ValueError:
                return t
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=UTC)
        else:
            return str(t)
        local = dt.astimezone(tz)
        off = local.strftime("%z")
        return local.strftime("%Y-%m-%d %H:%M:%S ") + f"{off[:3]}:{off[3:]}"

    return when


def _size(n: Any) -> str:
    if not isinstance(n, int):
        return ""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _check_case(case: str) -> str:
    if not case or len(case) > MAX_CASE or any(ord(c) < 0x20 or c == "\x7f" for c in case):
        raise Refused(404, "no such case")
    return case


def _check_sha(sha: str) -> str:
    if not SHA256_RE.fullmatch(sha):
        raise Refused(404, "no such recording (a recording is named by its SHA-256)")
    return sha


def _check_export_id(eid: str) -> str:
    if not EXPORT_ID_RE.fullmatch(eid):
        raise Refused(404, "no such export")
    return eid


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """One byte range of ``bytes=a-b``, ``bytes=a-``, ``bytes=-n`` as (start, end exclusive);
    None to send the whole (no header, or several ranges); Refused(416) when unsatisfiable."""
    m = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", header)
    if m is None:
        if header.strip().startswith("bytes=") and "," in header:
            return None
        raise Refused(416, "malformed Range", {"content-range": f"bytes */{size}"})
    a, b = m.group(1), m.group(2)
    if not a and not b:
        raise Refused(416, "malformed Range", {"content-range": f"bytes */{size}"})
    if not a:
        n = int(b)
        if n == 0:
            raise Refused(416, "empty suffix range", {"content-range": f"bytes */{size}"})
        return max(0, size - n), size
    start = int(a)
    end = min(size, int(b) + 1) if b else size
    if start >= size or (b and int(b) < start):
        raise Refused(416, "range not satisfiable", {"content-range": f"bytes */{size}"})
    return start, end


def build_app(site: Site) -> ASGIApp:
    src = site.source
    users = site.users
    access = AccessLog(src)
    exports = Exports(site.folder, src)
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.globals.update(
        iso=_iso, when=_when(ZoneInfo(site.timezone)), size=_size, categories=i18n.CATEGORIES
    )

    # -- who is asking ------------------------------------------------------------------

    def client_of(request: Request) -> str:
        return request.client.host if request.client else ""

    def session_of(request: Request) -> Session | None:
        cookie = request.cookies.get(COOKIE)
        return users.session(cookie) if cookie else None

    def lang_of(request: Request) -> str:
        return i18n.pick(request.cookies.get("lang"), request.headers.get("accept-language"))

    def need(request: Request, api: bool) -> Session:
        s = session_of(request)
        if s is None:
            raise Refused(401, "log in first (POST /api/login)" if api else "log in first")
        return s

    def at_station(what: str) -> None:
        # The hub signs only its own log: a hold or an export must be the station's entry.
        if src.kind == "hub":
            raise Refused(
                409, f"{what} are made at the station that holds the recording, not on the hub"
            )

    def need_csrf(request: Request, s: Session, form_token: str | None) -> None:
        token = form_token if form_token is not None else request.headers.get("x-csrf-token", "")
        if not token or not hmac.compare_digest(token.encode(), s.csrf.encode()):
            raise Refused(403, "the CSRF token is missing or wrong: reload the page and try again")

    def reviewer_shas(s: Session) -> frozenset[str]:
        out: set[str] = set()
        for case in users.cases_of(s.user.name):
            out.update(src.case_objects(case))
        return frozenset(out)

    def scope_query(s: Session, q: FindQuery) -> FindQuery:
        if s.user.role == "reviewer":
            return FindQuery(**{**q.__dict__, "shas": reviewer_shas(s)})
        if s.user.role == "supervisor":
            return FindQuery(**{**q.__dict__, "units": s.user.units})
        raise Refused(403, "administrators manage users and see no footage")

    def may_see(s: Session, it: Item) -> bool:
        if s.user.role == "reviewer":
            return bool(set(src.cases_of(it["sha256"])) & users.cases_of(s.user.name))
        if s.user.role == "supervisor":
            return not s.user.units or it.get("unit") in s.user.units
        return False

    def item_for(s: Session, sha: str) -> Item:
        it = src.item(_check_sha(sha))
        if it is None:
            raise Refused(404, "no such recording")
        if not may_see(s, it):
            raise Refused(403, "this recording is not in a case assigned to you or in your units")
        return it

    def case_items(s: Session, case: str) -> list[Item]:
        _check_case(case)
        if s.user.role == "admin":
            raise Refused(403, "administrators manage users and see no footage")
        if s.user.role == "reviewer" and case not in users.cases_of(s.user.name):
            raise Refused(403, "this case is not assigned to you")
        items = [it for sha in src.case_objects(case) if (it := src.item(sha)) is not None]
        if s.user.role == "supervisor" and s.user.units:
            items = [it for it in items if it.get("unit") in s.user.units]
            if not items:
                raise Refused(403, "this case has no recording of your units")
        if not items:
            raise Refused(404, "no recording is linked to this case")
        return items

    # -- answers -------------------------------------------------------------------------

    def render(
        request: Request, name: str, s: Session | None, status: int = 200, **ctx: Any
    ) -> Response:
        lang = lang_of(request)
        return templates.TemplateResponse(
            request,
            name,
            {
                "t": i18n.translator(lang),
                "lang": lang,
                "s": s,
                "site_kind": src.kind,
                "site_name": src.name,
                "here": urlencode({"next": _here(request)}),
                **ctx,
            },
            status_code=status,
        )

    def endpoint(
        fn: Callable[[Request], Awaitable[Response]], api: bool
    ) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            try:
                return await fn(request)
            except Refused as r:
                if api:
                    return JSONResponse({"error": r.message}, r.status, headers=r.headers)
                if r.status == 401:
                    nxt = request.url.path
                    return RedirectResponse("/login?" + urlencode({"next": nxt}), 303)
                if r.status == 416:
                    return Response(r.message, 416, headers=r.headers)
                return render(
                    request,
                    "error.html",
                    session_of(request),
                    r.status,
                    message=r.message,
                    code=r.status,
                )
            except WebError as e:
                status = getattr(e, "status", 400)
                if api:
                    return JSONResponse({"error": str(e)}, status)
                return render(
                    request,
                    "error.html",
                    session_of(request),
                    status,
                    message=str(e),
                    code=status,
                )

        return run

    def stream(request: Request, blob: Blob, etag: str, download_name: str | None) -> Response:
        headers = {"cache-control": "private, no-store"}
        if download_name:
            headers["content-disposition"] = f'attachment; filename="{download_name}"'
        if blob.path is not None:
            return LargeFileResponse(blob.path, media_type=blob.media_type, headers=headers)
        assert blob.read is not None
        # The object is named by its hash: a strong validator for If-Range (RFC 9110
        # 13.1.5: a Range whose If-Range does not match gets the whole object).
        headers["etag"] = etag
        rng = request.headers.get("range")
        if_range = request.headers.get("if-range")
        span = parse_range(rng, blob.size) if rng and if_range in (None, etag) else None
        start, end = span if span else (0, blob.size)
        headers.update({"accept-ranges": "bytes", "content-length": str(end - start)})
        status = 200
        if span:
            status = 206
            headers["content-range"] = f"bytes {start}-{end - 1}/{blob.size}"
        body = iterate_in_threadpool(blob.read(start, end)) if request.method != "HEAD" else None

        async def empty() -> AsyncIterator[bytes]:
            return
            yield b""

        return StreamingResponse(body or empty(), status, headers, media_type=blob.media_type)

    # -- login ---------------------------------------------------------------------------

    def login(name: str, password: str, client: str) -> tuple[str, str, Session]:
        try:
            user = users.authenticate(name, password, client)
        except LoginRefused as e:
            access.record(
                "login_failed", clip(name, 64), "", client, reason=getattr(e, "reason", str(e))
            )
            raise
        cookie, _csrf = users.open_session(user, client)
        s = users.session(cookie)
        assert s is not None
        return cookie, _csrf, s

    def set_cookie(resp: Response, cookie: str) -> None:
        resp.set_cookie(
            COOKIE, cookie, httponly=True, samesite="strict", secure=site.secure, path="/"
        )

    async def login_page(request: Request) -> Response:
        token = secrets.token_urlsafe(24)
        resp = render(request, "login.html", None, login_token=token, next=_next(request), error="")
        resp.set_cookie(
            LOGIN_COOKIE, token, httponly=True, samesite="strict", secure=site.secure, path="/login"
        )
        return resp

    def _next(request: Request) -> str:
        nxt = request.query_params.get("next", "/search")
        # Only a path of this site: never an address elsewhere.
        return (
            nxt
            if re.fullmatch(r"/[A-Za-z0-9/_.\-]*", nxt) and not nxt.startswith("//")
            else "/search"
        )

    async def login_post(request: Request) -> Response:
        form = await request.form()
        token = str(form.get("login_token", ""))
        expect = request.cookies.get(LOGIN_COOKIE, "")
        if not token or not expect or not hmac.compare_digest(token.encode(), expect.encode()):
            raise Refused(403, "the login form expired: reload the page and try again")
        name, password = str(form.get("username", "")), str(form.get("password", ""))
        try:
            cookie, _, _ = await run_in_threadpool(login, name, password, client_of(request))
        except LoginRefused as e:
            t = i18n.translator(lang_of(request))
            key = {"locked": "locked", "throttled": "throttled"}.get(
                getattr(e, "reason", ""), "login_failed"
            )
            return render(
                request,
                "login.html",
                None,
                getattr(e, "status", 401),
                login_token=token,
                next=str(form.get("next", "/search")),
                error=t(key),
            )
        nxt = str(form.get("next", "/search"))
        if not re.fullmatch(r"/[A-Za-z0-9/_.\-]*", nxt) or nxt.startswith("//"):
            nxt = "/search"
        resp = RedirectResponse(nxt, 303)
        set_cookie(resp, cookie)
        resp.delete_cookie(LOGIN_COOKIE, path="/login")
        return resp

    async def logout(request: Request) -> Response:
        s = need(request, False)
        form = await request.form()
        need_csrf(request, s, str(form.get("csrf", "")))
        users.close_session(request.cookies.get(COOKIE, ""))
        resp = RedirectResponse("/login", 303)
        resp.delete_cookie(COOKIE, path="/")
        return resp

    async def api_login(request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            raise Refused(400, 'send JSON: {"username": ..., "password": ...}') from None
        if not isinstance(body, dict) or not all(
            isinstance(body.get(k), str) for k in ("username", "password")
        ):
            raise Refused(400, 'send JSON: {"username": ..., "password": ...}')
        text_field(body["username"], "username")
        text_field(body["password"], "password")
        try:
            cookie, csrf, s = await run_in_threadpool(
                login, body["username"], body["password"], client_of(request)
            )
        except LoginRefused as e:
            headers = {}
            if getattr(e, "retry_after", 0):
                headers["retry-after"] = str(e.retry_after)
            return JSONResponse(
                {"error": str(e), "reason": getattr(e, "reason", "")},
                getattr(e, "status", 401),
                headers=headers,
            )
        resp = JSONResponse({"user": s.user.name, "role": s.user.role, "csrf": csrf})
        set_cookie(resp, cookie)
        return resp

    async def api_logout(request: Request) -> Response:
        s = need(request, True)
        need_csrf(request, s, None)
        users.close_session(request.cookies.get(COOKIE, ""))
        resp = JSONResponse({"ok": True})
        resp.delete_cookie(COOKIE, path="/")
        return resp

    # -- search --------------------------------------------------------------------------

    def query_of(request: Request) -> FindQuery:
        p = request.query_params
        for k in ("officer", "recorder", "unit", "case", "category"):
            if len(p.get(k, "")) > MAX_CASE:
                raise Refused(400, f"{k}: too long")
        return FindQuery(
            officer=p.get("officer", "").strip(),
            recorder=p.get("recorder", "").strip(),
            unit=p.get("unit", "").strip(),
            case=p.get("case", "").strip(),
            category=p.get("category", "").strip(),
            since=_epoch(p.get("from", ""), "from"),
            until=_epoch(p.get("to", ""), "to"),
        )

    def _int(request: Request, key: str, default: int, top: int) -> int:
        v = request.query_params.get(key, "")
        if not v:
            return default
        if not re.fullmatch(r"[0-9]{1,12}", v) or int(v) > top:
            raise Refused(400, f"{key}: a whole number up to {top}")
        return int(v)

    async def search_page(request: Request) -> Response:
        s = need(request, False)
        if s.user.role == "admin":
            return render(request, "admin.html", s, users=users.list())
        q = scope_query(s, query_of(request))
        page = max(1, _int(request, "page", 1, 10**6))
        items, total = await run_in_threadpool(src.find, q, (page - 1) * PAGE_SIZE, PAGE_SIZE)
        params = {k: v for k, v in request.query_params.items() if k != "page" and v}
        return render(
            request,
            "search.html",
            s,
            items=items,
            total=total,
            page=page,
            pages=max(1, (total + PAGE_SIZE - 1) // PAGE_SIZE),
            params=params,
            qs=lambda n: urlencode({**params, "page": n}),
            searched=bool(params),
        )

    async def api_find(request: Request) -> Response:
        s = need(request, True)
        q = scope_query(s, query_of(request))
        offset = _int(request, "offset", 0, 10**9)
        limit = _int(request, "limit", 100, 1000)
        items, total = await run_in_threadpool(src.find, q, offset, limit)
        return JSONResponse({"items": items, "total": total, "offset": offset})

    # -- a recording ---------------------------------------------------------------------

    def recording(s: Session, sha: str, client: str) -> dict[str, Any]:
        it = item_for(s, sha)
        access.record("view", s.user.name, s.user.role, client, sha256=sha, origin=it.get("origin"))
        entries = src.entries(sha)
        viewers = [
            {
                "index": e["index"],
                "time": e["time"],
                **{k: e["fields"].get(k) for k in ("user", "role", "action", "client")},
            }
            for e in entries
            if e["type"] == "access"
        ]
        return {
            "item": it,
            "entries": entries,
            "viewers": viewers,
            "proof": src.proof(sha),
            "has_access": src.blob(sha, "access") is not None,
            "has_poster": src.blob(sha, "poster") is not None,
            "holds": [e for e in entries if e["type"] in ("hold", "hold_release")],
            "cases": src.cases_of(sha),
        }

    async def object_page(request: Request) -> Response:
        s = need(request, False)
        ctx = await run_in_threadpool(recording, s, request.path_params["sha"], client_of(request))
        return render(request, "object.html", s, **ctx)

    async def api_object(request: Request) -> Response:
        s = need(request, True)
        ctx = await run_in_threadpool(recording, s, request.path_params["sha"], client_of(request))
        return JSONResponse({k: ctx[k] for k in ("item", "entries", "viewers", "proof", "cases")})

    def content(kind: str, api: bool) -> Callable[[Request], Awaitable[Response]]:
        async def serve(request: Request) -> Response:
            s = need(request, api)
            sha = request.path_params["sha"]
            it = await run_in_threadpool(item_for, s, sha)
            blob = await run_in_threadpool(src.blob, sha, kind)
            if blob is None:
                raise Refused(404, f"no {kind} copy of this recording is available")
            action = "download" if kind == "original" else "play"
            token = request.cookies.get(COOKIE, "")[:16]
            await run_in_threadpool(
                lambda: access.record(
                    action,
                    s.user.name,
                    s.user.role,
                    client_of(request),
                    once_per=(token, sha, kind),
                    sha256=sha,
                    kind=None if kind == "original" else kind,
                    origin=it.get("origin"),
                )
            )
            # The recorder's extension only, letters and digits: a file name is the
            # recorder's text and must not reach a header as it is.
            suffix = re.sub(r"[^A-Za-z0-9.]", "", Path(str(it.get("file_name") or "")).suffix)
            name = f"{sha}{suffix[:10]}" if kind == "original" else None
            download = name if request.query_params.get("download") else None
            return stream(request, blob, f'"{sha}-{kind}"', download)

        return serve

    # -- cases ---------------------------------------------------------------------------

    def view_case(request: Request, s: Session, case: str) -> list[Item]:
        items = case_items(s, case)
        access.record("case_view", s.user.name, s.user.role, client_of(request), case=case)
        return items

    async def case_page(request: Request) -> Response:
        s = need(request, False)
        case = request.path_params["case"]
        items = await run_in_threadpool(view_case, request, s, case)
        mine = [e for e in exports.list() if e.case == case]
        return render(
            request,
            "case.html",
            s,
            case=case,
            items=items,
            exports=mine,
            done=request.query_params.get("done"),
        )

    async def api_case(request: Request) -> Response:
        s = need(request, True)
        case = request.path_params["case"]
        items = await run_in_threadpool(view_case, request, s, case)
        return JSONResponse({"case": case, "items": items})

    async def case_annotate(request: Request) -> Response:
        s = need(request, False)
        form = await request.form()
        need_csrf(request, s, str(form.get("csrf", "")))
        case = request.path_params["case"]
        at_station("annotations")
        remark = clip(str(form.get("remark", "")))
        category = str(form.get("category", ""))
        important = form.get("important") == "on"
        if not remark:
            raise Refused(400, "write a remark: what was checked or decided")
        if category and category not in i18n.CATEGORIES:
            raise Refused(400, f"unknown category {category[:40]!r}")

        def do() -> None:
            items = case_items(s, case)
            if category or important:
                src.record(
                    [
                        (
                            "annotate",
                            {
                                "sha256": it["sha256"],
                                "operator": s.user.name,
                                "reason": remark,
                                **({"category": category} if category else {}),
                                **({"important": True} if important else {}),
                            },
                        )
                        for it in items
                    ]
                )
            else:
                src.record([("note", {"text": remark, "operator": s.user.name, "case": case})])

        await run_in_threadpool(do)
        return RedirectResponse(f"/cases/{_quote(case)}?done=annotate", 303)

    async def case_hold(request: Request) -> Response:
        s = need(request, False)
        form = await request.form()
        need_csrf(request, s, str(form.get("csrf", "")))
        case = request.path_params["case"]
        at_station("holds")
        reason = clip(str(form.get("reason", "")))
        if not reason:
            raise Refused(400, "give the reason for the hold")

        def do() -> None:
            case_items(s, case)
            src.record(
                [
                    (
                        "hold",
                        {
                            "scope": "case",
                            "target": case,
                            "reason": reason,
                            "operator": s.user.name,
                        },
                    )
                ]
            )

        await run_in_threadpool(do)
        return RedirectResponse(f"/cases/{_quote(case)}?done=hold", 303)

    # -- exports -------------------------------------------------------------------------

    def request_export(
        s: Session, client: str, case: str | None, shas: list[str], purpose: str
    ) -> dict[str, Any]:
        at_station("exports")
        purpose = clip(purpose)
        if not purpose:
            raise Refused(400, "give the purpose of the export (the court, hearing or review)")
        if s.user.role == "admin":
            raise Refused(403, "administrators manage users and see no footage")
        if case is not None:
            items = case_items(s, case)
        else:
            if not shas or len(shas) > 1000:
                raise Refused(400, 'give "case" or "sha256": [1..1000 SHA-256s]')
            items = [item_for(s, sha) for sha in shas]
        got = [it["sha256"] for it in items]
        eid = new_id()
        entry = access.record(
            "export_request",
            s.user.name,
            s.user.role,
            client,
            export=eid,
            purpose=purpose,
            case=case,
            sha256s=None if case else got,
        )
        assert entry is not None
        e = exports.request(
            s.user.name,
            s.user.role,
            purpose,
            case,
            got,
            [str(it.get("unit", "")) for it in items],
            entry,
            eid,
        )
        return {**e.public(), "id": e.id}

    def approve_export(s: Session, client: str, eid: str) -> dict[str, Any]:
        e = exports.get(_check_export_id(eid))
        if e is None:
            raise Refused(404, "no such export")
        if s.user.role != "supervisor":
            raise Refused(403, "only a supervisor approves exports")
        if e.requested_by == s.user.name:
            raise Refused(403, "an export is approved by another person than the one who asked")
        if s.user.units and not set(e.units) <= set(s.user.units):
            raise Refused(403, "this export holds footage of units you do not supervise")
        if e.state != "requested":
            raise Refused(409, f"this export is already {e.state}")
        entry = access.record(
            "export_approve",
            s.user.name,
            s.user.role,
            client,
            export=e.id,
            case=e.case,
            purpose=e.purpose,
        )
        assert entry is not None
        return exports.approve(e.id, s.user.name, entry).public()

    def visible_export(s: Session, eid: str) -> Any:
        e = exports.get(_check_export_id(eid))
        if e is None:
            raise Refused(404, "no such export")
        mine = e.requested_by == s.user.name
        supervises = s.user.role == "supervisor" and (
            not s.user.units or set(e.units) <= set(s.user.units)
        )
        if not (mine or supervises):
            raise Refused(403, "this export is neither yours nor of your units")
        return e

    async def exports_page(request: Request) -> Response:
        s = need(request, False)
        shown = []
        for e in exports.list():
            try:
                visible_export(s, e.id)
                shown.append(e)
            except Refused:
                continue
        return render(request, "exports.html", s, exports=shown)

    async def export_post(request: Request) -> Response:
        s = need(request, False)
        form = await request.form()
        need_csrf(request, s, str(form.get("csrf", "")))
        case = str(form.get("case", "")) or None
        shas = [str(v) for v in form.getlist("sha256")]
        await run_in_threadpool(
            request_export, s, client_of(request), case, shas, str(form.get("purpose", ""))
        )
        return RedirectResponse("/exports", 303)

    async def export_approve_post(request: Request) -> Response:
        s = need(request, False)
        form = await request.form()
        need_csrf(request, s, str(form.get("csrf", "")))
        await run_in_threadpool(approve_export, s, client_of(request), request.path_params["id"])
        return RedirectResponse("/exports", 303)

    async def api_exports(request: Request) -> Response:
        s = need(request, True)
        need_csrf(request, s, None)
        try:
            body = await request.json()
        except ValueError:
            raise Refused(
                400, 'send JSON: {"case": ... | "sha256": [...], "purpose": ...}'
            ) from None
        if not isinstance(body, dict):
            raise Refused(400, 'send JSON: {"case": ... | "sha256": [...], "purpose": ...}')
        case, shas, purpose = body.get("case"), body.get("sha256"), body.get("purpose")
        if not isinstance(purpose, str) or (case is None) == (shas is None):
            raise Refused(400, 'give "purpose" and one of "case" or "sha256"')
        if case is not None and not isinstance(case, str):
            raise Refused(400, '"case" is a string')
        if shas is not None and not (
            isinstance(shas, list) and all(isinstance(x, str) for x in shas)
        ):
            raise Refused(400, '"sha256" is a list of SHA-256 strings')
        text_field(purpose, "purpose")
        if case is not None:
            text_field(case, "case")
        for x in shas or []:
            text_field(x, "sha256")
        out = await run_in_threadpool(
            request_export, s, client_of(request), case, shas or [], purpose
        )
        return JSONResponse({"id": out["id"], "state": out["state"]}, 201)

    async def api_export_approve(request: Request) -> Response:
        s = need(request, True)
        need_csrf(request, s, None)
        out = await run_in_threadpool(
            approve_export, s, client_of(request), request.path_params["id"]
        )
        return JSONResponse(out)

    async def api_export(request: Request) -> Response:
        s = need(request, True)
        e = visible_export(s, request.path_params["id"])
        return JSONResponse(e.public())

    def bag_zip(api: bool) -> Callable[[Request], Awaitable[Response]]:
        async def serve(request: Request) -> Response:
            s = need(request, api)
            e = visible_export(s, request.path_params["id"])
            if e.state != "ready":
                raise Refused(409, f"the export is {e.state}" + (f": {e.error}" if e.error else ""))
            token = request.cookies.get(COOKIE, "")[:16]
            await run_in_threadpool(
                lambda: access.record(
                    "export_download",
                    s.user.name,
                    s.user.role,
                    client_of(request),
                    once_per=(token, e.id),
                    export=e.id,
                    case=e.case,
                )
            )
            return FileResponse(
                exports.zip_path(e.id),
                media_type="application/zip",
                filename=f"custody-export-{e.id[:8]}.zip",
                headers={"cache-control": "private, no-store"},
            )

        return serve

    # -- audits, overview, language ------------------------------------------------------

    async def audits_page(request: Request) -> Response:
        s = need(request, False)
        if s.user.role == "admin":
            raise Refused(403, "administrators manage users and see no footage")
        audits, alarms = await run_in_threadpool(lambda: (src.audits(), src.alarms()))
        return render(request, "audits.html", s, audits=audits, alarms=alarms)

    async def api_audits(request: Request) -> Response:
        s = need(request, True)
        if s.user.role == "admin":
            raise Refused(403, "administrators manage users and see no footage")
        audits, alarms = await run_in_threadpool(lambda: (src.audits(), src.alarms()))
        return JSONResponse({"audits": audits, "alarms": alarms})

    async def overview_page(request: Request) -> Response:
        s = need(request, False)
        if s.user.role != "supervisor":
            raise Refused(403, "the overview is for supervisors")
        rows = await run_in_threadpool(src.overview)
        if s.user.units:
            rows = [r for r in rows if r.get("unit") in s.user.units]
        return render(request, "overview.html", s, rows=rows)

    async def set_lang(request: Request) -> Response:
        lang = request.path_params["lang"]
        if lang not in i18n.LANGS:
            raise Refused(404, "no such language")
        path = request.query_params.get("next", "")
        if not SAFE_NEXT.fullmatch(path) or path.startswith("//") or path.startswith("/lang/"):
            path = "/search"
        resp = RedirectResponse(path, 303)
        resp.set_cookie(
            "lang", lang, samesite="strict", secure=site.secure, path="/", max_age=365 * 86400
        )
        return resp

    async def healthz(request: Request) -> Response:
        return JSONResponse({"ok": True, "kind": src.kind, "name": src.name})

    async def root(request: Request) -> Response:
        return RedirectResponse("/search", 303)

    async def api_fallback(request: Request) -> Response:
        need(request, True)
        raise Refused(404, "no such API route")

    def page(
        path: str, fn: Callable[[Request], Awaitable[Response]], methods: list[str] | None = None
    ) -> Route:
        return Route(path, endpoint(fn, False), methods=methods or ["GET", "HEAD"])

    def api(
        path: str, fn: Callable[[Request], Awaitable[Response]], methods: list[str] | None = None
    ) -> Route:
        return Route(path, endpoint(fn, True), methods=methods or ["GET", "HEAD"])

    routes = [
        page("/", root),
        page("/healthz", healthz),
        page("/login", login_page),
        page("/login", login_post, ["POST"]),
        page("/logout", logout, ["POST"]),
        page("/lang/{lang}", set_lang),
        page("/search", search_page),
        page("/objects/{sha}", object_page),
        page("/objects/{sha}/access", content("access", False)),
        page("/objects/{sha}/poster", content("poster", False)),
        page("/objects/{sha}/content", content("original", False)),
        page("/cases/{case}", case_page),
        page("/cases/{case}/annotate", case_annotate, ["POST"]),
        page("/cases/{case}/hold", case_hold, ["POST"]),
        page("/exports", exports_page),
        page("/exports", export_post, ["POST"]),
        page("/exports/{id}/approve", export_approve_post, ["POST"]),
        page("/exports/{id}/bag.zip", bag_zip(False)),
        page("/audits", audits_page),
        page("/overview", overview_page),
        api("/api/login", api_login, ["POST"]),
        api("/api/logout", api_logout, ["POST"]),
        api("/api/find", api_find),
        api("/api/objects/{sha}", api_object),
        api("/api/objects/{sha}/content", content("original", True)),
        api("/api/objects/{sha}/access", content("access", True)),
        api("/api/cases/{case}", api_case),
        api("/api/exports", api_exports, ["POST"]),
        api("/api/exports/{id}", api_export),
        api("/api/exports/{id}/approve", api_export_approve, ["POST"]),
        api("/api/exports/{id}/bag.zip", bag_zip(True)),
        api("/api/audits", api_audits),
        api("/api/{rest:path}", api_fallback, ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"]),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]

    async def not_found(request: Request, exc: Exception) -> Response:
        return render(
            request, "error.html", session_of(request), 404, message="not found", code=404
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        # Stopping: the access entries appended last are integrated into a checkpoint.
        await run_in_threadpool(src.close)
        exports.close()

    app = Starlette(routes=routes, exception_handlers={404: not_found}, lifespan=lifespan)
    # /lang/../ is not redirected to /lang/ by a Location built from the Host header.
    app.router.redirect_slashes = False
    app.state.exports = exports
    app.state.access = access
    # Outside Starlette's own error handling, so that a 500 carries the headers too.
    return SecurityHeaders(app, site.secure)


# A path (and query) of this site to go back to: never another site's address.
SAFE_NEXT = re.compile(r"/[A-Za-z0-9/_.\-?=&%+~]*")


def _here(request: Request) -> str:
    """This page's path and query, percent-encoded (for the language link's `next`)."""
    from urllib.parse import quote

    q = request.url.query
    return quote(request.url.path, safe="/") + (f"?{q}" if q else "")


def _quote(case: str) -> str:
    from urllib.parse import quote

    return quote(case, safe="")
