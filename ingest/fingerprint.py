"""Per-packet fingerprints: the SHA-256 of every packet, without decoding.

A clip cut from an original by stream copy (``ffmpeg -ss A -t B -c copy``)
carries the original's packets byte for byte, so the sequence of packet
hashes proves where it came from. The fingerprint of a file is a sidecar
object in the ``custody-packets/v1`` text format, whose SHA-256 goes into a
signed ``fingerprint`` entry::

    # custody-packets/v1
    S <stream> <type> <codec> <time_base>          one line per stream
    P <stream> <pts> <dts> <size> <K|-> <sha256>    one line per packet, in file order

Fields are tab-separated; ``pts``/``dts`` are integers in the stream's time
base, or ``-`` when the container gives none. A file cut short yields the
packets before the damage and ``complete = False``.

The format, its parser and clip matching are pure; only `read_packets` (PyAV)
touches a file. Hash values are compared, never the text of ffmpeg's
framehash output, which differs between FFmpeg versions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

FORMAT = "custody-packets/v1"
HEADER = f"# {FORMAT}\n"


@dataclass(frozen=True)
class StreamInfo:
    index: int
    type: str  # video, audio, data, subtitle
    codec: str
    time_base: str  # "1/12800"


@dataclass(frozen=True)
class Packet:
    stream: int
    pts: int | None
    dts: int | None
    size: int
    key: bool
    sha256: bytes  # 32 bytes


@dataclass(frozen=True)
class Fingerprint:
    streams: tuple[StreamInfo, ...]
    packets: tuple[Packet, ...]
    complete: bool = True
    error: str = ""

    def by_stream(self, index: int) -> list[Packet]:
        return [p for p in self.packets if p.stream == index]


class FingerprintError(ValueError):
    pass


def _opt(v: int | None) -> str:
    return "-" if v is None else str(v)


def format_sidecar(fp: Fingerprint) -> bytes:
    lines = [HEADER]
    for s in fp.streams:
        lines.append(f"S\t{s.index}\t{s.type}\t{s.codec}\t{s.time_base}\n")
    for p in fp.packets:
        lines.append(
            f"P\t{p.stream}\t{_opt(p.pts)}\t{_opt(p.dts)}\t{p.size}\t{'K' if p.key else '-'}\t"
            f"{p.sha256.hex()}\n"
        )
    return "".join(lines).encode("ascii")


def _int_or_none(s: str, what: str, n: int) -> int | None:
    if s == "-":
        return None
    try:
        return int(s)
    except ValueError:
        raise FingerprintError(f"line {n}: {what} {s!r} is not an integer") from None


def parse_sidecar(data: bytes) -> Fingerprint:
    """Inverse of `format_sidecar`; raises FingerprintError naming the line."""
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise FingerprintError("not an ASCII custody-packets file") from None
    if not text.startswith(HEADER):
        raise FingerprintError(f"does not start with {HEADER.strip()!r}")
    streams: list[StreamInfo] = []
    packets: list[Packet] = []
    known: set[int] = set()
    for n, line in enumerate(text[len(HEADER) :].split("\n"), start=2):
        if not line:
            continue
        f = line.split("\t")
        if f[0] == "S" and len(f) == 5 and not packets:
            idx = _int_or_none(f[1], "stream", n)
            if idx is None or idx in known:
                raise FingerprintError(f"line {n}: bad or repeated stream index")
            known.add(idx)
            streams.append(StreamInfo(idx, f[2], f[3], f[4]))
        elif f[0] == "P" and len(f) == 7:
            st = _int_or_none(f[1], "stream", n)
            size = _int_or_none(f[4], "size", n)
            if st not in known or size is None or size < 0 or f[5] not in ("K", "-"):
                raise FingerprintError(f"line {n}: malformed packet line")
            try:
                h = bytes.fromhex(f[6])
            except ValueError:
                raise FingerprintError(f"line {n}: hash is not hex") from None
            if len(h) != 32 or h.hex() != f[6]:
                raise FingerprintError(f"line {n}: hash is not 64 lowercase hex digits")
            packets.append(
                Packet(
                    st,
                    _int_or_none(f[2], "pts", n),
                    _int_or_none(f[3], "dts", n),
                    size,
                    f[5] == "K",
                    h,
                )
            )
        else:
            raise FingerprintError(f"line {n}: not a stream or packet line")
    if not text.endswith("\n"):
        raise FingerprintError("last line is cut short")
    return Fingerprint(tuple(streams), tuple(packets))


# -- matching a clip against an original ----------------------------------------------


@dataclass(frozen=True)
class StreamMatch:
    clip_stream: int
    original_stream: int
    matched: int  # clip packets matched, in order, contiguously
    total: int
    start_pts: int | None  # first and last matched packet in the original
    end_pts: int | None
    time_base: str


@dataclass
class ClipMatch:
    streams: list[StreamMatch] = field(default_factory=list)

    @property
    def matched(self) -> int:
        return sum(s.matched for s in self.streams)

    @property
    def total(self) -> int:
        return sum(s.total for s in self.streams)

    @property
    def exact(self) -> bool:
        return self.total > 0 and self.matched == self.total

    def range_ms(self) -> tuple[int, int] | None:
        """Where in the original the clip lies (from its first video or first stream)."""
        for s in sorted(self.streams, key=lambda s: s.clip_stream):
            if s.start_pts is not None and s.end_pts is not None:
                tb = Fraction(s.time_base)
                return int(s.start_pts * tb * 1000), int(s.end_pts * tb * 1000)
        return None


def _best_run(clip: Sequence[bytes], orig: Sequence[bytes]) -> tuple[int, int]:
    """(start in orig, length) of the longest in-order contiguous run of ``clip``'s hashes
    starting at clip position 0 (a stream copy keeps every packet from its first one)."""
    if not clip:
        return -1, 0
    where: dict[bytes, list[int]] = {}
    for i, h in enumerate(orig):
        where.setdefault(h, []).append(i)
    best = (-1, 0)
    # The clip's first packet may be one the cut re-made (rare); try the first few.
    for offset in range(min(3, len(clip))):
        for start in where.get(clip[offset], []):
            n = 0
            while (
                offset + n < len(clip)
                and start + n < len(orig)
                and clip[offset + n] == orig[start + n]
            ):
                n += 1
            if n > best[1]:
                best = (start, n)
        if best[1]:
            break
    return best


def match_clip(clip: Fingerprint, original: Fingerprint) -> ClipMatch:
    """Match each clip stream to the original stream of the same type it best follows."""
    out = ClipMatch()
    used: set[int] = set()
    for cs in clip.streams:
        cpk = clip.by_stream(cs.index)
        best: StreamMatch | None = None
        for os_ in original.streams:
            if os_.type != cs.type or os_.index in used:
                continue
            opk = original.by_stream(os_.index)
            start, n = _best_run([p.sha256 for p in cpk], [p.sha256 for p in opk])
            m = StreamMatch(
                cs.index,
                os_.index,
                n,
                len(cpk),
                opk[start].pts if n else None,
                opk[start + n - 1].pts if n else None,
                os_.time_base,
            )
            if best is None or m.matched > best.matched:
                best = m
        if best is None:
            best = StreamMatch(cs.index, -1, 0, len(cpk), None, None, cs.time_base)
        elif best.matched:
            used.add(best.original_stream)
        out.streams.append(best)
    return out


def keyframe_hashes(fp: Fingerprint, limit: int | None = None) -> list[bytes]:
    """Hashes of video keyframe packets (all packets' if there is no video): the index
    that finds candidate originals for a clip."""
    video = [s.index for s in fp.streams if s.type == "video"]
    chosen = (
        [
            p.sha256
            for p in fp.packets
            if (p.key and p.stream in video) or (not video and p.stream == fp.streams[0].index)
        ]
        if fp.streams
        else []
    )
    return chosen[:limit] if limit is not None else chosen


# -- reading a file (PyAV) ------------------------------------------------------------


def _tb(x: object) -> str:
    f = Fraction(str(x)) if x is not None else Fraction(0)
    return f"{f.numerator}/{f.denominator}"


def read_packets(path: Path) -> Fingerprint:
    """Demux every packet (no decoding) and hash it. A file ffmpeg cannot open raises
    FingerprintError; one that breaks part-way returns what came before, incomplete."""
    import av

    try:
        c = av.open(str(path), metadata_errors="ignore")
    except Exception as e:
        raise FingerprintError(f"{type(e).__name__}: {e}") from None
    with c:
        streams = tuple(
            StreamInfo(
                s.index,
                s.type,
                getattr(s.codec_context, "name", None) or "unknown",
                _tb(s.time_base),
            )
            for s in c.streams
        )
        if not streams:
            raise FingerprintError("no streams")
        packets: list[Packet] = []
        error = ""
        try:
            for pk in c.demux():
                if pk.size == 0:
                    continue  # the demuxer's flush packets
                packets.append(
                    Packet(
                        pk.stream.index,
                        pk.pts,
                        pk.dts,
                        pk.size,
                        bool(pk.is_keyframe),
                        hashlib.sha256(bytes(pk)).digest(),
                    )
                )
        except Exception as e:  # a file cut short: keep what was readable
            error = f"{type(e).__name__}: {e}"[:500]
        if not error:
            # An indexed container (MP4/MOV) whose data was cut off ends quietly: compare
            # with the number of packets its index promises.
            got: dict[int, int] = {}
            for p in packets:
                got[p.stream] = got.get(p.stream, 0) + 1
            for s in c.streams:
                # Video only: for PCM audio an MP4/MOV index counts samples, not packets.
                promised = int(s.frames or 0) if s.type == "video" else 0
                if promised and got.get(s.index, 0) < promised:
                    error = (
                        f"the file ends after {got.get(s.index, 0)} of the {promised} packets "
                        f"its index lists for stream {s.index} (cut short)"
                    )
                    break
    return Fingerprint(streams, tuple(packets), complete=not error, error=error)


def summary(fp: Fingerprint, sidecar: bytes) -> dict[str, object]:
    """What a `fingerprint` entry says about its sidecar (integers and strings only)."""
    counts: dict[str, int] = {}
    for p in fp.packets:
        counts[str(p.stream)] = counts.get(str(p.stream), 0) + 1
    out: dict[str, object] = {
        "format": FORMAT,
        "sidecar": {"sha256": hashlib.sha256(sidecar).hexdigest(), "size": len(sidecar)},
        "packets": len(fp.packets),
        "per_stream": counts,
        "complete": fp.complete,
    }
    if fp.error:
        out["error"] = fp.error
    return out


def iter_hashes(packets: Iterable[Packet]) -> list[bytes]:
    return [p.sha256 for p in packets]
