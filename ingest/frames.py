"""Decoded-frame fingerprints: the SHA-256 of every decoded picture of a recording's first
video stream, which survives a re-mux into another container (a ``.ts`` or ``.mkv`` made
by stream copy carries the same pictures in different packets).

ffmpeg decodes (``-f framehash -hash sha256``, frames passed through untouched, no
rate conversion) and only the hash values are kept, never the text of its output, which
differs between FFmpeg versions. H.264 and H.265 decoding is exact by standard, so the
values do not depend on the FFmpeg build. Audio is not hashed: AAC decoders differ in the
last bits between builds. Decoding costs about a fifth of real time on a two-core dock,
so this runs on request or when configured, not for every file.

The sidecar, ``custody-frames/v1``, is tab-separated text::

    # custody-frames/v1
    S <time_base> <width>x<height>      the stream, once
    F <pts> <sha256>                    one line per decoded frame, in output order

The same pass can run the MPEG-7 video signature filter (``signature``), nearly free once
frames are decoded; its binary output is kept as a second sidecar for tools that search
re-encoded copies.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

from ingest.fingerprint import FingerprintError, HashingLines, _alignment

FORMAT = "custody-frames/v1"
HEADER = f"# {FORMAT}\n"
SIGNATURE_FORMAT = "mpeg7-video-signature/binary"
SAMPLE_BELOW = 16  # frames whose hash starts with a byte < 16 (1 in 16) go into the index


@dataclass(frozen=True)
class FrameHashes:
    time_base: str  # "1/25"
    size: str  # "1920x1080"
    frames: tuple[tuple[int, bytes], ...]  # (pts, sha256) in output order

    @property
    def hashes(self) -> list[bytes]:
        return [h for _, h in self.frames]


def frames_command(exe: str, src: Path, out: Path, signature: Path | None = None) -> list[str]:
    """ffmpeg arguments that write the frame hashes of ``src``'s first video stream to
    ``out`` (and its MPEG-7 signature to ``signature``)."""
    import ffmpeg

    v = ffmpeg.input(str(src))["v:0"]
    if signature is not None:
        v = v.filter("signature", format="binary", filename=str(signature))
    cmd: list[str] = ffmpeg.output(
        v, str(out), f="framehash", hash="sha256", fps_mode="passthrough"
    ).compile(cmd=exe)
    return [cmd[0], "-nostdin", "-hide_banner", "-v", "error", *cmd[1:]]


_TB = re.compile(r"#tb 0: (\d+)/(\d+)$")
_DIM = re.compile(r"#dimensions 0: (\d+)x(\d+)$")


def _header(line: str) -> tuple[str, str] | None:
    """("tb", "1/25") or ("size", "1920x1080") from a framehash comment line."""
    if m := _TB.match(line):
        return "tb", f"{m[1]}/{m[2]}"
    if m := _DIM.match(line):
        return "size", f"{m[1]}x{m[2]}"
    return None


def _frame(line: str, n: int) -> tuple[int, bytes] | None:
    """(pts, sha256) of a framehash line of stream 0; None for other streams."""
    f = [x.strip() for x in line.split(",")]
    if len(f) < 6:
        raise FingerprintError(f"framehash line {n}: {len(f)} fields")
    if f[0] != "0":
        return None
    h = f[-1].split("=")[-1].lower()  # some versions write SHA256=<hex>
    try:
        digest = bytes.fromhex(h)
        pts = int(f[2])
    except ValueError:
        raise FingerprintError(f"framehash line {n}: {line[:80]!r}") from None
    if len(digest) != 32:
        raise FingerprintError(f"framehash line {n}: not a SHA-256")
    return pts, digest


def read_framehash(lines: Iterable[str]) -> FrameHashes:
    """The hash values and pts of ffmpeg's framehash output (stream 0 only)."""
    head = {"tb": "", "size": ""}
    frames: list[tuple[int, bytes]] = []
    for n, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            if got := _header(line):
                head[got[0]] = got[1]
            continue
        if (fr := _frame(line, n)) is not None:
            frames.append(fr)
    if not head["tb"]:
        raise FingerprintError("framehash output names no time base (no video decoded)")
    return FrameHashes(head["tb"], head["size"] or "0x0", tuple(frames))


@dataclass(frozen=True)
class FramesSummary:
    sha256: str  # of the sidecar bytes
    size: int
    frames: int
    time_base: str
    picture: str  # "1920x1080"
    keys: tuple[bytes, ...]  # the index's sample (`sampled`)


def write_frames(lines: Iterable[str], out: BinaryIO) -> FramesSummary:
    """ffmpeg's framehash output as a custody-frames/v1 sidecar written to ``out`` line by
    line: memory stays flat whatever the recording's length. The same bytes as
    ``format_frames(read_framehash(lines))``."""
    head = {"tb": "", "size": ""}
    w = HashingLines(out)
    keys: dict[bytes, None] = {}
    frames = 0
    for n, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            if not frames and (got := _header(line)):
                head[got[0]] = got[1]
            continue
        fr = _frame(line, n)
        if fr is None:
            continue
        if not frames:
            if not head["tb"]:
                break  # no time base before the first frame: refused below
            w.add(HEADER)
            w.add(f"S\t{head['tb']}\t{head['size'] or '0x0'}\n")
        frames += 1
        w.add(f"F\t{fr[0]}\t{fr[1].hex()}\n")
        if fr[1][0] < SAMPLE_BELOW:
            keys[fr[1]] = None
    if not head["tb"]:
        raise FingerprintError("framehash output names no time base (no video decoded)")
    w.flush()
    return FramesSummary(
        w.sha.hexdigest(), w.size, frames, head["tb"], head["size"] or "0x0", tuple(keys)
    )


def format_frames(fh: FrameHashes) -> bytes:
    out = [HEADER, f"S\t{fh.time_base}\t{fh.size}\n"]
    out.extend(f"F\t{pts}\t{h.hex()}\n" for pts, h in fh.frames)
    return "".join(out).encode("ascii")


def parse_frames(data: bytes) -> FrameHashes:
    """Inverse of `format_frames`; raises FingerprintError naming the line."""
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise FingerprintError("not an ASCII custody-frames file") from None
    if not text.startswith(HEADER) or not text.endswith("\n"):
        raise FingerprintError(f"not a complete {FORMAT} file")
    lines = text[len(HEADER) : -1].split("\n")
    head = lines[0].split("\t")
    if len(head) != 3 or head[0] != "S":
        raise FingerprintError("line 2: not a stream line")
    try:
        if Fraction(head[1]) <= 0:
            raise ValueError
    except (ValueError, ZeroDivisionError):
        raise FingerprintError(f"line 2: time base {head[1]!r}") from None
    frames: list[tuple[int, bytes]] = []
    for n, line in enumerate(lines[1:], start=3):
        f = line.split("\t")
        try:
            if len(f) != 3 or f[0] != "F":
                raise ValueError
            pts, h = int(f[1]), bytes.fromhex(f[2])
        except ValueError:
            raise FingerprintError(f"line {n}: not a frame line") from None
        if len(h) != 32:
            raise FingerprintError(f"line {n}: hash is not a SHA-256")
        frames.append((pts, h))
    fh = FrameHashes(head[1], head[2], tuple(frames))
    if format_frames(fh) != data:
        raise FingerprintError(f"not in canonical {FORMAT} form")
    return fh


def sampled(hashes: Iterable[bytes]) -> list[bytes]:
    """The frames that go into the index: chosen by content (about 1 in 16), so a clip's
    frames pick the same ones as its original's did, wherever it was cut."""
    return list(dict.fromkeys(h for h in hashes if h[0] < SAMPLE_BELOW))


@dataclass(frozen=True)
class FrameMatch:
    matched: int  # clip frames equal to the original's at one alignment, in order
    total: int
    start_s: Fraction | None
    end_s: Fraction | None

    @property
    def exact(self) -> bool:
        return self.total > 0 and self.matched == self.total


def match_frames(clip: FrameHashes, original: FrameHashes) -> FrameMatch:
    ch, oh = clip.hashes, original.hashes
    shift, n = _alignment(ch, oh)
    if not n:
        return FrameMatch(0, len(ch), None, None)
    hits = [
        original.frames[shift + i][0]
        for i in range(len(ch))
        if 0 <= shift + i < len(oh) and oh[shift + i] == ch[i]
    ]
    first = original.frames[0][0] if original.frames else 0
    tb = Fraction(original.time_base)
    return FrameMatch(n, len(ch), (min(hits) - first) * tb, (max(hits) - first) * tb)
