"""The custody-packets/v1 and v2 formats and clip matching, in memory and streamed (pure)."""

from __future__ import annotations

import hashlib
import io
from unittest.mock import patch

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest import fingerprint
from ingest.fingerprint import (
    ClipMatch,
    Fingerprint,
    FingerprintError,
    Packet,
    StreamInfo,
    format_sidecar,
    iter_sidecar,
    keyframe_hashes,
    match_clip,
    match_clip_file,
    parse_sidecar,
    sidecar_format,
)

STREAMS = (StreamInfo(0, "video", "h264", "1/12800"), StreamInfo(1, "audio", "aac", "1/44100"))


def h(i: int) -> bytes:
    return hashlib.sha256(str(i).encode()).digest()


packets = st.lists(
    st.builds(
        Packet,
        stream=st.sampled_from([0, 1]),
        pts=st.one_of(st.none(), st.integers(-(2**40), 2**40)),
        dts=st.one_of(st.none(), st.integers(-(2**40), 2**40)),
        size=st.integers(0, 2**31),
        key=st.booleans(),
        sha256=st.binary(min_size=32, max_size=32),
    ),
    max_size=50,
)


@given(packets)
def test_round_trip(ps: list[Packet]) -> None:
    fp = Fingerprint(STREAMS, tuple(ps))
    assert parse_sidecar(format_sidecar(fp)) == fp


@pytest.mark.parametrize(
    "bad",
    [
        b"",
        b"# custody-packets/v3\n",
        b"# custody-packets/v1\nS\t0\tvideo\th264\t1/1\nP\t1\t0\t0\t5\tK\t" + b"ab" * 32 + b"\n",
        b"# custody-packets/v1\nS\t0\tvideo\th264\t1/1\nP\t0\t0\t0\t5\tK\t" + b"AB" * 32 + b"\n",
        b"# custody-packets/v1\nS\t0\tvideo\th264\t1/1\nP\t0\tx\t0\t5\tK\t" + b"ab" * 32 + b"\n",
        b"# custody-packets/v1\nS\t0\tvideo\th264\t1/1\nP\t0\t0\t0\t5\tK\t" + b"ab" * 32,
        b"# custody-packets/v1\nS\t0\tvideo\th264\t1/1\nS\t0\taudio\taac\t1/1\n",
        b"# custody-packets/v1\nQ\n",
        b"# custody-packets/v1\nS\t0\tvideo\th264\t0/0\n",
        b"# custody-packets/v1\nS\t0\tvideo\th264\t1/1\nP\t0\t+1\t0\t5\tK\t" + b"ab" * 32 + b"\n",
        b"# custody-packets/v1\n\nS\t0\tvideo\th264\t1/1\n",
    ],
)
def test_malformed_sidecars_are_refused(bad: bytes) -> None:
    with pytest.raises(FingerprintError):
        parse_sidecar(bad)


def original(n: int = 100) -> Fingerprint:
    ps = []
    for i in range(n):
        ps.append(Packet(0, i * 512, i * 512, 1000, i % 25 == 0, h(i)))
        ps.append(Packet(1, i * 1024, i * 1024, 300, True, h(10_000 + i)))
    return Fingerprint(STREAMS, tuple(ps))


def test_a_stream_copied_cut_matches_with_its_time_range() -> None:
    o = original()
    # A cut from the keyframe at packet 25 for 30 video packets, re-timed from zero.
    cut = [Packet(0, (i - 25) * 512, None, 1000, i % 25 == 0, h(i)) for i in range(25, 55)]
    # The audio moved by the same second as the video (pts 1 s = 44,100 ticks earlier).
    cut += [Packet(1, i * 1024 - 44_100, None, 300, True, h(10_000 + i)) for i in range(44, 79)]
    m = match_clip(Fingerprint(STREAMS, tuple(cut)), o)
    assert m.exact and m.matched == 65
    assert m.range_ms() == (int(25 * 512 / 12.8), int(54 * 512 / 12.8))
    assert m.aligned and m.synced


def test_sound_moved_against_the_picture_is_not_exact() -> None:
    o = original()
    video = [Packet(0, (i - 25) * 512, None, 1000, i % 25 == 0, h(i)) for i in range(25, 55)]
    # The same audio packets, but played half a second later against the picture.
    late = [Packet(1, i * 1024 - 22_050, None, 300, True, h(10_000 + i)) for i in range(44, 79)]
    for m in (
        match_clip(Fingerprint(STREAMS, tuple(video + late)), o),
        match_clip_file(Fingerprint(STREAMS, tuple(video + late)), io.BytesIO(format_sidecar(o))),
    ):
        assert m.matched == m.total and all(s.timing_ok for s in m.streams)
        assert not m.synced and not m.exact


def test_an_altered_packet_breaks_the_match() -> None:
    o = original()
    cut = [Packet(0, (i - 25) * 512, None, 1000, i % 25 == 0, h(i)) for i in range(25, 55)]
    cut[10] = Packet(0, 10 * 512, None, 1000, False, h(-1))
    m = match_clip(Fingerprint(STREAMS[:1], tuple(cut)), o)
    assert not m.exact and m.matched == 29 and m.total == 30


def test_a_retimed_copy_is_not_exact() -> None:
    o = original()
    cut = [Packet(0, (i - 25) * 1024, None, 1000, i % 25 == 0, h(i)) for i in range(25, 55)]
    m = match_clip(Fingerprint(STREAMS[:1], tuple(cut)), o)
    assert m.matched == m.total == 30 and not m.exact


def test_streams_spliced_from_different_moments_are_not_exact() -> None:
    o = original(1000)  # 40 s of video, 23 s of audio
    video = [Packet(0, (i - 25) * 512, None, 1000, i % 25 == 0, h(i)) for i in range(25, 50)]
    audio = [Packet(1, (i - 600) * 1024, None, 300, True, h(10_000 + i)) for i in range(600, 640)]
    m = match_clip(Fingerprint(STREAMS, tuple(video + audio)), o)
    assert m.matched == m.total and not m.aligned and not m.exact


def test_repeated_packets_do_not_make_matching_quadratic() -> None:
    silence = hashlib.sha256(b"silent frame").digest()
    o = Fingerprint(
        STREAMS[1:], tuple(Packet(1, i * 1024, None, 10, True, silence) for i in range(200_000))
    )
    clip = Fingerprint(
        STREAMS[1:], tuple(Packet(1, i * 1024, None, 10, True, silence) for i in range(5_000))
    )
    m = match_clip(clip, o)  # bounded by the anchor limit, not 200,000 x 5,000
    assert m.matched == 5_000


def test_a_reencoded_clip_matches_nothing() -> None:
    o = original()
    cut = [Packet(0, i, None, 900, i == 0, h(-i - 2)) for i in range(30)]
    m = match_clip(Fingerprint(STREAMS[:1], tuple(cut)), o)
    assert m.matched == 0 and not m.exact and m.range_ms() is None


def test_keyframe_index_uses_video_keyframes() -> None:
    assert keyframe_hashes(original()) == [h(i) for i in range(0, 100, 25)]
    audio_only = Fingerprint(STREAMS[1:], tuple(p for p in original().packets if p.stream == 1))
    assert len(keyframe_hashes(audio_only)) == 100


# -- streaming a long original's sidecar: the same answer as match_clip -----------------

POOL = [h(i) for i in range(6)]  # few hashes: repeats, ties and common anchors


@st.composite
def clip_and_original(draw: st.DrawFn) -> tuple[Fingerprint, Fingerprint]:
    version = draw(st.sampled_from([1, 2]))
    form = "avcc4" if version == 2 else "stored"
    types = draw(st.lists(st.sampled_from(["video", "audio"]), min_size=1, max_size=3))
    tbs = st.sampled_from(["1/25", "1/1000", "1/12800", "1/44100", "1/90000"])
    o_streams = tuple(StreamInfo(i, t, "h264", draw(tbs), form) for i, t in enumerate(types))
    ctypes = draw(st.lists(st.sampled_from(["video", "audio", "data"]), min_size=1, max_size=3))
    c_streams = tuple(StreamInfo(i, t, "h264", draw(tbs), form) for i, t in enumerate(ctypes))
    pts = st.one_of(st.none(), st.integers(-50, 2000))
    hashes = st.sampled_from(POOL) | st.binary(min_size=32, max_size=32)

    def pkts(streams: tuple[StreamInfo, ...], max_size: int) -> st.SearchStrategy[list[Packet]]:
        return st.lists(
            st.builds(
                Packet,
                stream=st.sampled_from([s.index for s in streams]),
                pts=pts,
                dts=st.none(),
                size=st.just(1),
                key=st.booleans(),
                sha256=hashes,
            ),
            max_size=max_size,
        )

    o_packets = draw(pkts(o_streams, 60))
    c_packets = draw(pkts(c_streams, 20))
    # Mostly a real cut: a run of the original's packets, moved in time, some altered.
    a_cut: bool = draw(st.booleans())
    if o_packets and a_cut:
        a = draw(st.integers(0, len(o_packets) - 1))
        b = draw(st.integers(a, len(o_packets)))
        move = draw(st.integers(-100, 100))
        c_packets = [
            Packet(
                min(p.stream, len(c_streams) - 1),
                None if p.pts is None else p.pts + move * draw(st.sampled_from([1, 1, 2])),
                None,
                p.size,
                p.key,
                p.sha256 if draw(st.integers(0, 9)) else h(-1),
            )
            for p in o_packets[a:b]
        ]
    params = st.dictionaries(
        st.integers(0, 2), st.frozensets(st.sampled_from(POOL[:3]), min_size=1), max_size=3
    )
    o_params = {k: v for k, v in draw(params).items() if k < len(o_streams)} if version == 2 else {}
    c_params = {k: v for k, v in draw(params).items() if k < len(c_streams)} if version == 2 else {}
    aside = {s.index: draw(st.integers(0, 5)) for s in c_streams} if version == 2 else {}
    clip = Fingerprint(
        c_streams, tuple(c_packets), version=version, params=c_params, set_aside=aside
    )
    orig = Fingerprint(o_streams, tuple(o_packets), version=version, params=o_params)
    return clip, orig


def _both(clip: Fingerprint, orig: Fingerprint) -> tuple[ClipMatch, ClipMatch]:
    side = format_sidecar(orig)
    return match_clip(clip, parse_sidecar(side)), match_clip_file(clip, io.BytesIO(side))


@settings(max_examples=250, deadline=None)
@given(clip_and_original())
def test_streamed_matching_agrees_with_match_clip(pair: tuple[Fingerprint, Fingerprint]) -> None:
    whole, streamed = _both(*pair)
    assert streamed == whole


@settings(max_examples=150, deadline=None)
@given(clip_and_original())
def test_streamed_matching_agrees_when_anchors_are_capped(
    pair: tuple[Fingerprint, Fingerprint],
) -> None:
    """With tiny anchor limits the rarest-first choice and the caps decide the shifts,
    and the streamed matcher times its best shift in a third pass: both decide alike."""
    with (
        patch.object(fingerprint, "MAX_ANCHOR_USES", 2),
        patch.object(fingerprint, "ANCHORS", 2),
        patch.object(fingerprint, "TIMED_SHIFTS", 1),  # the third pass times the best
    ):
        whole, streamed = _both(*pair)
    assert streamed == whole


def test_streamed_matching_refuses_another_format() -> None:
    clip = Fingerprint(STREAMS, original().packets[:10], version=2)
    with pytest.raises(FingerprintError, match=r"custody-packets/v2 and the original's .*v1"):
        match_clip_file(clip, io.BytesIO(format_sidecar(original())))


def test_streamed_matching_of_a_cut_and_of_silence() -> None:
    o = original()
    cut = [Packet(0, (i - 25) * 512, None, 1000, i % 25 == 0, h(i)) for i in range(25, 55)]
    # The audio moved by the same second as the video (pts 1 s = 44,100 ticks earlier).
    cut += [Packet(1, i * 1024 - 44_100, None, 300, True, h(10_000 + i)) for i in range(44, 79)]
    m = match_clip_file(Fingerprint(STREAMS, tuple(cut)), io.BytesIO(format_sidecar(o)))
    assert m.exact and m.matched == 65
    assert m.range_ms() == (int(25 * 512 / 12.8), int(54 * 512 / 12.8))
    silence = hashlib.sha256(b"silent frame").digest()
    long = Fingerprint(
        STREAMS[1:], tuple(Packet(1, i * 1024, None, 10, True, silence) for i in range(20_000))
    )
    clip = Fingerprint(
        STREAMS[1:], tuple(Packet(1, i * 1024, None, 10, True, silence) for i in range(2_000))
    )
    m = match_clip_file(clip, io.BytesIO(format_sidecar(long)))
    assert m.matched == 2_000 and m.exact and m.range_ms() == (0, int(1999 * 1024 / 44.1))


# -- custody-packets/v2: the format ------------------------------------------------------

V2_STREAMS = (
    StreamInfo(0, "video", "h264", "1/12800", "avcc4"),
    StreamInfo(1, "audio", "aac", "1/44100", "adts"),
)
V2_HEAD = b"# custody-packets/v2\nS\t0\tvideo\th264\t1/1\tannexb\n"
HEX = ("ab" * 32).encode()
P_LINE = b"P\t0\t0\t0\t5\tK\t" + HEX + b"\n"


@given(
    packets,
    st.dictionaries(
        st.sampled_from([0, 1]),
        st.frozensets(st.binary(min_size=32, max_size=32), min_size=1, max_size=4),
    ),
)
def test_v2_round_trip(ps: list[Packet], params: dict[int, frozenset[bytes]]) -> None:
    fp = Fingerprint(V2_STREAMS, tuple(ps), version=2, params=params)
    data = format_sidecar(fp)
    assert data.startswith(b"# custody-packets/v2\nS\t0\tvideo\th264\t1/12800\tavcc4\n")
    assert parse_sidecar(data) == fp
    assert sidecar_format(data) == "custody-packets/v2"
    # The X lines come last, sorted by (stream, hash).
    xs = [line for line in data.split(b"\n") if line.startswith(b"X")]
    assert data.rstrip(b"\n").endswith(xs[-1] if xs else b"") and xs == sorted(
        xs, key=lambda x: (int(x.split(b"\t")[1]), x.split(b"\t")[2])
    )


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        (V2_HEAD + b"X\t0\t" + HEX + b"\n" + P_LINE, "line 4"),  # a packet after the X lines
        (V2_HEAD + b"X\t0\t" + ("cd" * 32).encode() + b"\nX\t0\t" + HEX + b"\n", "order"),
        (V2_HEAD + b"X\t0\t" + HEX + b"\nX\t0\t" + HEX + b"\n", "repeated"),
        (V2_HEAD + b"X\t1\t" + HEX + b"\n", "unknown stream"),
        (V2_HEAD + b"X\t0\t" + HEX[:-2] + b"\n", "64 lowercase hex"),
        (b"# custody-packets/v2\nS\t0\tvideo\th264\t1/1\tavcc5\n", "unknown form"),
        (b"# custody-packets/v2\nS\t0\tvideo\th264\t1/1\n", "line 2"),  # no form
        (b"# custody-packets/v1\nS\t0\tvideo\th264\t1/1\tavcc4\n", "line 2"),  # v1: none
        (b"# custody-packets/v1\nS\t0\tvideo\th264\t1/1\nX\t0\t" + HEX + b"\n", "line 3"),
        (b"# custody-packets/v2 \n", "does not start with"),
    ],
)
def test_malformed_v2_sidecars_are_refused(bad: bytes, why: str) -> None:
    with pytest.raises(FingerprintError, match=why):
        parse_sidecar(bad)
    with pytest.raises(FingerprintError, match=why):
        list(iter_sidecar(io.BytesIO(bad)))


def test_v1_sidecars_stay_readable_and_v1_clips_match_them() -> None:
    v1 = format_sidecar(original())
    assert sidecar_format(v1) == "custody-packets/v1" and parse_sidecar(v1).version == 1
    clip = Fingerprint(STREAMS, original().packets[50:80])
    assert match_clip_file(clip, io.BytesIO(v1)).exact
    with pytest.raises(FingerprintError, match="v2 and the original's custody-packets/v1"):
        match_clip(Fingerprint(STREAMS, clip.packets, version=2), parse_sidecar(v1))


def test_parameter_sets_decide_an_exact_match() -> None:
    o = Fingerprint(
        V2_STREAMS[:1],
        tuple(original().by_stream(0)),
        version=2,
        params={0: frozenset({h(1), h(2)})},
    )
    cut = original().by_stream(0)[25:50]
    for params, exact in (({0: frozenset({h(1)})}, True), ({0: frozenset({h(3)})}, False)):
        clip = Fingerprint(V2_STREAMS[:1], tuple(cut), version=2, params=params)
        for m in (match_clip(clip, o), match_clip_file(clip, io.BytesIO(format_sidecar(o)))):
            assert m.matched == m.total == 25 and m.exact is exact
            assert m.streams[0].params_ok is exact
