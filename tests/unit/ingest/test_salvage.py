"""The mdat scanner of `ingest.salvage` on synthetic boxes: what it keeps, what it
refuses, and that hostile bytes never crash it."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.salvage import Codec, Layout, SalvageError, layout, pps_ids, salvage, scan

SPS = bytes.fromhex("6742c01e95a0a0fd00f88000000300800000190789b175")
PPS = bytes.fromhex("68ce3c80")
CODEC = Codec("h264", 4, (SPS, PPS))


def box(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(body), kind) + body


def nal(header: int, payload: bytes) -> bytes:
    body = bytes([header]) + payload
    return struct.pack(">I", len(body)) + body


# first_mb 0 ('1'), slice_type 7 = I ('0001000'), pps 0 ('1'): 1000 1000 1...
IDR = nal(0x65, bytes([0b10001000, 0b11000000]) + b"\x11" * 40)
# first_mb 0, slice_type 5 = P ('00110'), pps 0: 1 00110 1 ...
P = nal(0x41, bytes([0b10011010, 0]) + b"\x22" * 30)
AUDIO = b"\xde\xad\xbe\xef" * 50  # bytes that are no NAL unit


def test_layout() -> None:
    f = box(b"ftyp", b"isom\x00\x00\x02\x00") + box(b"mdat", b"x" * 100)
    assert layout(f) == Layout(24, 124, False)
    # A declared size past the end (cut short) stops at the end of the file.
    cut = f[:-40]
    assert layout(cut).mdat_end == len(cut)
    assert layout(f + box(b"moov", b"")).has_moov
    with pytest.raises(SalvageError, match="no ftyp"):
        layout(b"hello world, not an mp4 at all")
    with pytest.raises(SalvageError, match="no mdat"):
        layout(box(b"ftyp", b"isom"))


def test_scan_keeps_video_runs_and_skips_audio_between() -> None:
    mdat = AUDIO + IDR + P + AUDIO + P + AUDIO[:37] + P + P
    data = box(b"ftyp", b"isom") + box(b"mdat", mdat)
    lay = layout(data)
    found = list(scan(data, lay, CODEC))
    assert [k for _, _, k in found] == ["picture"] * 5
    assert sum(size for _, size, _ in found) == len(IDR) + 4 * len(P) - 5 * 4


def test_salvage_writes_annex_b(tmp_path: Path) -> None:
    src = tmp_path / "cut.mp4"
    src.write_bytes(box(b"ftyp", b"isom") + box(b"mdat", AUDIO + IDR + P + AUDIO + P))
    res = salvage(src, tmp_path / "out.h264", CODEC)
    out = (tmp_path / "out.h264").read_bytes()
    assert out.startswith(b"\x00\x00\x00\x01" + SPS + b"\x00\x00\x00\x01" + PPS)
    assert res.pictures == 3 and out.count(b"\x00\x00\x00\x01") == 5
    with pytest.raises(SalvageError, match="no in-band parameter sets"):
        salvage(src, tmp_path / "none.h264", None)
    src.write_bytes(src.read_bytes() + box(b"moov", b""))
    with pytest.raises(SalvageError, match="has its index"):
        salvage(src, tmp_path / "x.h264", CODEC)


def test_pps_ids() -> None:
    assert pps_ids("h264", (SPS, PPS)) == {0}


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000), st.sampled_from(["h264", "hevc"]))
def test_hostile_bytes_never_crash_the_scanner(junk: bytes, codec: str) -> None:
    data = box(b"ftyp", b"isom") + box(b"mdat", junk)
    c = Codec(codec, 4, ())
    for off, size, kind in scan(data, layout(data), c):
        assert off >= 0 and off + size <= len(data) and kind


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_layout_of_any_bytes_is_a_layout_or_a_clear_refusal(raw: bytes) -> None:
    for data in (raw, box(b"ftyp", b"isom") + raw):
        try:
            lay = layout(data)
        except SalvageError:
            continue
        assert 0 <= lay.mdat_start <= lay.mdat_end <= len(data)
