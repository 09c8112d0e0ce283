"""The one-pass access copy (a fragmented MP4 written through a pipe) in a real browser:
Chromium knows its duration, seeks into its middle and plays on from there."""

from __future__ import annotations

import subprocess
from pathlib import Path

from playwright.sync_api import Browser

from ingest.derive import MediaSettings, access_copy_command, plan
from ingest.deriver import make_object
from ingest.objects import LocalObjects
from ingest.probe import probe

VIDEO = "document.getElementById('v')"


def test_access_copy_seeks_and_plays(tmp_path: Path, ffmpeg: str, browser: Browser) -> None:
    src = tmp_path / "rec.mp4"
    subprocess.run(
        [
            ffmpeg,
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x240:rate=25:duration=12",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=500:duration=12",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "25",
            "-c:a",
            "aac",
            "-shortest",
            str(src),
        ],
        check=True,
        timeout=120,
    )
    p = plan(probe(src))
    assert p is not None and p.method == "remux"
    objects = LocalObjects(tmp_path / "store")
    cmd = access_copy_command(ffmpeg, src, p, MediaSettings())
    made = make_object(objects, cmd, MediaSettings(), 60, "derive-seek.mp4")
    (tmp_path / "copy.mp4").write_bytes(objects.path(made.sha256).read_bytes())
    (tmp_path / "page.html").write_text('<video id="v" src="copy.mp4" muted></video>')

    page = browser.new_page()
    try:
        page.goto((tmp_path / "page.html").as_uri())
        page.wait_for_function(f"() => {VIDEO}.readyState >= 1", timeout=20_000)
        assert abs(page.evaluate(f"() => {VIDEO}.duration") - 12) < 0.2
        page.evaluate(f"() => {{ {VIDEO}.currentTime = 7.3; }}")
        page.wait_for_function(f"() => !{VIDEO}.seeking && {VIDEO}.readyState >= 2", timeout=20_000)
        assert abs(page.evaluate(f"() => {VIDEO}.currentTime") - 7.3) < 0.05
        page.evaluate(f"() => {VIDEO}.play()")
        page.wait_for_function(f"() => {VIDEO}.currentTime > 8", timeout=20_000)
        assert page.evaluate(f"() => {VIDEO}.error") is None
    finally:
        page.close()
