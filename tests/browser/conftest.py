"""A real browser for the review site: Debian's chromium driven by Playwright.

Playwright never downloads a browser here: it launches the system's /usr/bin/chromium
(installed by scripts/test with fonts-noto-cjk, so the Chinese pages render). The
machine's network may be closed, so Chromium's own background traffic is switched off.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Playwright, sync_playwright

from tests.webfix import WebServer, web_station

REPO = Path(__file__).resolve().parents[2]
CHROMIUM_ARGS = [
    "--no-sandbox",  # the tests run as root in CI, and Chromium's sandbox refuses root
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium_path() -> str:
    exe = shutil.which("chromium") or "/usr/bin/chromium"
    if not os.access(exe, os.X_OK):
        raise AssertionError(
            "the browser tests need Debian's chromium and fonts-noto-cjk: run scripts/test "
            "as root, or apt-get install chromium fonts-noto-cjk"
        )
    return exe


def artifacts_dir() -> Path:
    """Where the screenshots go: $CUSTODY_ARTIFACTS, else <repo>/test-artifacts/web/."""
    env = os.environ.get("CUSTODY_ARTIFACTS")
    out = Path(env) if env else REPO / "test-artifacts" / "web"
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[WebServer, list[str]]]:
    """The station with footage and users, its `custody web`, the originals' SHA-256s."""
    yield from web_station(tmp_path_factory.mktemp("browser"))


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    b = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
    try:
        yield b
    finally:
        b.close()


@pytest.fixture(scope="module")
def artifacts() -> Path:
    return artifacts_dir()
