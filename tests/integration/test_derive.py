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
        assert 0 <= head.find(b"moov") < head.find(b"mdat"), "not +faststart"
        poster = d[(sha(src), "poster")]
        assert stored(conf, poster["output"]["sha256"]).read_bytes()[:3] == b"\xff\xd8\xff"
    # H.265 needs a transcode: left for a request by default, but it gets a poster.
    assert (sha(hevc), "access_copy") not in d and (sha(hevc), "poster") in d

    st = json.loads(run_cli("status", "--json", config=conf).stdout)["media"]
    assert st == {
        "mode": "remux",
        "fingerprinted": 3,
        "access_copies": 2,
        "posters": 3,
        "transcodes_waiting": 1,
    }
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
