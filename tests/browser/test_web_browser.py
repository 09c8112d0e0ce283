"""The review site in a real browser (Debian's chromium driven by Playwright), in Chinese:
a reviewer logs in, searches, plays a recording and sees it verified, asks for an
export of a case; a supervisor approves it in a second browser; the reviewer downloads
the zip and `python -m verify bag` checks it. Every page is saved as a screenshot.

One station and one browser for the module; the tests run in order as one story, and
the last one judges everything the browser did (where it went, what its console said).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlencode, urlsplit

import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page

from tests.conftest import run_cli
from tests.integration.test_search import NAMED
from tests.webfix import CASE_A, PASSWORDS, WebServer
from web import i18n

OFFICER = NAMED.split("_")[1]  # 010203: the first recording's officer, from its file name
PURPOSE = "（2026）民初123号 法院调取 / court request"
ZH = i18n.translator("zh")  # for words the site may translate or leave as they are
PNG = b"\x89PNG\r\n\x1a\n"
SHOTS = (
    "login",
    "search",
    "recording",
    "case",
    "exports-supervisor",
    "exports-reviewer",
    "audits",
    "search-en",
)


@dataclass
class Watch:
    """Everything the browser asked for and said, over every context of the module."""

    requests: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    shots: list[str] = field(default_factory=list)

    def attach(self, ctx: BrowserContext) -> None:
        ctx.on("request", lambda r: self.requests.append(r.url))
        ctx.on("console", self._console)
        ctx.on("weberror", lambda e: self.page_errors.append(str(e.error)))

    def _console(self, m: ConsoleMessage) -> None:
        self.console.append(f"{m.type}: {m.text} ({m.location['url']})")


@pytest.fixture(scope="module")
def watch() -> Watch:
    return Watch()


def new_context(browser: Browser, watch: Watch) -> BrowserContext:
    # zh-CN: the browser asks for Chinese, as the station's users' browsers do.
    ctx = browser.new_context(locale="zh-CN", viewport={"width": 1280, "height": 900})
    ctx.set_default_timeout(20_000)
    watch.attach(ctx)
    return ctx


def shot(page: Page, artifacts: Path, watch: Watch, name: str) -> None:
    """A full-page screenshot saved as an artifact, checked to be a real PNG."""
    path = artifacts / f"{name}.png"
    path.unlink(missing_ok=True)  # a file left by an earlier run proves nothing
    page.screenshot(path=str(path), full_page=True)
    data = path.read_bytes()
    assert data[:8] == PNG and len(data) > 10_000, (path, len(data))
    watch.shots.append(name)


def fonts_of(page: Page, selector: str) -> set[str]:
    """The font families Chromium actually drew the element's text with (not the CSS
    wish list): a Chinese heading drawn without a CJK font is boxes."""
    cdp = page.context.new_cdp_session(page)
    try:
        cdp.send("DOM.enable")
        cdp.send("CSS.enable")
        root = cdp.send("DOM.getDocument")["root"]["nodeId"]
        node = cdp.send("DOM.querySelector", {"nodeId": root, "selector": selector})["nodeId"]
        fonts = cdp.send("CSS.getPlatformFontsForNode", {"nodeId": node})["fonts"]
    finally:
        cdp.detach()
    return {f["familyName"] for f in fonts}


def log_in(page: Page, srv: WebServer, name: str) -> None:
    page.goto(srv.base + "/login")
    page.fill("#username", name)
    page.fill("#password", PASSWORDS[name])
    page.click("#login-submit")
    page.wait_for_url(srv.base + "/search")


@pytest.fixture(scope="module")
def li(
    browser: Browser, site: tuple[WebServer, list[str]], watch: Watch, artifacts: Path
) -> Iterator[Page]:
    """The reviewer li's browser, logged in through the login page (in Chinese)."""
    srv, _ = site
    ctx = new_context(browser, watch)
    page = ctx.new_page()
    page.goto(srv.base + "/login")
    assert page.get_attribute("html", "lang") == "zh-CN"
    assert page.inner_text("h1") == "登录"
    assert any("CJK" in f for f in fonts_of(page, "h1")), fonts_of(page, "h1")
    shot(page, artifacts, watch, "login")
    log_in(page, srv, "li")
    yield page
    ctx.close()


@pytest.fixture(scope="module")
def wang(browser: Browser, site: tuple[WebServer, list[str]], watch: Watch) -> Iterator[Page]:
    """The supervisor wang's browser: a second context, its own session cookie."""
    srv, _ = site
    ctx = new_context(browser, watch)
    page = ctx.new_page()
    log_in(page, srv, "wang")
    yield page
    ctx.close()


def result_shas(page: Page) -> list[str]:
    return [
        (a.get_attribute("href") or "").rsplit("/", 1)[-1]
        for a in page.query_selector_all("#results a.sha")
    ]


def test_reviewer_searches_and_sees_only_her_cases(
    li: Page, site: tuple[WebServer, list[str]], watch: Watch, artifacts: Path
) -> None:
    srv, shas = site
    # The officer recorded two of the three: the first is in li's case, the second in a
    # case not assigned to her. A supervisor of every unit finds both.
    cookie, _ = srv.login("wang")
    r = srv.request("GET", "/api/find?" + urlencode({"officer": OFFICER}), cookie=cookie)
    both = {it["sha256"] for it in json.loads(r.data)["items"]}
    assert both == {shas[0], shas[1]}, both

    li.goto(srv.base + "/search")
    assert li.inner_text("h1") == "检索"
    li.fill("#q-officer", OFFICER)
    li.click("#search-submit")
    li.wait_for_url(srv.base + "/search?*")
    assert li.input_value("#q-officer") == OFFICER
    assert result_shas(li) == [shas[0]]
    assert li.inner_text("#result-count") == "结果: 1"
    assert "行政处罚" in li.inner_text("#results")  # the category, in Chinese
    assert any("CJK" in f for f in fonts_of(li, "#results th")), fonts_of(li, "#results th")
    shot(li, artifacts, watch, "search")


def test_recording_plays_and_is_verified(
    li: Page, site: tuple[WebServer, list[str]], watch: Watch, artifacts: Path
) -> None:
    srv, shas = site
    li.goto(srv.base + "/search?" + urlencode({"officer": OFFICER}))
    li.click(f"#results a.sha[href='/objects/{shas[0]}']")
    li.wait_for_url(f"{srv.base}/objects/{shas[0]}")
    assert li.inner_text("#sha256") == shas[0]
    assert li.get_attribute("#player", "src") == f"/objects/{shas[0]}/access"

    # No page script (the CSP forbids inline script): play through the element itself.
    li.evaluate("() => { const v = document.getElementById('player'); v.muted = true; }")
    li.evaluate("() => document.getElementById('player').play()")
    li.wait_for_function(
        "() => document.getElementById('player').currentTime > 0.5", timeout=20_000
    )
    assert li.evaluate("() => document.getElementById('player').error") is None

    assert li.get_attribute("#verification", "class") == "ok"
    assert li.inner_text("#verdict").startswith("已验证")
    rows = [
        [td.inner_text() for td in tr.query_selector_all("td")]
        for tr in li.query_selector_all("#viewers tbody tr")
    ]
    # columns: index, time, user, role, action, client; the page's own view is listed
    assert ["li", "审核人员", ZH("view"), "127.0.0.1"] in [r[2:] for r in rows], rows
    shot(li, artifacts, watch, "recording")

    # The playback itself (Range requests of the access copy) is one signed entry.
    li.reload()
    rows = [
        [td.inner_text() for td in tr.query_selector_all("td")]
        for tr in li.query_selector_all("#viewers tbody tr")
    ]
    assert ["li", "审核人员", ZH("play"), "127.0.0.1"] in [r[2:] for r in rows], rows


def test_export_requested_approved_downloaded_and_verified(
    li: Page,
    wang: Page,
    site: tuple[WebServer, list[str]],
    watch: Watch,
    artifacts: Path,
    tmp_path: Path,
) -> None:
    srv, shas = site
    # The reviewer asks for the case's footage from its page, with a purpose.
    li.goto(f"{srv.base}/objects/{shas[0]}")
    li.click("#identity a[href^='/cases/']")
    li.wait_for_url(f"{srv.base}/cases/{quote(CASE_A, safe='')}")
    assert li.inner_text("#case-no") == CASE_A
    assert [a.get_attribute("href") for a in li.query_selector_all("#case-items a")] == [
        f"/objects/{shas[0]}"
    ]
    li.fill("#export-form #purpose", PURPOSE)
    shot(li, artifacts, watch, "case")
    li.click("#export-submit")
    li.wait_for_url(srv.base + "/exports")
    (row,) = [r for r in li.query_selector_all("#exports tr.export") if PURPOSE in r.inner_text()]
    eid = (row.get_attribute("id") or "").removeprefix("export-")
    assert len(eid) == 32, eid
    mine = f"#export-{eid}"
    assert li.inner_text(f"{mine} .state") == "待批准"
    assert row.query_selector("button.approve") is None  # nobody approves their own

    # The supervisor approves it in her own browser.
    wang.goto(srv.base + "/exports")
    assert wang.inner_text(f"{mine} td:nth-child(4)") == "li"
    shot(wang, artifacts, watch, "exports-supervisor")
    wang.click(f"{mine} button.approve")
    wang.wait_for_url(srv.base + "/exports")

    # The bag is built in the background: wait for its download link.
    deadline = time.monotonic() + 60
    while not li.query_selector(f"{mine} a.download"):
        assert time.monotonic() < deadline, li.inner_text(mine)
        assert "失败" not in li.inner_text(f"{mine} .state"), li.inner_text(mine)
        time.sleep(0.5)
        li.goto(srv.base + "/exports")
    assert li.inner_text(f"{mine} td:nth-child(5)") == "wang"
    shot(li, artifacts, watch, "exports-reviewer")

    with li.expect_download() as got:
        li.click(f"{mine} a.download")
    dl = got.value
    assert dl.suggested_filename == f"custody-export-{eid[:8]}.zip"
    zipped = tmp_path / dl.suggested_filename
    dl.save_as(zipped)
    with zipfile.ZipFile(zipped) as zf:
        zf.extractall(tmp_path / "unzipped")
    bag = tmp_path / "unzipped" / "bag"

    vkey = run_cli("ledger", "vkey", config=srv.conf).stdout.strip()
    p = subprocess.run(
        [sys.executable, "-m", "verify", "bag", str(bag), "--vkey", vkey],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0 and "OK" in p.stdout, p.stdout + p.stderr
    assert shas[0] in "".join(f.read_text(errors="replace") for f in bag.glob("*.txt"))


def test_audits_and_the_english_switch(
    li: Page, site: tuple[WebServer, list[str]], watch: Watch, artifacts: Path
) -> None:
    srv, shas = site
    # The station's own audit (a signed fixity entry): the page shows its result.
    audit = json.loads(run_cli("audit", "--json", config=srv.conf).stdout)
    li.goto(srv.base + "/audits")
    assert li.inner_text("h1") == "审计"
    cells = [td.inner_text() for td in li.query_selector_all("#audits tbody tr td")]
    origin = json.loads(srv.request("GET", "/healthz").data)["name"]
    assert cells[0] == origin and cells[-1] == "正常", (cells, audit)
    shot(li, artifacts, watch, "audits")

    li.goto(srv.base + "/search")
    li.click("#lang")
    li.wait_for_url(srv.base + "/search*")
    assert li.get_attribute("html", "lang") == "en"
    assert li.inner_text("h1") == "Search"
    li.fill("#q-officer", OFFICER)
    li.click("#search-submit")
    li.wait_for_url(srv.base + "/search?*")
    assert result_shas(li) == [shas[0]]
    assert "administrative penalty" in li.inner_text("#results")
    shot(li, artifacts, watch, "search-en")
    # Back to Chinese: the switch is a cookie, both ways.
    li.click("#lang")
    li.wait_for_url(srv.base + "/search*")
    assert li.inner_text("h1") == "检索"


def test_browser_stayed_on_the_site_and_saw_no_errors(
    site: tuple[WebServer, list[str]], watch: Watch, artifacts: Path
) -> None:
    """Over everything above: every request went to the station's own address (the
    network is closed and every asset is local), the console shows no error (a CSP
    violation is one), and every page's screenshot is saved."""
    srv, shas = site
    hosts = {urlsplit(u).netloc for u in watch.requests}
    assert hosts == {f"127.0.0.1:{srv.port}"}, sorted(set(watch.requests))
    assert f"{srv.base}/objects/{shas[0]}/access" in watch.requests
    assert f"{srv.base}/static/site.css" in watch.requests
    # Chromium asks for /favicon.ico by itself; the site has none (a 404, not a fault).
    errors = [c for c in watch.console if c.startswith("error") and "/favicon.ico)" not in c]
    assert not errors, errors
    assert not [c for c in watch.console if "Content Security Policy" in c], watch.console
    assert not watch.page_errors, watch.page_errors
    assert sorted(watch.shots) == sorted(SHOTS), watch.shots
    for name in SHOTS:
        data = (artifacts / f"{name}.png").read_bytes()
        assert data[:8] == PNG and len(data) > 10_000, name
