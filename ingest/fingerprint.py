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
    for si in streams:
        try:
            tb = Fraction(si.time_base)
        except (ValueError, ZeroDivisionError):
            raise FingerprintError(f"stream {si.index}: time base {si.time_base!r}") from None
        if tb <= 0:
            raise FingerprintError(f"stream {si.index}: time base {si.time_base!r}")
    fp = Fingerprint(tuple(streams), tuple(packets))
    if format_sidecar(fp) != data:
        # One text per fingerprint: "+1", " 1", blank lines and the like are refused.
        raise FingerprintError("not in canonical custody-packets/v1 form")
    return fp


# -- matching a clip against an original ----------------------------------------------


@dataclass(frozen=True)
class StreamMatch:
    clip_stream: int
    original_stream: int
    matched: int  # clip packets equal to the original's at one alignment
    total: int
    start_s: Fraction | None  # where the matched run lies in the original, from its start
    end_s: Fraction | None
    type: str = ""
    timing_ok: bool = True  # the clip keeps the original's packet timing (one constant shift)


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
    def aligned(self) -> bool:
        """All streams come from one stretch of the original (within two seconds), so the
        clip is not spliced from different moments."""
        starts = [s.start_s for s in self.streams if s.start_s is not None]
        return not starts or max(starts) - min(starts) <= 2

    @property
    def exact(self) -> bool:
        return (
            self.total > 0
            and self.matched == self.total
            and all(s.timing_ok for s in self.streams)
            and self.aligned
        )

    def range_ms(self) -> tuple[int, int] | None:
        """Where in the original the clip lies: its video stream, else its first stream."""
        ordered = sorted(self.streams, key=lambda s: (s.type != "video", s.clip_stream))
        for s in ordered:
            if s.start_s is not None and s.end_s is not None:
                return int(s.start_s * 1000), int(s.end_s * 1000)
        return None


MAX_ANCHOR_USES = 1000  # a hash this common (silence, a static scene) is no anchor


def _alignment(clip: Sequence[bytes], orig: Sequence[bytes]) -> tuple[int, int]:
    """(shift, matches): the placement of ``clip`` in ``orig`` (clip[i] at orig[shift + i])
    that matches the most packets.

    Candidates come from the clip's rarest hashes in the original, so repeated packets
    (silent audio frames, an unchanging scene) do not make this quadratic.
    """
    if not clip or not orig:
        return 0, 0
    where: dict[bytes, list[int]] = {}
    for i, h in enumerate(orig):
        where.setdefault(h, []).append(i)
    found = [(len(where[h]), i) for i, h in enumerate(clip) if h in where]
    if not found:
        return 0, 0
    found.sort()
    shifts: set[int] = set()
    for uses, i in found[:8]:
        if uses > MAX_ANCHOR_USES and shifts:
            break
        shifts.update(j - i for j in where[clip[i]][:MAX_ANCHOR_USES])
    best = (0, 0)
    for shift in sorted(shifts):
        lo, hi = max(0, -shift), min(len(clip), len(orig) - shift)
        n = sum(1 for i in range(lo, hi) if clip[i] == orig[shift + i])
        if n > best[1]:
            best = (shift, n)
    return best


def _seconds(pts: int | None, tb: str) -> Fraction | None:
    if pts is None:
        return None
    return pts * Fraction(tb)


def _timing_ok(
    cpk: Sequence[Packet], ctb: str, opk: Sequence[Packet], otb: str, shift: int
) -> bool:
    """Whether the clip's timestamps are the original's shifted by one constant (a stream
    copy keeps the timing; a retimed copy, -itsscale or setts, does not)."""
    tol = max(Fraction(ctb), Fraction(otb)) + Fraction(1, 1000)
    base: Fraction | None = None
    for i, p in enumerate(cpk):
        j = shift + i
        if not 0 <= j < len(opk) or p.sha256 != opk[j].sha256:
            continue
        a, b = _seconds(p.pts, ctb), _seconds(opk[j].pts, otb)
        if a is None or b is None:
            continue
        if base is None:
            base = b - a
        elif abs((b - a) - base) > tol:
            return False
    return True


def match_clip(clip: Fingerprint, original: Fingerprint) -> ClipMatch:
    """Match each clip stream to the original stream of the same type it best follows."""
    out = ClipMatch()
    used: set[int] = set()
    for cs in clip.streams:
        cpk = clip.by_stream(cs.index)
        ch = [p.sha256 for p in cpk]
        best: StreamMatch | None = None
        for os_ in original.streams:
            if os_.type != cs.type or os_.index in used:
                continue
            opk = original.by_stream(os_.index)
            shift, n = _alignment(ch, [p.sha256 for p in opk])
            start_s = end_s = None
            if n:
                first = next((p.pts for p in opk if p.pts is not None), 0)
                hits = [
                    opk[shift + i]
                    for i in range(len(cpk))
                    if 0 <= shift + i < len(opk) and opk[shift + i].sha256 == ch[i]
                ]
                times = [p.pts for p in hits if p.pts is not None]
                if times:
                    start_s = _seconds(min(times) - first, os_.time_base)
                    end_s = _seconds(max(times) - first, os_.time_base)
            m = StreamMatch(
                cs.index,
                os_.index,
                n,
                len(cpk),
                start_s,
                end_s,
                cs.type,
                _timing_ok(cpk, cs.time_base, opk, os_.time_base, shift) if n else True,
            )
            if best is None or m.matched > best.matched:
                best = m
        if best is None:
            best = StreamMatch(cs.index, -1, 0, len(cpk), None, None, cs.type)
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
    if not error:
        # A fragmented MP4 or a Matroska cut mid-write demuxes to a quiet early end:
        # only the container's own headers tell (see ingest.damage).
        from ingest.probe import examine_file

        damage = examine_file(path).damage
        if damage:
            error = ("; ".join(damage))[:500]
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
        out["damage"] = fp.error  # what stopped the reading; the sidecar covers what came before
    return out


def iter_hashes(packets: Iterable[Packet]) -> list[bytes]:
    return [p.sha256 for p in packets]
