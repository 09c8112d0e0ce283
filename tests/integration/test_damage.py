"""Recordings cut short are signed as cut short: real ffmpeg files, cut as a dying battery
cuts them, through the real probe (PyAV) and `custody ingest`."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ingest.damage import BytesSource, examine
from ingest.probe import ProbeFailed, probe

from ..conftest import run_cli
from .daemon import entries, make_station

SECONDS = 8
FRAMES = SECONDS * 30  # 240 frames, as in the report of the bug

FRAG = ["-movflags", "frag_keyframe+empty_moov+default_base_moof"]
KINDS: dict[str, tuple[str, list[str]]] = {
    # name: (file name, container options)
    "fragmented": ("frag.mp4", FRAG),
    # A recorder's fragmented file: no mfra trailer; mehd is added by `with_mehd`.
    "fragmented-mehd": ("mehd.mp4", ["-movflags", FRAG[1] + "+skip_trailer"]),
    "fragmented-in-moov": (
        "fragmoov.mp4",
        ["-movflags", "frag_keyframe", "-frag_duration", "1000000"],
    ),
    "faststart": ("fast.mp4", ["-movflags", "+faststart"]),
    "plain": ("plain.mp4", []),
    "matroska": ("rec.mkv", []),
    "webm": ("rec.webm", []),
    "avi": ("rec.avi", []),
    "mpegts": ("rec.ts", []),
}


def codecs(ffmpeg: str, name: str) -> list[str]:
    """Video and audio codecs this ffmpeg has for a container: H.264 (else MPEG-4) and
    AAC; VP8 and Opus for WebM; MPEG-4 part 2 and PCM for AVI, as AVI recorders write."""
    encoders = subprocess.run(
        [ffmpeg, "-hide_banner", "-encoders"], capture_output=True, text=True, check=True
    ).stdout
    if name.endswith(".webm"):
        return ["-c:v", "libvpx", "-deadline", "realtime", "-b:v", "300k", "-c:a", "libopus"]
    if name.endswith(".avi"):
        return ["-c:v", "mpeg4", "-c:a", "pcm_s16le"]
    if " libx264 " in encoders:
        return ["-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac"]
    return ["-c:v", "mpeg4", "-c:a", "aac"]


def record(ffmpeg: str, out: Path, options: list[str]) -> Path:
    subprocess.run(
        [
            ffmpeg,
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"testsrc=size=320x240:rate=30:duration={SECONDS}",
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency=440:duration={SECONDS}",
            *codecs(ffmpeg, out.name),
            "-g",
            "30",
            "-shortest",
            *options,
            str(out),
        ],
        check=True,
        timeout=120,
    )
    return out


def top_boxes(data: bytes) -> list[tuple[bytes, int, int]]:
    """(kind, offset, size) of an MP4's top-level boxes."""
    out, pos = [], 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack_from(">I4s", data, pos)
        if size == 1:
            size = struct.unpack_from(">Q", data, pos + 8)[0]
        out.append((kind, pos, size or len(data) - pos))
        pos += size or len(data)
    return out


def with_mehd(data: bytes) -> bytes:
    """The fragmented MP4 with a 'mehd' box declaring its whole duration, as recorders and
    packagers write it (ffmpeg's muxer does not). Safe to insert: with an empty moov and
    default-base-is-moof no offset points across it, and there is no mfra."""
    _, pos, size = next(b for b in top_boxes(data) if b[0] == b"moov")
    moov = data[pos : pos + size]
    timescale = struct.unpack_from(">I", moov, moov.index(b"mvhd") + 16)[0]
    mehd = struct.pack(">I4sII", 16, b"mehd", 0, SECONDS * timescale)
    at = moov.index(b"mvex") - 4
    mvex_size = struct.unpack_from(">I", moov, at)[0]
    moov = (
        struct.pack(">I", size + 16)
        + moov[4:at]
        + struct.pack(">I4s", mvex_size + 16, b"mvex")
        + mehd
        + moov[at + 8 :]
    )
    return data[:pos] + moov + data[pos + size :]


@pytest.fixture(scope="module")
def recordings(ffmpeg: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("recordings")
    out = {kind: record(ffmpeg, folder / name, opts) for kind, (name, opts) in KINDS.items()}
    out["fragmented-mehd"].write_bytes(with_mehd(out["fragmented-mehd"].read_bytes()))
    return out


def cut(src: Path, dst: Path, at: int) -> Path:
    dst.write_bytes(src.read_bytes()[:at])
    return dst


def cut_at(src: Path, tmp: Path, fraction: float = 0.3) -> Path:
    size = src.stat().st_size
    return cut(src, tmp / f"cut-{src.name}", int(size * fraction) | 1)  # odd: mid-packet too


@pytest.mark.parametrize("kind", list(KINDS))
def test_intact_recordings_are_complete(recordings: dict[str, Path], kind: str) -> None:
    """No false alarms: every kind of intact recording is complete, all frames found."""
    s = probe(recordings[kind])
    assert s["complete"] is True, s.get("damage")
    assert "damage" not in s
    assert s["found"]["frames"] == FRAMES
    assert abs(s["found"]["duration_ms"] - SECONDS * 1000) < 200, s["found"]
    declared = s.get("declared", {})
    assert declared.get("frames", FRAMES) == FRAMES
    assert abs(declared.get("duration_ms", SECONDS * 1000) - SECONDS * 1000) < 200, declared


@pytest.mark.parametrize("kind", ["fragmented", "fragmented-in-moov", "fragmented-mehd"])
def test_fragmented_mp4_cut_mid_write_is_incomplete(
    recordings: dict[str, Path], kind: str, tmp_path: Path
) -> None:
    s = probe(cut_at(recordings[kind], tmp_path))
    assert s["complete"] is False
    assert s["structure"] == "mp4-fragmented"
    text = " | ".join(s["damage"])
    assert "past the end of the file" in text and "fragment" in text, text
    assert 0 < s["found"]["frames"] < FRAMES / 2, s["found"]


def test_fragmented_mp4_cut_between_fragments_is_told_by_mehd(
    recordings: dict[str, Path], tmp_path: Path
) -> None:
    """Cut exactly before a fragment, nothing is half-written: only the duration the
    'mehd' box declares shows what is missing."""
    src = recordings["fragmented-mehd"]
    data = src.read_bytes()
    moofs = [pos for kind, pos, _ in top_boxes(data) if kind == b"moof"]
    at = next(p for p in moofs if p > len(data) * 0.3)
    s = probe(cut(src, tmp_path / "cut.mp4", at))
    assert s["complete"] is False
    assert s["declared"] == {"duration_ms": SECONDS * 1000}
    assert s["found"]["duration_ms"] < SECONDS * 1000 / 2
    text = " | ".join(s["damage"])
    assert "'mehd' box declares" in text and "ms missing" in text, text
    # Without the mehd box, the same cut looks like a shorter recording: not claimed.
    plain = recordings["fragmented"].read_bytes()
    at = next(p for k, p, _ in top_boxes(plain) if k == b"moof" and p > len(plain) * 0.3)
    assert probe(cut(recordings["fragmented"], tmp_path / "short.mp4", at))["complete"] is True


@pytest.mark.parametrize("kind", ["matroska", "webm"])
def test_matroska_cut_short_is_incomplete(
    recordings: dict[str, Path], kind: str, tmp_path: Path
) -> None:
    s = probe(cut_at(recordings[kind], tmp_path))
    assert s["complete"] is False
    assert s["structure"] == kind
    text = " | ".join(s["damage"])
    assert "the Segment declares" in text and "Cluster" in text, text
    assert "SeekHead places the Cues" in text, text
    assert s["declared"]["duration_ms"] >= SECONDS * 1000
    assert s["found"]["duration_ms"] < SECONDS * 1000 / 2
    assert s["found"]["frames"] < FRAMES / 2


def test_avi_cut_short_is_incomplete(recordings: dict[str, Path], tmp_path: Path) -> None:
    s = probe(cut_at(recordings["avi"], tmp_path))
    assert s["complete"] is False and s["structure"] == "avi"
    text = " | ".join(s["damage"])
    assert "RIFF 'AVI ' chunk at byte 0 declares" in text, text
    assert "no 'idx1'" in text, text
    assert s["declared"] == {"duration_ms": SECONDS * 1000, "frames": FRAMES}
    assert s["found"]["frames"] < FRAMES / 2


def test_mpegts_cut_mid_packet_is_incomplete(recordings: dict[str, Path], tmp_path: Path) -> None:
    """MPEG-TS declares no length: a packet cut part-way is what can be seen; a cut on a
    packet boundary cannot be told from a shorter recording, and is not claimed."""
    src = recordings["mpegts"]
    s = probe(cut(src, tmp_path / "cut.ts", 188 * 500 + 100))
    assert s["complete"] is False and s["structure"] == "mpegts"
    assert "188-byte transport packet" in s["damage"][0]
    assert "declared" not in s
    assert probe(cut(src, tmp_path / "whole.ts", 188 * 500))["complete"] is True


def test_mp4_cut_in_its_samples(recordings: dict[str, Path], tmp_path: Path) -> None:
    """moov first (faststart) and the samples cut: the sample tables say what is missing.
    moov last and cut before it: ffmpeg cannot open it at all (the probe fails, as before,
    and salvage takes over); the headers say why."""
    s = probe(cut_at(recordings["faststart"], tmp_path))
    assert s["complete"] is False and s["structure"] == "mp4"
    assert s["declared"] == {"duration_ms": SECONDS * 1000, "frames": FRAMES}
    assert s["found"]["frames"] < FRAMES / 2
    text = " | ".join(s["damage"])
    assert f"of its {FRAMES} samples lie past the end of the file" in text, text
    assert f"of the {FRAMES} video frames the index lists" in text, text

    plain = cut_at(recordings["plain"], tmp_path)
    with pytest.raises(ProbeFailed):
        probe(plain)
    found = examine(BytesSource(plain.read_bytes()))
    assert any("no 'moov' box" in d for d in found.damage), found


def test_cut_recording_is_signed_incomplete(recordings: dict[str, Path], tmp_path: Path) -> None:
    """`custody ingest` signs a probe entry that says what is missing."""
    dock = tmp_path / "dock"
    conf = make_station(tmp_path, dock)
    slot = dock / "slot01"
    slot.mkdir(parents=True)
    cut_at(recordings["fragmented"], slot)
    cut_at(recordings["matroska"], slot)
    shutil.copy(recordings["fragmented"], slot / "whole.mp4")
    run_cli("ingest", str(dock), "--settle-ms", "0", config=conf)
    es = entries(conf)
    names = {e["sha256"]: Path(e["source"]["path"]).name for e in es if "source" in e}
    summaries: dict[str, dict[str, Any]] = {
        names[e["sha256"]]: e["summary"] for e in es if e["type"] == "probe"
    }
    assert summaries["whole.mp4"]["complete"] is True, summaries
    for name in ("cut-frag.mp4", "cut-rec.mkv"):
        s = summaries[name]
        assert s["complete"] is False and s["damage"], s
        assert s["found"]["frames"] < FRAMES / 2
    # The fingerprints say so too: packet hashes and decoded-frame hashes of a cut
    # recording are not signed as a whole recording's.
    shas = {n: sha for sha, n in names.items()}
    run_cli("fingerprint", "--frames", shas["cut-frag.mp4"], shas["whole.mp4"], config=conf)
    prints = [e for e in entries(conf) if e["type"] == "fingerprint"]
    for kind in ("packets", "frames"):
        by_name = {names[e["sha256"]]: e for e in prints if e.get("kind") == kind}
        assert by_name["whole.mp4"]["complete"] is True, by_name["whole.mp4"]
        assert by_name["cut-frag.mp4"]["complete"] is False, by_name["cut-frag.mp4"]
        if kind == "packets":
            assert by_name["cut-rec.mkv"]["complete"] is False
            assert {e["format"] for e in by_name.values()} == {"custody-packets/v2"}


def test_wav_cut_short_is_incomplete(ffmpeg: str, tmp_path: Path) -> None:
    """Audio recorders write WAV: its RIFF and data sizes say what a cut lost."""
    src = tmp_path / "rec.wav"
    subprocess.run(
        [ffmpeg, "-v", "error", "-f", "lavfi", "-i", f"sine=duration={SECONDS}", str(src)],
        check=True,
        timeout=60,
    )
    whole = probe(src)
    assert whole["complete"] is True and whole["structure"] == "wav"
    assert whole["declared"] == {"duration_ms": SECONDS * 1000}
    s = probe(cut_at(src, tmp_path))
    assert s["complete"] is False
    assert any("the 'data' chunk declares" in d for d in s["damage"]), s["damage"]
    assert s["found"]["duration_ms"] < SECONDS * 1000 / 2


def test_avi_of_variable_frame_rate_is_whole(ffmpeg: str, tmp_path: Path) -> None:
    """An AVI stream-copied from a source with dropped frames counts its length in
    time-base ticks, not frames: its frame count alone is no sign of a cut."""
    gaps = tmp_path / "gaps.mkv"
    subprocess.run(
        [
            ffmpeg,
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=160x120:rate=25:duration=3",
            "-vf",
            "select='not(eq(mod(n\\,5)\\,2))'",
            "-fps_mode",
            "passthrough",
            "-c:v",
            "mpeg4",
            str(gaps),
        ],
        check=True,
        timeout=60,
    )
    avi = tmp_path / "gaps.avi"
    subprocess.run(
        [
            ffmpeg,
            "-v",
            "error",
            "-i",
            str(gaps),
            "-c",
            "copy",
            "-fps_mode",
            "passthrough",
            str(avi),
        ],
        check=True,
        timeout=60,
    )
    s = probe(avi)
    assert s["complete"] is True, s.get("damage")
    assert s["declared"]["frames"] > s["found"]["frames"]  # the index's count is in ticks
    s = probe(cut_at(avi, tmp_path))
    assert s["complete"] is False
