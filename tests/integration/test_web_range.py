"""HTTP Range on the review site, over real HTTP against `custody web`: the bytes of
206 answers, 416 out of range, HEAD, If-Range, and a 2 GiB original streamed with flat
memory.

An original is served from one of two places, and both are tested: the station's own
store (a local file) and the cold store, when the local copy is gone (the station's
[store] is a local folder here; the original's local copy is removed as eviction
would). The module's station (tests.webfix) gets that [store] before its server starts.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run_cli
from tests.webfix import WebServer, make_web_station, start_web

from .webhttp import raw

MiB = 1 << 20
BIG = 2048 * MiB  # 2 GiB
RSS_GROWTH_LIMIT = 64 * MiB


@dataclass
class Site:
    srv: WebServer
    shas: list[str]  # tests.webfix's three recordings, local
    cold_sha: str  # an original held only in the cold store
    cold_data: bytes
    dock: Path
    cold: Path


def conf_of(srv: WebServer) -> Any:
    from custody.config import load

    return load(srv.conf)


def local_path(srv: WebServer, sha: str) -> Path:
    from ingest.objects import LocalObjects

    return LocalObjects(conf_of(srv).store_dir).path(sha)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("webrange")
    conf, shas = make_web_station(tmp)
    cold = tmp / "cold"
    conf.write_text(conf.read_text() + f'\n[store]\nkind = "local"\npath = "{cold}"\n')
    dock = tmp / "dock"
    data = bytes(range(256)) * 2000 + os.urandom(4321)  # 516321 bytes, not media
    (dock / "slot01" / "ABC1234_010203_20241128090000.mp4").write_bytes(data)
    run_cli("ingest", str(dock), "--settle-ms", "0", config=conf)
    sha = hashlib.sha256(data).hexdigest()
    from archive.store import object_key

    assert (cold / object_key(sha)).read_bytes() == data
    srv = start_web(conf, tmp / "web.log")
    try:
        local_path(srv, sha).unlink()  # as eviction leaves it: in the cold store only
        yield Site(srv, shas, sha, data, dock, cold)
    finally:
        srv.stop()


def range_cases(size: int) -> list[tuple[str, int, int]]:
    """(Range header, start, end exclusive) of satisfiable single ranges."""
    return [
        ("bytes=0-99", 0, 100),
        ("bytes=100-", 100, size),
        ("bytes=-50", size - 50, size),
        ("bytes=0-0", 0, 1),
        (f"bytes={size - 1}-", size - 1, size),
        (f"bytes={size - 1}-{size - 1}", size - 1, size),
        (f"bytes=10-{size + 1000}", 10, size),  # the end is cut to the size
        (f"bytes=-{size + 1000}", 0, size),  # a suffix longer than the whole
        ("bytes=0-99999999999999999999999", 0, size),
        (f"bytes=1000-{2 * 65536 + 17}", 1000, min(size, 2 * 65536 + 18)),  # across chunks
    ]


def check_ranges(srv: WebServer, url: str, cookie: str, data: bytes) -> None:
    size = len(data)
    whole = raw(srv, "GET", url, cookie)
    assert whole.status == 200 and whole.body == data, (url, whole.status)
    assert whole.header("accept-ranges") == "bytes"
    assert int(whole.header("content-length")) == size
    for rng, start, end in range_cases(size):
        r = raw(srv, "GET", url, cookie, {"Range": rng})
        assert r.status == 206, (url, rng, r.status, r.body[:200])
        assert r.header("content-range") == f"bytes {start}-{end - 1}/{size}", (rng, r.headers)
        assert int(r.header("content-length")) == end - start, rng
        assert r.body == data[start:end], (url, rng, len(r.body))
    for rng in (f"bytes={size}-", f"bytes={size + 10}-{size + 20}", "bytes=-0"):
        r = raw(srv, "GET", url, cookie, {"Range": rng})
        assert r.status == 416, (url, rng, r.status)
        assert r.header("content-range") == f"bytes */{size}", (url, rng, r.headers)
        assert data[:64] not in r.body
    # Not understood: ignored (the whole, 200) or refused; never a crash or wrong bytes.
    for rng in ("bytes=abc", "bytes=99-10", "items=0-9", "bytes=--5", "bytes=0-9;x"):
        r = raw(srv, "GET", url, cookie, {"Range": rng})
        assert r.status in (200, 400, 416), (url, rng, r.status)
        if r.status == 200:
            assert r.body == data
    # Two ranges: the whole (200) or both parts (206 multipart/byteranges).
    r = raw(srv, "GET", url, cookie, {"Range": "bytes=0-9,20-29"})
    assert r.status in (200, 206), r.status
    if r.status == 200:
        assert r.body == data
    else:
        assert r.header("content-type").startswith("multipart/byteranges")
        assert data[0:10] in r.body and data[20:30] in r.body
    # HEAD: the headers of GET, no body.
    r = raw(srv, "HEAD", url, cookie)
    assert r.status == 200 and r.body == b"" and int(r.header("content-length")) == size
    assert r.header("accept-ranges") == "bytes"
    r = raw(srv, "HEAD", url, cookie, {"Range": "bytes=0-99"})
    assert r.status == 206 and r.body == b"", (url, r.status)
    assert r.header("content-range") == f"bytes 0-99/{size}"
    assert int(r.header("content-length")) == 100


def check_if_range(srv: WebServer, url: str, cookie: str, data: bytes) -> None:
    """If-Range: the range only while the validator still names what is served; a
    validator that does not match gets the whole (RFC 9110 13.1.5)."""
    whole = raw(srv, "GET", url, cookie)
    etag, modified = whole.header("etag"), whole.header("last-modified")
    for validator in ('"not-this-one"', formatdate(0, usegmt=True)):
        r = raw(srv, "GET", url, cookie, {"Range": "bytes=0-99", "If-Range": validator})
        assert r.status == 200 and r.body == data, (url, validator, r.status, len(r.body))
    for validator in (etag, modified):
        if validator:
            r = raw(srv, "GET", url, cookie, {"Range": "bytes=0-99", "If-Range": validator})
            assert r.status == 206 and r.body == data[:100], (url, validator, r.status)
    # A weak validator never matches for a range.
    if etag:
        r = raw(srv, "GET", url, cookie, {"Range": "bytes=0-99", "If-Range": "W/" + etag})
        assert r.status == 200 and r.body == data


def test_ranges_of_a_local_original(site: Site) -> None:
    cookie, _ = site.srv.login("wang")
    sha = site.shas[0]
    data = local_path(site.srv, sha).read_bytes()
    assert hashlib.sha256(data).hexdigest() == sha
    for url in (f"/api/objects/{sha}/content", f"/objects/{sha}/content"):
        check_ranges(site.srv, url, cookie, data)
        check_if_range(site.srv, url, cookie, data)


def test_ranges_of_an_original_in_the_cold_store_only(site: Site) -> None:
    cookie, _ = site.srv.login("wang")
    sha = site.cold_sha
    assert not local_path(site.srv, sha).exists()
    for url in (f"/api/objects/{sha}/content", f"/objects/{sha}/content"):
        check_ranges(site.srv, url, cookie, site.cold_data)


def test_if_range_of_an_original_in_the_cold_store_only(site: Site) -> None:
    cookie, _ = site.srv.login("wang")
    url = f"/api/objects/{site.cold_sha}/content"
    check_if_range(site.srv, url, cookie, site.cold_data)


def test_ranges_of_the_access_copy_as_a_video_element_asks(site: Site) -> None:
    """A <video> asks `bytes=0-`, then jumps: the page's and the API's copy alike."""
    cookie, _ = site.srv.login("li")
    sha = site.shas[0]
    for url in (f"/objects/{sha}/access", f"/api/objects/{sha}/access"):
        whole = raw(site.srv, "GET", url, cookie)
        assert whole.status == 200 and whole.header("content-type") == "video/mp4"
        check_ranges(site.srv, url, cookie, whole.body)
    poster = raw(site.srv, "GET", f"/objects/{sha}/poster", cookie)
    assert poster.status == 200 and poster.body[:3] == b"\xff\xd8\xff"  # JPEG
    r = raw(site.srv, "GET", f"/objects/{sha}/poster", cookie, {"Range": "bytes=-50"})
    assert r.status == 206 and r.body == poster.body[-50:]


# -- a 2 GiB original ------------------------------------------------------------------------


def rss(pid: int) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    m = re.search(r"^VmRSS:\s+(\d+) kB", text, re.M)
    assert m is not None
    return int(m.group(1)) * 1024


class RssPeak:
    """The highest VmRSS of a process, sampled every few milliseconds meanwhile."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = rss(pid)
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss(self.pid))
            time.sleep(0.005)

    def __enter__(self) -> RssPeak:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, rss(self.pid))


def write_big(path: Path) -> str:
    """2 GiB that do not repeat per MiB (a counter in each), written in 64 MiB chunks;
    returns its SHA-256."""
    block = bytearray(os.urandom(MiB))
    h = hashlib.sha256()
    with open(path, "wb") as f:
        for c in range(BIG // (64 * MiB)):
            chunk = bytearray()
            for m in range(64):
                block[:8] = (c * 64 + m).to_bytes(8, "big")
                chunk += block
            f.write(chunk)
            h.update(chunk)
    return h.hexdigest()


def stream_whole(srv: WebServer, url: str, cookie: str) -> tuple[int, str, int]:
    """GET the whole, read in 1 MiB pieces: (status, SHA-256 of the body, bytes)."""
    r = srv.request("GET", url, cookie=cookie, preload=False)
    h = hashlib.sha256()
    n = 0
    try:
        for piece in r.stream(MiB):
            h.update(piece)
            n += len(piece)
    finally:
        r.release_conn()
    return r.status, h.hexdigest(), n


def test_a_2gib_original_streams_with_flat_memory(site: Site) -> None:
    srv = site.srv
    need = 3 * BIG + 512 * MiB  # the dock's file, the store's copy, the cold store's copy
    free = shutil.disk_usage(site.dock).free
    assert free > need, f"this test needs {need >> 30} GiB free under {site.dock}, has {free >> 30}"
    started = time.monotonic()
    name = site.dock / "slot01" / "ABC1234_010203_20241129090000.mp4"
    sha = ""
    try:
        sha = write_big(name)
        run_cli("ingest", str(site.dock), "--settle-ms", "0", config=srv.conf)
        name.unlink()  # the dock's copy is not needed any more: disk
        assert local_path(srv, sha).stat().st_size == BIG
        cookie, _ = srv.login("wang")
        url = f"/api/objects/{sha}/content"
        deadline = time.monotonic() + 30
        while raw(srv, "GET", f"/api/objects/{sha}", cookie).status != 200:
            assert time.monotonic() < deadline, "the 2 GiB original never showed up"
            time.sleep(0.2)
        # Warm up the code path (and the process's allocator) on a small range.
        r = raw(srv, "GET", url, cookie, {"Range": f"bytes={BIG - 4 * MiB}-"})
        assert r.status == 206 and len(r.body) == 4 * MiB
        for where in ("local", "cold"):
            if where == "cold":
                local_path(srv, sha).unlink()
                r = raw(srv, "GET", url, cookie, {"Range": f"bytes={BIG - 4 * MiB}-"})
                assert r.status == 206 and len(r.body) == 4 * MiB
            base = rss(srv.proc.pid)
            t = time.monotonic()
            with RssPeak(srv.proc.pid) as peak:
                status, got, n = stream_whole(srv, url, cookie)
            took = time.monotonic() - t
            assert status == 200 and n == BIG, (where, status, n)
            assert got == sha, f"{where}: the streamed bytes are not the original"
            grew = peak.peak - base
            assert grew < RSS_GROWTH_LIMIT, (
                f"{where}: the server grew by {grew / MiB:.0f} MiB streaming 2 GiB "
                f"(from {base / MiB:.0f} MiB, in {took:.1f} s)"
            )
            # A range deep inside, beyond 2**31: the offsets are not 32-bit anywhere.
            r = raw(srv, "GET", url, cookie, {"Range": f"bytes={BIG - 100}-{BIG - 51}"})
            assert r.status == 206 and len(r.body) == 50
            assert r.header("content-range") == f"bytes {BIG - 100}-{BIG - 51}/{BIG}"
    finally:
        from archive.store import object_key

        name.unlink(missing_ok=True)
        if sha:
            local_path(srv, sha).unlink(missing_ok=True)
            # The cold store keeps its objects read-only; this one goes with the test.
            (site.cold / object_key(sha)).unlink(missing_ok=True)
    assert time.monotonic() - started < 120
