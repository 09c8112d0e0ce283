"""The container checks of `ingest.damage` on small files built byte by byte (pure)."""

from __future__ import annotations

import struct
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.damage import (
    MAX_DAMAGE,
    MAX_SAFE_INT,
    BytesSource,
    Demuxed,
    Findings,
    examine,
    verdict,
)
from tests.unit.test_purity import FORBIDDEN_IN_PURE, imports

REPO = Path(__file__).resolve().parents[3]

# -- MP4 ----------------------------------------------------------------------------------


def box(kind: bytes, *parts: bytes) -> bytes:
    body = b"".join(parts)
    return struct.pack(">I4s", 8 + len(body), kind) + body


def full(kind: bytes, *parts: bytes, version: int = 0, flags: int = 0) -> bytes:
    return box(kind, struct.pack(">I", version << 24 | flags), *parts)


FTYP = box(b"ftyp", b"isom", struct.pack(">I", 512), b"isomiso2")
SIZES = [100 + i for i in range(10)]  # ten video samples, 1000 ticks each at 10000/s


def trak(sizes: list[int], offset: int) -> bytes:
    stbl = box(
        b"stbl",
        full(b"stsz", struct.pack(">II", 0, len(sizes)), *(struct.pack(">I", s) for s in sizes)),
        full(b"stco", struct.pack(">II", 1 if sizes else 0, offset) if sizes else b"\0" * 4),
        full(b"stsc", struct.pack(">IIII", 1, 1, len(sizes), 1) if sizes else b"\0" * 4),
        full(b"stts", struct.pack(">III", 1, len(sizes), 1000) if sizes else b"\0" * 4),
    )
    return box(
        b"trak",
        full(b"tkhd", struct.pack(">III", 0, 0, 1), b"\0" * 68),
        box(
            b"mdia",
            full(b"mdhd", struct.pack(">IIII", 0, 0, 10000, 1000 * len(sizes)), b"\0" * 4),
            full(b"hdlr", b"\0" * 4, b"vide", b"\0" * 13),
            box(b"minf", stbl),
        ),
    )


def mvhd(duration: int) -> bytes:
    return full(b"mvhd", struct.pack(">IIII", 0, 0, 1000, duration), b"\0" * 80)


def plain_mp4() -> bytes:
    def build(offset: int) -> bytes:
        return FTYP + box(b"moov", mvhd(1000), trak(SIZES, offset))

    head = build(0)
    return build(len(head) + 8) + box(b"mdat", bytes(sum(SIZES)))


def fragmented_mp4(fragments: int = 5, mehd: bool = True, skip: int | None = None) -> bytes:
    """Two samples of a second a fragment; fragment ``skip`` left out (a hole in the
    sequence)."""
    mvex = [full(b"mehd", struct.pack(">I", fragments * 2000))] if mehd else []
    mvex.append(full(b"trex", struct.pack(">IIIII", 1, 1, 0, 0, 0)))
    out = FTYP + box(b"moov", mvhd(0), trak([], 0), box(b"mvex", *mvex))
    for seq in range(1, fragments + 1):
        sizes = [50, 60]

        def moof(data_offset: int, seq: int = seq, sizes: list[int] = sizes) -> bytes:
            trun = full(
                b"trun",
                struct.pack(">Ii", len(sizes), data_offset),
                *(struct.pack(">II", 10000, s) for s in sizes),
                flags=0x301,
            )
            traf = box(b"traf", full(b"tfhd", struct.pack(">I", 1), flags=0x20000), trun)
            return box(b"moof", full(b"mfhd", struct.pack(">I", seq)), traf)

        m = moof(len(moof(0)) + 8)
        if seq != skip:
            out += m + box(b"mdat", bytes(sum(sizes)))
    return out


def test_plain_mp4_whole_and_cut() -> None:
    data = plain_mp4()
    f = examine(BytesSource(data))
    assert f == Findings("mp4", (), 1000, 10, 1000, 10)
    cut = examine(BytesSource(data[: len(data) - 600]))
    assert cut.declared_frames == 10 and cut.found_frames is not None and cut.found_frames < 10
    assert any("'mdat'" in d for d in cut.damage), cut.damage
    assert any("of its 10 samples lie past the end" in d for d in cut.damage), cut.damage


def test_mp4_without_moov_is_damaged() -> None:
    f = examine(BytesSource(FTYP + box(b"mdat", bytes(500))))
    assert any("no 'moov' box" in d for d in f.damage), f


def test_fragmented_mp4_whole() -> None:
    for mehd in (True, False):
        f = examine(BytesSource(fragmented_mp4(mehd=mehd)))
        assert f.structure == "mp4-fragmented" and f.damage == (), f.damage
        assert f.found_frames == 10 and f.found_ms == 10000
        assert f.declared_ms == (10000 if mehd else None)


def test_fragmented_mp4_cut_inside_a_fragment() -> None:
    data = fragmented_mp4()
    f = examine(BytesSource(data[: len(data) - 80]))
    assert any("the last box, 'mdat'" in d for d in f.damage), f.damage
    assert any("fragment 5" in d and "of its 2 samples" in d for d in f.damage), f.damage


def test_fragmented_mp4_cut_between_fragments_only_mehd_tells() -> None:
    whole, short = fragmented_mp4(5), fragmented_mp4(3)
    cut = whole[: len(short)]  # ends exactly after fragment 3
    f = examine(BytesSource(cut))
    assert f.found_ms == 6000 and f.declared_ms == 10000
    assert any("'mehd' box declares" in d for d in f.damage), f.damage
    # The same cut without mehd cannot be told from a shorter recording.
    assert examine(BytesSource(fragmented_mp4(3, mehd=False))).damage == ()


def test_trun_of_default_samples_is_counted_not_walked() -> None:
    """A trun with no per-sample fields may claim four billion samples in 16 bytes."""
    trun = full(b"trun", struct.pack(">I", 0xFFFFFFFF))
    tfhd = full(b"tfhd", struct.pack(">III", 1, 1000, 100), flags=0x20000 | 0x8 | 0x10)
    moof = box(b"moof", full(b"mfhd", struct.pack(">I", 1)), box(b"traf", tfhd, trun))
    data = (
        FTYP + box(b"moov", mvhd(0), trak([], 0), box(b"mvex")) + moof + box(b"mdat", bytes(1000))
    )
    f = examine(BytesSource(data))
    assert any("4294967285 of its 4294967295 samples lie past the end" in d for d in f.damage), f


def test_zeros_after_the_last_box_are_reserved_space() -> None:
    assert examine(BytesSource(plain_mp4() + bytes(5000))).damage == ()
    assert examine(BytesSource(plain_mp4() + bytes(3))).damage == ()
    assert examine(BytesSource(avi() + bytes(100))).damage == ()
    assert examine(BytesSource(plain_mp4() + b"\x01garbage")).damage


def test_fragment_missing_from_the_middle() -> None:
    f = examine(BytesSource(fragmented_mp4(5, mehd=False, skip=3)))
    assert any("jumps from 2 to 4" in d for d in f.damage), f.damage


# -- Matroska --------------------------------------------------------------------------------


def size_vint(n: int | None, length: int = 8) -> bytes:
    if n is None:
        return b"\x01" + b"\xff" * 7  # unknown size
    return bytes([1 << (8 - length) | (n >> (8 * (length - 1)))]) + (
        n & ((1 << (8 * (length - 1))) - 1)
    ).to_bytes(length - 1, "big")


def el(eid: int, *parts: bytes, unknown: bool = False) -> bytes:
    body = b"".join(parts)
    ident = eid.to_bytes((eid.bit_length() + 7) // 8, "big")
    return ident + size_vint(None if unknown else len(body)) + body


def mkv(clusters: int = 5, live: bool = False) -> bytes:
    """One cluster a second, three blocks a cluster (at 0, 333 and 666 ms)."""
    header = el(0x1A45DFA3, el(0x4282, b"matroska"))
    info = el(0x1549A966, el(0x2AD7B1, (1_000_000).to_bytes(3, "big")))
    if not live:
        info = el(
            0x1549A966,
            el(0x2AD7B1, (1_000_000).to_bytes(3, "big")),
            el(0x4489, struct.pack(">d", clusters * 1000.0)),
        )
    body = info
    for c in range(clusters):
        blocks = [el(0xA3, b"\x81", struct.pack(">hB", t, 0x80), bytes(200)) for t in (0, 333, 666)]
        body += el(0x1F43B675, el(0xE7, (c * 1000).to_bytes(2, "big")), *blocks, unknown=live)
    return header + el(0x18538067, body, unknown=live)


def test_matroska_whole_and_cut() -> None:
    data = mkv()
    f = examine(BytesSource(data))
    assert f.structure == "matroska" and f.damage == ()
    assert f.declared_ms == 5000 and f.found_ms == 4666
    cut = examine(BytesSource(data[: len(data) * 3 // 10]))
    assert any("the Segment declares" in d for d in cut.damage), cut.damage
    assert any("the Cluster at byte" in d for d in cut.damage), cut.damage
    assert any("Segment Info declares" in d for d in cut.damage), cut.damage
    assert cut.found_ms is not None and cut.found_ms < 2000


def test_live_matroska_unknown_sizes() -> None:
    data = mkv(live=True)
    f = examine(BytesSource(data))
    assert f.damage == () and f.found_ms == 4666 and f.declared_ms is None
    cut = examine(BytesSource(data[: len(data) - 100]))
    assert any("the block at byte" in d for d in cut.damage), cut.damage


# -- AVI and MPEG-TS ------------------------------------------------------------------------


def chunk(cid: bytes, body: bytes) -> bytes:
    return struct.pack("<4sI", cid, len(body)) + body + b"\0" * (len(body) & 1)


def avi(frames: int = 5) -> bytes:
    avih = chunk(b"avih", struct.pack("<10I", 40000, 0, 0, 0x10, frames, 0, 1, 0, 320, 240))
    strh = chunk(
        b"strh", b"vids" + b"\0" * 16 + struct.pack("<III", 1, 25, 0) + struct.pack("<I", frames)
    )
    hdrl = chunk(b"LIST", b"hdrl" + avih + chunk(b"LIST", b"strl" + strh))
    movi = chunk(b"LIST", b"movi" + b"".join(chunk(b"00dc", bytes(101)) for _ in range(frames)))
    idx1 = chunk(b"idx1", bytes(16 * frames))
    body = b"AVI " + hdrl + movi + idx1
    return b"RIFF" + struct.pack("<I", len(body)) + body


def test_avi_whole_and_cut() -> None:
    data = avi()
    f = examine(BytesSource(data))
    assert f == Findings("avi", (), 200, 5, 200, 5)
    cut = examine(BytesSource(data[: len(data) - 300]))
    text = " | ".join(cut.damage)
    assert "RIFF 'AVI ' chunk at byte 0 declares" in text and "no 'idx1'" in text, text
    assert cut.found_frames is not None and cut.found_frames < 5


def wav(seconds: int = 2, data_size: int | None = None) -> bytes:
    rate = 8000  # bytes a second: 8 kHz, 8-bit mono
    fmt = chunk(b"fmt ", struct.pack("<HHIIHH", 1, 1, rate, rate, 1, 8))
    pcm = bytes(rate * seconds)
    data = struct.pack("<4sI", b"data", len(pcm) if data_size is None else data_size) + pcm
    body = b"WAVE" + fmt + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def test_wav_whole_cut_and_never_finalised() -> None:
    assert examine(BytesSource(wav())) == Findings("wav", (), 2000, None, 2000)
    cut = examine(BytesSource(wav()[:9000]))
    assert cut.found_ms is not None and cut.found_ms < 2000 and len(cut.damage) == 2
    assert "the 'data' chunk declares 16000 bytes" in cut.damage[1]
    live = examine(BytesSource(wav(data_size=0)))
    assert live.damage[-1].startswith("the 'data' chunk's size was never written")


def test_mpegts_only_a_cut_packet_shows() -> None:
    packets = (b"\x47" + bytes(187)) * 10
    assert examine(BytesSource(packets)) == Findings("mpegts")
    f = examine(BytesSource(packets + b"\x47" + bytes(50)))
    assert f.damage == (
        "the file ends 51 bytes into a 188-byte transport packet (the last packet was cut)",
    )
    m2ts = (bytes(4) + b"\x47" + bytes(187)) * 10
    assert examine(BytesSource(m2ts)).structure == "m2ts"
    assert examine(BytesSource(m2ts[:-5])).damage


def test_unknown_files_claim_nothing() -> None:
    assert examine(BytesSource(b"\xff\xd8\xff\xe0 a JPEG")) == Findings("unknown")
    assert examine(BytesSource(b"")) == Findings("unknown")


# -- the verdict ------------------------------------------------------------------------------


def test_verdict_compares_the_demux_pass() -> None:
    whole = verdict(Findings("mp4", (), 8000, 240), Demuxed(8023, 240, 240))
    assert whole == {
        "complete": True,
        "structure": "mp4",
        "declared": {"duration_ms": 8000, "frames": 240},
        "found": {"duration_ms": 8023, "frames": 240},
    }
    short = verdict(Findings("matroska", (), 8000), Demuxed(2000, 60, 240))
    assert short["complete"] is False
    assert short["damage"] == [
        "demuxing ends at 2000 ms of the 8000 ms the container declares (6000 ms missing)",
        "demuxing ends after 60 of the 240 video frames the index lists (180 missing)",
    ]
    # Slack for the last frame and the tracks' ends: no false alarm.
    assert verdict(Findings("mp4", (), 8000), Demuxed(7100, 0, 0))["complete"] is True


def test_damage_module_is_pure() -> None:
    found = {m.split(".")[0] for m in imports(REPO / "ingest" / "damage.py")}
    assert not found & FORBIDDEN_IN_PURE, found


# -- never an exception ---------------------------------------------------------------------

VALID = [
    plain_mp4(),
    fragmented_mp4(),
    mkv(),
    mkv(live=True),
    avi(),
    wav(1),
    (b"\x47" + bytes(187)) * 4,
]


def assert_well_formed(f: Findings) -> None:
    assert isinstance(f, Findings)
    assert len(f.damage) <= MAX_DAMAGE and all(
        isinstance(d, str) and len(d) <= 300 for d in f.damage
    )
    for v in (f.declared_ms, f.declared_frames, f.found_ms, f.found_frames):
        assert v is None or (isinstance(v, int) and 0 <= v <= MAX_SAFE_INT)
    out = verdict(f, Demuxed(None, None, None))
    assert out["complete"] is (not f.damage)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_random_bytes_never_raise(data: bytes) -> None:
    assert_well_formed(examine(BytesSource(data)))


@settings(max_examples=500, deadline=None)
@given(
    st.sampled_from(VALID),
    st.integers(min_value=0, max_value=4000),
    st.lists(st.tuples(st.integers(min_value=0, max_value=4000), st.integers(0, 255)), max_size=6),
)
def test_cut_and_corrupted_files_never_raise(
    data: bytes, cut: int, flips: list[tuple[int, int]]
) -> None:
    buf = bytearray(data[: min(cut, len(data))] if cut else data)
    for at, value in flips:
        if buf:
            buf[at % len(buf)] = value
    assert_well_formed(examine(BytesSource(bytes(buf))))


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(
        [b"\x1a\x45\xdf\xa3", b"RIFF\0\0\0\0AVI ", b"RIFF\0\0\0\0WAVE", b"\0\0\0\x08ftyp", b"\x47"]
    ),
    st.binary(max_size=600),
)
def test_known_magic_then_garbage_never_raises(magic: bytes, rest: bytes) -> None:
    assert_well_formed(examine(BytesSource(magic + rest)))


def test_every_cut_of_a_valid_file_is_damage_or_a_shorter_file() -> None:
    """Each prefix of a fragmented MP4 and a Matroska file either reports damage or is
    itself a clean shorter file (cut between boxes/clusters with nothing declared)."""
    for data in (fragmented_mp4(3, mehd=True), mkv(3)):
        for n in range(16, len(data)):  # (too short to tell the format: "unknown")
            f = examine(BytesSource(data[:n]))
            assert_well_formed(f)
            assert f.damage, (n, f)  # both declare their length: every cut shows
