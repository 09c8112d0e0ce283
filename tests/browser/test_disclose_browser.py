"""The disclosure page (公示) in a real browser: Debian's chromium through Playwright.

A real station captures a few recordings (ffmpeg-made clips named as the recorders
name them), one is linked to a case, and `custody disclose` publishes 2024. The folder
is opened as a file (``file://…/index.html``) and served by ``python -m http.server``
on a loopback port, as a public web server would serve it. Either way the browser asks
for nothing outside the folder, its console stays clean, the page shows the Chinese and
English titles, the totals table shows data.json's numbers, the Chinese heading is
drawn in Noto Sans CJK, and a full-page screenshot is kept in the test artifacts.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page

from tests.browser.conftest import REPO
from tests.browser.test_web_browser import fonts_of
from tests.conftest import make_clip, run_cli
from tests.integration.daemon import make_station
from tests.webfix import ffmpeg_exe

PNG = b"\x89PNG\r\n\x1a\n"
PUBLISHER = "勐海县公安局"
UNIT = "530822000000"  # slot01's unit in the station's config
UNIT_NAME = "勐海县公安局交通警察大队"
CASES = ("2024-行政处罚-0042", "2024-行政检查-0007")
FIGURES = ("recordings", "hours", "cases", "evidence", "deletions", "holds", "exports")
# Recorder file names: serial, officer number, start (Shanghai time), category, importance.
CLIPS = (
    ("slot01", "ABC1234_010203_20241125083000_XZCF_IMP.mp4"),
    ("slot01", "ABC1234_010203_20241126090000.mp4"),
    ("slot01", "ABC1234_010203_20241130233000_XZCF.mp4"),
    ("slot01", "DEF5678_040506_20241201000500_XZCF.mp4"),  # 1 December in Shanghai
    ("slot01", "DEF5678_040506_20241203101500.mp4"),
    ("slot02", "GHJ9012_070809_20241210120000.mp4"),  # slot02 has no unit
)


def artifacts_dir() -> Path:
    """Where the screenshots go: $CUSTODY_ARTIFACTS, else <repo>/test-artifacts/disclose/."""
    env = os.environ.get("CUSTODY_ARTIFACTS")
    out = Path(env) if env else REPO / "test-artifacts" / "disclose"
    out.mkdir(parents=True, exist_ok=True)
    return out


@dataclass(frozen=True)
class Published:
    out: Path
    doc: dict[str, Any]
    conf: Path


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Published:
    tmp = tmp_path_factory.mktemp("disclose-browser")
    ff = ffmpeg_exe()
    dock = tmp / "dock"
    conf = make_station(tmp, dock)
    text = conf.read_text()
    text = text.replace(
        "[[docks.patterns]]",
        'timezone = "Asia/Shanghai"\ncategory_map = { XZCF = "行政处罚" }\n[[docks.patterns]]',
        1,
    )
    pattern = (
        "regex = '^(?P<serial>[A-Z0-9]{7})_(?P<officer>[0-9]{6})_(?P<start>[0-9]{14})"
        "(?:_(?P<category>[A-Z]{4}))?(?P<important>_IMP)?'"
    )
    conf.write_text(
        "\n".join(pattern if ln.startswith("regex = ") else ln for ln in text.split("\n"))
    )
    for i, (slot, name) in enumerate(CLIPS):
        make_clip(ff, dock / slot / name, seconds=1 + i % 2, tone=300 + 40 * i, size="64x48")
    run_cli("ingest", str(dock), "--settle-ms", "0", config=conf)
    rows = json.loads(run_cli("find", "--json", config=conf).stdout)
    assert len(rows) == len(CLIPS), rows
    for row, case in zip((rows[1], rows[3]), CASES, strict=True):
        run_cli("annotate", row["sha256"], "--case", case, "--reason", "complaint", config=conf)
    rules = tmp / "disclose.toml"
    rules.write_text(
        f'threshold = 2\npublisher = "{PUBLISHER}"\n[units]\n"{UNIT}" = "{UNIT_NAME}"\n'
    )
    out = tmp / "www" / "2024"
    p = run_cli(
        "disclose", "--out", str(out), "--period", "2024", "--rules", str(rules), "--json",
        config=conf,
    )  # fmt: skip
    assert json.loads(p.stdout)["files"] >= 9
    doc: dict[str, Any] = json.loads((out / "data.json").read_text())
    grand = next(t for t in doc["totals"] if t["category"] == "" and t["month"] == "2024")
    assert grand["recordings"] == len(CLIPS) and grand["cases"] == 2, grand
    return Published(out, doc, conf)


@dataclass
class Watch:
    requests: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)


@contextmanager
def opened(browser: Browser, url: str) -> Iterator[tuple[Page, Watch]]:
    """A new browser context (Chinese, as the public's browsers in the county ask) on
    ``url``, loaded, with everything it asks for and says recorded."""
    watch = Watch()
    ctx = browser.new_context(locale="zh-CN", viewport={"width": 1280, "height": 900})
    ctx.set_default_timeout(20_000)
    ctx.on("request", lambda r: watch.requests.append(r.url))
    ctx.on("requestfailed", lambda r: watch.failed.append(f"{r.url}: {r.failure}"))

    def console(m: ConsoleMessage) -> None:
        watch.console.append(f"{m.type}: {m.text} ({m.location['url']})")

    ctx.on("console", console)
    ctx.on("weberror", lambda e: watch.page_errors.append(str(e.error)))
    page = ctx.new_page()
    try:
        page.goto(url, wait_until="load")
        page.wait_for_load_state("networkidle")
        yield page, watch
    finally:
        ctx.close()


def _cell_text(v: Any) -> str:
    return "—" if v is None else str(v)


def check_page(page: Page, watch: Watch, pub: Published, shot: Path, inside: str) -> None:
    """What both ways of reading the page must show; ``inside``: the URL prefix every
    request must start with (the folder)."""
    doc = pub.doc
    assert page.get_attribute("html", "lang") == "zh-CN"
    assert page.title().startswith("执法全过程记录公示"), page.title()
    h1 = page.inner_text("h1")
    assert "执法全过程记录公示" in h1 and "Enforcement recording disclosure" in h1, h1
    assert f"{PUBLISHER} · 2024" in page.inner_text(".who")
    # The stylesheet applied (the page is not the browser's bare default).
    assert page.evaluate("getComputedStyle(document.querySelector('h2')).borderBottomStyle") == (
        "solid"
    )
    # The totals table: one row per category and the sum, data.json's numbers in order.
    totals = {(t["category"], t["month"]): t for t in doc["totals"]}
    rows = page.query_selector_all("#totals tbody tr")
    keys = [c["key"] for c in doc["categories"]] + [""]
    assert len(rows) == len(keys) == 7
    for tr, key in zip(rows, keys, strict=True):
        cells = [td.inner_text().strip() for td in tr.query_selector_all("td")]
        want = [_cell_text(totals[(key, "2024")][f]) for f in FIGURES]
        assert cells == want, (key, cells, want)
    head = rows[1].inner_text()
    assert "行政处罚" in head and "Administrative penalty" in head
    sum_cells = [td.inner_text() for td in rows[-1].query_selector_all("td")]
    assert sum_cells[0] == str(len(CLIPS)), sum_cells
    # The months: data.json's all-unit totals of each month.
    for tr in page.query_selector_all("#months tbody tr"):
        month = tr.query_selector("th").inner_text()  # type: ignore[union-attr]
        cells = [td.inner_text().strip() for td in tr.query_selector_all("td")]
        assert cells == [_cell_text(totals[("", month)][f]) for f in FIGURES], month
    assert len(page.query_selector_all("#months tbody tr")) == 12
    # The units: the named one first (open), then the footage with no unit.
    summaries = [s.inner_text() for s in page.query_selector_all("#units > details > summary")]
    assert UNIT_NAME in summaries[0] and "未标明单位" in summaries[-1], summaries
    body = page.inner_text("body")
    for word in ("按月", "By month", "完整性审计", "Integrity audits", "如何核验"):
        assert word in body, word

    # Every link and stylesheet of the page points into the folder.
    hrefs = page.eval_on_selector_all("[href], [src]", "els => els.map(e => e.href || e.src)")
    assert hrefs and all(h.startswith(inside) for h in hrefs), hrefs
    for h in hrefs:
        rel = unquote(urlsplit(h).path)[len(unquote(urlsplit(inside).path)) :]
        assert (pub.out / rel).is_file(), f"the page links to {rel}, not in the folder"

    path = shot
    path.unlink(missing_ok=True)  # a file left by an earlier run proves nothing
    page.screenshot(path=str(path), full_page=True)
    data = path.read_bytes()
    assert data[:8] == PNG and len(data) > 20_000, (path, len(data))

    # Nothing asked for outside the folder; nothing failed; a clean console.
    assert watch.requests, "no request recorded"
    outside = [u for u in watch.requests if not u.startswith(inside)]
    assert not outside, outside
    assert inside + "style.css" in watch.requests, watch.requests
    assert not watch.failed, watch.failed
    errors = [c for c in watch.console if c.startswith(("error", "warning"))]
    assert not errors, errors
    assert not watch.page_errors, watch.page_errors

    # Last: the font Chromium drew the Chinese heading with. This opens a DevTools
    # session, whose CSS domain fetches the page's sources again (for a file:// page
    # Chromium refuses that fetch and logs it): the page itself was judged above.
    fonts = fonts_of(page, "h1")
    assert any(f.startswith("Noto Sans CJK") for f in fonts), fonts
    fonts = fonts_of(page, "#totals h2")
    assert any(f.startswith("Noto Sans CJK") for f in fonts), fonts
    assert [u for u in watch.requests if not u.startswith(inside)] == []


def test_the_page_opened_as_a_file(browser: Browser, published: Published) -> None:
    inside = published.out.as_uri() + "/"
    with opened(browser, inside + "index.html") as (page, watch):
        check_page(page, watch, published, artifacts_dir() / "disclose-file.png", inside)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def served(published: Published) -> Iterator[str]:
    """`python -m http.server` serving the folder on a loopback port."""
    port = _free_port()
    log = published.out.parent / "http.log"
    with open(log, "wb") as logf:
        proc = subprocess.Popen(
            [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
             "--directory", str(published.out)],
            stdout=logf, stderr=subprocess.STDOUT,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(base + "data.json", timeout=2) as r:
                    assert json.loads(r.read()) == published.doc
                break
            except OSError:
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "http.server did not answer"
                time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        proc.wait(10)


def test_the_page_served_over_http(browser: Browser, published: Published, served: str) -> None:
    with opened(browser, served + "index.html") as (page, watch):
        # Chromium asks for /favicon.ico by itself: inside the folder's site, and absent.
        favicon = served + "favicon.ico"
        watch.requests[:] = [u for u in watch.requests if u != favicon]
        watch.console[:] = [c for c in watch.console if "favicon.ico" not in c]
        check_page(page, watch, published, artifacts_dir() / "disclose-http.png", served)


def test_the_printed_page_shows_every_unit(browser: Browser, published: Published) -> None:
    """On paper every unit's tables are there, the month-by-month ones too (closed on
    screen): a printed 公示 is posted up. `details { display: block }` would not open a
    closed <details>; the print rule `details::details-content` does."""
    with opened(browser, published.out.as_uri() + "/index.html") as (page, _):
        monthly = page.locator("#units details.monthly table")
        assert monthly.count() == 2
        assert not monthly.nth(0).is_visible()  # on screen the months are folded
        page.emulate_media(media="print")
        tables = page.locator("#units table")
        assert tables.count() == 4  # each unit: its period table and its months
        shown = [tables.nth(i).is_visible() for i in range(tables.count())]
        assert shown == [True] * 4, shown
