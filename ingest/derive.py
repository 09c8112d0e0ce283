"""Access copies and posters with ffmpeg: planned from the probe, linked by `derive` entries.

An access copy is an MP4 (H.264 + AAC, ``+faststart``, at most 1080p) that plays in any
browser. The original always stays the master. When the video already is H.264 of at
most 1080 lines it is copied and only the audio is re-encoded where it is not AAC
(recorders pair H.264 with G.711 or ADPCM): a remux, about a second for three minutes.
Anything else needs a full transcode (libx264), which on a two-core dock costs about a
quarter of real time, so by default transcodes are left for when a copy is asked for
(`custody derive`, export) and only remuxes run on the dock; ``access_copies = "all"``
transcodes too, at idle priority, up to ``transcode_budget_min`` minutes of footage a
day (the rest waits for the next day's budget).

The ffmpeg command is built with ffmpeg-python and runs with ``-xerror`` (a damaged
input is an error, not a warning), a timeout that grows with the recording, an
address-space limit, and the media worker's nice 10;
any line on stderr counts as a failure too, since ffmpeg can exit 0 on a damaged file.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ACCESS_MODES = ("remux", "all", "off")


@dataclass(frozen=True)
class MediaSettings:
    ffmpeg: str = ""  # a path; else ffmpeg on PATH; else the imageio-ffmpeg wheel's binary
    access_copies: str = "remux"  # remux | all | off
    preset: str = "veryfast"
    crf: int = 23
    posters: bool = True
    timeout_s: int = 3600
    memory_mb: int = 4096
    transcode_budget_min: int = 0  # minutes of footage transcoded per day with "all"; 0 = no cap
    frame_hashes: bool = False  # decoded-frame hashes of every video (else on request)
    signature: bool = False  # the MPEG-7 video signature alongside frame hashes


@dataclass(frozen=True)
class Plan:
    method: str  # remux | transcode
    copy_video: bool
    has_video: bool
    has_audio: bool
    copy_audio: bool


class FfmpegFailed(Exception):
    """ffmpeg refused or damaged the job; ``transient`` ones (time, space) are tried again
    later rather than recorded as the file's fault."""

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


def find_ffmpeg(configured: str = "") -> str:
    if configured:
        if not os.access(configured, os.X_OK):
            raise FfmpegFailed(f"configured ffmpeg {configured} is not an executable file")
        return configured
    found = shutil.which("ffmpeg")
    if found:
        return found
    import imageio_ffmpeg

    return str(imageio_ffmpeg.get_ffmpeg_exe())


_VERSIONS: dict[str, str] = {}


def ffmpeg_version(exe: str) -> str:
    if exe not in _VERSIONS:
        out = subprocess.run([exe, "-version"], capture_output=True, text=True, timeout=30)
        _VERSIONS[exe] = (out.stdout.splitlines() or ["ffmpeg (unknown version)"])[0][:200]
    return _VERSIONS[exe]


def plan(summary: dict[str, Any]) -> Plan | None:
    """What an access copy of a probed file takes (pure); None if it has no audio or video."""
    streams = summary.get("streams", [])
    video = next((s for s in streams if s.get("type") == "video"), None)
    audio = next((s for s in streams if s.get("type") == "audio"), None)
    if video is None and audio is None:
        return None
    copy_video = bool(
        video is not None and video.get("codec") == "h264" and int(video.get("height", 0)) <= 1080
    )
    copy_audio = bool(audio is not None and audio.get("codec") == "aac")
    method = "remux" if video is None or copy_video else "transcode"
    return Plan(method, copy_video, video is not None, audio is not None, copy_audio)


def access_copy_command(
    exe: str, src: Path, dst: Path, p: Plan, settings: MediaSettings
) -> list[str]:
    import ffmpeg

    inp = ffmpeg.input(str(src))
    streams: list[Any] = []
    opts: dict[str, Any] = {"f": "mp4", "movflags": "+faststart"}
    if p.has_video:
        v = inp["v:0"]
        if p.copy_video:
            opts["vcodec"] = "copy"
        else:
            v = v.filter("scale", -2, "min(ih,1080)")
            opts.update(vcodec="libx264", preset=settings.preset, crf=settings.crf)
            opts["pix_fmt"] = "yuv420p"
        streams.append(v)
    if p.has_audio:
        streams.append(inp["a:0"])
        opts["acodec"] = "copy" if p.copy_audio else "aac"
    cmd: list[str] = ffmpeg.output(*streams, str(dst), **opts).compile(cmd=exe)
    return [cmd[0], "-nostdin", "-hide_banner", "-v", "error", "-xerror", *cmd[1:]]


def salvage_command(
    exe: str, raw: Path, dst: Path, codec: str, rate: str, settings: MediaSettings
) -> list[str]:
    """An MP4 access copy of a salvaged elementary stream (``ingest.salvage``) at the
    reference's frame rate: H.264 is copied, H.265 transcoded."""
    import ffmpeg

    inp = ffmpeg.input(str(raw), f=codec, framerate=rate)
    opts: dict[str, Any] = {"f": "mp4", "movflags": "+faststart"}
    v = inp["v:0"]
    if codec == "h264":
        opts["vcodec"] = "copy"
    else:
        v = v.filter("scale", -2, "min(ih,1080)")
        opts.update(vcodec="libx264", preset=settings.preset, crf=settings.crf, pix_fmt="yuv420p")
    cmd: list[str] = ffmpeg.output(v, str(dst), **opts).compile(cmd=exe)
    return [cmd[0], "-nostdin", "-hide_banner", "-v", "error", "-xerror", *cmd[1:]]


def poster_command(exe: str, src: Path, dst: Path, at_s: float = 1.0) -> list[str]:
    """A JPEG of the frame at ``at_s`` seconds (callers pass less for short clips)."""
    import ffmpeg

    out = ffmpeg.input(str(src), ss=at_s).output(
        str(dst), vframes=1, vf="scale=-2:360", f="image2", vcodec="mjpeg"
    )
    cmd: list[str] = out.compile(cmd=exe)
    return [cmd[0], "-nostdin", "-hide_banner", "-v", "error", "-xerror", *cmd[1:]]


def run_ffmpeg(cmd: list[str], settings: MediaSettings, timeout_s: int | None = None) -> None:
    """Run ffmpeg with a timeout and a memory limit; any stderr is a failure."""
    code, err = run_ffmpeg_tolerant(cmd, settings, timeout_s)
    if code != 0 or err:
        last = " | ".join(err.splitlines()[-3:]) if err else "no message"
        raise FfmpegFailed(f"ffmpeg exited {code}: {last}"[:1000])


def run_ffmpeg_tolerant(
    cmd: list[str],
    settings: MediaSettings,
    timeout_s: int | None = None,
    cwd: Path | None = None,
) -> tuple[int, str]:
    """Run ffmpeg with a timeout and a memory limit; (exit code, stderr) for callers that
    keep what ffmpeg made of a damaged file. Time and start failures raise (transient).

    It inherits the media worker's nice and I/O priority. The limit is on the address
    space; glibc's per-thread arenas count against it, so they are capped
    (MALLOC_ARENA_MAX).
    """
    limit = settings.memory_mb << 20
    timeout = timeout_s or settings.timeout_s

    def child() -> None:  # async-signal-safe enough: one system call, no locks
        resource.setrlimit(resource.RLIMIT_AS, (limit, resource.RLIM_INFINITY))

    env = dict(os.environ, MALLOC_ARENA_MAX="2")
    try:
        p = subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=timeout,
            preexec_fn=child,
            env=env,
            cwd=cwd,
        )
    except subprocess.TimeoutExpired:
        raise FfmpegFailed(f"ffmpeg did not finish within {timeout} s", transient=True) from None
    except (OSError, subprocess.SubprocessError) as e:
        raise FfmpegFailed(f"ffmpeg could not be started: {e}", transient=True) from None
    return p.returncode, p.stderr.decode("utf-8", "replace").strip()[-4000:]


def public_args(cmd: list[str], src: Path, dst: Path) -> list[str]:
    """The command as recorded in an entry: the binary by name, files as placeholders."""
    out = ["ffmpeg"]
    for a in cmd[1:]:
        out.append("{input}" if a == str(src) else "{output}" if a == str(dst) else a)
    return out
