"""The custody-frames/v1 sidecar, reading ffmpeg's framehash output, and frame matching."""

from __future__ import annotations

import hashlib
import io
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest.fingerprint import FingerprintError
from ingest.frames import (
    FrameHashes,
    format_frames,
    match_frames,
    parse_frames,
    read_framehash,
    sampled,
    write_frames,
)


def h(i: int) -> bytes:
    return hashlib.sha256(str(i).encode()).digest()


FRAMEHASH = f"""#format: frame checksums
#version: 2
#hash: SHA256
#tb 0: 1/25
#media_type 0: video
#dimensions 0: 320x240
#stream#, dts,        pts, duration,     size, hash
0,          0,          0,        1,   115200, {h(0).hex()}
0,          1,          1,        1,   115200, SHA256={h(1).hex().upper()}
1,          0,          0,     1024,     4096, {h(99).hex()}
0,          2,          2,        1,   115200, {h(2).hex()}
"""


def test_read_framehash_keeps_values_only() -> None:
    fh = read_framehash(FRAMEHASH.splitlines())
    assert fh.time_base == "1/25" and fh.size == "320x240"
    assert fh.frames == ((0, h(0)), (1, h(1)), (2, h(2))), "stream 1 ignored, case folded"


def test_read_framehash_refuses_garbage() -> None:
    with pytest.raises(FingerprintError, match="no time base"):
        read_framehash(["0, 0, 0, 1, 10, " + h(0).hex()])
    with pytest.raises(FingerprintError, match="line 2"):
        read_framehash(["#tb 0: 1/25", "0, 0, 0, 1, 10, nothex"])
    with pytest.raises(FingerprintError, match="not a SHA-256"):
        read_framehash(["#tb 0: 1/25", "0, 0, 0, 1, 10, abcd"])


frames_st = st.lists(
    st.tuples(st.integers(-(2**40), 2**40), st.binary(min_size=32, max_size=32)), max_size=40
)


@given(frames_st)
def test_round_trip(frames: list[tuple[int, bytes]]) -> None:
    fh = FrameHashes("1001/30000", "1920x1080", tuple(frames))
    assert parse_frames(format_frames(fh)) == fh


@given(frames_st.filter(bool), st.data())
def test_any_changed_byte_is_refused_or_changes_the_hashes(
    frames: list[tuple[int, bytes]], data: st.DataObject
) -> None:
    fh = FrameHashes("1/25", "320x240", tuple(frames))
    raw = bytearray(format_frames(fh))
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] = data.draw(st.integers(0, 255).filter(lambda b: b != raw[i]))
    try:
        got = parse_frames(bytes(raw))
    except FingerprintError:
        return
    assert got != fh


def test_non_canonical_text_is_refused() -> None:
    good = format_frames(FrameHashes("1/25", "2x2", ((0, h(0)),)))
    for bad in (
        good.replace(b"F\t0\t", b"F\t+0\t"),
        good.replace(h(0).hex().encode(), h(0).hex().upper().encode()),
        good + b"\n",
        good[:-1],
        good.replace(b"1/25", b"0/25"),
    ):
        with pytest.raises(FingerprintError):
            parse_frames(bad)


def test_match_frames_finds_the_range() -> None:
    orig = FrameHashes("1/25", "2x2", tuple((i, h(i)) for i in range(100)))
    clip = FrameHashes("1/90000", "2x2", tuple((i * 3600, h(i)) for i in range(50, 75)))
    m = match_frames(clip, orig)
    assert m.exact and m.matched == 25
    assert m.start_s == Fraction(2) and m.end_s == Fraction(74, 25)
    altered = FrameHashes("1/25", "2x2", (*clip.frames[:10], (0, h(1000)), *clip.frames[11:]))
    m2 = match_frames(altered, orig)
    assert not m2.exact and m2.matched == 24
    assert match_frames(FrameHashes("1/25", "2x2", ((0, h(-1)),)), orig).matched == 0


def test_sampling_is_by_content() -> None:
    hashes = [h(i) for i in range(2000)]
    picked = sampled(hashes)
    assert 60 < len(picked) < 200, "about one in sixteen"
    assert sampled(hashes[500:700]) == [x for x in picked if x in set(hashes[500:700])]


@given(frames_st)
def test_streamed_sidecar_is_the_same_bytes(frames: list[tuple[int, bytes]]) -> None:
    lines = ["#tb 0: 1/25", "#dimensions 0: 320x240"]
    lines += [f"0, {pts}, {pts}, 1, 10, {d.hex()}" for pts, d in frames]
    out = io.BytesIO()
    s = write_frames(lines, out)
    fh = read_framehash(lines)
    assert out.getvalue() == (format_frames(fh) if frames else b"")
    assert s.sha256 == hashlib.sha256(out.getvalue()).hexdigest() and s.size == len(out.getvalue())
    assert (s.frames, s.time_base, s.picture) == (len(frames), "1/25", "320x240")
    assert list(s.keys) == sampled(fh.hashes)


def test_streamed_sidecar_of_real_output_and_refusals() -> None:
    out = io.BytesIO()
    s = write_frames(FRAMEHASH.splitlines(), out)
    assert parse_frames(out.getvalue()) == read_framehash(FRAMEHASH.splitlines())
    assert s.frames == 3
    with pytest.raises(FingerprintError, match="no time base"):
        write_frames(["0, 0, 0, 1, 10, " + h(0).hex()], io.BytesIO())
    with pytest.raises(FingerprintError, match="line 2"):
        write_frames(["#tb 0: 1/25", "0, 0, 0, 1, 10, nothex"], io.BytesIO())
