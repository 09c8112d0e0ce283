"""Salvage the video of an MP4/MOV whose index (``moov``) was never written.

A recorder whose battery dies mid-recording leaves ``ftyp`` and a ``mdat`` full of
samples but no ``moov``: every player and every ffmpeg tool refuses the file. The
samples are still there. For H.264 and H.265 in MP4 each video sample is a run of
NAL units, each prefixed by its length; audio chunks sit between them. This module
walks ``mdat``, keeps the runs of NAL units that parse as a plausible stream (length
within the box, a valid NAL header, a slice that starts a picture or continues one),
skips what does not (audio, garbage), and writes an Annex B elementary stream that
ffmpeg can wrap into a playable MP4.

The parameter sets (SPS/PPS, and VPS for H.265) come from the stream itself when the
recorder repeats them in-band, else from a healthy recording of the same recorder (the
untrunc technique: same encoder, same settings). Timing is lost with the index: frames
are given the reference's frame rate. Audio is not recovered. The broken original
always stays the master; what this makes is an access copy, recorded as such.
"""

from __future__ import annotations

import contextlib
import mmap
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

START = b"\x00\x00\x00\x01"


class SalvageError(ValueError):
    pass


@dataclass(frozen=True)
class Layout:
    mdat_start: int  # first byte of the samples
    mdat_end: int  # min(declared end, end of file)
    has_moov: bool


def layout(data: bytes | mmap.mmap) -> Layout:
    """Top-level boxes of an ISO BMFF file; raises SalvageError if it is not one."""
    pos, n = 0, len(data)
    mdat: tuple[int, int] | None = None
    moov = False
    first = True
    while pos + 8 <= n:
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        head = 8
        if size == 1:
            if pos + 16 > n:
                break
            size = struct.unpack(">Q", data[pos + 8 : pos + 16])[0]
            head = 16
        elif size == 0:
            size = n - pos  # to the end of the file (a recorder still writing)
        if first and kind not in (b"ftyp", b"free", b"skip", b"wide", b"mdat"):
            raise SalvageError("not an MP4/MOV file (no ftyp box first)")
        first = False
        if size < head:
            raise SalvageError(f"box {kind!r} at {pos} has an impossible size {size}")
        if kind == b"moov":
            moov = True
        if kind == b"mdat" and mdat is None:
            mdat = (pos + head, min(pos + size, n))
        pos += size
    if mdat is None:
        raise SalvageError("no mdat box: no samples to salvage")
    return Layout(mdat[0], mdat[1], moov)


@dataclass(frozen=True)
class Codec:
    name: str  # h264 | hevc
    length_size: int  # bytes of each NAL length prefix
    parameter_sets: tuple[bytes, ...]  # SPS/PPS (VPS first for H.265), without start codes
    max_nal: int = 8 << 20  # largest plausible NAL unit
    max_gap: int = 256 << 10  # largest run of other bytes (audio) between video samples


def from_extradata(name: str, extradata: bytes, **limits: int) -> Codec:
    """The codec set-up from an avcC or hvcC record (a healthy file's stream extradata)."""
    sets: list[bytes] = []
    try:
        if name == "h264":
            if extradata[0] != 1:
                raise SalvageError("avcC record of an unknown version")
            length = (extradata[4] & 3) + 1
            pos = 5
            for count_mask in (0x1F, 0xFF):
                count = extradata[pos] & count_mask
                pos += 1
                for _ in range(count):
                    size = struct.unpack(">H", extradata[pos : pos + 2])[0]
                    sets.append(bytes(extradata[pos + 2 : pos + 2 + size]))
                    pos += 2 + size
        elif name == "hevc":
            length = (extradata[21] & 3) + 1
            arrays, pos = extradata[22], 23
            for _ in range(arrays):
                count = struct.unpack(">H", extradata[pos + 1 : pos + 3])[0]
                pos += 3
                for _ in range(count):
                    size = struct.unpack(">H", extradata[pos : pos + 2])[0]
                    sets.append(bytes(extradata[pos + 2 : pos + 2 + size]))
                    pos += 2 + size
        else:
            raise SalvageError(f"cannot salvage {name} video (H.264 and H.265 only)")
    except (IndexError, struct.error):
        raise SalvageError(f"the reference's {name} set-up record is malformed") from None
    if not sets:
        raise SalvageError("the reference names no parameter sets")
    return Codec(name, length, tuple(sets), **limits)


# -- NAL plausibility ---------------------------------------------------------------


class _Bits:
    """Exp-Golomb reading of the first bytes of a NAL unit (slice headers are short)."""

    def __init__(self, raw: bytes) -> None:
        self.v, self.n, self.i = int.from_bytes(raw, "big"), len(raw) * 8, 0

    def bit(self) -> int:
        if self.i >= self.n:
            raise ValueError("past the end")
        self.i += 1
        return (self.v >> (self.n - self.i)) & 1

    def ue(self) -> int:
        zeros = 0
        while self.bit() == 0:
            zeros += 1
            if zeros > 20:
                raise ValueError("not Exp-Golomb")
        return (1 << zeros) - 1 + sum(self.bit() << (zeros - 1 - k) for k in range(zeros))


def pps_ids(codec: str, sets: tuple[bytes, ...] | list[bytes]) -> set[int]:
    """The ids of the picture parameter sets among ``sets``."""
    out = set()
    for nal in sets:
        try:
            if codec == "h264" and nal[0] & 0x1F == 8:
                out.add(_Bits(nal[1:9]).ue())
            elif codec == "hevc" and (nal[0] >> 1) & 0x3F == 34:
                out.add(_Bits(nal[2:10]).ue())
        except (ValueError, IndexError):
            continue
    return out


def _h264_kind(data: bytes | mmap.mmap, p: int, pps: set[int]) -> str:
    """'slice', 'picture' (a slice that starts one), 'set', 'other' or '' (implausible)
    for the H.264 NAL unit at ``p``."""
    h = data[p]
    kind, ref = h & 0x1F, (h >> 5) & 3
    if h & 0x80:
        return ""
    if kind in (1, 5):
        if kind == 5 and ref == 0:
            return ""
        try:
            b = _Bits(bytes(data[p + 1 : p + 9]))
            first_mb, slice_type, pps_id = b.ue(), b.ue(), b.ue()
        except ValueError:
            return ""
        if first_mb > 140000 or slice_type > 9 or (pps and pps_id not in pps):
            return ""
        if kind == 5 and slice_type % 5 not in (2, 4):
            return ""  # an IDR picture holds I (or SI) slices only
        return "picture" if first_mb == 0 else "slice"
    if kind in (7, 8):
        return "set" if ref else ""
    if kind in (6, 9):
        return "other" if ref == 0 else ""
    return ""


def _hevc_kind(data: bytes | mmap.mmap, p: int, pps: set[int]) -> str:
    b0, b1 = data[p], data[p + 1]
    kind = (b0 >> 1) & 0x3F
    if b0 & 0x80 or b0 & 1 or b1 >> 3 or not b1 & 7:
        return ""
    if kind <= 9 or 16 <= kind <= 21:
        try:
            b = _Bits(bytes(data[p + 2 : p + 10]))
            first = b.bit()
            if 16 <= kind <= 23:
                b.bit()  # no_output_of_prior_pics_flag
            pps_id = b.ue()
        except ValueError:
            return ""
        if pps_id > 63 or (pps and pps_id not in pps):
            return ""
        return "picture" if first else "slice"
    if kind in (32, 33, 34):
        return "set"
    if kind in (35, 39, 40):
        return "other"
    return ""


_H264_HEAD = rb"[\x01\x21\x41\x61\x25\x45\x65\x06\x27\x47\x67\x28\x48\x68\x09]"
_HEVC_HEAD = rb"[\x00-\x13\x20-\x2b\x40-\x47\x4e\x50]"


@dataclass
class Result:
    codec: str = ""
    nals: int = 0
    pictures: int = 0
    video_bytes: int = 0
    skipped_bytes: int = 0
    in_band_sets: int = 0


def scan(data: bytes | mmap.mmap, lay: Layout, codec: Codec) -> Iterator[tuple[int, int, str]]:
    """Yield (offset, size, kind) of every NAL unit in ``mdat`` that belongs to the video.

    Inside a run of NAL units each must parse (length within the box, a valid header, a
    slice header naming a known picture parameter set). A run starts at a unit that
    parses and is followed, within ``max_gap`` bytes (the audio between two video
    samples), by another that parses, or by the end of the box.
    """
    kind_of = _h264_kind if codec.name == "h264" else _hevc_kind
    pps = pps_ids(codec.name, codec.parameter_sets)
    ls = codec.length_size
    head = _H264_HEAD if codec.name == "h264" else _HEVC_HEAD
    zeros = b"\x00" * max(0, ls - 3)  # lengths under 16 MiB: the high byte is 0
    pattern = re.compile(b"(?=" + zeros + b".{%d}" % min(ls, 3) + head + b")", re.S)
    end = lay.mdat_end

    def nal_at(q: int) -> tuple[int, str] | None:
        if q + ls + 10 > end:
            return None
        size = int.from_bytes(data[q : q + ls], "big")
        if size < 2 or size > codec.max_nal or q + ls + size > end:
            return None
        k = kind_of(data, q + ls, pps)
        if k == "set" and codec.name == "h264" and data[q + ls] & 0x1F == 8:
            with contextlib.suppress(ValueError):
                pps.add(_Bits(bytes(data[q + ls + 1 : q + ls + 9])).ue())
        return (size, k) if k else None

    def next_nal(q: int, limit: int) -> int | None:
        while True:
            m = pattern.search(data, q, min(limit, end))
            if m is None:
                return None
            if nal_at(m.start()) is not None:
                return m.start()
            q = m.start() + 1

    def followed(q: int) -> bool:
        if end - q <= codec.max_gap // 4 and end - q < 4096:
            return True  # the box ends here (the recording was cut)
        return nal_at(q) is not None or next_nal(q + 1, q + codec.max_gap) is not None

    p = lay.mdat_start
    in_run = False
    while p < end:
        n = nal_at(p)
        if n is not None and (in_run or followed(p + ls + n[0])):
            yield p + ls, n[0], n[1]
            p += ls + n[0]
            in_run = True
            continue
        in_run = False
        q = next_nal(p + 1, end)
        if q is None:
            break
        p = q


def salvage(
    src: Path, dst: Path, codec: Codec | None, fallback: tuple[str, ...] = ("h264", "hevc")
) -> Result:
    """Write the Annex B stream of ``src``'s video to ``dst``; ``codec`` from a reference,
    else in-band parameter sets are looked for (4-byte lengths, each codec in turn)."""
    with open(src, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        lay = layout(data)
        if lay.has_moov:
            raise SalvageError("the file has its index (moov): nothing to salvage")
        tries = [codec] if codec else [Codec(n, 4, ()) for n in fallback]
        for c in tries:
            res = Result(codec=c.name)
            with open(dst, "wb") as out:
                for ps in c.parameter_sets:
                    out.write(START + ps)
                for off, size, kind in scan(data, lay, c):
                    out.write(START)
                    out.write(data[off : off + size])
                    res.nals += 1
                    res.video_bytes += size
                    res.in_band_sets += kind == "set"
                    res.pictures += kind == "picture"
            res.skipped_bytes = lay.mdat_end - lay.mdat_start - res.video_bytes
            if res.pictures and (c.parameter_sets or res.in_band_sets):
                return res
        raise SalvageError(
            "no video stream found in mdat"
            + ("" if codec else " and no in-band parameter sets (no healthy reference)")
        )


def reference_codec(path: Path, max_packets: int = 5000) -> tuple[Codec, str]:
    """The codec set-up and the sample layout of a healthy recording (PyAV, no decoding):
    its parameter sets, the largest video sample and the largest run of other bytes
    between two video samples, with room to spare. Also its frame rate ("25", "30000/1001").
    """
    import av

    try:
        with av.open(str(path), metadata_errors="ignore") as c:
            if not c.streams.video:
                raise SalvageError("the reference has no video")
            vs = c.streams.video[0]
            name = vs.codec_context.name
            extradata = bytes(vs.codec_context.extradata or b"")
            rate = vs.average_rate or vs.guessed_rate
            spans: list[tuple[int, int, bool]] = []
            for pk in c.demux():
                if pk.size and pk.pos is not None and pk.pos >= 0:
                    spans.append((pk.pos, pk.size, pk.stream.index == vs.index))
                if len(spans) >= max_packets:
                    break
    except av.error.FFmpegError as e:
        raise SalvageError(f"the reference cannot be read: {e}") from None
    if not extradata:
        raise SalvageError("the reference carries no codec set-up record")
    spans.sort()
    biggest = max((size for _, size, v in spans if v), default=0)
    gap, last_end = 0, None
    for pos, size, video in spans:
        if video:
            if last_end is not None:
                gap = max(gap, pos - last_end)
            last_end = pos + size
    codec = from_extradata(
        name, extradata, max_nal=max(1 << 20, biggest * 4), max_gap=max(64 << 10, gap * 4)
    )
    fr = f"{rate.numerator}/{rate.denominator}" if rate else "25"
    return codec, fr
