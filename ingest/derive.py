"""Access copies and posters with ffmpeg: planned from the probe, linked by `derive` entries.

An access copy is an MP4 (H.264 + AAC, at most 1080p) that plays in any browser. The
original always stays the master. When the video already is H.264 of at most 1080 lines
it is copied and only the audio is re-encoded where it is not AAC (recorders pair H.264
with G.711 or ADPCM): a remux, under a second for three minutes. Anything else needs a
full transcode (libx264), which on a two-core dock costs about a quarter of real time, so
by default transcodes are left for when a copy is asked for (`custody derive`, export)
and only remuxes run on the dock; ``access_copies = "all"`` transcodes too, at idle
priority, up to ``transcode_budget_min`` minutes of footage a day (the rest waits for the
next day's budget).

Every derivative is made in one pass: ffmpeg writes it to its standard output and
`run_ffmpeg_into` hashes the bytes and writes them to the store's temp file as they
arrive, so nothing is read back. An access copy is therefore a *fragmented* MP4
(``+frag_keyframe+empty_moov+default_base_moof``: an empty index first, then one
``moof`` + ``mdat`` fragment per keyframe, and an ``mfra`` seek index at the end),
which needs no seeking back to write and which browsers play and seek; a poster is a
JPEG (``image2pipe``). ffmpeg writes the same bytes to a pipe as to a file for these
formats, so the recorded command with ``{output}`` set to a file name remakes the
stored object byte for byte.

The ffmpeg command is built with ffmpeg-python and runs with ``-xerror`` (a damaged
input is an error, not a warning), a timeout that grows with the recording, an
address-space limit, and the media worker's nice 10 and I/O class;
any line on stderr counts as a failure too, since ffmpeg can exit 0 on a damaged file.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import os
import queue
import resource
import shutil
import subprocess
import threading
from collections.abc import Callable
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


STDOUT = "pipe:1"  # where a derivative goes: ffmpeg's standard output, read by us
# Fragmented MP4: written front to back, no seeking back for the index (a pipe cannot).
FRAGMENTED = "+frag_keyframe+empty_moov+default_base_moof"


def access_copy_command(
    exe: str, src: Path, p: Plan, settings: MediaSettings, out: str = STDOUT
) -> list[str]:
    """ffmpeg arguments that write the access copy of ``src`` as a fragmented MP4 to
    ``out`` (its standard output unless a file is named, as the benchmark does)."""
    import ffmpeg

    inp = ffmpeg.input(str(src))
    streams: list[Any] = []
    opts: dict[str, Any] = {"f": "mp4", "movflags": FRAGMENTED}
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
    cmd: list[str] = ffmpeg.output(*streams, out, **opts).compile(cmd=exe)
    return [cmd[0], "-nostdin", "-hide_banner", "-v", "error", "-xerror", *cmd[1:]]


def salvage_command(
    exe: str, raw: Path, codec: str, rate: str, settings: MediaSettings, out: str = STDOUT
) -> list[str]:
    """A fragmented MP4 access copy of a salvaged elementary stream (``ingest.salvage``)
    at the reference's frame rate: H.264 is copied, H.265 transcoded."""
    import ffmpeg

    inp = ffmpeg.input(str(raw), f=codec, framerate=rate)
    opts: dict[str, Any] = {"f": "mp4", "movflags": FRAGMENTED}
    v = inp["v:0"]
    if codec == "h264":
        opts["vcodec"] = "copy"
    else:
        v = v.filter("scale", -2, "min(ih,1080)")
        opts.update(vcodec="libx264", preset=settings.preset, crf=settings.crf, pix_fmt="yuv420p")
    cmd: list[str] = ffmpeg.output(v, out, **opts).compile(cmd=exe)
    return [cmd[0], "-nostdin", "-hide_banner", "-v", "error", "-xerror", *cmd[1:]]


def poster_command(exe: str, src: Path, at_s: float = 1.0, out: str = STDOUT) -> list[str]:
    """A JPEG of the frame at ``at_s`` seconds (callers pass less for short clips)."""
    import ffmpeg

    cmd: list[str] = (
        ffmpeg.input(str(src), ss=at_s)
        .output(out, vframes=1, vf="scale=-2:360", f="image2pipe", vcodec="mjpeg")
        .compile(cmd=exe)
    )
    return [cmd[0], "-nostdin", "-hide_banner", "-v", "error", "-xerror", *cmd[1:]]


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
    timeout = timeout_s or settings.timeout_s
    env = dict(os.environ, MALLOC_ARENA_MAX="2")
    try:
        p = subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=timeout,
            preexec_fn=_limit_memory(settings.memory_mb << 20),
            env=env,
            cwd=cwd,
        )
    except subprocess.TimeoutExpired:
        raise FfmpegFailed(f"ffmpeg did not finish within {timeout} s", transient=True) from None
    except (OSError, subprocess.SubprocessError) as e:
        raise FfmpegFailed(f"ffmpeg could not be started: {e}", transient=True) from None
    return p.returncode, p.stderr.decode("utf-8", "replace").strip()[-4000:]


CHUNK = 1 << 20  # bytes per read of ffmpeg's output, and the pipe size asked for
WRITEBACK = 8 << 20  # start writing back to disk every this many bytes
BUFFERS = 8  # chunks in flight between reading, hashing and writing
_SYNC_FILE_RANGE_WRITE = 2


@dataclass(frozen=True)
class Written:
    sha256: str  # of every byte ffmpeg wrote, as written to the file
    size: int


def _writeback() -> Callable[[int, int, int], None]:
    """``start(fd, offset, length)``: ask the kernel to begin writing a range to disk
    now (sync_file_range, Linux), so the final fsync has little left to do. Only a
    hint: where it is missing this does nothing, and the fsync still decides."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.sync_file_range
    except (OSError, AttributeError):
        return lambda fd, offset, length: None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int

    def start(fd: int, offset: int, length: int) -> None:
        fn(fd, offset, length, _SYNC_FILE_RANGE_WRITE)

    return start


_start_writeback = _writeback()


def _grow_pipe(fd: int) -> None:
    """A 1 MiB pipe instead of 64 KiB: fewer wake-ups of ffmpeg and of us per MiB. The
    kernel may refuse (pipe-max-size, a user's pipe quota); the default still works."""
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), CHUNK)


def run_ffmpeg_into(
    cmd: list[str], settings: MediaSettings, fd: int, timeout_s: int | None = None
) -> Written:
    """Run ffmpeg writing to its standard output, and hash and write those bytes to the
    open file ``fd`` as they arrive: one pass, nothing read back. Returns their SHA-256
    and size once the file is fsynced.

    The same limits as `run_ffmpeg_tolerant`: a timeout (transient), the address-space limit, the
    worker's nice and I/O class (inherited); a non-zero exit or any stderr raises
    FfmpegFailed, as does an empty output. A failed write (ENOSPC, EIO) raises OSError
    after ffmpeg is stopped. The caller removes the file on any failure.
    """
    timeout = timeout_s or settings.timeout_s
    try:
        p = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=0,
            preexec_fn=_limit_memory(settings.memory_mb << 20),
            env=dict(os.environ, MALLOC_ARENA_MAX="2"),
        )
    except (OSError, subprocess.SubprocessError) as e:
        raise FfmpegFailed(f"ffmpeg could not be started: {e}", transient=True) from None
    assert p.stdout is not None and p.stderr is not None
    out, err = p.stdout, p.stderr
    timed_out = threading.Event()

    def kill() -> None:
        timed_out.set()
        p.kill()

    timer = threading.Timer(timeout, kill)
    timer.daemon = True
    tail = bytearray()

    def drain() -> None:  # stderr, concurrently, keeping its last lines
        while b := err.read(65536):
            tail.extend(b)
            del tail[:-8000]

    reader = threading.Thread(target=drain, name="ffmpeg-stderr", daemon=True)
    timer.start()
    reader.start()
    try:
        made = _pump(out.fileno(), fd)
        code = p.wait()  # the timer still stands: a hang after EOF is killed too
    except BaseException:
        p.kill()
        p.wait()
        raise
    finally:
        timer.cancel()
        reader.join()
        out.close()
        err.close()
    if timed_out.is_set():
        raise FfmpegFailed(f"ffmpeg did not finish within {timeout} s", transient=True)
    text = tail.decode("utf-8", "replace").strip()
    if code != 0 or text:
        last = " | ".join(text.splitlines()[-3:]) if text else "no message"
        raise FfmpegFailed(f"ffmpeg exited {code}: {last}"[:1000])
    if made.size == 0:
        raise FfmpegFailed("ffmpeg wrote nothing")
    os.fsync(fd)
    return made


def _pump(pipe: int, fd: int) -> Written:
    """Read the pipe to its end, hashing each chunk, while a thread of its own writes
    the chunks already hashed: reading, hashing and writing overlap (hashlib and the
    system calls let go of the GIL), and ffmpeg rarely waits. A write error (ENOSPC,
    EIO) stops the reading and is raised."""
    _grow_pipe(pipe)
    free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
    for _ in range(BUFFERS):
        free.put(bytearray(CHUNK))
    to_write: queue.SimpleQueue[tuple[bytearray, int] | None] = queue.SimpleQueue()
    failed: list[BaseException] = []

    def writer() -> None:
        done = flushed = 0
        while (item := to_write.get()) is not None:
            buf, n = item
            if not failed:
                try:
                    _write_all(fd, memoryview(buf)[:n])
                    done += n
                    if done - flushed >= WRITEBACK:
                        _start_writeback(fd, flushed, done - flushed)
                        flushed = done
                except BaseException as e:
                    failed.append(e)
            free.put(buf)

    thread = threading.Thread(target=writer, name="derive-writer")
    thread.start()
    h = hashlib.sha256()
    size = 0
    end = False
    try:
        while not end and not failed:
            buf = free.get()
            view = memoryview(buf)
            n = 0
            # ffmpeg writes 32 KiB at a time: fill the whole chunk before hashing and
            # handing it on, or the writer would be woken 32 times as often.
            while n < CHUNK:
                got = os.readv(pipe, [view[n:]])
                if not got:
                    end = True
                    break
                n += got
            if n:
                h.update(view[:n])  # hashlib lets go of the GIL for buffers this large
                size += n
                to_write.put((buf, n))
    finally:
        to_write.put(None)
        thread.join()
    if failed:
        raise failed[0]
    return Written(h.hexdigest(), size)


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        data = data[os.write(fd, data) :]


def _limit_memory(limit: int) -> Callable[[], None]:
    def child() -> None:  # async-signal-safe enough: one system call, no locks
        resource.setrlimit(resource.RLIMIT_AS, (limit, resource.RLIM_INFINITY))

    return child


def public_args(cmd: list[str], src: Path, dst: Path | str) -> list[str]:
    """The command as recorded in an entry: the binary by name, files as placeholders.

    ``{output}`` stands for the stored object's bytes: a derivative made here goes to
    ffmpeg's standard output (``pipe:1``, see `run_ffmpeg_into`), and the same command
    with a file name in its place writes those same bytes to that file."""
    out = ["ffmpeg"]
    for a in cmd[1:]:
        out.append("{input}" if a == str(src) else "{output}" if a == str(dst) else a)
    return out
