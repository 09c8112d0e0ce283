"""Damage in a recording's container: what its headers declare against what the file holds.

A recorder whose battery dies mid-write leaves a file whose container still describes
the whole recording, or a part of it, while the data stops early. FFmpeg's demuxers
mostly stop quietly at the end of what is there, so "it demuxed" does not mean "it is
all there". This module reads the container's own bookkeeping, headers only, and
compares it with the file's size and layout:

- MP4/MOV (ISO BMFF): every top-level box must end inside the file; the sample tables
  of ``moov`` (``stsz``/``stco``/``stsc``/``stts``) must place every sample inside it;
  for fragmented files, every ``trun`` sample must lie inside it, ``mfhd`` sequence
  numbers must not skip, and the duration in ``mehd`` (or a ``sidx`` index) must be
  covered by the fragments.
- Matroska/WebM: the Segment and every top-level element (Clusters above all) must end
  inside the file, the SeekHead and Cues must not point past its end, and the clusters
  must reach the Duration in the Segment Info.
- AVI: the RIFF chunk and ``LIST movi`` must end inside the file, the ``idx1`` index the
  header promises must be there, and ``movi`` must hold the frames the header declares.
- WAV (audio recorders): the RIFF and ``data`` sizes must be written and fit the file.
- MPEG-TS (and 192-byte M2TS): the format declares no length at all, so only a final
  packet cut part-way is detectable; a stream cut at a packet boundary looks complete.

What cannot be told from the file is not claimed: a fragmented MP4 without ``mehd`` or
``sidx`` cut exactly between two fragments, or a Matroska file written with unknown
sizes and no Duration cut between two clusters, look like shorter recordings. Zeros
after the last box or chunk are taken as space a recorder reserved, not as damage.
Other formats (FLV, MPEG-PS, raw elementary streams) get structure ``unknown``: only
the demux pass of the probe speaks for them.

Pure: every byte comes through a `Source` (an offset and a length in, bytes out), never
more than one box or element header at a time except for the small index boxes
(``moov``, ``moof``, Cues, SeekHead, Info, capped in size); sample data is never read.
Any input, however broken, gives `Findings`, never an exception.
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

MAX_INDEX = 64 << 20  # largest moov/Cues read into memory; a bigger one is not checked
MAX_STEPS = 2_000_000  # headers visited per file: a pathological file stops here
MAX_DAMAGE = 8  # findings kept (entries stay small)
MAX_SAFE_INT = (1 << 53) - 1  # what a ledger entry can hold


class Source(Protocol):
    """Random access to the bytes of one file."""

    @property
    def size(self) -> int: ...

    def read(self, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes from ``offset``; fewer at the end of the file."""
        ...


@dataclass(frozen=True)
class BytesSource:
    """A `Source` over bytes in memory (tests, small files)."""

    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)

    def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or length <= 0:
            return b""
        return bytes(self.data[offset : offset + length])


@dataclass(frozen=True)
class Findings:
    """What the container declares, what the file holds, and what does not add up.

    Durations in milliseconds, frames of the first video track; None where the
    container does not say (``declared_*``) or the structure was not walked
    (``found_*``). ``damage`` is empty for a file whose bookkeeping adds up."""

    structure: str  # mp4, mp4-fragmented, matroska, webm, avi, mpegts, m2ts, unknown
    damage: tuple[str, ...] = ()
    declared_ms: int | None = None
    declared_frames: int | None = None
    found_ms: int | None = None
    found_frames: int | None = None


class _Stop(Exception):
    """The walk cannot go on (budget spent); what was found so far stands."""


class _Bad(Exception):
    """Headers that contradict themselves (a box overrunning its parent and the like)."""


class _Walk:
    """The mutable state of one examination: findings so far and the step budget."""

    def __init__(self, src: Source) -> None:
        self.src = src
        self.n = max(0, int(src.size))
        self.damage: list[str] = []
        self.steps = 0

    def read(self, offset: int, length: int) -> bytes:
        self.step()
        if offset < 0 or length <= 0 or offset >= self.n:
            return b""
        return self.src.read(offset, min(length, self.n - offset))

    def step(self) -> None:
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise _Stop()

    def add(self, message: str) -> None:
        if len(self.damage) < MAX_DAMAGE and message not in self.damage:
            self.damage.append(message[:300])


def short(declared_ms: int, found_ms: int) -> bool:
    """Whether ``found_ms`` falls short of ``declared_ms`` by more than the slack between
    tracks and the last frame's duration (a second, or 2% of a long recording)."""
    return declared_ms - found_ms > max(1000, declared_ms // 50)


def _safe(v: int | None) -> int | None:
    return v if v is not None and 0 <= v <= MAX_SAFE_INT else None


def examine(src: Source) -> Findings:
    """The container's bookkeeping against the file; never raises on any input."""
    w = _Walk(src)
    try:
        head = w.read(0, 16)
    except Exception as e:  # the Source itself failed (an I/O error in the shell)
        return Findings("unknown", (f"the file could not be read: {type(e).__name__}: {e}",))
    kind = sniff(head, w)
    parser = {
        "mp4": _mp4,
        "matroska": _matroska,
        "avi": _avi,
        "wav": _wav,
        "mpegts": _ts,
    }.get(kind)
    if parser is None:
        return Findings("unknown")
    result: dict[str, int | str | None] = {"structure": kind}
    try:
        parser(w, result)
    except _Stop:
        pass  # a file with millions of headers: what was walked stands
    except (_Bad, ValueError, IndexError, struct.error, OverflowError, ZeroDivisionError) as e:
        w.add(f"the {kind} headers do not parse: {e}")
    except Exception as e:  # a Source failing part-way: say so rather than guess
        w.add(f"the file could not be read to the end of its headers: {type(e).__name__}: {e}")
    return Findings(
        str(result.get("structure") or kind),
        tuple(w.damage),
        _safe(_int(result.get("declared_ms"))),
        _safe(_int(result.get("declared_frames"))),
        _safe(_int(result.get("found_ms"))),
        _safe(_int(result.get("found_frames"))),
    )


def _int(v: int | str | None) -> int | None:
    return v if isinstance(v, int) else None


MP4_TOP = {b"ftyp", b"styp", b"moov", b"mdat", b"free", b"skip", b"wide", b"moof", b"sidx"}


def sniff(head: bytes, w: _Walk | None = None) -> str:
    """The container family from the first bytes: mp4, matroska, avi, mpegts or ''."""
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "matroska"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    if head[4:8] in MP4_TOP or head[4:8] == b"pnot":
        return "mp4"
    if head[:1] == b"\x47" or head[4:5] == b"\x47":
        if w is None:
            return "mpegts"
        for size, first in ((188, 0), (192, 4)):
            probes = [first + k * size for k in range(3) if first + k * size < w.n]
            if probes and all(w.read(p, 1) == b"\x47" for p in probes):
                return "mpegts"
    return ""


# -- MP4 / MOV (ISO BMFF) -------------------------------------------------------------------


@dataclass(frozen=True)
class _Box:
    kind: bytes
    pos: int
    head: int
    size: int

    @property
    def body(self) -> int:
        return self.pos + self.head

    @property
    def end(self) -> int:
        return self.pos + self.size

    @property
    def name(self) -> str:
        return _fourcc(self.kind)


def _fourcc(kind: bytes) -> str:
    return kind.decode("latin-1").encode("unicode_escape").decode("ascii")


def _padding(w: _Walk, pos: int) -> bool:
    """Whether the file goes on with zeros from ``pos`` (its first 4 KiB, at least):
    some recorders reserve space ahead. Whether the recording is whole is then for its
    index to tell."""
    tail = w.read(pos, 4096)
    return bool(tail) and not tail.strip(b"\0")


def _printable(kind: bytes) -> bool:
    return len(kind) == 4 and all(0x20 <= b <= 0x7E or b == 0xA9 for b in kind)


def _children(buf: bytes, start: int, end: int, parent: str) -> Iterator[_Box]:
    """The boxes inside ``buf[start:end]``; raises _Bad when one overruns its parent."""
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", buf, pos)
        head = 8
        if size == 1:
            if pos + 16 > end:
                raise _Bad(f"a box header in '{parent}' is cut off")
            size = struct.unpack_from(">Q", buf, pos + 8)[0]
            head = 16
        elif size == 0:
            size = end - pos
        if size < head or pos + size > end:
            raise _Bad(f"box '{_fourcc(kind)}' overruns its parent '{parent}'")
        yield _Box(kind, pos, head, size)
        pos += size


def _child(buf: bytes, box: _Box, *path: bytes) -> _Box | None:
    """The first box along ``path`` under ``box`` (offsets in ``buf``)."""
    cur: _Box | None = box
    for kind in path:
        if cur is None:
            return None
        cur = next((b for b in _children(buf, cur.body, cur.end, cur.name) if b.kind == kind), None)
    return cur


def _top_boxes(w: _Walk) -> list[_Box]:
    """Top-level boxes, the last one possibly running past the end (a cut file)."""
    boxes: list[_Box] = []
    pos = 0
    while pos < w.n:
        h = w.read(pos, 16)
        if not h.strip(b"\0") and _padding(w, pos):
            break  # zeros after the last box: space the recorder reserved, not a box
        if len(h) < 8:
            w.add(f"the file ends inside a box header at byte {pos} ({w.n - pos} bytes left)")
            break
        size, kind = struct.unpack_from(">I4s", h)
        head = 8
        if size == 1:
            if len(h) < 16:
                w.add(f"the file ends inside a box header at byte {pos}")
                break
            size = struct.unpack_from(">Q", h, 8)[0]
            head = 16
        elif size == 0:
            size = w.n - pos  # "to the end of the file": a writer that never came back
        if not _printable(kind):
            w.add(
                f"bytes {pos} to {w.n} are not an MP4 box (zeros or garbage where the "
                "next box should start)"
            )
            break
        if size < head:
            w.add(f"box '{_fourcc(kind)}' at byte {pos} declares an impossible size {size}")
            break
        box = _Box(kind, pos, head, size)
        boxes.append(box)
        if box.end > w.n:
            w.add(
                f"the last box, '{box.name}' at byte {pos}, declares {size} bytes; the file "
                f"ends after {w.n - pos} of them ({box.end - w.n} bytes missing)"
            )
            break
        pos = box.end
    return boxes


@dataclass
class _Track:
    id: int = 0
    handler: str = ""
    timescale: int = 0
    sample_size: int = 0  # constant size, or 0 for per-sample sizes
    count: int = 0
    # Sample tables as machine arrays, not tuples of ints: a 12-hour recording has
    # millions of samples, and a Python int costs 32 bytes where these cost 4 or 8.
    sizes: Sequence[int] = ()
    offsets: Sequence[int] = ()
    stsc: tuple[tuple[int, int], ...] = ()  # (first chunk, samples per chunk)
    stts: tuple[tuple[int, int], ...] = ()  # (sample count, delta)
    trex_duration: int = 0
    trex_size: int = 0


def _full(buf: bytes, box: _Box) -> tuple[int, int]:
    """Version and the offset after the version/flags word of a full box."""
    return buf[box.body], box.body + 4


def _be_array(code: str, buf: bytes, at: int, count: int) -> array[int]:
    """``count`` big-endian unsigned integers from ``buf`` at ``at``, as an array."""
    a = array(code)
    a.frombytes(buf[at : at + a.itemsize * count])
    if sys.byteorder == "little":
        a.byteswap()
    return a


def _u32s(buf: bytes, at: int, count: int, end: int, what: str) -> array[int]:
    if count < 0 or at + 4 * count > end:
        raise _Bad(f"'{what}' lists more entries than it holds")
    return _be_array("I", buf, at, count)


def _track(buf: bytes, trak: _Box) -> _Track:
    t = _Track()
    tkhd = _child(buf, trak, b"tkhd")
    if tkhd is not None:
        v, at = _full(buf, tkhd)
        t.id = struct.unpack_from(">I", buf, at + (16 if v == 1 else 8))[0]
    mdhd = _child(buf, trak, b"mdia", b"mdhd")
    if mdhd is not None:
        v, at = _full(buf, mdhd)
        t.timescale = struct.unpack_from(">I", buf, at + (16 if v == 1 else 8))[0]
    hdlr = _child(buf, trak, b"mdia", b"hdlr")
    if hdlr is not None:
        t.handler = _fourcc(buf[hdlr.body + 8 : hdlr.body + 12])
    stbl = _child(buf, trak, b"mdia", b"minf", b"stbl")
    if stbl is None:
        return t
    for b in _children(buf, stbl.body, stbl.end, "stbl"):
        at = b.body + 4
        if b.kind == b"stsz":
            t.sample_size, t.count = struct.unpack_from(">II", buf, at)
            if t.sample_size == 0:
                t.sizes = _u32s(buf, at + 8, t.count, b.end, "stsz")
        elif b.kind == b"stz2":
            bits = buf[at + 3]
            t.count = struct.unpack_from(">I", buf, at + 4)[0]
            t.sizes = _compact_sizes(buf, at + 8, t.count, bits, b.end)
        elif b.kind == b"stco":
            count = struct.unpack_from(">I", buf, at)[0]
            t.offsets = _u32s(buf, at + 4, count, b.end, "stco")
        elif b.kind == b"co64":
            count = struct.unpack_from(">I", buf, at)[0]
            if at + 4 + 8 * count > b.end:
                raise _Bad("'co64' lists more entries than it holds")
            t.offsets = _be_array("Q", buf, at + 4, count)
        elif b.kind == b"stsc":
            count = struct.unpack_from(">I", buf, at)[0]
            raw = _u32s(buf, at + 4, 3 * count, b.end, "stsc")
            t.stsc = tuple((raw[i], raw[i + 1]) for i in range(0, len(raw), 3))
        elif b.kind == b"stts":
            count = struct.unpack_from(">I", buf, at)[0]
            raw = _u32s(buf, at + 4, 2 * count, b.end, "stts")
            t.stts = tuple((raw[i], raw[i + 1]) for i in range(0, len(raw), 2))
    return t


def _compact_sizes(buf: bytes, at: int, count: int, bits: int, end: int) -> Sequence[int]:
    if bits == 16:
        if at + 2 * count > end:
            raise _Bad("'stz2' lists more entries than it holds")
        return _be_array("H", buf, at, count)
    if bits == 8:
        if at + count > end:
            raise _Bad("'stz2' lists more entries than it holds")
        return array("B", buf[at : at + count])
    if bits == 4:
        if at + (count + 1) // 2 > end:
            raise _Bad("'stz2' lists more entries than it holds")
        out = array("B")
        for i in range(count):
            byte = buf[at + i // 2]
            out.append(byte >> 4 if i % 2 == 0 else byte & 15)
        return out
    raise _Bad(f"'stz2' has an impossible field size {bits}")


def _present_samples(w: _Walk, t: _Track) -> int:
    """How many of a track's samples (from the first, in order) lie inside the file."""
    n = w.n
    if not t.count or not t.offsets:
        return 0
    w.steps += min(t.count, len(t.sizes)) // 2  # a long table costs its share of the budget
    runs = list(t.stsc) or [(1, t.count)]
    present = 0
    sample = 0
    for r, (first, per) in enumerate(runs):
        last = runs[r + 1][0] - 1 if r + 1 < len(runs) else len(t.offsets)
        for chunk in range(max(first, 1), min(last, len(t.offsets)) + 1):
            if sample >= t.count:
                return present
            w.step()
            off = t.offsets[chunk - 1]
            k = min(per, t.count - sample)
            if t.sample_size:
                inside = max(0, min(k, (n - off) // t.sample_size)) if off <= n else 0
                present += inside
                if inside < k:
                    return present
            else:
                for s in range(sample, sample + k):
                    off += t.sizes[s]
                    if off > n:
                        return present
                    present += 1
            sample += k
    return present


def _duration_of(stts: tuple[tuple[int, int], ...], samples: int) -> int:
    """Media time of the first ``samples`` samples."""
    total = 0
    for count, delta in stts:
        take = min(count, samples)
        total += take * delta
        samples -= take
        if samples <= 0:
            break
    return total


def _ms(ticks: int, timescale: int) -> int | None:
    return ticks * 1000 // timescale if timescale > 0 else None


def _mp4(w: _Walk, out: dict[str, int | str | None]) -> None:
    boxes = _top_boxes(w)
    kinds = {b.kind for b in boxes}
    complete = [b for b in boxes if b.end <= w.n]
    moov_box = next((b for b in complete if b.kind == b"moov"), None)
    moofs = [b for b in boxes if b.kind == b"moof"]
    if moov_box is None:
        if b"meta" in kinds and b"mdat" in kinds:
            out["structure"] = "heif"  # a still image: no movie to be complete
            return
        if b"moov" not in kinds:
            w.add("there is no 'moov' box: the recording's index was never written")
        return
    if moov_box.size > MAX_INDEX:
        return  # too large to read whole; the demux pass still checks what it can
    buf = w.read(moov_box.pos, moov_box.size)
    moov = _Box(moov_box.kind, 0, moov_box.head, moov_box.size)
    timescale, movie_ms = 0, None
    mvhd = _child(buf, moov, b"mvhd")
    if mvhd is not None:
        v, at = _full(buf, mvhd)
        if v == 1:
            timescale, dur = struct.unpack_from(">IQ", buf, at + 16)
            unknown = dur == (1 << 64) - 1
        else:
            timescale, dur = struct.unpack_from(">II", buf, at + 8)
            unknown = dur == 0xFFFFFFFF
        movie_ms = None if unknown or not dur else _ms(dur, timescale)
    tracks = [
        _track(buf, b) for b in _children(buf, moov.body, moov.end, "moov") if b.kind == b"trak"
    ]
    by_id = {t.id: t for t in tracks}
    video = next((t for t in tracks if t.handler == "vide"), None)
    mvex = _child(buf, moov, b"mvex")
    if mvex is None and not moofs:
        _plain(w, out, tracks, video, movie_ms)
        return
    out["structure"] = "mp4-fragmented"
    declared = None
    if mvex is not None:
        for b in _children(buf, mvex.body, mvex.end, "mvex"):
            if b.kind == b"mehd":
                v, at = _full(buf, b)
                dur = struct.unpack_from(">Q" if v == 1 else ">I", buf, at)[0]
                declared = _ms(dur, timescale) if dur else None
            elif b.kind == b"trex":
                tid, _sdi, d, s = struct.unpack_from(">IIII", buf, b.body + 4)
                if tid in by_id:
                    by_id[tid].trex_duration, by_id[tid].trex_size = d, s
    # The samples in moov itself (a fragmented file without empty_moov) count too.
    in_file = {id(t): _present_samples(w, t) for t in tracks}
    found_ticks = {t.id: _duration_of(t.stts, in_file[id(t)]) for t in tracks}
    found_frames = in_file[id(video)] if video else 0
    for t in tracks:
        if t.count and in_file[id(t)] < t.count:
            w.add(f"track {t.id} ({t.handler}): samples listed in 'moov' lie past the end")
    _sidx(w, boxes)
    prev_seq: int | None = None
    for box in moofs:
        if box.end > w.n:
            break  # cut inside the moof: already said, its samples are all missing
        if box.size > MAX_INDEX:
            continue
        seq, per_track = _fragment(w, box, by_id)
        if seq is not None:
            if prev_seq is not None and seq > prev_seq + 1:
                gap = seq - prev_seq - 1
                w.add(
                    f"the fragment sequence jumps from {prev_seq} to {seq}: "
                    f"{gap} fragment{'s' if gap > 1 else ''} missing before byte {box.pos}"
                )
            elif prev_seq is not None and seq <= prev_seq:
                w.add(f"fragment {seq} at byte {box.pos} comes after fragment {prev_seq}")
            prev_seq = seq
        for tid, (count, present, ticks) in per_track.items():
            found_ticks[tid] = found_ticks.get(tid, 0) + ticks
            if video is not None and tid == video.id:
                found_frames += present
            if present < count:
                w.add(
                    f"fragment {seq} (moof at byte {box.pos}), track {tid}: {count - present} "
                    f"of its {count} samples lie past the end of the file"
                )
    found = [
        ms
        for tid, ticks in found_ticks.items()
        if (ms := _ms(ticks, by_id[tid].timescale if tid in by_id else 0)) is not None
    ]
    found_ms = max(found) if found else None
    out.update(
        declared_ms=declared, found_ms=found_ms, found_frames=found_frames if video else None
    )
    if declared is not None and found_ms is not None and short(declared, found_ms):
        w.add(
            f"the fragments hold {found_ms} ms of the {declared} ms its 'mehd' box declares "
            f"({declared - found_ms} ms missing)"
        )
    if not moofs and not any(t.count for t in tracks):
        w.add("the file has no fragments: the recording holds no samples")


def _plain(
    w: _Walk,
    out: dict[str, int | str | None],
    tracks: list[_Track],
    video: _Track | None,
    movie_ms: int | None,
) -> None:
    found: list[int] = []
    in_file: dict[int, int] = {}
    for t in tracks:
        present = _present_samples(w, t)
        in_file[id(t)] = present
        ms = _ms(_duration_of(t.stts, present), t.timescale)
        if ms is not None:
            found.append(ms)
        if present < t.count:
            w.add(
                f"track {t.id} ({t.handler}): {t.count - present} of its {t.count} samples lie "
                f"past the end of the file (the data stops at byte {w.n})"
            )
    out.update(
        declared_ms=movie_ms,
        declared_frames=video.count if video else None,
        found_ms=max(found) if found else None,
        found_frames=in_file[id(video)] if video else None,
    )


def _sidx(w: _Walk, boxes: list[_Box]) -> None:
    """Every top-level segment index must reference bytes inside the file. (Its durations
    are not taken as the recording's: ffmpeg's DASH mode writes one per fragment.)"""
    for box in boxes:
        if box.kind != b"sidx" or box.end > w.n or box.size > MAX_INDEX:
            continue
        buf = w.read(box.pos, box.size)
        v = buf[box.head]
        at = box.head + 12  # version/flags, reference_ID, timescale
        first = struct.unpack_from(">I" if v == 0 else ">Q", buf, at + (4 if v == 0 else 8))[0]
        at += 8 if v == 0 else 16
        count = struct.unpack_from(">2xH", buf, at)[0]
        at += 4
        if at + 12 * count > box.size:
            raise _Bad("'sidx' lists more references than it holds")
        pos = box.end + first
        missing = 0
        for i in range(count):
            pos += struct.unpack_from(">I", buf, at + 12 * i)[0] & 0x7FFFFFFF
            missing += pos > w.n
        if missing:
            w.add(
                f"the 'sidx' index at byte {box.pos} lists {count} fragments ending at byte "
                f"{pos}; {missing} of them lie past the end of the file ({w.n} bytes)"
            )


def _fragment(
    w: _Walk, moof: _Box, tracks: dict[int, _Track]
) -> tuple[int | None, dict[int, tuple[int, int, int]]]:
    """A movie fragment: its sequence number, and per track (samples, samples inside
    the file, their duration in the track's timescale)."""
    buf = w.read(moof.pos, moof.size)
    box = _Box(moof.kind, 0, moof.head, moof.size)
    seq: int | None = None
    out: dict[int, tuple[int, int, int]] = {}
    data_end = moof.pos  # where the previous traf's data ended
    for b in _children(buf, box.body, box.end, "moof"):
        w.step()
        if b.kind == b"mfhd":
            seq = struct.unpack_from(">I", buf, b.body + 4)[0]
            continue
        if b.kind != b"traf":
            continue
        tfhd = _child(buf, b, b"tfhd")
        if tfhd is None:
            raise _Bad("a 'traf' has no 'tfhd'")
        flags = struct.unpack_from(">I", buf, tfhd.body)[0] & 0xFFFFFF
        at = tfhd.body + 4
        tid = struct.unpack_from(">I", buf, at)[0]
        at += 4
        base = moof.pos if (flags & 0x20000 or not out) else data_end
        if flags & 0x1:
            base = struct.unpack_from(">Q", buf, at)[0]
            at += 8
        if flags & 0x2:
            at += 4
        t = tracks.get(tid, _Track(id=tid))
        d_dur, d_size = t.trex_duration, t.trex_size
        if flags & 0x8:
            d_dur = struct.unpack_from(">I", buf, at)[0]
            at += 4
        if flags & 0x10:
            d_size = struct.unpack_from(">I", buf, at)[0]
        count, present, ticks = out.get(tid, (0, 0, 0))
        pos = base
        for r in _children(buf, b.body, b.end, "traf"):
            if r.kind != b"trun":
                continue
            w.step()
            rflags = struct.unpack_from(">I", buf, r.body)[0] & 0xFFFFFF
            n_samples = struct.unpack_from(">I", buf, r.body + 4)[0]
            at = r.body + 8
            if rflags & 0x1:
                pos = base + struct.unpack_from(">i", buf, at)[0]
                at += 4
            if rflags & 0x4:
                at += 4
            fields = [bit for bit in (0x100, 0x200, 0x400, 0x800) if rflags & bit]
            stride = 4 * len(fields)
            if not stride:
                # Every sample takes the defaults: no table to walk (and none to bound
                # the count by), so count them arithmetically.
                if pos > w.n:
                    inside = 0
                elif d_size:
                    inside = min(n_samples, (w.n - pos) // d_size)
                else:
                    inside = n_samples
                count += n_samples
                present += inside
                ticks += inside * d_dur
                pos += n_samples * d_size
                continue
            if at + stride * n_samples > r.end:
                raise _Bad("a 'trun' lists more samples than it holds")
            w.steps += n_samples // 2  # a long run costs its share of the budget
            w.step()
            for i in range(n_samples):
                e = at + stride * i
                dur = struct.unpack_from(">I", buf, e)[0] if rflags & 0x100 else d_dur
                e += 4 if rflags & 0x100 else 0
                size = struct.unpack_from(">I", buf, e)[0] if rflags & 0x200 else d_size
                pos += size
                count += 1
                if pos <= w.n:
                    present += 1
                    ticks += dur
        out[tid] = (count, present, ticks)
        data_end = pos
    return seq, out


# -- Matroska / WebM (EBML) ----------------------------------------------------------------

SEGMENT = 0x18538067
CLUSTER = 0x1F43B675
CUES = 0x1C53BB6B
SEEKHEAD = 0x114D9B74
INFO = 0x1549A966
TOP_IDS = {
    SEEKHEAD: "SeekHead",
    INFO: "Info",
    0x1654AE6B: "Tracks",
    CUES: "Cues",
    CLUSTER: "Cluster",
    0x1254C367: "Tags",
    0x1043A770: "Chapters",
    0x1941A469: "Attachments",
}
CLUSTER_CHILDREN = {0xE7, 0xA3, 0xA0, 0xA7, 0xAB, 0xEC, 0xBF, 0x5854, 0xAF}


def _vint(data: bytes, at: int, keep_marker: bool) -> tuple[int, int, bool]:
    """An EBML variable-length integer: (value, length, all value bits set)."""
    if at >= len(data):
        raise _Bad("an element header is cut off")
    first = data[at]
    if first == 0:
        raise _Bad("an element header has an invalid length marker")
    length = 9 - first.bit_length()
    if at + length > len(data):
        raise _Bad("an element header is cut off")
    value = first if keep_marker else first & (0xFF >> length)
    for b in data[at + 1 : at + length]:
        value = (value << 8) | b
    unknown = not keep_marker and value == (1 << (7 * length)) - 1
    return value, length, unknown


@dataclass(frozen=True)
class _El:
    id: int
    pos: int
    head: int
    size: int | None  # None: unknown (live-written)

    @property
    def body(self) -> int:
        return self.pos + self.head


def _element(w: _Walk, pos: int) -> _El | None:
    """The element header at ``pos``; None when the file ends inside it."""
    h = w.read(pos, 12)
    try:
        eid, ilen, _ = _vint(h, 0, True)
        size, slen, unknown = _vint(h, ilen, False)
    except _Bad:
        if len(h) < 12 and pos + len(h) >= w.n:
            return None
        raise _Bad(f"bytes at {pos} are not an EBML element") from None
    return _El(eid, pos, ilen + slen, None if unknown else size)


def _elements(buf: bytes, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(id, body start, body end) of the children in ``buf[start:end]``."""
    pos = start
    while pos < end:
        eid, ilen, _ = _vint(buf, pos, True)
        size, slen, unknown = _vint(buf, pos + ilen, False)
        body = pos + ilen + slen
        if unknown or body + size > end:
            raise _Bad(f"element 0x{eid:X} overruns its parent")
        yield eid, body, body + size
        pos = body + size


def _uint(buf: bytes, start: int, end: int) -> int:
    return int.from_bytes(buf[start:end], "big") if end - start <= 8 else 0


def _matroska(w: _Walk, out: dict[str, int | str | None]) -> None:
    ebml = _element(w, 0)
    if ebml is None or ebml.size is None:
        w.add("the file ends inside its EBML header")
        return
    head = w.read(ebml.body, min(ebml.size, 4096))
    for eid, s, e in _elements(head, 0, len(head)):
        if eid == 0x4282 and head[s:e].rstrip(b"\0") == b"webm":
            out["structure"] = "webm"
    pos = ebml.body + ebml.size
    seg = None
    while pos < w.n:
        el = _element(w, pos)
        if el is None:
            break
        if el.id == SEGMENT:
            seg = el
            break
        if el.size is None:
            break
        pos = el.body + el.size
    if seg is None:
        w.add("there is no Segment: the file holds no recording")
        return
    start = seg.body
    if seg.size is not None and start + seg.size > w.n:
        w.add(
            f"the Segment declares {seg.size} bytes; the file holds {w.n - start} of them "
            f"({start + seg.size - w.n} bytes missing)"
        )
    end = w.n if seg.size is None else min(w.n, start + seg.size)
    scale = 1_000_000  # ns per timestamp unit
    declared_ticks: float | None = None
    cue_positions: list[tuple[int, int]] = []  # (time, cluster position)
    seeks: list[tuple[int, int]] = []  # (element id, position)
    last_time: int | None = None  # latest block start inside the file (timestamp units)
    clusters = 0
    pos = start
    while pos < end:
        el = _element(w, pos)
        if el is None:
            w.add(f"the file ends inside an element header at byte {pos}")
            break
        name = TOP_IDS.get(el.id, f"element 0x{el.id:X}")
        if el.id == CLUSTER:
            clusters += 1
            stop, t = _cluster(w, el, end, last_time is None)
            if t is not None:
                last_time = t if last_time is None else max(last_time, t)
            if stop is None:
                break  # cut inside it: already said
            pos = stop
            continue
        if el.size is None:
            w.add(f"the {name} at byte {pos} has no size (only Clusters may)")
            break
        if el.body + el.size > w.n:
            w.add(
                f"the {name} at byte {pos} declares {el.size} bytes; the file ends after "
                f"{w.n - el.body} of them"
            )
            break
        if el.id in (INFO, SEEKHEAD, CUES) and el.size <= MAX_INDEX // 8:
            buf = w.read(el.body, el.size)
            if el.id == INFO:
                for eid, s, e in _elements(buf, 0, len(buf)):
                    if eid == 0x2AD7B1:
                        scale = _uint(buf, s, e) or scale
                    elif eid == 0x4489 and e - s in (4, 8):
                        declared_ticks = struct.unpack_from(">f" if e - s == 4 else ">d", buf, s)[0]
            elif el.id == SEEKHEAD:
                seeks += _seeks(buf)
            else:
                cue_positions += _cues(buf)
        pos = el.body + el.size
    for eid, at in seeks:
        if start + at >= w.n:
            w.add(
                f"the SeekHead places the {TOP_IDS.get(eid, f'element 0x{eid:X}')} at byte "
                f"{start + at}, past the end of the file ({w.n} bytes)"
            )
    lost = [t for t, at in cue_positions if start + at >= w.n]
    if lost:
        w.add(
            f"the Cues list {len(lost)} clusters past the end of the file "
            f"(from {min(lost) * scale // 1_000_000} ms on)"
        )
    declared = None
    # (NaN and infinities fail the range test.)
    if declared_ticks is not None and 0 <= declared_ticks * scale / 1e6 <= MAX_SAFE_INT:
        declared = int(declared_ticks * scale / 1e6)
    found = last_time * scale // 1_000_000 if last_time is not None else None
    out.update(declared_ms=declared, found_ms=found)
    if declared is not None and found is not None and short(declared, found):
        w.add(
            f"the clusters reach {found} ms of the {declared} ms the Segment Info declares "
            f"({declared - found} ms missing)"
        )
    if clusters == 0:
        w.add("the Segment holds no Cluster: the recording holds no frames")


def _cluster(w: _Walk, el: _El, end: int, first: bool) -> tuple[int | None, int | None]:
    """Walk a Cluster's children: (where the next top-level element starts or None when
    the file ends inside the cluster, the latest block start inside the file)."""
    limit = end if el.size is None else min(end, el.body + el.size)
    cut = el.size is not None and el.body + el.size > w.n
    if cut:
        w.add(
            f"the Cluster at byte {el.pos} declares {el.size} bytes; the file ends after "
            f"{w.n - el.body} of them"
        )
    base = 0
    latest: int | None = None
    pos = el.body
    while pos < limit:
        child = _element(w, pos)
        if child is None:
            w.add(f"the file ends inside an element header at byte {pos}")
            return None, latest
        if el.size is None and child.id not in CLUSTER_CHILDREN:
            return pos, latest  # an unknown-size cluster ends where the next element starts
        if child.size is None:
            raise _Bad(f"element 0x{child.id:X} at byte {pos} has no size")
        if child.body + child.size > w.n:
            if not cut:
                w.add(
                    f"the block at byte {pos} declares {child.size} bytes; the file ends "
                    f"after {w.n - child.body} of them"
                )
            return None, latest
        if child.id == 0xE7:
            base = _uint(w.read(child.body, child.size), 0, child.size)
        elif child.id in (0xA3, 0xA0):
            t = _block_time(w, child)
            if t is not None:
                latest = base + t if latest is None else max(latest, base + t)
        pos = child.body + child.size
    if cut or (el.size is None and limit >= w.n and pos > w.n):
        return None, latest
    return pos, latest


def _block_time(w: _Walk, el: _El) -> int | None:
    """The relative timestamp of a SimpleBlock, or of the Block in a BlockGroup."""
    if el.size is None:
        return None
    if el.id == 0xA0:
        buf = w.read(el.body, min(el.size, 64))
        pos = 0
        while pos < len(buf):
            eid, ilen, _ = _vint(buf, pos, True)
            size, slen, _ = _vint(buf, pos + ilen, False)
            if eid == 0xA1:
                return _block_head(buf, pos + ilen + slen)
            pos += ilen + slen + size
        return None
    return _block_head(w.read(el.body, 12), 0)


def _block_head(buf: bytes, at: int) -> int | None:
    _track, tlen, _ = _vint(buf, at, False)
    if at + tlen + 2 > len(buf):
        return None
    return int(struct.unpack_from(">h", buf, at + tlen)[0])


def _seeks(buf: bytes) -> list[tuple[int, int]]:
    out = []
    for eid, s, e in _elements(buf, 0, len(buf)):
        if eid != 0x4DBB:
            continue
        target, at = None, None
        for cid, cs, ce in _elements(buf, s, e):
            if cid == 0x53AB:
                target = _uint(buf, cs, ce)
            elif cid == 0x53AC:
                at = _uint(buf, cs, ce)
        if target is not None and at is not None:
            out.append((target, at))
    return out


def _cues(buf: bytes) -> list[tuple[int, int]]:
    out = []
    for eid, s, e in _elements(buf, 0, len(buf)):
        if eid != 0xBB:
            continue
        time = 0
        for cid, cs, ce in _elements(buf, s, e):
            if cid == 0xB3:
                time = _uint(buf, cs, ce)
            elif cid == 0xB7:
                for pid, ps, pe in _elements(buf, cs, ce):
                    if pid == 0xF1:
                        out.append((time, _uint(buf, ps, pe)))
    return out


# -- AVI (RIFF) ------------------------------------------------------------------------------


def _avi(w: _Walk, out: dict[str, int | str | None]) -> None:
    pos = 0
    usec_per_frame = 0
    total_frames = 0
    grand_frames = 0
    has_index_flag = False
    idx1 = False
    indx = False
    video_stream: int | None = None
    video_rate: tuple[int, int] = (0, 0)
    found_frames = 0
    first = True
    while pos + 12 <= w.n:
        h = w.read(pos, 12)
        riff, size, form = struct.unpack_from("<4sI4s", h)
        if riff != b"RIFF" and not first and _padding(w, pos):
            break  # zeros after the last chunk: reserved space
        if riff != b"RIFF":
            if first:
                w.add("the file does not start with a RIFF chunk")
            else:
                w.add(f"bytes from {pos} on are not a RIFF chunk")
            break
        end = pos + 8 + size
        if size < 4:
            w.add(f"the RIFF '{_fourcc(form)}' chunk at byte {pos} declares an impossible size")
            break
        if end > w.n:
            w.add(
                f"the RIFF '{_fourcc(form)}' chunk at byte {pos} declares {size + 8} bytes; the "
                f"file holds {w.n - pos} of them ({end - w.n} bytes missing)"
            )
        at = pos + 12
        while at + 8 <= min(end, w.n):
            cid, csize = struct.unpack_from("<4sI", w.read(at, 8))
            cend = at + 8 + csize
            if not _printable(cid):
                w.add(f"bytes from {at} on are not an AVI chunk")
                break
            if cend > w.n:
                w.add(
                    f"the '{_chunk_name(w, at, cid)}' chunk at byte {at} declares {csize} "
                    f"bytes; the file ends after {w.n - at - 8} of them"
                )
            if cid == b"LIST":
                ltype = w.read(at + 8, 4)
                if ltype == b"hdrl" and csize <= MAX_INDEX and cend <= w.n:
                    hdr = _parse_hdrl(w.read(at + 12, csize - 4))
                    usec_per_frame, total_frames, flags = hdr[0], hdr[1], hdr[2]
                    has_index_flag = bool(flags & 0x10)
                    grand_frames, video_stream, video_rate, indx = hdr[3], hdr[4], hdr[5], hdr[6]
                elif ltype == b"movi":
                    found_frames += _movi(w, at + 12, min(cend, w.n), video_stream)
            elif cid == b"idx1" and cend <= w.n:
                idx1 = True
            at = cend + (csize & 1)
        if end >= w.n:
            break
        pos = end + (size & 1)
        first = False
    if has_index_flag and not idx1 and not indx:
        w.add("the AVI header says it has an index, but there is no 'idx1' (never finalised)")
    declared = grand_frames or total_frames
    out.update(
        declared_frames=declared or None,
        found_frames=found_frames if video_stream is not None else None,
    )
    rate, scale = video_rate
    if declared and rate and scale:
        out["declared_ms"] = declared * scale * 1000 // rate
        out["found_ms"] = found_frames * scale * 1000 // rate
    elif declared and usec_per_frame:
        out["declared_ms"] = declared * usec_per_frame // 1000
        out["found_ms"] = found_frames * usec_per_frame // 1000
    if declared and video_stream is not None and found_frames < declared:
        w.add(
            f"the AVI header declares {declared} frames; the 'movi' data holds "
            f"{found_frames} ({declared - found_frames} missing)"
        )


def _chunk_name(w: _Walk, at: int, cid: bytes) -> str:
    if cid == b"LIST":
        return "LIST " + _fourcc(w.read(at + 8, 4))
    return _fourcc(cid)


def _parse_hdrl(
    buf: bytes,
) -> tuple[int, int, int, int, int | None, tuple[int, int], bool]:
    """avih and strl/strh of an AVI header list: (µs per frame, total frames, flags,
    OpenDML total frames, video stream number, (rate, scale) of video, has indx)."""
    usec, total, flags, grand = 0, 0, 0, 0
    video: int | None = None
    rate: tuple[int, int] = (0, 0)
    indx = False
    stream = -1
    for cid, s, e in _riff_chunks(buf, 0, len(buf)):
        if cid == b"avih" and e - s >= 20:
            usec, _maxb, _pad, flags, total = struct.unpack_from("<5I", buf, s)
        elif cid == b"LIST" and buf[s : s + 4] == b"strl":
            stream += 1
            for sid, ss, se in _riff_chunks(buf, s + 4, e):
                if sid == b"strh" and se - ss >= 36 and buf[ss : ss + 4] == b"vids":
                    if video is None:
                        video = stream
                        scale, r = struct.unpack_from("<II", buf, ss + 20)
                        rate = (r, scale)
                elif sid == b"indx":
                    indx = True
        elif cid == b"LIST" and buf[s : s + 4] == b"odml":
            for sid, ss, se in _riff_chunks(buf, s + 4, e):
                if sid == b"dmlh" and se - ss >= 4:
                    grand = struct.unpack_from("<I", buf, ss)[0]
    return usec, total, flags, grand, video, rate, indx


def _riff_chunks(buf: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    pos = start
    while pos + 8 <= end:
        cid, size = struct.unpack_from("<4sI", buf, pos)
        body = pos + 8
        if body + size > end:
            raise _Bad(f"AVI chunk '{_fourcc(cid)}' overruns its list")
        yield cid, body, body + size
        pos = body + size + (size & 1)


def _movi(w: _Walk, start: int, end: int, video: int | None) -> int:
    """Video frames whose chunks lie wholly inside the file (``##dc``/``##db``), walking
    chunk headers only; data chunks may sit inside ``LIST rec`` groups."""
    if video is None:
        return 0
    tag = f"{video:02d}".encode()
    frames = 0
    pos = start
    while pos + 8 <= end:
        cid, size = struct.unpack_from("<4sI", w.read(pos, 8))
        if cid == b"LIST":
            pos += 12  # descend into 'rec ' groups
            continue
        if pos + 8 + size > w.n:
            break
        if cid[:2] == tag and cid[2:] in (b"dc", b"db"):
            frames += 1
        pos += 8 + size + (size & 1)
    return frames


def _wav(w: _Walk, out: dict[str, int | str | None]) -> None:
    """A WAV file (audio recorders): the RIFF and ``data`` sizes against the file."""
    size = struct.unpack_from("<I", w.read(4, 4))[0]
    if 8 + size > w.n:
        w.add(
            f"the RIFF 'WAVE' chunk declares {size + 8} bytes; the file holds {w.n} of them "
            f"({size + 8 - w.n} bytes missing)"
        )
    byte_rate = 0
    at = 12
    while at + 8 <= w.n:
        cid, csize = struct.unpack_from("<4sI", w.read(at, 8))
        if cid == b"fmt " and csize >= 12:
            byte_rate = struct.unpack_from("<I", w.read(at + 16, 4).ljust(4, b"\0"))[0]
        elif cid == b"data":
            held = w.n - at - 8
            if csize in (0, 0xFFFFFFFF) and held > 0:
                w.add("the 'data' chunk's size was never written (the recording was not finalised)")
                csize = held
            elif csize > held:
                w.add(f"the 'data' chunk declares {csize} bytes; the file holds {held} of them")
            if byte_rate:
                out.update(
                    declared_ms=csize * 1000 // byte_rate,
                    found_ms=min(csize, held) * 1000 // byte_rate,
                )
            return
        at += 8 + csize + (csize & 1)
    w.add("there is no 'data' chunk: the file holds no audio")


# -- MPEG-TS ----------------------------------------------------------------------------------


def _ts(w: _Walk, out: dict[str, int | str | None]) -> None:
    """MPEG-TS declares no length: only a packet cut part-way is detectable."""
    packet, first = 188, 0
    if w.read(0, 1) != b"\x47":
        packet, first = 192, 4
        out["structure"] = "m2ts"
    tail = w.n % packet  # an M2TS packet is a 4-byte time code and a TS packet
    whole = w.n - tail
    if tail:
        w.add(
            f"the file ends {tail} bytes into a {packet}-byte transport packet "
            "(the last packet was cut)"
        )
    last = whole - packet
    if whole >= packet and w.read(last + first, 1) != b"\x47":
        w.add(f"the last whole packet, at byte {last}, does not start with a sync byte")


# -- the verdict ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Demuxed:
    """What reading every packet of the file gave (FFmpeg's demuxer, in the shell)."""

    ms: int | None  # how far the longest stream reached, from its first packet
    frames: int | None  # packets of the first video stream
    index_frames: int | None  # the frames the demuxer's index lists for that stream


def verdict(f: Findings, d: Demuxed) -> dict[str, object]:
    """The keys a probe summary gains: ``complete``, ``structure``, and when known
    ``declared`` and ``found`` ({duration_ms, frames}); ``damage`` lists what does not
    add up (absent when nothing is wrong). Integers, strings and booleans only."""
    damage = list(f.damage)
    if f.declared_ms is not None and d.ms is not None and short(f.declared_ms, d.ms):
        damage.append(
            f"demuxing ends at {d.ms} ms of the {f.declared_ms} ms the container declares "
            f"({f.declared_ms - d.ms} ms missing)"
        )
    # The index's frame count is believed only when the durations do not show the whole
    # recording: an AVI of variable frame rate counts its length in time-base ticks, not
    # frames, and one with dropped-frame chunks lists frames that carry no data.
    reached = f.declared_ms is not None and d.ms is not None and not short(f.declared_ms, d.ms)
    if not reached and d.index_frames and d.frames is not None and d.frames < d.index_frames:
        damage.append(
            f"demuxing ends after {d.frames} of the {d.index_frames} video frames the index "
            f"lists ({d.index_frames - d.frames} missing)"
        )
    out: dict[str, object] = {"complete": not damage, "structure": f.structure}
    if damage:
        out["damage"] = damage[:MAX_DAMAGE]
    declared = {
        k: v
        for k, v in (("duration_ms", f.declared_ms), ("frames", f.declared_frames))
        if v is not None
    }
    if declared:
        out["declared"] = declared
    found = {
        k: v
        for k, v in (("duration_ms", _safe(d.ms)), ("frames", _safe(d.frames)))
        if v is not None
    }
    if found:
        out["found"] = found
    return out
