"""Packet fingerprints (custody-packets/v2) with real ffmpeg on generated media, and
`custody verify-clip`."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

from ingest.fingerprint import parse_sidecar

from ..conftest import run_cli
from .daemon import entries, make_station


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def ff(ffmpeg: str, *args: str) -> None:
    subprocess.run([ffmpeg, "-v", "error", "-y", *args], check=True, timeout=120)


def source(ffmpeg: str, out: Path, vcodec: str, seconds: int = 10, audio: bool = True) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    args = ["-f", "lavfi", "-i", f"testsrc=size=320x240:rate=25:duration={seconds}"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=500:duration={seconds}"]
    args += ["-c:v", vcodec, "-preset", "ultrafast", "-g", "25"]
    if vcodec == "libx265":
        args += ["-x265-params", "log-level=error:keyint=25:min-keyint=25", "-tag:v", "hvc1"]
    if audio:
        args += ["-c:a", "aac", "-shortest"]
    ff(ffmpeg, *args, "-movflags", "+faststart", str(out))
    return out


def test_fingerprints_and_clips(tmp_path: Path, ffmpeg: str) -> None:
    dock = tmp_path / "dock"
    conf = make_station(tmp_path, dock)
    slot = dock / "slot01"
    h264 = source(ffmpeg, slot / "A_h264.mp4", "libx264")
    hevc = source(ffmpeg, slot / "B_hevc.mov", "libx265", seconds=6)
    source(ffmpeg, slot / "C_mute.mp4", "libx264", seconds=3, audio=False)
    whole = h264.read_bytes()
    (slot / "D_cut_short.mp4").write_bytes(whole[: len(whole) * 2 // 3])
    (slot / "E_notes.mp4").write_text("not a video at all\n")
    originals = {p.name: sha(p) for p in slot.iterdir()}
    run_cli("ingest", str(dock), "--settle-ms", "0", config=conf, check=False)

    es = entries(conf)
    fps = {e["sha256"]: e for e in es if e["type"] == "fingerprint"}
    assert set(fps) == set(originals.values()), "one fingerprint entry per media file"
    store = conf.parent / "store" / "objects" / "sha256"
    for name in ("A_h264.mp4", "B_hevc.mov", "C_mute.mp4", "D_cut_short.mp4"):
        e = fps[originals[name]]
        side = e["sidecar"]["sha256"]
        data = (store / side[:2] / side[2:4] / side).read_bytes()
        assert hashlib.sha256(data).hexdigest() == side
        parsed = parse_sidecar(data)
        assert len(parsed.packets) == e["packets"] > 0
        assert e["tool"].startswith("PyAV")
        # New captures are fingerprinted in custody-packets/v2, saying each stream's form.
        assert e["format"] == "custody-packets/v2" and parsed.version == 2
        assert e["forms"] == {str(s.index): s.form for s in parsed.streams}
    assert fps[originals["A_h264.mp4"]]["forms"] == {"0": "avcc4", "1": "raw"}
    assert fps[originals["A_h264.mp4"]]["complete"] is True
    assert fps[originals["C_mute.mp4"]]["per_stream"].keys() == {"0"}
    short = fps[originals["D_cut_short.mp4"]]
    assert short["complete"] is False and short["packets"] < fps[originals["A_h264.mp4"]]["packets"]
    assert (
        "error" in fps[originals["E_notes.mp4"]] and "sidecar" not in fps[originals["E_notes.mp4"]]
    )

    # A stream-copied cut of the H.264 original is traced back, with its time range.
    cut = tmp_path / "court" / "cut.mp4"
    cut.parent.mkdir()
    ff(ffmpeg, "-ss", "3", "-i", str(h264), "-t", "4", "-c", "copy", str(cut))
    p = run_cli("verify-clip", str(cut), "--json", config=conf)
    got: dict[str, Any] = json.loads(p.stdout)
    assert got["exact"] and got["original"] == originals["A_h264.mp4"]
    assert abs(got["range_ms"][0] - 3000) <= 100 and abs(got["range_ms"][1] - 7000) <= 200
    assert got["matched"] == got["total"] == got["packets"]
    assert got["format"] == "custody-packets/v2" and got["params_ok"] is True
    text = run_cli("verify-clip", str(cut), config=conf).stdout
    assert "every packet of the clip is in the original" in text

    # The same from the H.265 MOV, into an MP4.
    cut2 = tmp_path / "court" / "cut2.mp4"
    ff(ffmpeg, "-ss", "2", "-i", str(hevc), "-t", "2", "-c", "copy", str(cut2))
    got2 = json.loads(run_cli("verify-clip", str(cut2), "--json", config=conf).stdout)
    assert got2["exact"] and got2["original"] == originals["B_hevc.mov"]

    # A re-encoded copy is not claimed as an exact match.
    again = tmp_path / "court" / "reencoded.mp4"
    ff(ffmpeg, "-i", str(cut), "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", str(again))
    bad = run_cli("verify-clip", str(again), config=conf, check=False)
    assert bad.returncode == 1 and "matches nothing exactly" in bad.stdout, bad.stdout

    # A cut whose packets were altered: the closest original is named, not an exact match.
    tampered = tmp_path / "court" / "tampered.mp4"
    data = bytearray(cut.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tampered.write_bytes(bytes(data))
    t = run_cli("verify-clip", str(tampered), "--json", config=conf, check=False)
    tj = json.loads(t.stdout)
    assert t.returncode == 1 and not tj["exact"]
    assert tj["original"] == originals["A_h264.mp4"] and 0 < tj["matched"] < tj["total"]

    # Something that is not media at all: a clear one-line error.
    junk = run_cli("verify-clip", str(slot / "E_notes.mp4"), config=conf, check=False)
    assert junk.returncode == 2 and "cannot read it as media" in junk.stderr
