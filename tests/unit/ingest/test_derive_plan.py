"""Planning access copies from a probe summary (pure) and the ffmpeg command built for it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ingest.derive import (
    FRAGMENTED,
    STDOUT,
    MediaSettings,
    access_copy_command,
    plan,
    poster_command,
    public_args,
    salvage_command,
)


def summary(vcodec: str | None, height: int = 1080, acodec: str | None = "aac") -> dict[str, Any]:
    streams: list[dict[str, Any]] = []
    if vcodec:
        streams.append({"index": 0, "type": "video", "codec": vcodec, "height": height})
    if acodec:
        streams.append({"index": 1, "type": "audio", "codec": acodec})
    return {"container": "mov,mp4", "streams": streams}


@pytest.mark.parametrize(
    ("s", "method", "copy_video", "copy_audio"),
    [
        (summary("h264"), "remux", True, True),
        (summary("h264", acodec="pcm_mulaw"), "remux", True, False),  # G.711
        (summary("h264", acodec="adpcm_ima_wav"), "remux", True, False),
        (summary("h264", acodec=None), "remux", True, False),
        (summary("h264", height=2160), "transcode", False, True),  # above 1080 lines
        (summary("hevc"), "transcode", False, True),
        (summary("mpeg4", acodec="mp3"), "transcode", False, False),
    ],
)
def test_plan(s: dict[str, Any], method: str, copy_video: bool, copy_audio: bool) -> None:
    p = plan(s)
    assert p is not None
    assert (p.method, p.copy_video, p.copy_audio) == (method, copy_video, copy_audio)


def test_nothing_to_copy() -> None:
    assert plan({"streams": [{"type": "data"}]}) is None


def test_commands_carry_the_safety_flags_and_record_without_paths() -> None:
    src, dst = Path("/s/in.mp4"), Path("/t/out.mp4")
    p264, p265 = plan(summary("h264")), plan(summary("hevc"))
    assert p264 is not None and p265 is not None
    remux = access_copy_command("/usr/bin/ffmpeg", src, p264, MediaSettings())
    assert remux[:6] == ["/usr/bin/ffmpeg", "-nostdin", "-hide_banner", "-v", "error", "-xerror"]
    assert "copy" in remux and "libx264" not in remux
    # One pass: a fragmented MP4 to ffmpeg's standard output, hashed as it is written.
    assert remux[-1] == STDOUT == "pipe:1" and "+faststart" not in remux
    assert remux[remux.index("-movflags") + 1] == "+frag_keyframe+empty_moov+default_base_moof"
    trans = access_copy_command(
        "/usr/bin/ffmpeg",
        src,
        p265,
        MediaSettings(preset="fast", crf=20),
    )
    assert "libx264" in trans and "fast" in trans and "20" in trans and "yuv420p" in trans
    assert any("scale=-2:min(ih" in a for a in trans)
    assert trans[-1] == STDOUT and FRAGMENTED in trans
    rec = public_args(trans, src, STDOUT)
    assert rec[0] == "ffmpeg" and "{input}" in rec and rec[-1] == "{output}"
    assert str(src) not in rec and STDOUT not in rec
    # The benchmark's bare command: the same arguments, a file in place of the pipe.
    assert access_copy_command("/usr/bin/ffmpeg", src, p264, MediaSettings(), str(dst)) == [
        *remux[:-1],
        str(dst),
    ]


def test_salvage_and_poster_commands_write_to_the_pipe() -> None:
    salvage = salvage_command("ffmpeg", Path("/t/raw.h264"), "h264", "25", MediaSettings())
    assert salvage[-1] == STDOUT and FRAGMENTED in salvage and "-xerror" in salvage
    poster = poster_command("ffmpeg", Path("/s/in.mp4"), 0.5)
    assert poster[-1] == STDOUT and "image2pipe" in poster and "-xerror" in poster
