"""Probe media in-process with PyAV (FFmpeg's libraries): a compact summary or an error.

The summary uses integers, strings and booleans only, as ledger entries require
(durations in milliseconds, rates as fractions like ``"30000/1001"``).

A demuxer stops quietly where a cut file ends, and reports the duration its headers
declare, so the summary also says whether the recording is all there: ``complete``,
with ``damage`` (what does not add up), ``declared`` and ``found`` (duration and
frames) from `ingest.damage`, which compares the container's bookkeeping with the
file and with how far demuxing got.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, BinaryIO

from ingest.damage import Demuxed, Findings, examine, verdict

MAX_STREAMS = 16
TAGS = (
    "creation_time",
    "make",
    "model",
    "encoder",
    "com.apple.quicktime.make",
    "com.apple.quicktime.model",
    "location",
    "handler_name",
)


def ffmpeg_version() -> str:
    import av

    libs = getattr(av, "library_versions", {})
    avf = libs.get("libavformat") if isinstance(libs, dict) else None
    v = ".".join(str(x) for x in avf) if avf else "?"
    return f"PyAV {av.__version__}, libavformat {v}"


def _frac(x: Any) -> str | None:
    if x is None:
        return None
    f = Fraction(x)
    return f"{f.numerator}/{f.denominator}" if f.denominator != 1 else str(f.numerator)


def _tags(meta: Any) -> dict[str, str]:
    out = {}
    for k in TAGS:
        v = meta.get(k) if meta else None
        if v:
            out[k] = str(v)[:200]
    return out


def probe(path: Path) -> dict[str, Any]:
    """Summary of a media file; raises ProbeFailed with FFmpeg's reason."""
    import av

    try:
        with av.open(str(path), metadata_errors="ignore") as c:
            streams = []
            for s in list(c.streams)[:MAX_STREAMS]:
                cc: Any = s.codec_context
                info: dict[str, Any] = {"index": s.index, "type": s.type}
                name = getattr(cc, "name", None) if cc is not None else None
                if name:
                    info["codec"] = name
                if s.type == "video" and cc is not None:
                    if cc.width:
                        info["width"], info["height"] = int(cc.width), int(cc.height)
                    rate = _frac(s.average_rate or s.base_rate)
                    if rate:
                        info["rate"] = rate
                elif s.type == "audio" and cc is not None:
                    if cc.sample_rate:
                        info["sample_rate"] = int(cc.sample_rate)
                    if getattr(cc, "channels", None):
                        info["channels"] = int(cc.channels)
                if s.duration is not None and s.time_base is not None:
                    info["duration_ms"] = int(s.duration * s.time_base * 1000)
                if s.frames:
                    info["frames"] = int(s.frames)
                streams.append(info)
            out: dict[str, Any] = {"container": c.format.name, "streams": streams}
            if c.duration is not None:
                out["duration_ms"] = int(c.duration // 1000)  # microseconds
            if c.bit_rate:
                out["bit_rate"] = int(c.bit_rate)
            tags = _tags(c.metadata)
            if tags:
                out["tags"] = tags
            if not streams:
                raise ProbeFailed("no audio or video streams found")
            # Read packets to the end: a file cut short fails here, not in the header, or
            # (most demuxers) stops quietly early: see how far it got against the headers.
            packets = 0
            video = next((s for s in c.streams if s.type == "video"), None)
            video_packets = 0
            reach: dict[int, tuple[int, int]] = {}  # stream: (first pts, last end)
            for packet in c.demux():
                i = packet.stream.index
                if not packet.size:
                    # The demuxer's flush packets carry nothing; an AVI's empty '00dc'
                    # chunk is a dropped frame the header counts: count that one.
                    if packet.pts is not None and video is not None and i == video.index:
                        video_packets += 1
                    continue
                packets += 1
                if video is not None and i == video.index:
                    video_packets += 1
                if packet.pts is not None:
                    end = packet.pts + (packet.duration or 0)
                    first, last = reach.get(i, (packet.pts, end))
                    reach[i] = (min(first, packet.pts), max(last, end))
            out["packets"] = packets
            demuxed = Demuxed(
                _reach_ms(c, reach),
                video_packets if video is not None else None,
                int(video.frames or 0) if video is not None else None,
            )
        out.update(verdict(examine_file(path), demuxed))
        return out
    except ProbeFailed:
        raise
    except Exception as e:  # PyAV raises many FFmpeg error classes
        raise ProbeFailed(f"{type(e).__name__}: {e}") from None


def examine_file(path: Path) -> Findings:
    """`ingest.damage.examine` of a file on disk (headers only, by seeking)."""
    with open(path, "rb") as f:
        return examine(_FileSource(f, os.fstat(f.fileno()).st_size))


def _reach_ms(c: Any, reach: dict[int, tuple[int, int]]) -> int | None:
    """How far the longest stream reached from its own first packet, in milliseconds."""
    spans = []
    for i, (first, last) in reach.items():
        tb = c.streams[i].time_base
        if tb is not None:
            spans.append(int((last - first) * tb * 1000))
    return max(spans) if spans else None


@dataclass(frozen=True)
class _FileSource:
    """The `ingest.damage.Source` of an open file: headers are read by seeking."""

    f: BinaryIO
    size: int

    def read(self, offset: int, length: int) -> bytes:
        self.f.seek(offset)
        return self.f.read(length)


class ProbeFailed(Exception):
    """FFmpeg could not read the file as media."""
