"""Per-packet fingerprints: the SHA-256 of every packet, without decoding.

A clip cut from an original by stream copy (``ffmpeg -ss A -t B -c copy``)
carries the original's packets, so the sequence of packet hashes proves where it
came from. The fingerprint of a file is a sidecar object whose SHA-256 goes into a
signed ``fingerprint`` entry. Two formats:

``custody-packets/v1`` hashes each packet as the container stores it: a clip matches
only when it is in the original's kind of container (MP4 to MP4)::

    # custody-packets/v1
    S <stream> <type> <codec> <time_base>          one line per stream
    P <stream> <pts> <dts> <size> <K|-> <sha256>    one line per packet, in file order

``custody-packets/v2`` (new fingerprints) hashes each packet in one form that every
container's stream copy shares (`ingest.bitstream`): H.264/H.265 coded slices without
start codes, length prefixes, delimiters, SEI or parameter sets; AAC without ADTS
headers. A clip in MPEG-TS, Matroska or MOV matches an MP4 original exactly::

    # custody-packets/v2
    S <stream> <type> <codec> <time_base> <form>   form: how the container framed it
    P <stream> <pts> <dts> <size> <K|-> <sha256>    size: of the hashed form
    X <stream> <sha256>                             each distinct parameter set, after
                                                    the packets, sorted

Fields are tab-separated; ``pts``/``dts`` are integers in the stream's time
base, or ``-`` when the container gives none. A file cut short yields the
packets before the damage and ``complete = False``.

The formats, their parser and clip matching are pure; only `write_sidecar` and
`read_packets` (PyAV) touch a file. A sidecar is written and read as a stream, so memory
does not grow with the recording's length. Hash values are compared, never the text of
ffmpeg's framehash output, which differs between FFmpeg versions.
"""

from __future__ import annotations

import bisect
import errno
import hashlib
import io
import re
from binascii import unhexlify
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO, NamedTuple

from ingest import bitstream

FORMAT_V1 = "custody-packets/v1"
FORMAT = "custody-packets/v2"
HEADER_V1 = f"# {FORMAT_V1}\n"
HEADER = f"# {FORMAT}\n"
HEADERS = {1: HEADER_V1, 2: HEADER}
MAX_KEYFRAMES = 100_000  # keyframe hashes an entry's index keeps (a day at one a second)
# Beside the keyframes, a content-chosen sample of every other packet (its hash's first
# byte below this: 1 in 32) is indexed, so a clip with no keyframe of the original (sound
# only, or cut between keyframes) is still found: a 2-second clip has about 4.
SAMPLE_BELOW = 8
MAX_SAMPLED = 200_000


@dataclass(frozen=True)
class StreamInfo:
    index: int
    type: str  # video, audio, data, subtitle
    codec: str
    time_base: str  # "1/12800"
    form: str = bitstream.STORED  # v2: how the container framed the packets


class Packet(NamedTuple):
    """One packet line. A named tuple, not a dataclass: a 12-hour recording has millions,
    and a tuple is made five times faster."""

    stream: int
    pts: int | None
    dts: int | None
    size: int
    key: bool
    sha256: bytes  # 32 bytes


@dataclass(frozen=True)
class ParamSet:
    """A v2 parameter set (SPS, PPS, VPS) of a stream, by its SHA-256."""

    stream: int
    sha256: bytes


@dataclass(frozen=True)
class Fingerprint:
    streams: tuple[StreamInfo, ...]
    packets: tuple[Packet, ...]
    complete: bool = True
    error: str = ""
    version: int = 1
    params: dict[int, frozenset[bytes]] = field(default_factory=dict)
    set_aside: dict[int, int] = field(default_factory=dict)  # v2: units left out, by stream

    def by_stream(self, index: int) -> list[Packet]:
        return [p for p in self.packets if p.stream == index]

    @property
    def format(self) -> str:
        return FORMAT if self.version == 2 else FORMAT_V1


class FingerprintError(ValueError):
    pass


def _opt(v: int | None) -> str:
    return "-" if v is None else str(v)


def stream_line(s: StreamInfo, version: int) -> str:
    tail = f"\t{s.form}" if version == 2 else ""
    return f"S\t{s.index}\t{s.type}\t{s.codec}\t{s.time_base}{tail}\n"


def packet_line(p: Packet) -> str:
    return (
        f"P\t{p.stream}\t{_opt(p.pts)}\t{_opt(p.dts)}\t{p.size}\t{'K' if p.key else '-'}\t"
        f"{p.sha256.hex()}\n"
    )


def param_lines(params: dict[int, frozenset[bytes]]) -> list[str]:
    return [f"X\t{st}\t{h.hex()}\n" for st in sorted(params) for h in sorted(params[st])]


def format_sidecar(fp: Fingerprint) -> bytes:
    lines = [HEADERS[fp.version]]
    lines += [stream_line(s, fp.version) for s in fp.streams]
    lines += [packet_line(p) for p in fp.packets]
    if fp.version == 2:
        lines += param_lines(fp.params)
    return "".join(lines).encode("ascii")


def sidecar_format(head: bytes) -> str:
    """The format a sidecar declares on its first line (FingerprintError if none)."""
    for version, header in HEADERS.items():
        if head.startswith(header.encode()):
            return FORMAT if version == 2 else FORMAT_V1
    raise FingerprintError(f"does not start with {HEADER_V1.strip()!r} or {HEADER.strip()!r}")


def _int_or_none(s: str, what: str, n: int) -> int | None:
    if s == "-":
        return None
    try:
        return int(s)
    except ValueError:
        raise FingerprintError(f"line {n}: {what} {s!r} is not an integer") from None


def _hash(text: str, n: int) -> bytes:
    try:
        h = bytes.fromhex(text)
    except ValueError:
        raise FingerprintError(f"line {n}: hash is not hex") from None
    if len(h) != 32 or h.hex() != text:
        raise FingerprintError(f"line {n}: hash is not 64 lowercase hex digits")
    return h


def _time_base(si: StreamInfo) -> None:
    try:
        tb = Fraction(si.time_base)
    except (ValueError, ZeroDivisionError):
        raise FingerprintError(f"stream {si.index}: time base {si.time_base!r}") from None
    if tb <= 0:
        raise FingerprintError(f"stream {si.index}: time base {si.time_base!r}")


# A packet line exactly as `packet_line` prints it (no "+", leading zeros or "-0"), so
# the common line needs no second formatting to prove it canonical.
_INT = rb"(0|-?[1-9][0-9]*)"
_P_LINE = re.compile(
    rb"P\t(0|[1-9][0-9]*)\t(-|" + _INT[1:-1] + rb")\t(-|" + _INT[1:-1] + rb")\t"
    rb"(0|[1-9][0-9]*)\t([K-])\t([0-9a-f]{64})\n"
)


def iter_sidecar(f: BinaryIO) -> Iterator[StreamInfo | Packet | ParamSet]:
    """The records of a v1 or v2 sidecar, one line at a time (memory does not grow with
    its length); raises FingerprintError naming the first bad line. Each line must be in
    the one canonical form its record prints as."""
    first = f.readline()
    version = 2 if sidecar_format(first) == FORMAT else 1
    if first != HEADERS[version].encode():
        raise FingerprintError("line 1: not a custody-packets header")
    known: set[int] = set()
    stage = 0  # 0 streams, 1 packets, 2 parameter sets
    last_param: tuple[int, bytes] | None = None
    n = 1
    fast = _P_LINE.fullmatch
    for raw in f:
        n += 1
        m = fast(raw)
        if m is not None and stage <= 1:
            stream = int(m[1])
            if stream in known:
                stage = 1
                pts, dts = m[2], m[3]
                yield Packet(
                    stream,
                    None if pts == b"-" else int(pts),
                    None if dts == b"-" else int(dts),
                    int(m[4]),
                    m[5] == b"K",
                    unhexlify(m[6]),
                )
                continue
        if not raw.endswith(b"\n"):
            raise FingerprintError("last line is cut short")
        try:
            line = raw.decode("ascii")
        except UnicodeDecodeError:
            raise FingerprintError(f"line {n}: not ASCII") from None
        fl = line[:-1].split("\t")
        rec: StreamInfo | Packet | ParamSet
        if fl[0] == "S" and len(fl) == (6 if version == 2 else 5) and stage == 0:
            idx = _int_or_none(fl[1], "stream", n)
            if idx is None or idx in known:
                raise FingerprintError(f"line {n}: bad or repeated stream index")
            known.add(idx)
            form = fl[5] if version == 2 else bitstream.STORED
            if form not in bitstream.FORMS:
                raise FingerprintError(f"line {n}: unknown form {form!r}")
            rec = StreamInfo(idx, fl[2], fl[3], fl[4], form)
            _time_base(rec)
            text = stream_line(rec, version)
        elif fl[0] == "P" and len(fl) == 7 and stage <= 1:
            stage = 1
            st = _int_or_none(fl[1], "stream", n)
            size = _int_or_none(fl[4], "size", n)
            if st not in known or size is None or size < 0 or fl[5] not in ("K", "-"):
                raise FingerprintError(f"line {n}: malformed packet line")
            rec = Packet(
                st,
                _int_or_none(fl[2], "pts", n),
                _int_or_none(fl[3], "dts", n),
                size,
                fl[5] == "K",
                _hash(fl[6], n),
            )
            text = packet_line(rec)
        elif fl[0] == "X" and len(fl) == 3 and version == 2:
            stage = 2
            st = _int_or_none(fl[1], "stream", n)
            if st not in known:
                raise FingerprintError(f"line {n}: parameter set of an unknown stream")
            rec = ParamSet(st, _hash(fl[2], n))
            if last_param is not None and (st, rec.sha256) <= last_param:
                raise FingerprintError(f"line {n}: parameter sets out of order or repeated")
            last_param = (st, rec.sha256)
            text = f"X\t{st}\t{rec.sha256.hex()}\n"
        else:
            raise FingerprintError(f"line {n}: not a stream, packet or parameter-set line")
        if text != line:
            # One text per fingerprint: "+1", " 1" and the like are refused.
            raise FingerprintError(f"line {n}: not in canonical {HEADERS[version][2:-1]} form")
        yield rec


def parse_sidecar(data: bytes) -> Fingerprint:
    """A whole sidecar in memory (v1 or v2); raises FingerprintError naming the line."""
    streams: list[StreamInfo] = []
    packets: list[Packet] = []
    params: dict[int, set[bytes]] = {}
    for rec in iter_sidecar(io.BytesIO(data)):
        if isinstance(rec, StreamInfo):
            streams.append(rec)
        elif isinstance(rec, Packet):
            packets.append(rec)
        else:
            params.setdefault(rec.stream, set()).add(rec.sha256)
    version = 2 if data.startswith(HEADER.encode()) else 1
    return Fingerprint(
        tuple(streams),
        tuple(packets),
        version=version,
        params={k: frozenset(v) for k, v in params.items()},
    )


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
    params_ok: bool = True  # v2: the clip's parameter sets are all among the original's
    clip_form: str = bitstream.STORED  # v2: how each side's container framed the stream
    original_form: str = bitstream.STORED
    set_aside: int = 0  # v2: the clip's NAL units or headers left out of its hashes
    offset_s: Fraction | None = None  # original time minus clip time of the matched packets
    tolerance_s: Fraction = Fraction(1, 1000)  # of timing: a tick of either time base + 1 ms


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
    def synced(self) -> bool:
        """All streams keep the original's timing against each other: one time shift for
        all (a stream copy moves every stream alike; sound moved against the picture does
        not)."""
        timed = [s for s in self.streams if s.offset_s is not None and s.matched]
        if len(timed) < 2:
            return True
        offsets = [s.offset_s for s in timed if s.offset_s is not None]
        return max(offsets) - min(offsets) <= max(s.tolerance_s for s in timed)

    @property
    def exact(self) -> bool:
        return (
            self.total > 0
            and self.matched == self.total
            and all(s.timing_ok and s.params_ok for s in self.streams)
            and self.aligned
            and self.synced
        )

    def range_ms(self) -> tuple[int, int] | None:
        """Where in the original the clip lies: its video stream, else its first stream."""
        ordered = sorted(self.streams, key=lambda s: (s.type != "video", s.clip_stream))
        for s in ordered:
            if s.start_s is not None and s.end_s is not None:
                return int(s.start_s * 1000), int(s.end_s * 1000)
        return None


MAX_ANCHOR_USES = 1000  # a hash this common (silence, a static scene) is no anchor
ANCHORS = 8  # the clip's rarest packets whose places in the original give the shifts


def _candidate_shifts(
    clip: Sequence[bytes], uses: Mapping[bytes, int], where: Mapping[bytes, Sequence[int]]
) -> list[int]:
    """The placements worth scoring (clip[i] at orig[shift + i]), from the clip's rarest
    hashes: ``uses`` says how often a hash occurs in the original, ``where`` its first
    places there (at least MAX_ANCHOR_USES of them when it has that many)."""
    found = sorted((uses[h], i) for i, h in enumerate(clip) if uses.get(h))
    shifts: set[int] = set()
    for n, i in found[:ANCHORS]:
        if n > MAX_ANCHOR_USES and shifts:
            break
        shifts.update(j - i for j in where[clip[i]][:MAX_ANCHOR_USES])
    return sorted(shifts)


def _alignment(clip: Sequence[bytes], orig: Sequence[bytes]) -> tuple[int, int]:
    """(shift, matches): the placement of ``clip`` in ``orig`` (clip[i] at orig[shift + i])
    that matches the most packets (the smallest shift of equals).

    Candidates come from the clip's rarest hashes in the original, so repeated packets
    (silent audio frames, an unchanging scene) do not make this quadratic.
    """
    if not clip or not orig:
        return 0, 0
    where: dict[bytes, list[int]] = {}
    for i, h in enumerate(orig):
        where.setdefault(h, []).append(i)
    best = (0, 0)
    for shift in _candidate_shifts(clip, {h: len(v) for h, v in where.items()}, where):
        lo, hi = max(0, -shift), min(len(clip), len(orig) - shift)
        n = sum(1 for i in range(lo, hi) if clip[i] == orig[shift + i])
        if n > best[1]:
            best = (shift, n)
    return best


def _seconds(pts: int | None, tb: str) -> Fraction | None:
    if pts is None:
        return None
    return pts * Fraction(tb)


def _timing(
    cpk: Sequence[Packet], ctb: str, opk: Sequence[Packet], otb: str, shift: int
) -> tuple[bool, Fraction | None]:
    """Whether the clip's timestamps are the original's shifted by one constant (a stream
    copy keeps the timing; a retimed copy, -itsscale or setts, does not), and that shift
    (original time minus clip time of the first timed match)."""
    tol = max(Fraction(ctb), Fraction(otb)) + Fraction(1, 1000)
    base: Fraction | None = None
    low = high = Fraction(0)
    for i, p in enumerate(cpk):
        j = shift + i
        if not 0 <= j < len(opk) or p.sha256 != opk[j].sha256:
            continue
        a, b = _seconds(p.pts, ctb), _seconds(opk[j].pts, otb)
        if a is None or b is None:
            continue
        if base is None:
            base = low = high = b - a
        else:
            low, high = min(low, b - a), max(high, b - a)
    ok = base is None or max(high - base, base - low) <= tol
    return ok, base


def match_clip(clip: Fingerprint, original: Fingerprint) -> ClipMatch:
    """Match each clip stream to the original stream of the same type it best follows.
    Both fingerprints must be of one format (v1 hashes differ from v2's by design)."""
    if clip.version != original.version:
        raise FingerprintError(
            f"the clip's fingerprint is {clip.format} and the original's {original.format}"
        )
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
            timing_ok, offset = (
                _timing(cpk, cs.time_base, opk, os_.time_base, shift) if n else (True, None)
            )
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
                timing_ok,
                clip.params.get(cs.index, frozenset())
                <= original.params.get(os_.index, frozenset()),
                cs.form,
                os_.form,
                clip.set_aside.get(cs.index, 0),
                offset,
                max(Fraction(cs.time_base), Fraction(os_.time_base)) + Fraction(1, 1000),
            )
            if best is None or m.matched > best.matched:
                best = m
        if best is None:
            best = StreamMatch(cs.index, -1, 0, len(cpk), None, None, cs.type)
        elif best.matched:
            used.add(best.original_stream)
        out.streams.append(best)
    return out


TIMED_SHIFTS = 32  # up to this many candidate shifts, pass 2 times them all at once


@dataclass
class _Placement:
    """What one candidate shift of a clip stream found while the original streamed past."""

    matched: int = 0
    first_pts: int | None = None  # of the original's matching packets: where the clip lies
    last_pts: int | None = None
    # Timing, as exact integers (seconds x the product of the two time-base denominators):
    # original time minus clip time of the first timed match, and its range since.
    base: int | None = None
    low: int = 0
    high: int = 0


class _Pair:
    """One clip stream placed against one original stream of the same type.

    Counting a shift's matches is cheap; its time range and timing cost more. With few
    candidate shifts (the usual case: keyframes and sound are unique) pass 2 does both;
    with many (silence, a still scene) pass 2 only counts and a third pass times the
    best shift alone."""

    def __init__(self, cs: StreamInfo, cpk: list[Packet], os_: StreamInfo) -> None:
        self.clip, self.orig, self.cpk = cs, os_, cpk
        self.hashes = [p.sha256 for p in cpk]
        self.pts = [p.pts for p in cpk]
        self.at: dict[bytes, list[int]] = {}  # clip hash -> its places in the clip
        for i, h in enumerate(self.hashes):
            self.at.setdefault(h, []).append(i)
        ct, ot = Fraction(cs.time_base), Fraction(os_.time_base)
        self.scale = ct.denominator * ot.denominator
        self.a = ot.numerator * ct.denominator  # original pts x a - clip pts x b = d x scale
        self.b = ct.numerator * ot.denominator
        self.tol = max(ct, ot) + Fraction(1, 1000)
        self.shifts: list[int] = []
        self.placed: dict[int, _Placement] = {}
        self.timed = True

    def plan(self, shifts: list[int], timed: bool) -> None:
        self.shifts, self.timed = shifts, timed
        self.placed = {s: _Placement() for s in shifts}

    def best(self) -> tuple[int, _Placement]:
        shift, best = 0, _Placement()
        for s in self.shifts:  # ascending: the smallest shift of equals, as _alignment
            if self.placed[s].matched > best.matched:
                shift, best = s, self.placed[s]
        return shift, best

    def see(self, j: int, p: Packet) -> None:
        """Score the original's packet ``p``, the ``j``-th of its stream, against every
        candidate shift whose window holds it."""
        at = self.at.get(p.sha256)
        if not at or not self.shifts:
            return
        lo = bisect.bisect_right(self.shifts, j - len(self.hashes))
        hi = bisect.bisect_right(self.shifts, j)
        if lo == hi:
            return  # no candidate window holds this packet
        if len(at) <= hi - lo:
            hits = [(j - i, i) for i in at if j - i in self.placed]
        else:
            hits = [(s, j - s) for s in self.shifts[lo:hi] if self.hashes[j - s] == p.sha256]
        placed = self.placed
        if not self.timed:
            for s, _ in hits:
                placed[s].matched += 1
            return
        pts = p.pts
        for s, i in hits:
            pl = placed[s]
            pl.matched += 1
            if pts is None:
                continue
            # File order is not presentation order (B-frames): the earliest and the latest.
            pl.first_pts = pts if pl.first_pts is None else min(pl.first_pts, pts)
            pl.last_pts = pts if pl.last_pts is None else max(pl.last_pts, pts)
            cp = self.pts[i]
            if cp is not None:
                d = pts * self.a - cp * self.b
                if pl.base is None:
                    pl.base = pl.low = pl.high = d
                else:
                    pl.low, pl.high = min(pl.low, d), max(pl.high, d)

    def result(self, first: int | None, params: frozenset[bytes], clip: Fingerprint) -> StreamMatch:
        _, best = self.best()
        start_s = end_s = None
        timing_ok = True
        offset: Fraction | None = None
        if best.matched:
            if best.first_pts is not None and best.last_pts is not None:
                zero = first if first is not None else 0
                start_s = _seconds(best.first_pts - zero, self.orig.time_base)
                end_s = _seconds(best.last_pts - zero, self.orig.time_base)
            if best.base is not None:
                spread = max(best.high - best.base, best.base - best.low)
                timing_ok = Fraction(spread, self.scale) <= self.tol
                offset = Fraction(best.base, self.scale)
        return StreamMatch(
            self.clip.index,
            self.orig.index,
            best.matched,
            len(self.cpk),
            start_s,
            end_s,
            self.clip.type,
            timing_ok,
            clip.params.get(self.clip.index, frozenset()) <= params,
            self.clip.form,
            self.orig.form,
            clip.set_aside.get(self.clip.index, 0),
            offset,
            self.tol,
        )


def _score(f: BinaryIO, pairs: Iterable[_Pair], streams: Iterable[int]) -> None:
    """One pass over the original's packets for the pairs' candidate shifts."""
    by_orig: dict[int, list[_Pair]] = {}
    for pair in pairs:
        if pair.shifts:
            by_orig.setdefault(pair.orig.index, []).append(pair)
    if not by_orig:
        return
    f.seek(0)
    seen = dict.fromkeys(streams, 0)
    for rec in iter_sidecar(f):
        if isinstance(rec, Packet):
            j = seen[rec.stream]
            seen[rec.stream] = j + 1
            for pair in by_orig.get(rec.stream, ()):
                pair.see(j, rec)


def match_clip_file(clip: Fingerprint, f: BinaryIO) -> ClipMatch:
    """`match_clip` against an original's sidecar read from ``f`` (seekable) as a
    stream, keeping only what the clip needs: memory is bounded by the clip, not by the
    length of the recording. Same result as `match_clip` on the parsed sidecar.

    Pass 1 counts how often each of the clip's hashes occurs in each original stream and
    keeps its first MAX_ANCHOR_USES places (the candidate shifts come from the rarest, as
    in `match_clip`); pass 2 scores every candidate shift on the original's packets
    inside that shift's window (a third pass times the best of many)."""
    head = f.readline()
    f.seek(0)
    version = 2 if sidecar_format(head) == FORMAT else 1
    if clip.version != version:
        theirs = FORMAT if version == 2 else FORMAT_V1
        raise FingerprintError(
            f"the clip's fingerprint is {clip.format} and the original's {theirs}"
        )
    by_type: dict[str, set[bytes]] = {}
    for cs in clip.streams:
        by_type.setdefault(cs.type, set()).update(p.sha256 for p in clip.by_stream(cs.index))
    clip_params = frozenset[bytes]().union(*clip.params.values())

    # Pass 1: the original's streams, those of its parameter sets the clip has, anchors.
    streams: list[StreamInfo] = []
    wanted: dict[int, set[bytes]] = {}
    count: dict[int, int] = {}
    first: dict[int, int | None] = {}
    uses: dict[int, dict[bytes, int]] = {}
    where: dict[int, dict[bytes, list[int]]] = {}
    params: dict[int, set[bytes]] = {}
    for rec in iter_sidecar(f):
        if isinstance(rec, Packet):
            st, j = rec.stream, count[rec.stream]
            count[st] = j + 1
            if first[st] is None and rec.pts is not None:
                first[st] = rec.pts
            if rec.sha256 in wanted[st]:
                u = uses[st]
                n = u[rec.sha256] = u.get(rec.sha256, 0) + 1
                if n <= MAX_ANCHOR_USES:
                    where[st].setdefault(rec.sha256, []).append(j)
        elif isinstance(rec, StreamInfo):
            streams.append(rec)
            wanted[rec.index] = by_type.get(rec.type, set())
            count[rec.index], first[rec.index] = 0, None
            uses[rec.index], where[rec.index] = {}, {}
        elif rec.sha256 in clip_params:
            params.setdefault(rec.stream, set()).add(rec.sha256)

    pairs: dict[tuple[int, int], _Pair] = {}
    for cs in clip.streams:
        cpk = clip.by_stream(cs.index)
        for os_ in streams:
            if os_.type == cs.type:
                pair = pairs[cs.index, os_.index] = _Pair(cs, cpk, os_)
                if cpk and count[os_.index]:
                    shifts = _candidate_shifts(pair.hashes, uses[os_.index], where[os_.index])
                    pair.plan(shifts, timed=len(shifts) <= TIMED_SHIFTS)
    del uses, where

    # Pass 2: score the candidate shifts; pass 3: time the best of many.
    _score(f, pairs.values(), count)
    untimed = [p for p in pairs.values() if not p.timed]
    for pair in untimed:
        shift, best = pair.best()
        pair.plan([shift] if best.matched else [], timed=True)
    _score(f, untimed, count)

    # The same choice as match_clip: each clip stream takes the original stream of its
    # type, not yet taken, that it best follows.
    out = ClipMatch()
    used: set[int] = set()
    for cs in clip.streams:
        best_m: StreamMatch | None = None
        for os_ in streams:
            if os_.type != cs.type or os_.index in used:
                continue
            m = pairs[cs.index, os_.index].result(
                first[os_.index], frozenset(params.get(os_.index, ())), clip
            )
            if best_m is None or m.matched > best_m.matched:
                best_m = m
        if best_m is None:
            best_m = StreamMatch(
                cs.index, -1, 0, len(clip.by_stream(cs.index)), None, None, cs.type
            )
        elif best_m.matched:
            used.add(best_m.original_stream)
        out.streams.append(best_m)
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


def index_hashes(fp: Fingerprint, limit: int = 50) -> list[bytes]:
    """What a clip looks its originals up by: its first keyframes (`keyframe_hashes`),
    then its packets in the content-chosen sample the originals' index also keeps."""
    keys = keyframe_hashes(fp, limit)
    chosen = set(keys)
    sample = [p.sha256 for p in fp.packets if p.sha256[0] < SAMPLE_BELOW and p.sha256 not in chosen]
    return keys + list(dict.fromkeys(sample))[:limit]


# -- reading a file (PyAV) ------------------------------------------------------------


def _tb(x: object) -> str:
    f = Fraction(str(x)) if x is not None else Fraction(0)
    return f"{f.numerator}/{f.denominator}"


@dataclass(frozen=True)
class SidecarSummary:
    """What writing a sidecar found: the `fingerprint` entry's fields and the index keys."""

    format: str
    sha256: str  # of the sidecar bytes
    size: int
    packets: int
    per_stream: dict[str, int]
    complete: bool
    error: str
    keyframes: tuple[bytes, ...]  # the index: video keyframes (all packets' without video),
    # then a content-chosen sample of the other packets (`SAMPLE_BELOW`)
    forms: dict[str, str]  # stream -> how the container framed it (v2)
    set_aside: dict[str, int]  # stream -> NAL units or headers left out of the hashes (v2)

    def entry_fields(self) -> dict[str, object]:
        out: dict[str, object] = {
            "format": self.format,
            "sidecar": {"sha256": self.sha256, "size": self.size},
            "packets": self.packets,
            "per_stream": dict(self.per_stream),
            "complete": self.complete,
        }
        if self.format == FORMAT:
            out["forms"] = dict(self.forms)
        if self.error:
            out["damage"] = self.error  # what stopped the reading; the sidecar has what came before
        return out


_DISK_ERRNOS = frozenset(
    {errno.EIO, errno.ENOENT, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.ESTALE, errno.ENXIO}
)


def _disk_error(e: BaseException) -> bool:
    """An error of the disk or the store (the object missing, unreadable, an I/O error),
    which must not be signed as the recording's own damage."""
    return isinstance(e, OSError) and e.errno in _DISK_ERRNOS


@dataclass(frozen=True)
class _End:
    error: str  # "" when the whole file was read
    set_aside: dict[int, int]


def _demux(path: Path, version: int) -> Iterator[tuple[StreamInfo, ...] | Packet | ParamSet | _End]:
    """The streams (one tuple), then packets and new parameter sets as they come, then
    the end: what stopped the reading, if anything, and the units set aside."""
    import av

    try:
        c = av.open(str(path), metadata_errors="ignore")
    except Exception as e:
        if _disk_error(e):
            raise
        raise FingerprintError(f"{type(e).__name__}: {e}") from None
    with c:
        codecs: dict[int, str] = {}
        streams: list[StreamInfo] = []
        for s in c.streams:
            codec = getattr(s.codec_context, "name", None) or "unknown"
            extradata = getattr(s.codec_context, "extradata", None) if version == 2 else None
            form = bitstream.stream_form(codec, extradata) if version == 2 else bitstream.STORED
            codecs[s.index] = codec
            streams.append(StreamInfo(s.index, s.type, codec, _tb(s.time_base), form))
        if not streams:
            raise FingerprintError("no streams")
        yield tuple(streams)
        forms = {si.index: si.form for si in streams}
        seen: set[tuple[int, bytes]] = set()
        aside: dict[int, int] = {}
        if version == 2:
            for s in c.streams:
                try:
                    found = bitstream.extradata_params(codecs[s.index], s.codec_context.extradata)
                except bitstream.BitstreamError:
                    found = []
                for nal in found:
                    ps = ParamSet(s.index, bitstream.param_hash(nal))
                    if (ps.stream, ps.sha256) not in seen:
                        seen.add((ps.stream, ps.sha256))
                        yield ps
        got: dict[int, int] = {}
        error = ""
        try:
            for pk in c.demux():
                if pk.size == 0:
                    continue  # the demuxer's flush packets
                st = pk.stream.index
                got[st] = got.get(st, 0) + 1
                if version == 1 or forms[st] == bitstream.STORED:
                    yield Packet(
                        st,
                        pk.pts,
                        pk.dts,
                        pk.size,
                        bool(pk.is_keyframe),
                        hashlib.sha256(pk).digest(),
                    )
                    continue
                if pk.has_sidedata("new_extradata"):
                    # A second decoder configuration mid-stream (FLV, a second MP4 sample
                    # description): its parameter sets count, and it may change the framing.
                    ex = bytes(pk.get_sidedata("new_extradata"))
                    if codecs[st] in bitstream.NAL_CODECS:
                        forms[st] = bitstream.stream_form(codecs[st], ex)
                    try:
                        found = bitstream.extradata_params(codecs[st], ex)
                    except bitstream.BitstreamError:
                        found = [ex]  # unreadable: a configuration only itself matches
                    for nal in found:
                        ps = ParamSet(st, bitstream.param_hash(nal))
                        if (ps.stream, ps.sha256) not in seen:
                            seen.add((ps.stream, ps.sha256))
                            yield ps
                can = bitstream.canonical(codecs[st], forms[st], bytes(pk))
                if can.set_aside:
                    aside[st] = aside.get(st, 0) + can.set_aside
                for nal in can.params:
                    ps = ParamSet(st, bitstream.param_hash(nal))
                    if (ps.stream, ps.sha256) not in seen:
                        seen.add((ps.stream, ps.sha256))
                        yield ps
                yield Packet(
                    st,
                    pk.pts,
                    pk.dts,
                    len(can.payload),
                    bool(pk.is_keyframe),
                    hashlib.sha256(can.payload).digest(),
                )
        except Exception as e:  # a file cut short: keep what was readable
            if _disk_error(e):
                raise  # the dock's disk, not the recording: tried again later, nothing signed
            error = f"{type(e).__name__}: {e}"[:500]
        if not error:
            # An indexed container (MP4/MOV) whose data was cut off ends quietly: compare
            # with the number of packets its index promises.
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
    yield _End(error, aside)


class HashingLines:
    """ASCII lines written to ``out`` in batches, hashed as written: a sidecar of any
    length in constant memory, its SHA-256 and size known when it ends."""

    BATCH = 4096  # lines

    def __init__(self, out: BinaryIO) -> None:
        self.out, self.sha, self.size = out, hashlib.sha256(), 0
        self._buf: list[str] = []

    def add(self, line: str) -> None:
        self._buf.append(line)
        if len(self._buf) >= self.BATCH:
            self.flush()

    def flush(self) -> None:
        data = "".join(self._buf).encode("ascii")
        self._buf.clear()
        self.sha.update(data)
        self.out.write(data)
        self.size += len(data)


def write_sidecar(path: Path, out: BinaryIO, version: int = 2) -> SidecarSummary:
    """Demux every packet of the media file at ``path`` (no decoding), hash it, and write
    the sidecar to ``out`` as it goes: memory stays flat whatever the recording's length.
    A file ffmpeg cannot open raises FingerprintError; one that breaks part-way gives the
    packets before the damage, incomplete."""
    w = HashingLines(out)
    params: dict[int, set[bytes]] = {}
    per_stream: dict[str, int] = {}
    aside: dict[str, int] = {}
    keys: list[bytes] = []
    sample: dict[bytes, None] = {}
    video: set[int] = set()
    first = -1
    streams: tuple[StreamInfo, ...] = ()
    error = ""
    packets = 0

    w.add(HEADERS[version])
    for rec in _demux(path, version):
        if isinstance(rec, Packet):
            packets += 1
            w.add(packet_line(rec))
            k = str(rec.stream)
            per_stream[k] = per_stream.get(k, 0) + 1
            if (rec.key and rec.stream in video) or (not video and rec.stream == first):
                if len(keys) < MAX_KEYFRAMES:
                    keys.append(rec.sha256)
            elif rec.sha256[0] < SAMPLE_BELOW and len(sample) < MAX_SAMPLED:
                sample[rec.sha256] = None
        elif isinstance(rec, ParamSet):
            params.setdefault(rec.stream, set()).add(rec.sha256)
        elif isinstance(rec, _End):
            error = rec.error
            aside = {str(k): v for k, v in rec.set_aside.items()}
        else:
            streams = rec
            for s in streams:
                w.add(stream_line(s, version))
            video = {s.index for s in streams if s.type == "video"}
            first = streams[0].index
    if version == 2:
        for line in param_lines({k: frozenset(v) for k, v in params.items()}):
            w.add(line)
    w.flush()
    return SidecarSummary(
        format=FORMAT if version == 2 else FORMAT_V1,
        sha256=w.sha.hexdigest(),
        size=w.size,
        packets=packets,
        per_stream=per_stream,
        complete=not error,
        error=error,
        keyframes=tuple(keys) + tuple(sample),
        forms={str(s.index): s.form for s in streams} if version == 2 else {},
        set_aside=aside,
    )


def read_packets(path: Path, version: int = 2) -> Fingerprint:
    """A file's fingerprint in memory (a clip's; originals are written with
    `write_sidecar`). Raises FingerprintError as `write_sidecar` does."""
    buf = io.BytesIO()
    s = write_sidecar(path, buf, version)
    fp = parse_sidecar(buf.getvalue())
    return Fingerprint(
        fp.streams,
        fp.packets,
        complete=s.complete,
        error=s.error,
        version=version,
        params=fp.params,
        set_aside={int(k): v for k, v in s.set_aside.items()},
    )


def summary(fp: Fingerprint, sidecar: bytes) -> dict[str, object]:
    """What a `fingerprint` entry says about its sidecar (integers and strings only)."""
    counts: dict[str, int] = {}
    for p in fp.packets:
        counts[str(p.stream)] = counts.get(str(p.stream), 0) + 1
    out: dict[str, object] = {
        "format": fp.format,
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
