"""One form for the bitstreams containers store differently, so a stream copy hashes alike.

A stream copy (``ffmpeg -c copy``) keeps every coded picture and audio frame, but the
container decides how they are framed:

- H.264 and H.265 in MP4, MOV and Matroska are length-prefixed NAL units (1, 2 or 4
  bytes, said by the ``avcC``/``hvcC`` box) with the parameter sets out of band; in MPEG-TS
  they are Annex B (start codes ``00 00 01``), and the muxer adds access-unit delimiters and
  repeats the parameter sets (and, for H.265, any SEI of the ``hvcC`` box) before every
  keyframe.
- AAC in MP4 and Matroska is the raw access unit; in MPEG-TS each frame carries a 7- or
  9-byte ADTS header.

`custody-packets/v2` hashes what survives all of these: for H.264/H.265 the packet's coded
slices (VCL NAL units) as 4-byte big-endian length + NAL unit bytes, with the parameter
sets collected apart (a clip matches exactly only when its parameter sets are among the
original's); for AAC the raw access unit. Everything else is set aside and counted.

Pure: bytes in, bytes out.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

H264, HEVC, AAC = "h264", "hevc", "aac"
NAL_CODECS = (H264, HEVC)

# Forms, as the S line of a v2 sidecar names them.
ANNEXB, ADTS, RAW, STORED = "annexb", "adts", "raw", "stored"
FORMS = ("avcc1", "avcc2", "avcc3", "avcc4", ANNEXB, ADTS, RAW, STORED)

# NAL unit types. Coded slices are what a picture is made of; parameter sets are how to
# read them; everything else (delimiters, SEI, end of sequence, filler) is framing a muxer
# may add, repeat or drop.
_H264_VCL = frozenset({1, 2, 3, 4, 5, 20, 21})
_H264_PARAMS = frozenset({7, 8, 13, 15})
_HEVC_PARAMS = frozenset({32, 33, 34})
_DELIMITERS = {"h264": frozenset({9, 12}), "hevc": frozenset({35, 38})}  # AUD, filler


def nal_type(codec: str, nal: bytes) -> int:
    return nal[0] & 0x1F if codec == H264 else (nal[0] >> 1) & 0x3F


def is_vcl(codec: str, t: int) -> bool:
    return t in _H264_VCL if codec == H264 else t < 32


def is_param(codec: str, t: int) -> bool:
    return t in (_H264_PARAMS if codec == H264 else _HEVC_PARAMS)


class BitstreamError(ValueError):
    pass


def _annexb(extradata: bytes) -> bool:
    return extradata.startswith(b"\x00\x00\x01") or extradata.startswith(b"\x00\x00\x00\x01")


def stream_form(codec: str, extradata: bytes | None) -> str:
    """How a stream's packets are framed, from the codec and the container's extradata."""
    ex = extradata or b""
    if codec in NAL_CODECS:
        if not ex or _annexb(ex):
            return ANNEXB
        if codec == H264 and len(ex) >= 5 and ex[0] == 1:
            return f"avcc{(ex[4] & 3) + 1}"
        if codec == HEVC and len(ex) >= 22 and ex[0] == 1:
            return f"avcc{(ex[21] & 3) + 1}"
        return ANNEXB
    if codec == AAC:
        # MP4 and Matroska carry the AudioSpecificConfig; MPEG-TS carries none (ADTS).
        return RAW if ex else ADTS
    return STORED


def split_annexb(data: bytes) -> list[bytes]:
    """NAL units between start codes; trailing zero bytes belong to the next start code."""
    out: list[bytes] = []
    i = data.find(b"\x00\x00\x01")
    while i >= 0:
        start = i + 3
        j = data.find(b"\x00\x00\x01", start)
        nal = data[start : j if j >= 0 else len(data)].rstrip(b"\x00")
        if nal:
            out.append(nal)
        i = j
    return out


def split_lengths(data: bytes, size: int) -> list[bytes]:
    out: list[bytes] = []
    i, n = 0, len(data)
    while i < n:
        if i + size > n:
            raise BitstreamError(f"a {size}-byte NAL length is cut short at byte {i}")
        length = int.from_bytes(data[i : i + size], "big")
        i += size
        if length == 0 or i + length > n:
            raise BitstreamError(f"NAL unit of {length} bytes at byte {i} overruns the packet")
        # Zero bytes after a NAL unit's last 1 bit are padding (trailing_zero_8bits), as
        # in Annex B, where they are stripped before the next start code.
        nal = data[i : i + length].rstrip(b"\x00")
        if nal:
            out.append(nal)
        i += length
    return out


def split_nals(form: str, data: bytes) -> list[bytes]:
    """The packet's NAL units. A length-prefixed stream whose packet does not parse as one
    (some recorders write start codes into MP4) is read as Annex B."""
    if form == ANNEXB:
        return split_annexb(data)
    try:
        return split_lengths(data, int(form[4:]))
    except BitstreamError:
        if _annexb(data):
            return split_annexb(data)
        raise


def extradata_params(codec: str, extradata: bytes | None) -> list[bytes]:
    """The parameter-set NAL units carried out of band (``avcC``, ``hvcC`` or Annex B), or
    for AAC the decoder configuration (`aac_config`) of its AudioSpecificConfig."""
    ex = extradata or b""
    if codec == AAC and ex:
        return [asc_config(ex)]
    if codec not in NAL_CODECS or not ex:
        return []
    if _annexb(ex):
        nals = split_annexb(ex)
    elif codec == H264:
        nals = _avcc_nals(ex)
    else:
        nals = _hvcc_nals(ex)
    return [n for n in nals if is_param(codec, nal_type(codec, n))]


def _take(ex: bytes, i: int, count: int) -> tuple[list[bytes], int]:
    out: list[bytes] = []
    for _ in range(count):
        if i + 2 > len(ex):
            raise BitstreamError("configuration record cut short")
        n = int.from_bytes(ex[i : i + 2], "big")
        if i + 2 + n > len(ex):
            raise BitstreamError("configuration record cut short")
        out.append(ex[i + 2 : i + 2 + n])
        i += 2 + n
    return out, i


def _avcc_nals(ex: bytes) -> list[bytes]:
    if len(ex) < 7:
        raise BitstreamError("avcC record too short")
    sps, i = _take(ex, 6, ex[5] & 0x1F)
    if i >= len(ex):
        return sps
    pps, _ = _take(ex, i + 1, ex[i])
    return sps + pps


def _hvcc_nals(ex: bytes) -> list[bytes]:
    if len(ex) < 23:
        raise BitstreamError("hvcC record too short")
    out: list[bytes] = []
    i = 23
    for _ in range(ex[22]):
        if i + 3 > len(ex):
            raise BitstreamError("hvcC record cut short")
        got, i = _take(ex, i + 3, int.from_bytes(ex[i + 1 : i + 3], "big"))
        out += got
    return out


@dataclass(frozen=True)
class Canonical:
    payload: bytes  # what a v2 packet line hashes
    params: tuple[bytes, ...] = ()  # parameter sets (AAC: decoder configuration) in band
    set_aside: int = 0  # NAL units or headers left out of the payload
    parsed: bool = True  # False: the packet did not parse and is hashed as stored


def canonical(codec: str, form: str, data: bytes) -> Canonical:
    """The one form of a packet that every container's stream copy shares."""
    if codec in NAL_CODECS and form != STORED:
        try:
            nals = split_nals(form, data)
        except BitstreamError:
            return Canonical(data, parsed=False)  # damaged: it can only match itself
        if not nals:
            return Canonical(data, parsed=False)
        slices: list[bytes] = []
        other: list[bytes] = []
        params: list[bytes] = []
        for nal in nals:
            t = nal_type(codec, nal)
            if is_vcl(codec, t):
                slices.append(nal)
            elif is_param(codec, t):
                params.append(nal)
            elif t not in _DELIMITERS[codec]:
                other.append(nal)
        # A packet without a coded slice (SEI alone, say) is hashed by what it does carry,
        # so such packets do not all hash alike.
        kept = slices or other
        payload = b"".join(len(n).to_bytes(4, "big") + n for n in kept)
        return Canonical(payload, tuple(params), len(nals) - len(kept))
    if codec == AAC and form in (ADTS, RAW):
        head = adts_header_size(data)
        if head:
            return Canonical(data[head:], (adts_config(data),), set_aside=1)
    return Canonical(data)


def adts_header_size(data: bytes) -> int:
    """7 or 9 when ``data`` is exactly one ADTS frame, else 0."""
    if len(data) < 7 or data[0] != 0xFF or (data[1] & 0xF6) != 0xF0:
        return 0
    length = ((data[3] & 0x03) << 11) | (data[4] << 3) | (data[5] >> 5)
    if length != len(data):
        return 0
    return 7 if data[1] & 1 else 9


def aac_config(object_type: int, rate_index: int, channels: int, rate: int = 0) -> bytes:
    """The AAC decoder configuration both framings carry, in one spelling: the (core)
    audio object type, the sampling-rate index (and rate when the index is 15) and the
    channel configuration. Its hash is the audio stream's X line."""
    return b"AAC %d %d %d %d" % (object_type, rate_index, channels, rate)


def adts_config(frame: bytes) -> bytes:
    return aac_config(
        ((frame[2] >> 6) & 3) + 1, (frame[2] >> 2) & 0xF, ((frame[2] & 1) << 2) | (frame[3] >> 6)
    )


class _Bits:
    def __init__(self, data: bytes) -> None:
        self.value, self.left = int.from_bytes(data, "big"), len(data) * 8

    def take(self, n: int) -> int:
        if n > self.left:
            raise BitstreamError("AudioSpecificConfig cut short")
        self.left -= n
        return (self.value >> self.left) & ((1 << n) - 1)


def asc_config(asc: bytes) -> bytes:
    """`aac_config` of an AudioSpecificConfig (ISO/IEC 14496-3 1.6.2.1). With explicit
    SBR or PS (object type 5 or 29) the core object type and rate are the ones ADTS
    carries. A record that does not parse is kept whole, so it matches only itself."""

    def object_type(b: _Bits) -> int:
        t = b.take(5)
        return 32 + b.take(6) if t == 31 else t

    def rate(b: _Bits) -> tuple[int, int]:
        i = b.take(4)
        return (i, b.take(24)) if i == 15 else (i, 0)

    try:
        b = _Bits(asc)
        aot = object_type(b)
        index, explicit = rate(b)
        channels = b.take(4)
        if aot in (5, 29):
            rate(b)  # the extension's (output) rate
            aot = object_type(b)
        return aac_config(aot, index, channels, explicit)
    except BitstreamError:
        return b"ASC " + asc.hex().encode()


def param_hash(nal: bytes) -> bytes:
    return hashlib.sha256(nal).digest()
