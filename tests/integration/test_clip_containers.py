"""`custody verify-clip` across containers (custody-packets/v2), with real ffmpeg.

Originals in H.264+AAC and H.265+AAC are captured by a real station; stream-copied cuts
into MPEG-TS, Matroska and MOV are exact matches with their time range, and the JSON
says how each stream was normalised. A re-encoded cut, and a stream copy whose SPS was
edited, are not exact. An original fingerprinted the old way (custody-packets/v1 only)
still verifies a cut in its own container, and for a cut in another container the
answer is that the original awaits its v2 fingerprint.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from custody import config as cfg
from custody.station import open_ledger
from ingest.fingerprinter import Fingerprinter
from ingest.objects import LocalObjects

from ..conftest import run_cli
from .daemon import make_station
from .test_fingerprints import ff, sha, source
from .v1station import run_v1

START, LENGTH = 1, 2  # seconds: the cut, on a keyframe (one a second)


@pytest.fixture(scope="module")
def dock(tmp_path_factory: pytest.TempPathFactory, ffmpeg: str) -> dict[str, Any]:
    """A station that captured the originals (4 s each, a keyframe every second)."""
    tmp = tmp_path_factory.mktemp("clips")
    conf = make_station(tmp, tmp / "dock")
    slot = tmp / "dock" / "slot01"
    originals = {
        "h264": source(ffmpeg, slot / "A_h264.mp4", "libx264", seconds=4),
        "hevc": source(ffmpeg, slot / "B_hevc.mp4", "libx265", seconds=4),
        "old": source(ffmpeg, slot / "C_old.mp4", "libx264", seconds=3),
    }
    run_cli("ingest", str(tmp / "dock"), "--settle-ms", "0", config=conf)
    return {"conf": conf, "tmp": tmp, "originals": originals}


def cut(ffmpeg: str, original: Path, out: Path, *extra: str) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    ff(
        ffmpeg,
        "-ss",
        str(START),
        "-t",
        str(LENGTH),
        "-i",
        str(original),
        "-c",
        "copy",
        *extra,
        str(out),
    )
    return out


def verify(conf: Path, clip: Path) -> tuple[int, dict[str, Any]]:
    p = run_cli("verify-clip", str(clip), "--json", config=conf, check=False)
    assert p.returncode in (0, 1), p.stderr
    return p.returncode, json.loads(p.stdout)


def within_the_cut(got: dict[str, Any]) -> None:
    """As the MP4 cuts of test_fingerprints: the start within a frame or two, the end
    (the last packet's time, a frame before the cut's end) likewise."""
    lo, hi = got["range_ms"]
    assert abs(lo - START * 1000) <= 100, got["range_ms"]
    assert abs(hi - (START + LENGTH) * 1000) <= 200, got["range_ms"]


FORMS = {  # container -> (video form, audio form) a stream copy into it carries
    "ts": ("annexb", "adts"),
    "mkv": ("avcc4", "raw"),
    "mov": ("avcc4", "raw"),
}


@pytest.mark.parametrize("codec", ["h264", "hevc"])
def test_stream_copied_cuts_match_exactly_in_every_container(
    dock: dict[str, Any], ffmpeg: str, codec: str
) -> None:
    conf, original = dock["conf"], dock["originals"][codec]
    for ext, (vform, aform) in FORMS.items():
        clip = cut(ffmpeg, original, dock["tmp"] / "court" / f"{codec}.{ext}")
        code, got = verify(conf, clip)
        assert code == 0 and got["exact"], (ext, got)
        assert got["original"] == sha(original) and got["format"] == "custody-packets/v2"
        assert got["matched"] == got["total"] == got["packets"] > 0
        within_the_cut(got)
        assert got["original_container"] == "MP4"
        assert got["clip_container"] == {"ts": "MPEG-TS", "mkv": "Matroska", "mov": "MOV"}[ext]
        streams = {s["type"]: s for s in got["streams"]}
        video, audio = streams["video"], streams["audio"]
        assert (video["clip_form"], video["original_form"]) == (vform, "avcc4"), video
        assert (audio["clip_form"], audio["original_form"]) == (aform, "raw"), audio
        assert video["params_ok"] and video["format"] == "custody-packets/v2"
        assert "compared coded slices" in video["normalisation"]
        if ext == "ts":
            # The TS muxer adds a delimiter and repeats the parameter sets at each keyframe.
            assert video["set_aside"] >= 2 * LENGTH
            assert (
                "in start-code form (MPEG-TS), original length-prefixed (MP4)"
                in (video["normalisation"])
            )
            assert audio["set_aside"] == audio["total"], "one ADTS header per frame"
            assert "ADTS headers removed" in audio["normalisation"]
    text = run_cli("verify-clip", str(dock["tmp"] / "court" / f"{codec}.ts"), config=conf).stdout
    assert "every packet of the clip is in the original" in text, text
    assert "fingerprints compared: custody-packets/v2" in text
    assert "video: clip H.26" in text and "in start-code form (MPEG-TS)" in text, text
    assert "parameter sets all among the original's" in text


def test_a_reencoded_cut_is_not_exact(dock: dict[str, Any], ffmpeg: str) -> None:
    clip = dock["tmp"] / "court" / "reencoded.ts"
    clip.parent.mkdir(parents=True, exist_ok=True)
    ff(
        ffmpeg,
        *("-ss", str(START), "-t", str(LENGTH), "-i", str(dock["originals"]["h264"])),
        *("-c:v", "libx264", "-preset", "ultrafast", "-crf", "30", "-c:a", "copy", str(clip)),
    )
    code, got = verify(dock["conf"], clip)
    assert code == 1 and not got["exact"]
    # The copied sound finds the original (its packets are in the index's sample); no
    # coded slice of the re-encoded picture is the original's.
    assert got["original"] == sha(dock["originals"]["h264"]), got
    streams = {s["type"]: s for s in got["streams"]}
    assert streams["video"]["matched"] == 0 and streams["audio"]["matched"] > 0


def test_an_edited_sps_is_not_exact_though_the_slices_match(
    dock: dict[str, Any], ffmpeg: str
) -> None:
    """A stream copy whose SPS was rewritten (a crop) keeps every coded slice: the
    pictures shown differ, so it is not an exact cut."""
    clip = cut(
        ffmpeg,
        dock["originals"]["h264"],
        dock["tmp"] / "court" / "cropped.mp4",
        *("-bsf:v", "h264_metadata=crop_bottom=16"),
    )
    code, got = verify(dock["conf"], clip)
    assert code == 1 and not got["exact"] and got["params_ok"] is False
    assert got["matched"] == got["total"], "the slices are the original's"
    video = next(s for s in got["streams"] if s["type"] == "video")
    assert video["params_ok"] is False and "NOT all among the original's" in video["normalisation"]
    text = run_cli("verify-clip", str(clip), config=dock["conf"], check=False).stdout
    assert "parameter sets (SPS/PPS) or audio configuration are not the original's" in text, text


@pytest.mark.parametrize("ext", ["m4a", "aac"])
def test_sound_alone_is_found_and_exact(dock: dict[str, Any], ffmpeg: str, ext: str) -> None:
    """A clip with no video keyframe (here no video at all) is found through the sample of
    other packets the index keeps, and matches exactly."""
    orig = dock["originals"]["h264"]
    clip = cut(ffmpeg, orig, dock["tmp"] / "sound" / f"cut.{ext}", "-vn")
    code, got = verify(dock["conf"], clip)
    assert code == 0 and got["exact"] and got["original"] == sha(orig), got
    assert [s["type"] for s in got["streams"]] == ["audio"]


def test_sound_moved_against_the_picture_is_not_exact(dock: dict[str, Any], ffmpeg: str) -> None:
    """Every packet is the original's and each stream keeps its own timing, but the sound
    comes from a second later than the picture: not a stream copy of one stretch."""
    orig = dock["originals"]["h264"]
    clip = dock["tmp"] / "desync" / "desync.mp4"
    clip.parent.mkdir(parents=True, exist_ok=True)
    ff(
        ffmpeg,
        *("-ss", "1", "-t", "2", "-i", str(orig), "-ss", "1.5", "-t", "2", "-i", str(orig)),
        *("-map", "0:v", "-map", "1:a", "-c", "copy", str(clip)),
    )
    code, got = verify(dock["conf"], clip)
    assert code == 1 and not got["exact"], got
    assert got["matched"] == got["total"], "every packet is there: only the timing gives it away"
    assert got["synced"] is False and got["timing_ok"] is True


def test_sound_relabelled_to_another_rate_is_not_exact(dock: dict[str, Any], ffmpeg: str) -> None:
    """The same AAC frames declared at another sample rate play faster and higher: the
    decoder configuration is compared as a video stream's parameter sets are."""
    import av

    orig = dock["originals"]["h264"]
    clip = cut(ffmpeg, orig, dock["tmp"] / "relabel" / "cut.mp4")
    with av.open(str(clip)) as c:
        asc = bytes(c.streams.audio[0].codec_context.extradata or b"")
    data = clip.read_bytes()
    at = data.index(asc, data.index(b"esds"))
    index = ((asc[0] & 7) << 1) | (asc[1] >> 7)
    other = 3 if index != 3 else 4  # 48 kHz, else 44.1 kHz
    patched = bytes([(asc[0] & 0xF8) | (other >> 1), (asc[1] & 0x7F) | ((other & 1) << 7)])
    clip.write_bytes(data[:at] + patched + asc[2:] + data[at + len(asc) :])
    code, got = verify(dock["conf"], clip)
    assert code == 1 and not got["exact"], got
    audio = [s for s in got["streams"] if s["type"] == "audio"]
    assert audio and not audio[0]["params_ok"]
    assert "decoder configuration NOT the original's" in audio[0]["normalisation"]
    assert "SEI" in got["not_compared"]


def fingerprint_the_old_way(conf_path: Path, digest: str) -> int:
    """What the fingerprint job did before custody-packets/v2 (`v1station.run_v1`, the
    job of ed4c0ea): a v1 sidecar, a `fingerprint` entry and its index rows.

    The capture above also made a v2 fingerprint: its index row and keys are taken out
    first, as on a dock upgraded from v1 that the backfill has not reached yet."""
    c = cfg.load(conf_path)
    with open_ledger(c) as ledger:
        db = sqlite3.connect(ledger.db_path, timeout=60)
        try:
            fp = Fingerprinter(ledger, LocalObjects(c.store_dir), db, threading.Lock())
            db.execute("DELETE FROM fingerprint_keys WHERE sha256=?", (digest,))
            db.execute("DELETE FROM ingest_packets_v2 WHERE sha256=?", (digest,))
            db.commit()
            index = run_v1(fp, digest)
        finally:
            db.close()
    assert index is not None
    return index


def test_a_v1_original_verifies_its_own_container_and_awaits_v2_for_others(
    dock: dict[str, Any], ffmpeg: str
) -> None:
    conf, original = dock["conf"], dock["originals"]["old"]
    entry = fingerprint_the_old_way(conf, sha(original))

    same = cut(ffmpeg, original, dock["tmp"] / "court" / "old.mp4")
    code, got = verify(conf, same)
    assert code == 0 and got["exact"] and got["format"] == "custody-packets/v1", got
    assert got["original"] == sha(original) and got["fingerprint_entry"] == entry
    within_the_cut(got)
    assert all(s["format"] == "custody-packets/v1" for s in got["streams"])
    assert all(s["clip_form"] == s["original_form"] == "stored" for s in got["streams"])

    other = cut(ffmpeg, original, dock["tmp"] / "court" / "old.ts")
    code, got = verify(conf, other)
    assert code == 1 and not got["exact"] and got["awaiting_v2"] == [sha(original)], got
    p = run_cli("verify-clip", str(other), config=conf, check=False)
    assert p.returncode == 1
    assert "has only a custody-packets/v1 fingerprint" in p.stdout, p.stdout
    assert "awaits its custody-packets/v2 fingerprint" in p.stdout


MEMORY_CHILD = """
import hashlib, json, resource, sys
from ingest.fingerprint import Fingerprint, Packet, StreamInfo, match_clip_file

n, path = int(sys.argv[1]), sys.argv[2]
def h(i):
    return hashlib.sha256(i.to_bytes(8, "big"))
streams = (StreamInfo(0, "video", "h264", "1/90000", "avcc4"),
           StreamInfo(1, "audio", "aac", "1/90000", "raw"))
with open(path, "w", encoding="ascii") as f:
    f.write("# custody-packets/v2\\n")
    f.write("S\\t0\\tvideo\\th264\\t1/90000\\tavcc4\\nS\\t1\\taudio\\taac\\t1/90000\\traw\\n")
    for i in range(n):
        key = "K" if i % 50 == 0 else "-"
        f.write(f"P\\t{i & 1}\\t{i * 1800}\\t{i * 1800}\\t1000\\t{key}\\t{h(i).hexdigest()}\\n")
mid = n // 2
clip = Fingerprint(streams, tuple(
    Packet(i & 1, (i - mid) * 1800, None, 1000, i % 50 == 0, h(i).digest())
    for i in range(mid, mid + 2000)), version=2)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with open(path, "rb") as f:
    m = match_clip_file(clip, f)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"exact": m.exact, "matched": m.matched, "grew_kb": after - before}))
"""


def test_matching_a_long_original_keeps_memory_by_the_clip(tmp_path: Path) -> None:
    """A 300,000-packet sidecar streamed past a 2,000-packet clip: the peak memory of
    the process hardly grows, where parsing the sidecar would hold every packet (over
    150 bytes each: 45 MB and more)."""
    side = tmp_path / "long.sidecar"
    p = subprocess.run(
        [sys.executable, "-c", MEMORY_CHILD, "300000", str(side)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout)
    assert got["exact"] and got["matched"] == 2000
    assert got["grew_kb"] < 10 * 1024, got
