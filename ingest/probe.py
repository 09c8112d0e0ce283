"""Probe media in-process with PyAV (FFmpeg's libraries): a compact summary or an error.

The summary uses integers and strings only, as ledger entries require
(durations in milliseconds, rates as fractions like ``"30000/1001"``).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

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
            # Read packets to the end: a file cut short fails here, not in the header.
            packets = 0
            for packet in c.demux():
                if packet.size:
                    packets += 1
            out["packets"] = packets
            return out
    except ProbeFailed:
        raise
    except Exception as e:  # PyAV raises many FFmpeg error classes
        raise ProbeFailed(f"{type(e).__name__}: {e}") from None


class ProbeFailed(Exception):
    """FFmpeg could not read the file as media."""
