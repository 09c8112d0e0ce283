"""Decoded-frame hashes with real ffmpeg: on request and by configuration, the MPEG-7
signature beside them, and `custody verify-clip` tracing a clip whose packets differ
from the original's but whose pictures do not (a lossless re-encode)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ingest.frames import parse_frames

from ..conftest import run_cli
from .daemon import entries, make_station
from .test_fingerprints import ff, sha, source


def stored(conf: Path, digest: str) -> bytes:
    root = conf.parent / "store" / "objects" / "sha256"
    data = (root / digest[:2] / digest[2:4] / digest).read_bytes()
    assert hashlib.sha256(data).hexdigest() == digest
    return data


def frames_entries(conf: Path) -> dict[str, dict[str, Any]]:
    fps = [e for e in entries(conf) if e["type"] == "fingerprint"]
    return {e["sha256"]: e for e in fps if e["kind"] == "frames"}


def test_frames_on_request_and_remux_traced(tmp_path: Path, ffmpeg: str) -> None:
    dock = tmp_path / "dock"
    conf = make_station(tmp_path, dock)
    slot = dock / "slot01"
    original = source(ffmpeg, slot / "A.mp4", "libx264", seconds=8)
    other = source(ffmpeg, slot / "B.mp4", "libx264", seconds=3, audio=False)
    run_cli("ingest", str(dock), "--settle-ms", "0", config=conf)
    a, b = sha(original), sha(other)
    assert frames_entries(conf) == {}, "frame hashes are not made unless asked for"

    # A lossless re-encode into MPEG-TS carries the same pictures in other packets (a
    # stream copy into MPEG-TS is an exact packet match since custody-packets/v2).
    ts = tmp_path / "court" / "cut.ts"
    ts.parent.mkdir()
    ff(
        ffmpeg,
        *("-ss", "2", "-i", str(original), "-t", "3", "-c:v", "libx264", "-qp", "0"),
        *("-preset", "ultrafast", "-c:a", "copy", "-f", "mpegts", str(ts)),
    )
    before = json.loads(run_cli("verify-clip", str(ts), "--json", config=conf, check=False).stdout)
    assert not before["exact"] and "frames" not in before, "no frame hashes to compare yet"

    p = run_cli("fingerprint", "--frames", "--signature", a, config=conf)
    assert "200 frames hashed, with MPEG-7 signature" in p.stdout, p.stdout
    e = frames_entries(conf)[a]
    assert e["complete"] is True and e["frames"] == 200 and e["format"] == "custody-frames/v1"
    assert e["args"][:1] == ["ffmpeg"] and "{input}" in e["args"] and "{output}" in e["args"]
    assert any("{signature}" in x for x in e["args"]), e["args"]
    assert e["tool"].startswith("ffmpeg version")
    fh = parse_frames(stored(conf, e["sidecar"]["sha256"]))
    assert len(fh.frames) == 200 and fh.size == "320x240"
    assert len(stored(conf, e["signature"]["sha256"])) == e["signature"]["size"] > 0
    # Asked again: the entry already made is named, nothing new is written.
    again = run_cli("fingerprint", "--frames", a, config=conf)
    assert "already in entry" in again.stdout
    assert len(frames_entries(conf)) == 1

    p = run_cli("verify-clip", str(ts), "--json", config=conf, check=False)
    got = json.loads(p.stdout)
    assert p.returncode == 1 and not got["exact"], "packets differ: not an exact cut"
    fr = got["frames"]
    assert fr["original"] == a and fr["matched"] == fr["total"] > 0
    assert abs(fr["range_ms"][0] - 2000) <= 100 and abs(fr["range_ms"][1] - 4960) <= 200
    text = run_cli("verify-clip", str(ts), config=conf, check=False).stdout
    assert "every picture is the original's, in other packets" in text, text

    # A re-encoded copy shares no decoded frame either.
    enc = tmp_path / "court" / "reencoded.mp4"
    ff(ffmpeg, "-i", str(ts), "-c:v", "libx264", "-preset", "ultrafast", "-crf", "30", str(enc))
    rj = json.loads(run_cli("verify-clip", str(enc), "--json", config=conf, check=False).stdout)
    assert not rj["exact"] and "frames" not in rj

    # Not a captured video, or not hashable: clear messages, exit 2 (operational).
    bad = run_cli("fingerprint", "--frames", "0" * 64, b, config=conf, check=False)
    assert bad.returncode == 2 and "not a captured video" in bad.stderr
    assert f"{b}: 75 frames hashed" in bad.stdout


def test_frames_for_every_video_when_configured(tmp_path: Path, ffmpeg: str) -> None:
    dock = tmp_path / "dock"
    conf = make_station(tmp_path, dock, extra="\n[media]\nframe_hashes = true\n")
    slot = dock / "slot01"
    whole = source(ffmpeg, slot / "A.mp4", "libx264", seconds=6)
    source(ffmpeg, slot / "B.mov", "libx265", seconds=3)
    data = whole.read_bytes()
    (slot / "C_cut_short.mp4").write_bytes(data[: len(data) * 2 // 3])
    (slot / "D_text.mp4").write_text("not a video\n")
    (slot / "E_header_only.mp4").write_bytes(data[:600])
    names = {p.name: sha(p) for p in slot.iterdir()}
    run_cli("ingest", str(dock), "--settle-ms", "0", config=conf, check=False)
    fr = frames_entries(conf)
    assert fr[names["A.mp4"]]["frames"] == 150 and fr[names["A.mp4"]]["complete"]
    assert fr[names["B.mov"]]["frames"] == 75 and "signature" not in fr[names["B.mov"]]
    short = fr[names["C_cut_short.mp4"]]
    # The readable part is kept, marked incomplete, with ffmpeg's reason.
    assert short["complete"] is False and 0 < short["frames"] < 150 and short["damage"]
    # A text file named .mp4 and a recording cut off inside its header: the failure is
    # an entry with ffmpeg's reason, not a crash and not a retry loop.
    for name in ("D_text.mp4", "E_header_only.mp4"):
        e = fr[names[name]]
        assert "decoded nothing" in e["error"] and "sidecar" not in e, e
    run_cli("ingest", str(dock), "--settle-ms", "0", config=conf, check=False)
    assert len(frames_entries(conf)) == 5
