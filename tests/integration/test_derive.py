"""Access copies and posters with real ffmpeg on generated recordings."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import av

from ..conftest import run_cli
from .daemon import entries, make_station
from .test_fingerprints import ff, sha, source


def stored(conf: Path, digest: str) -> Path:
    return conf.parent / "store" / "objects" / "sha256" / digest[:2] / digest[2:4] / digest


def derives(conf: Path) -> dict[tuple[str, str], dict[str, Any]]:
    return {(e["sha256"], e["kind"]): e for e in entries(conf) if e["type"] == "derive"}


def codecs(p: Path) -> tuple[dict[str, str], float]:
    with av.open(str(p)) as c:
        names = {str(s.type): s.codec_context.name for s in c.streams}
        return names, float(c.duration or 0) / 1e6


def test_remux_when_the_video_is_h264_transcode_only_when_asked(
    tmp_path: Path, ffmpeg: str
) -> None:
    dock = tmp_path / "dock"
    conf = make_station(tmp_path, dock)
    slot = dock / "slot01"
    h264 = source(ffmpeg, slot / "A.mp4", "libx264", seconds=4)
    # H.264 with G.711 audio in a MOV, as many recorders write it.
    g711 = slot / "B.mov"
    ff(
        ffmpeg,
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=320x240:rate=25:duration=3",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=300:duration=3:sample_rate=8000",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-c:a",
        "pcm_mulaw",
        "-shortest",
        str(g711),
    )
    hevc = source(ffmpeg, slot / "C.mov", "libx265", seconds=3)
    run_cli("ingest", str(dock), "--settle-ms", "0", config=conf)
    d = derives(conf)

    for src, audio in ((h264, "aac"), (g711, "aac")):
        assert (sha(src), "access_copy") in d, (src.name, list(d), entries(conf))
        e = d[(sha(src), "access_copy")]
        assert e["method"] == "remux" and e["tool"].startswith("ffmpeg version")
        assert e["args"][0] == "ffmpeg" and "{input}" in e["args"] and "{output}" in e["args"]
        out = stored(conf, e["output"]["sha256"])
        assert hashlib.sha256(out.read_bytes()).hexdigest() == e["output"]["sha256"]
        names, dur = codecs(out)
        assert names == {"video": "h264", "audio": audio}
        assert abs(dur - codecs(src)[1]) < 0.3
        head = out.read_bytes()[:200_000]
        # Fragmented: the (empty) index first, then fragments; no second pass to move it.
        assert 0 <= head.find(b"moov") < head.find(b"moof") < head.find(b"mdat"), "not fragmented"
        poster = d[(sha(src), "poster")]
        assert stored(conf, poster["output"]["sha256"]).read_bytes()[:3] == b"\xff\xd8\xff"
    # H.265 needs a transcode: left for a request by default, but it gets a poster.
    assert (sha(hevc), "access_copy") not in d and (sha(hevc), "poster") in d

    st = json.loads(run_cli("status", "--json", config=conf).stdout)["media"]
    assert st == {
        "mode": "remux",
        "fingerprinted": 3,
        "awaiting_v2": 0,
        "access_copies": 2,
        "posters": 3,
        "transcodes_waiting": 1,
        "transcode_budget_min": 0,
        "transcoded_today_s": 0,
        "frame_hashes": False,
        "frames_hashed": 0,
    }
    text = run_cli("status", config=conf).stdout
    assert "transcodes: on request (custody derive, export); 1 recording(s)" in text, text
    # With access_copies = "all" the transcode runs (next start picks it up).
    conf.write_text(conf.read_text() + '\n[media]\naccess_copies = "all"\npreset = "ultrafast"\n')
    run_cli("ingest", str(dock), "--settle-ms", "0", config=conf)
    e = derives(conf)[(sha(hevc), "access_copy")]
    assert e["method"] == "transcode" and "libx264" in e["args"]
    names, dur = codecs(stored(conf, e["output"]["sha256"]))
    assert names == {"video": "h264", "audio": "aac"} and abs(dur - 3) < 0.3
    # Each derivative is one object, one entry: nothing was made twice.
    kinds = [(x["sha256"], x["kind"]) for x in entries(conf) if x["type"] == "derive"]
    assert len(kinds) == len(set(kinds)) == 6


def test_transcode_budget_and_requests(tmp_path: Path, ffmpeg: str) -> None:
    """With access_copies = "all" and a daily budget, transcodes stop at the budget and
    wait for the next day; `custody derive` makes one now whatever the budget."""
    import sqlite3
    import threading
    import time

    from custody import config as cfg
    from custody.station import open_ledger
    from ingest.deriver import Deriver
    from ingest.objects import LocalObjects

    dock = tmp_path / "dock"
    media = '\n[media]\naccess_copies = "all"\npreset = "ultrafast"\ntranscode_budget_min = 1\n'
    conf = make_station(tmp_path, dock, extra=media)
    slot = dock / "slot01"
    clips = [
        source(ffmpeg, slot / f"{n}.mov", "libx265", seconds=s)
        for n, s in zip("ABC", (35, 36, 37), strict=True)
    ]
    run_cli("ingest", str(dock), "--settle-ms", "0", config=conf)
    made = [c for c in clips if (sha(c), "access_copy") in derives(conf)]
    assert len(made) == 1, "about 36 s fit in a 60 s budget once; the other two wait"
    used = 35 + clips.index(made[0])
    st = json.loads(run_cli("status", "--json", config=conf).stdout)["media"]
    assert st["transcodes_waiting"] == 2 and st["transcoded_today_s"] == used
    assert f"at most 1 min of footage a day; {used / 60:.1f} min today, 2 waiting" in (
        run_cli("status", config=conf).stdout
    )
    # Another pass the same day transcodes nothing more.
    run_cli("ingest", str(dock), "--settle-ms", "0", config=conf)
    assert sum((sha(c), "access_copy") in derives(conf) for c in clips) == 1

    waiting = [c for c in clips if c not in made]
    p = run_cli("derive", sha(waiting[0]), config=conf)
    assert "access_copy" in p.stdout and "by transcode" in p.stdout, p.stdout
    e = derives(conf)[(sha(waiting[0]), "access_copy")]
    names, dur = codecs(stored(conf, e["output"]["sha256"]))
    assert names == {"video": "h264", "audio": "aac"}
    assert abs(dur - (35 + clips.index(waiting[0]))) < 0.5
    assert (
        json.loads(run_cli("status", "--json", config=conf).stdout)["media"]["transcodes_waiting"]
        == 1
    )
    bad = run_cli("derive", "f" * 64, config=conf, check=False)
    assert bad.returncode == 2 and "not a captured video" in bad.stderr

    # The next day's budget takes the last one (the dock's clock, injected).
    c = cfg.load(conf)
    with open_ledger(c) as ledger:
        db = sqlite3.connect(ledger.db_path, timeout=60)
        tomorrow = Deriver(
            ledger,
            LocalObjects(c.store_dir),
            db,
            threading.Lock(),
            c.media,
            clock=lambda: time.time() + 86400,
        )
        assert sha(waiting[1]) in tomorrow.pending()
        assert tomorrow.run(sha(waiting[1]))
        assert tomorrow.budget_used_s() == 35 + clips.index(waiting[1])
        db.close()
    assert (sha(waiting[1]), "access_copy") in derives(conf)
    kinds = [(x["sha256"], x["kind"]) for x in entries(conf) if x["type"] == "derive"]
    assert len(kinds) == len(set(kinds)) == 6


def recorder_file(ffmpeg: str, out: Path, vcodec: str, seconds: int, tone: int) -> Path:
    """A recording laid out as recorders write it: samples first, the index (moov) last."""
    out.parent.mkdir(parents=True, exist_ok=True)
    args = [
        "-f",
        "lavfi",
        "-i",
        f"testsrc=size=320x240:rate=25:duration={seconds}",
        "-f",
        "lavfi",
        "-i",
        f"sine=frequency={tone}:duration={seconds}",
        "-c:v",
        vcodec,
        "-preset",
        "ultrafast",
        "-g",
        "25",
    ]
    if vcodec == "libx265":
        args += ["-x265-params", "log-level=error:keyint=25", "-tag:v", "hvc1"]
    ff(ffmpeg, *args, "-c:a", "aac", "-shortest", str(out))
    return out


def cut_before_index(path: Path, out: Path, keep: float) -> None:
    """The battery died: the index was never written, and only part of the samples."""
    data = path.read_bytes()
    moov = data.index(b"moov") - 4
    assert moov > len(data) // 2, "moov expected at the end"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data[: int(moov * keep)])


def frame_hashes(ffmpeg: str, path: Path) -> list[bytes]:
    from ingest.frames import read_framehash

    txt = path.with_suffix(".frames.txt")
    ff(ffmpeg, "-i", str(path), "-map", "0:v", "-f", "framehash", "-hash", "sha256", str(txt))
    with open(txt) as f:
        return read_framehash(f).hashes


def test_salvage_of_recordings_cut_before_their_index(tmp_path: Path, ffmpeg: str) -> None:
    dock = tmp_path / "dock"
    conf = make_station(tmp_path, dock)
    work = tmp_path / "work"
    # slot01: H.264; a healthy recording and one whose index was never written.
    recorder_file(ffmpeg, dock / "slot01" / "0001.mp4", "libx264", 3, 300)
    whole = recorder_file(ffmpeg, work / "h264.mp4", "libx264", 8, 500)
    cut_before_index(whole, dock / "slot01" / "0002.mp4", 0.8)
    # slot02: H.265, the same; its salvage needs a transcode.
    recorder_file(ffmpeg, dock / "slot02" / "0001.mov", "libx265", 3, 300)
    whole265 = recorder_file(ffmpeg, work / "hevc.mov", "libx265", 8, 500)
    cut_before_index(whole265, dock / "slot02" / "0002.mov", 0.7)
    # slot03: a cut recording and nothing healthy from that recorder yet.
    cut_before_index(whole, dock / "slot03" / "0001.mp4", 0.5)
    broken = sha(dock / "slot01" / "0002.mp4")
    broken265 = sha(dock / "slot02" / "0002.mov")
    lonely = sha(dock / "slot03" / "0001.mp4")
    reference = sha(dock / "slot01" / "0001.mp4")
    run_cli("ingest", str(dock), "--settle-ms", "0", config=conf)

    probes = {e["sha256"]: e for e in entries(conf) if e["type"] == "probe"}
    assert "error" in probes[broken], "ffmpeg refuses the cut file itself"
    d = derives(conf)
    e = d[(broken, "access_copy")]
    assert e["method"] == "salvage" and e["salvage"]["reference"] == reference, e
    assert e["salvage"]["audio"] == "not recovered" and e["args"][0] == "ffmpeg"
    copy = stored(conf, e["output"]["sha256"])
    names, _ = codecs(copy)
    assert names == {"video": "h264"}
    got = frame_hashes(ffmpeg, copy)
    # Every salvaged picture is the original's, in order, from the start.
    assert len(got) == e["salvage"]["pictures"] > 100
    assert got == frame_hashes(ffmpeg, whole)[: len(got)]

    # H.265 needs a transcode: left for a request, then made by `custody derive`.
    assert (broken265, "access_copy") not in d
    out = run_cli("derive", broken265, config=conf).stdout
    assert "by salvage" in out, out
    e2 = derives(conf)[(broken265, "access_copy")]
    assert e2["salvage"]["codec"] == "hevc" and "libx264" in e2["args"]
    names, dur = codecs(stored(conf, e2["output"]["sha256"]))
    assert names == {"video": "h264"} and 4 < dur < 7

    # No reference yet: nothing recorded, tried again once one exists.
    assert (lonely, "access_copy") not in derives(conf)
    recorder_file(ffmpeg, dock / "slot03" / "0002.mp4", "libx264", 2, 700)
    run_cli("ingest", str(dock), "--settle-ms", "0", config=conf)
    e3 = derives(conf)[(lonely, "access_copy")]
    assert e3["method"] == "salvage" and e3["salvage"]["pictures"] > 50
