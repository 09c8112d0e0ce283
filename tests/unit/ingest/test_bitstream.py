"""ingest.bitstream: one form for H.264/H.265 and AAC whatever the container (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest.bitstream import (
    AAC,
    ADTS,
    ANNEXB,
    H264,
    HEVC,
    RAW,
    STORED,
    BitstreamError,
    adts_header_size,
    canonical,
    extradata_params,
    split_annexb,
    split_lengths,
    split_nals,
    stream_form,
)

# H.264 NAL units (first byte: forbidden 0, nal_ref_idc, type). None ends in a zero byte:
# a NAL unit ends with its RBSP stop bit.
SPS = b"\x67\x42\xc0\x1e\xda\x02\x80\xbf\xe5\x84"
PPS = b"\x68\xce\x3c\x80"
AUD = b"\x09\xf0"
SEI = b"\x06\x05\x01\xab\x80"
IDR = b"\x65\x88\x84\x00\x33\xff\x10"
SLICE = b"\x41\x9a\x02\x04"

# H.265: a two-byte header, type = (first byte >> 1) & 0x3F.
VPS5 = b"\x40\x01\x0c\x01\xff"
SPS5 = b"\x42\x01\x01\x01\x60"
PPS5 = b"\x44\x01\xc1\x72"
AUD5 = b"\x46\x01\x50"
SEI5 = b"\x4e\x01\x05\x02\x11"  # prefix SEI (39)
IDR5 = b"\x26\x01\xaf\x1d\x80"  # IDR_W_RADL (19)


def annexb(*nals: bytes, long: bool = True) -> bytes:
    code = b"\x00\x00\x00\x01" if long else b"\x00\x00\x01"
    return b"".join(code + n for n in nals)


def lengths(*nals: bytes, size: int = 4) -> bytes:
    return b"".join(len(n).to_bytes(size, "big") + n for n in nals)


def avcc(sps: list[bytes], pps: list[bytes], size: int = 4) -> bytes:
    out = bytes([1, 0x42, 0xC0, 0x1E, 0xFC | (size - 1), 0xE0 | len(sps)])
    out += b"".join(len(s).to_bytes(2, "big") + s for s in sps)
    out += bytes([len(pps)]) + b"".join(len(p).to_bytes(2, "big") + p for p in pps)
    return out


def hvcc(arrays: list[tuple[int, list[bytes]]], size: int = 4) -> bytes:
    head = bytearray(23)
    head[0] = 1
    head[21] = 0xFC | (size - 1)
    head[22] = len(arrays)
    out = bytes(head)
    for t, nals in arrays:
        out += bytes([0x80 | t]) + len(nals).to_bytes(2, "big")
        out += b"".join(len(n).to_bytes(2, "big") + n for n in nals)
    return out


def adts(raw: bytes, crc: bool = False) -> bytes:
    """One ADTS frame around ``raw`` (AAC LC, 44.1 kHz, stereo)."""
    n = len(raw) + (9 if crc else 7)
    head = bytes(
        [
            0xFF,
            0xF0 if crc else 0xF1,
            0x50,
            0x80 | (n >> 11),
            (n >> 3) & 0xFF,
            ((n & 7) << 5) | 0x1F,
            0xFC,
        ]
    )
    return head + (b"\x12\x34" if crc else b"") + raw


# -- splitting ----------------------------------------------------------------------------


def test_annexb_split_with_three_and_four_byte_start_codes_and_trailing_zeros() -> None:
    data = b"\x00\x00\x00\x01" + SPS + b"\x00\x00\x01" + PPS + b"\x00\x00" + annexb(IDR)
    assert split_annexb(data + b"\x00\x00\x00") == [SPS, PPS, IDR]
    assert split_annexb(annexb(AUD, IDR, long=False)) == [AUD, IDR]
    assert split_annexb(b"no start code") == []


@pytest.mark.parametrize("size", [1, 2, 4])
def test_length_prefixed_split(size: int) -> None:
    assert split_lengths(lengths(SEI, IDR, size=size), size) == [SEI, IDR]
    assert split_nals(f"avcc{size}", lengths(SEI, IDR, size=size)) == [SEI, IDR]


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (lengths(IDR)[:-1], "overruns"),
        (lengths(IDR) + b"\x00\x00", "cut short"),
        (b"\x00\x00\x00\x00" + IDR, "overruns"),  # a zero length
    ],
)
def test_a_broken_length_prefix_is_refused(data: bytes, why: str) -> None:
    with pytest.raises(BitstreamError, match=why):
        split_lengths(data, 4)


def test_start_codes_in_a_length_prefixed_stream_are_read_as_annexb() -> None:
    """Some recorders write Annex B packets into MP4: they parse as what they are."""
    assert split_nals("avcc4", annexb(SPS, IDR, long=False)) == [SPS, IDR]


# -- configuration records ---------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 2, 4])
def test_stream_form_from_the_configuration_record(size: int) -> None:
    assert stream_form(H264, avcc([SPS], [PPS], size)) == f"avcc{size}"
    assert stream_form(HEVC, hvcc([(32, [VPS5])], size)) == f"avcc{size}"


def test_stream_form_without_a_record() -> None:
    assert stream_form(H264, None) == stream_form(H264, b"") == ANNEXB
    assert stream_form(H264, annexb(SPS, PPS)) == ANNEXB  # MPEG-TS or raw extradata
    assert stream_form(AAC, b"\x12\x10") == RAW  # AudioSpecificConfig: MP4, Matroska
    assert stream_form(AAC, None) == ADTS  # MPEG-TS
    assert stream_form("mpeg4", b"\x00\x00\x01\xb0") == STORED
    assert stream_form("pcm_s16le", None) == STORED


def test_avcc_parameter_sets() -> None:
    assert extradata_params(H264, avcc([SPS], [PPS])) == [SPS, PPS]
    assert extradata_params(H264, avcc([SPS, SPS[:-1] + b"\x85"], [])) == [
        SPS,
        SPS[:-1] + b"\x85",
    ]
    assert extradata_params(H264, annexb(SPS, PPS, SEI)) == [SPS, PPS]
    assert extradata_params(H264, None) == []


def test_hvcc_parameter_sets_leave_its_sei_aside() -> None:
    record = hvcc([(32, [VPS5]), (33, [SPS5]), (34, [PPS5]), (39, [SEI5])])
    assert extradata_params(HEVC, record) == [VPS5, SPS5, PPS5]


@pytest.mark.parametrize(
    ("codec", "record"),
    [
        (H264, avcc([SPS], [PPS])[:8]),
        (H264, b"\x01\x42\xc0"),
        (HEVC, hvcc([(33, [SPS5])])[:26]),
        (HEVC, b"\x01" * 10),
    ],
)
def test_a_cut_configuration_record_is_refused(codec: str, record: bytes) -> None:
    with pytest.raises(BitstreamError):
        extradata_params(codec, record)


# -- the canonical form ------------------------------------------------------------------


def test_h264_keyframe_is_one_form_in_every_container() -> None:
    ts = canonical(H264, ANNEXB, annexb(AUD, SPS, PPS, SEI, IDR, long=False))
    mp4 = canonical(H264, "avcc4", lengths(SEI, IDR))
    mkv = canonical(H264, "avcc2", lengths(IDR, size=2))
    assert ts.payload == mp4.payload == mkv.payload == lengths(IDR)
    assert ts.params == (SPS, PPS) and mp4.params == mkv.params == ()
    assert (ts.set_aside, mp4.set_aside, mkv.set_aside) == (4, 1, 0)
    assert ts.parsed and mp4.parsed and mkv.parsed


def test_h264_slices_of_a_picture_keep_their_order() -> None:
    two = canonical(H264, ANNEXB, annexb(AUD, SLICE, SLICE[:-1] + b"\x06"))
    assert two.payload == lengths(SLICE, SLICE[:-1] + b"\x06") and two.set_aside == 1
    swapped = canonical(H264, ANNEXB, annexb(SLICE[:-1] + b"\x06", SLICE))
    assert swapped.payload != two.payload


def test_hevc_keyframe_is_one_form_in_every_container() -> None:
    ts = canonical(HEVC, ANNEXB, annexb(AUD5, VPS5, SPS5, PPS5, SEI5, IDR5))
    mp4 = canonical(HEVC, "avcc4", lengths(IDR5))
    assert ts.payload == mp4.payload == lengths(IDR5)
    assert ts.params == (VPS5, SPS5, PPS5) and ts.set_aside == 5


@pytest.mark.parametrize("crc", [False, True])
def test_adts_headers_of_seven_and_nine_bytes_are_removed(crc: bool) -> None:
    raw = bytes(range(40))
    frame = adts(raw, crc)
    assert adts_header_size(frame) == (9 if crc else 7)
    got = canonical(AAC, ADTS, frame)
    assert got.payload == raw and got.set_aside == 1
    assert canonical(AAC, RAW, raw).payload == raw


def test_what_is_not_one_adts_frame_is_hashed_as_stored() -> None:
    raw = bytes(range(40))
    assert adts_header_size(adts(raw)[:-1]) == 0  # the length field disagrees
    assert adts_header_size(adts(raw) + adts(raw)) == 0  # two frames in one packet
    assert adts_header_size(b"\xff\xf1\x50") == 0
    assert canonical(AAC, ADTS, raw).payload == raw


def test_a_malformed_packet_is_hashed_as_stored() -> None:
    bad = lengths(IDR)[:-2]  # a length that overruns, and no start code
    got = canonical(H264, "avcc4", bad)
    assert got.payload == bad and not got.parsed and got.set_aside == 0


def test_other_codecs_are_hashed_as_stored() -> None:
    data = annexb(SPS, IDR)
    assert canonical("mpeg4", STORED, data).payload == data
    assert canonical(H264, STORED, data).payload == data


def emulation_prevented(nal: bytes) -> bytes:
    while b"\x00\x00" in nal:
        nal = nal.replace(b"\x00\x00", b"\x00\x03")
    return nal


@given(
    st.lists(st.binary(min_size=1, max_size=30).map(lambda b: b"\x65" + b + b"\x80"), max_size=6)
)
def test_annexb_and_length_prefixed_packets_agree(nals: list[bytes]) -> None:
    """Any run of coded slices: the same payload from start codes and from lengths.
    (0x80 ends each unit as the RBSP stop bit does; start-code emulation is prevented
    in real streams, so the units here hold no 00 00 0x.)"""
    nals = [emulation_prevented(n) for n in nals]
    a = canonical(H264, ANNEXB, annexb(AUD, *nals))
    b = canonical(H264, "avcc4", lengths(*nals))
    assert a.payload == b.payload == lengths(*nals)


def _adts(payload: bytes, aot: int = 2, index: int = 4, channels: int = 2) -> bytes:
    n = len(payload) + 7
    head = bytes(
        [
            0xFF,
            0xF1,
            ((aot - 1) << 6) | (index << 2) | (channels >> 2),
            ((channels & 3) << 6) | (n >> 11),
            (n >> 3) & 0xFF,
            ((n & 7) << 5) | 0x1F,
            0xFC,
        ]
    )
    return head + payload


def test_aac_configuration_is_the_same_from_both_framings() -> None:
    from ingest.bitstream import asc_config

    # 44.1 kHz stereo AAC LC: AudioSpecificConfig 0x1210, and the same in an ADTS header.
    frame = _adts(b"\x21\x00\x49")
    c = canonical(AAC, "adts", frame)
    assert c.payload == b"\x21\x00\x49" and c.params == (asc_config(b"\x12\x10"),)
    assert extradata_params(AAC, b"\x12\x10") == [asc_config(b"\x12\x10")]
    # 48 kHz (index 3) is another configuration: a relabelled clip is not the original.
    assert canonical(AAC, "adts", _adts(b"\x21\x00\x49", index=3)).params != c.params
    assert asc_config(b"\x11\x90") != asc_config(b"\x12\x10")
    # Explicit SBR (HE-AAC, object type 5): the core type and rate, as ADTS carries them.
    he = bytes(
        [(5 << 3) | (6 >> 1), ((6 & 1) << 7) | (2 << 3) | (3 >> 1), ((3 & 1) << 7) | (2 << 2)]
    )
    assert asc_config(he) == canonical(AAC, "adts", _adts(b"\x00", 2, 6, 2)).params[0]
    assert asc_config(b"\x12").startswith(b"ASC ")  # cut short: kept whole


def test_three_byte_lengths_and_padding_and_packets_without_slices() -> None:
    from ingest.bitstream import FORMS

    assert "avcc3" in FORMS
    nal = IDR
    three = len(nal).to_bytes(3, "big") + nal
    assert (
        canonical(H264, "avcc3", three).payload == canonical(H264, ANNEXB, b"\0\0\1" + nal).payload
    )
    padded = (len(nal) + 2).to_bytes(4, "big") + nal + b"\0\0"
    assert (
        canonical(H264, "avcc4", padded).payload
        == canonical(H264, ANNEXB, b"\0\0\0\1" + nal + b"\0\0").payload
    )
    # SEI alone is hashed by its content, not as an empty packet; AUD alone is empty.
    sei_a, sei_b = b"\x06\x05\x01\xaa\x80", b"\x06\x05\x01\xbb\x80"
    a = canonical(H264, ANNEXB, b"\0\0\1\x09\xf0\0\0\1" + sei_a)
    b = canonical(H264, ANNEXB, b"\0\0\1" + sei_b)
    assert a.payload and a.payload != b.payload and a.set_aside == 1
    assert not canonical(H264, ANNEXB, b"\x12\x34").parsed  # no start code at all
