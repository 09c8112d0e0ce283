"""The witness over HTTP: Starlette on uvicorn.

``POST /add-checkpoint`` (C2SP tlog-witness v1.0.0) and, for monitors,
``GET /<hex SHA-256 of the origin>/checkpoint`` (the latest checkpoint this
witness cosigned for that log, with its cosignature).

The request path is lean: the body is read with a size limit and a deadline,
parsed by the pure core, and handed to one writer thread that decides and
stores a batch of requests in one SQLite transaction (a group commit: one
fsync for every request waiting at that moment) before any of them is answered.
Around it: one log line per request, and a token bucket per client address
(429 with Retry-After when empty).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import queue
import socket
import threading
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterator,
    MutableMapping,
    Sequence,
)
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from witness.protocol import (
    MAX_BODY,
    TEXT_CONTENT_TYPE,
    AddCheckpoint,
    Answer,
    BadRequest,
    bad_request,
    parse_request,
)
from witness.state import WitnessError, WitnessState, load_cosigner

log = logging.getLogger("witness")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Requests decided in one transaction at most; more wait for the next commit.
MAX_BATCH = 256


@dataclass(frozen=True)
class Limits:
    """What one client may ask. ``rate`` requests per second per client address, with
    bursts up to ``burst`` (0: no limit); a body over ``max_body`` bytes is refused
    (413); a body not received within ``body_timeout_s`` is refused (408)."""

    rate: float = 100.0
    burst: float = 200.0
    max_body: int = MAX_BODY
    body_timeout_s: float = 10.0


class TokenBuckets:
    """One token bucket per client: ``rate`` tokens a second, at most ``burst``."""

    MAX_CLIENTS = 10_000

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = max(burst, 1.0)
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, client: str, now: float) -> float:
        """0 when the request may go ahead, else the seconds until it may."""
        tokens, last = self._buckets.get(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < 1.0:
            self._buckets[client] = (tokens, now)
            return (1.0 - tokens) / self.rate
        if len(self._buckets) >= self.MAX_CLIENTS and client not in self._buckets:
            self._forget_full(now)
        self._buckets[client] = (tokens - 1.0, now)
        return 0.0

    def _forget_full(self, now: float) -> None:
        # A bucket that has refilled holds nothing worth keeping: drop those.
        full = [
            c
            for c, (t, last) in self._buckets.items()
            if t + (now - last) * self.rate >= self.burst
        ]
        for c in full:
            del self._buckets[c]
        if len(self._buckets) >= self.MAX_CLIENTS:  # a flood of addresses: start afresh
            self._buckets.clear()


# Refuses a request before it is decided (an answer), or lets it through (None).
Gate = Callable[[AddCheckpoint], Answer | None]
# Told of each request decided and its answer, once stored, before the answer leaves.
Observer = Callable[[AddCheckpoint, Answer], None]


class Committer:
    """The one writer: a thread that decides and stores requests in batches, each
    batch one transaction, and answers each request once its batch is committed."""

    def __init__(
        self, wdir: Path, gate: Gate | None = None, observe: Observer | None = None
    ) -> None:
        self.wdir = wdir
        self.gate = gate
        self.observe = observe
        self.cosigner = load_cosigner(wdir)
        self._q: queue.SimpleQueue[
            tuple[AddCheckpoint, asyncio.Future[Answer], asyncio.AbstractEventLoop] | None
        ] = queue.SimpleQueue()
        self._state = WitnessState(wdir)
        self._thread = threading.Thread(target=self._run, name="witness-writer", daemon=True)
        self._thread.start()

    async def submit(self, request: AddCheckpoint) -> Answer:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Answer] = loop.create_future()
        self._q.put((request, fut, loop))
        return await fut

    def close(self) -> None:
        self._q.put(None)
        self._thread.join()
        self._state.close()

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._q.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    nxt = self._q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            refused = [self.gate(b[0]) if self.gate else None for b in batch]
            batch_ok = [b for b, r in zip(batch, refused, strict=True) if r is None]
            for (_, fut, loop), r in zip(batch, refused, strict=True):
                if r is not None:
                    loop.call_soon_threadsafe(_resolve, fut, r)
            batch = batch_ok
            if not batch:
                continue
            try:
                answers = self._state.add_checkpoints([b[0] for b in batch], self.cosigner)
            except Exception as e:  # the disk or the database failed: nothing was stored
                log.error("witness: cannot store the state (%s: %s)", type(e).__name__, e)
                answers = [
                    Answer(503, b"the witness cannot store its state\n", TEXT_CONTENT_TYPE)
                ] * len(batch)
            for (request, fut, loop), answer in zip(batch, answers, strict=True):
                if self.observe is not None:
                    try:
                        self.observe(request, answer)
                    except Exception as e:  # an observer's failure is not the witness's
                        log.warning("witness: observer failed: %s", e)
                loop.call_soon_threadsafe(_resolve, fut, answer)


def _resolve(fut: asyncio.Future[Answer], answer: Answer) -> None:
    if not fut.done():  # the client may have gone; what was stored stays stored
        fut.set_result(answer)


class _TooLarge(Exception):
    pass


async def _read_body(request: Request, limits: Limits) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limits.max_body:
        raise _TooLarge
    chunks: list[bytes] = []
    n = 0
    async with asyncio.timeout(limits.body_timeout_s):
        async for chunk in request.stream():
            n += len(chunk)
            if n > limits.max_body:
                raise _TooLarge
            chunks.append(chunk)
    return b"".join(chunks)


def _respond(answer: Answer, close: bool = False) -> Response:
    headers = {"Content-Type": answer.content_type} if answer.content_type else {}
    if close:
        headers["Connection"] = "close"
    return Response(answer.body, answer.status, headers=headers)


def _note(request: Request, what: str) -> None:
    request.scope.setdefault("witness.log", []).append(what)


async def add_checkpoint(request: Request) -> Response:
    limits: Limits = request.app.state.limits
    try:
        body = await _read_body(request, limits)
    except _TooLarge:
        _note(request, f"body over {limits.max_body} bytes")
        return _respond(Answer(413, b"request body too large\n", TEXT_CONTENT_TYPE), close=True)
    except TimeoutError:
        _note(request, f"body not received within {limits.body_timeout_s:g} s")
        return _respond(Answer(408, b"request body too slow\n", TEXT_CONTENT_TYPE), close=True)
    except ClientDisconnect:
        _note(request, "client went away")
        return Response(status_code=400)
    try:
        parsed = parse_request(body)
    except BadRequest as e:
        answer = bad_request(str(e))
    else:
        answer = await request.app.state.committer.submit(parsed)
        cp = parsed.checkpoint
        _note(request, f"origin={cp.origin!r} old={parsed.old_size} size={cp.size}")
    _note(request, answer.reason)
    return _respond(answer)


async def monitor_checkpoint(request: Request) -> Response:
    oid = request.path_params["origin_id"]
    text = None
    if len(oid) == 64 and all(c in "0123456789abcdef" for c in oid):
        text = request.app.state.reader.checkpoint(oid)
    if text is None:
        return Response(b"no cosigned checkpoint for that log\n", 404, media_type="text/plain")
    return Response(text.encode(), 200, headers={"Content-Type": TEXT_CONTENT_TYPE})


class Guard:
    """Outermost layer: the per-client rate limit and one log line per request."""

    def __init__(self, app: ASGIApp, limits: Limits) -> None:
        self.app = app
        self.buckets = TokenBuckets(limits.rate, limits.burst) if limits.rate > 0 else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.monotonic()
        client = scope.get("client")
        addr = client[0] if client else "-"
        status = 0

        async def send_logged(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        wait = self.buckets.take(addr, start) if self.buckets is not None else 0.0
        try:
            if wait > 0:
                retry = str(max(1, math.ceil(wait)))
                response = Response(
                    b"too many requests\n",
                    429,
                    headers={"Content-Type": TEXT_CONTENT_TYPE, "Retry-After": retry},
                )
                scope.setdefault("witness.log", []).append(f"rate limited, retry after {retry} s")
                await response(scope, receive, send_logged)
            else:
                await self.app(scope, receive, send_logged)
        finally:
            ms = (time.monotonic() - start) * 1000
            what = " ".join(scope.get("witness.log", []))
            log.info(
                "%s %s %s %d %.1fms %s", addr, scope["method"], scope["path"], status, ms, what
            )


def build_app(
    wdir: Path,
    limits: Limits | None = None,
    notify_ready: bool = False,
    gate: Gate | None = None,
    extra_routes: Sequence[Route] = (),
    observe: Observer | None = None,
) -> ASGIApp:
    """The witness as an ASGI app (the writer thread starts with the app's lifespan).

    ``gate`` may refuse a request before it is decided (the county hub refuses to
    cosign for a station it holds in alarm); ``extra_routes`` are served beside."""
    limits = limits or Limits()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.committer = Committer(wdir, gate, observe)
        app.state.reader = WitnessState(wdir)
        if notify_ready:
            sd_notify("READY=1")
        try:
            yield
        finally:
            app.state.committer.close()
            app.state.reader.close()

    app = Starlette(
        routes=[
            Route("/add-checkpoint", add_checkpoint, methods=["POST"]),
            Route("/{origin_id}/checkpoint", monitor_checkpoint, methods=["GET"]),
            *extra_routes,
        ],
        lifespan=lifespan,
    )
    app.state.limits = limits
    return Guard(app, limits)


def sd_notify(message: str) -> None:
    """Tell systemd (``NOTIFY_SOCKET``), if it is listening: READY=1, STOPPING=1."""
    addr = os.environ.get("NOTIFY_SOCKET", "")
    if not addr.startswith(("/", "@")):
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s, contextlib.suppress(OSError):
        s.sendto(message.encode(), "\0" + addr[1:] if addr[0] == "@" else addr)


ENV_PREFIX = "CUSTODY_WITNESS_"


def app_from_environment() -> ASGIApp:
    """The app for uvicorn's own worker processes (``--workers N``): settings come
    from ``CUSTODY_WITNESS_DATA``, ``_RATE``, ``_BURST``, ``_BODY_TIMEOUT``."""
    env = os.environ
    limits = Limits(
        rate=float(env.get(ENV_PREFIX + "RATE", Limits.rate)),
        burst=float(env.get(ENV_PREFIX + "BURST", Limits.burst)),
        body_timeout_s=float(env.get(ENV_PREFIX + "BODY_TIMEOUT", Limits.body_timeout_s)),
    )
    return build_app(Path(env[ENV_PREFIX + "DATA"]), limits, notify_ready=True)


class _Server(uvicorn.Server):
    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:  # listening: now systemd may call us started
            sd_notify("READY=1")

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        sd_notify("STOPPING=1")
        await super().shutdown(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn raises SIGTERM again once it has shut down, so the process would end
        # "killed by SIGTERM"; a witness that stopped cleanly when asked exits 0.
        with super().capture_signals():
            try:
                yield
            finally:
                captured = getattr(self, "_captured_signals", None)
                if isinstance(captured, list):
                    captured.clear()


def serve(wdir: Path, host: str, port: int, limits: Limits | None = None, workers: int = 1) -> None:
    """Serve until SIGTERM or SIGINT; in-flight requests finish first."""
    limits = limits or Limits()
    load_cosigner(wdir)  # a missing or bad key: say so now, not in a worker
    WitnessState(wdir).close()
    common: dict[str, Any] = {
        "host": host,
        "port": port,
        "access_log": False,  # our own line per request (Guard)
        "log_config": None,  # the command line configures logging
        "server_header": False,
        "timeout_keep_alive": 30,  # logs keep one connection per witness
        "timeout_graceful_shutdown": 10,
        "limit_concurrency": 1000,  # connections beyond this get 503
        "lifespan": "on",
    }
    try:
        if workers <= 1:
            server = _Server(uvicorn.Config(build_app(wdir, limits), **common))
            server.run()
            started = server.started
        else:
            os.environ.update(
                {
                    ENV_PREFIX + "DATA": str(wdir),
                    ENV_PREFIX + "RATE": str(limits.rate),
                    ENV_PREFIX + "BURST": str(limits.burst),
                    ENV_PREFIX + "BODY_TIMEOUT": str(limits.body_timeout_s),
                }
            )
            uvicorn.run(
                "witness.server:app_from_environment", factory=True, workers=workers, **common
            )
            started = True
    except SystemExit:  # uvicorn exits when it cannot listen
        started = False
    if not started:
        raise WitnessError(f"cannot listen on {host}:{port}", "is another process using that port?")


__all__ = ["Limits", "TokenBuckets", "app_from_environment", "build_app", "sd_notify", "serve"]
