"""Round trips and tamper detection for notes, checkpoints, tiles and tlog-proofs."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import tree
from ledger.checkpoint import Checkpoint, CheckpointError, open_checkpoint
from ledger.note import NoteError, Signer, Verifier, open_note, parse_note, sign_note
from ledger.proof import ProofError, TlogProof
from ledger.tiles import (
    ENTRIES,
    BundleError,
    TileID,
    decode_bundle,
    encode_bundle,
    parse_tile_path,
    tile_path,
    tiles_for_size,
)

SIGNER = Signer(name="custody.test/formats", seed=bytes(range(32)))
OTHER = Signer(name="custody.test/formats", seed=bytes(range(1, 33)))

names = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x2FFF, blacklist_characters="+"),
    min_size=1,
    max_size=40,
).filter(lambda s: not any(c.isspace() for c in s))
ext_line = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x2FFF), min_size=1, max_size=30
)


def test_tile_path_examples() -> None:
    assert tile_path(0, 1234067) == "tile/0/x001/x234/067"
    assert tile_path(1, 0, 2) == "tile/1/000.p/2"
    assert tile_path(ENTRIES, 5, 88) == "tile/entries/005.p/88"
    assert tile_path(0, 1000) == "tile/0/x001/000"


@given(
    level=st.one_of(st.just(ENTRIES), st.integers(0, 63)),
    n=st.integers(0, 10**12),
    width=st.integers(1, 256),
)
def test_tile_path_round_trip(level: int, n: int, width: int) -> None:
    t = TileID(level, n, width)
    assert parse_tile_path(t.path()) == t


@pytest.mark.parametrize(
    "bad",
    [
        "tile/0/1",
        "tile/0/x1/000",
        "tile/0/000.p/256",
        "tile/0/000.p/0",
        "tile/64/000",
        "tile/0/x000/001",
        "tile/00/000",
        "tile/entries/000.p/007",
    ],
)
def test_tile_path_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_tile_path(bad)


def test_tiles_for_size_spec_example() -> None:
    """tlog-tiles example: size 70,000 -> 273 full L0 + L0 width 112, L1 full + width 17, L2 1."""
    ts = list(tiles_for_size(70_000))
    l0 = [t for t in ts if t.level == 0]
    assert len([t for t in l0 if t.full]) == 273 and [t.width for t in l0 if not t.full] == [112]
    assert [(t.n, t.width) for t in ts if t.level == 1] == [(0, 256), (1, 17)]
    assert [(t.n, t.width) for t in ts if t.level == 2] == [(0, 1)]
    assert [(t.level, t.n, t.width) for t in tiles_for_size(256)] == [(0, 0, 256), (1, 0, 1)]


@given(st.lists(st.binary(max_size=300), max_size=40))
def test_bundle_round_trip(entries: list[bytes]) -> None:
    assert decode_bundle(encode_bundle(entries)) == entries


def test_bundle_truncated_names_the_cut() -> None:
    data = encode_bundle([b"a" * 10, b"b" * 10])
    with pytest.raises(BundleError) as e:
        decode_bundle(data[:-3])
    assert e.value.entries == [b"a" * 10]
    assert "entry 1" in str(e.value)


@settings(max_examples=200)
@given(
    origin=names,
    size=st.integers(0, 2**64 - 1),
    root=st.binary(min_size=32, max_size=32),
    ext=st.lists(ext_line, max_size=3),
)
def test_checkpoint_round_trip(origin: str, size: int, root: bytes, ext: list[str]) -> None:
    signer = Signer(origin, bytes(32))
    cp = Checkpoint(origin, size, root, tuple(ext))
    text = cp.sign([signer])
    sc = open_checkpoint(text, [signer.verifier()])
    assert sc.checkpoint == cp
    assert Checkpoint.parse_body(cp.body()) == cp
    assert parse_note(text).format() == text


@settings(max_examples=300)
@given(pos=st.integers(0, 10_000), bit=st.integers(0, 7))
def test_checkpoint_any_changed_byte_fails(pos: int, bit: int) -> None:
    text = Checkpoint(SIGNER.name, 1234, bytes(range(32))).sign([SIGNER]).encode()
    pos %= len(text)
    bad = text[:pos] + bytes([text[pos] ^ (1 << bit)]) + text[pos + 1 :]
    with pytest.raises(CheckpointError):
        open_checkpoint(bad, [SIGNER.verifier()])


def test_checkpoint_signed_by_other_key_is_refused() -> None:
    text = Checkpoint(SIGNER.name, 5, bytes(32)).sign([OTHER])
    with pytest.raises(CheckpointError, match="no signature by a trusted key"):
        open_checkpoint(text, [SIGNER.verifier()])


def test_note_refuses_bad_signature_from_known_key() -> None:
    text = sign_note("hello\n", [SIGNER])
    sig = parse_note(text).signatures[0]
    forged = text.replace(
        base64.b64encode(sig.key_id + sig.signature).decode(),
        base64.b64encode(sig.key_id + bytes(64)).decode(),
    )
    with pytest.raises(NoteError, match="does not verify"):
        open_note(forged, [SIGNER.verifier()])


@given(name=names)
def test_key_strings_round_trip(name: str) -> None:
    s = Signer.generate(name)
    assert Signer.parse(s.key_string()) == s
    v = s.verifier()
    assert Verifier.parse(v.vkey()) == v


def _proof(size: int = 37, index: int = 11) -> tuple[TlogProof, bytes]:
    leaves = [b"leaf %d" % i for i in range(size)]
    hs = [tree.leaf_hash(x) for x in leaves]

    class R:
        def stored_hash(self, level: int, i: int) -> bytes:
            return tree.root_of(hs[i << level : (i + 1) << level])

    cp = Checkpoint(SIGNER.name, size, tree.root_of(hs)).sign([SIGNER])
    return TlogProof(index, tuple(tree.inclusion_proof(R(), index, size)), cp), leaves[index]


@given(extra=st.one_of(st.none(), st.binary(max_size=40)))
def test_tlog_proof_round_trip(extra: bytes | None) -> None:
    p, leaf = _proof()
    p = TlogProof(p.index, p.hashes, p.checkpoint, extra)
    text = p.format()
    assert text.startswith("c2sp.org/tlog-proof@v1\n")
    q = TlogProof.parse(text)
    assert q == p
    q.verify(leaf, [SIGNER.verifier()])


@settings(max_examples=300)
@given(pos=st.integers(0, 10_000), bit=st.integers(0, 7))
def test_tlog_proof_any_changed_byte_fails(pos: int, bit: int) -> None:
    p, leaf = _proof()
    text = p.format().encode()
    pos %= len(text)
    bad = text[:pos] + bytes([text[pos] ^ (1 << bit)]) + text[pos + 1 :]
    with pytest.raises(ProofError):
        TlogProof.parse(bad).verify(leaf, [SIGNER.verifier()])


def test_tlog_proof_wrong_leaf_fails() -> None:
    p, leaf = _proof()
    with pytest.raises(ProofError, match="inclusion proof does not verify"):
        p.verify(leaf + b"x", [SIGNER.verifier()])


def test_values_outside_the_entry_domain_are_named_by_their_path() -> None:
    from ledger.entry import EntryError, canonical_json

    cases = [
        ({"a": {"b": [1, 2.5]}}, "$.a.b[1]: floats are not allowed"),
        ({"a": [{"c": 2**60}]}, "$.a[0].c: integer 1152921504606846976 is outside"),
        ({"x": {1: 2}}, "$.x: object key 1 is not a string"),
        ({"s": {"t": b"raw"}}, "$.s.t: bytes is not a JSON value"),
    ]
    for value, message in cases:
        with pytest.raises(EntryError) as e:
            canonical_json(value)
        assert str(e.value).startswith(message), str(e.value)
