"""Properties of proof generation and verification (RFC 6962 / 9162)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import tree


class ListReader:
    """Stored hashes of the tree of ``hashes``: each one the root of its perfect subtree.
    A reader over a prefix of ALL (the exhaustive tests make tens of thousands of
    proofs from them) shares the subtree roots already computed; a subtree is the same
    in every tree that holds all of it, and asking for one that is not whole is an
    error, as it is for a real tile reader."""

    def __init__(self, hashes: list[bytes]) -> None:
        self.hashes = hashes
        shared = len(hashes) <= len(ALL) and hashes == ALL[: len(hashes)]
        self.memo = _ALL_SUBTREES if shared else {}

    def stored_hash(self, level: int, index: int) -> bytes:
        end = (index + 1) << level
        assert end <= len(self.hashes), f"no stored hash {level}/{index} at {len(self.hashes)}"
        key = (level, index)
        if key not in self.memo:
            self.memo[key] = tree.root_of(self.hashes[index << level : end])
        return self.memo[key]


def hashes(n: int) -> list[bytes]:
    return [tree.leaf_hash(b"entry %d" % i) for i in range(n)]


ALL = hashes(300)
_ALL_SUBTREES: dict[tuple[int, int], bytes] = {}


def flip(b: bytes, pos: int, bit: int) -> bytes:
    pos %= len(b)
    return b[:pos] + bytes([b[pos] ^ (1 << bit)]) + b[pos + 1 :]


def test_every_inclusion_proof_up_to_300_leaves() -> None:
    """Exhaustive: every index of every size 1..300 proves and verifies."""
    for size in range(1, 301):
        r = ListReader(ALL[:size])
        root = tree.root_of(ALL[:size])
        for i in range(size):
            p = tree.inclusion_proof(r, i, size)
            assert tree.verify_inclusion(i, size, ALL[i], p, root)


def test_every_consistency_proof_up_to_300_leaves() -> None:
    roots = [tree.root_of(ALL[:n]) for n in range(301)]
    for new in range(1, 301):
        r = ListReader(ALL[:new])
        for old in range(0, new + 1):
            p = tree.consistency_proof(r, old, new)
            assert tree.verify_consistency(old, new, roots[old], roots[new], p), (old, new)


@settings(max_examples=300)
@given(
    size=st.integers(1, 300),
    data=st.data(),
    pos=st.integers(0, 10_000),
    bit=st.integers(0, 7),
)
def test_inclusion_any_changed_byte_fails(
    size: int, data: st.DataObject, pos: int, bit: int
) -> None:
    i = data.draw(st.integers(0, size - 1))
    root = tree.root_of(ALL[:size])
    p = tree.inclusion_proof(ListReader(ALL[:size]), i, size)
    assert not tree.verify_inclusion(i, size, ALL[i], p, flip(root, pos, bit))
    assert not tree.verify_inclusion(i, size, flip(ALL[i], pos, bit), p, root)
    if p:
        k = pos % len(p)
        bad = [*p[:k], flip(p[k], pos, bit), *p[k + 1 :]]
        assert not tree.verify_inclusion(i, size, ALL[i], bad, root)
        assert not tree.verify_inclusion(i, size, ALL[i], p[:-1], root)
    assert not tree.verify_inclusion(i, size, ALL[i], [*p, ALL[0]], root)
    if size > 1:
        other = (i + 1 + pos % (size - 1)) % size
        assert not tree.verify_inclusion(other, size, ALL[i], p, root)


@settings(max_examples=300)
@given(
    new=st.integers(2, 300),
    data=st.data(),
    pos=st.integers(0, 10_000),
    bit=st.integers(0, 7),
)
def test_consistency_any_changed_byte_fails(
    new: int, data: st.DataObject, pos: int, bit: int
) -> None:
    old = data.draw(st.integers(1, new - 1))
    r_old, r_new = tree.root_of(ALL[:old]), tree.root_of(ALL[:new])
    p = tree.consistency_proof(ListReader(ALL[:new]), old, new)
    assert tree.verify_consistency(old, new, r_old, r_new, p)
    assert not tree.verify_consistency(old, new, flip(r_old, pos, bit), r_new, p)
    assert not tree.verify_consistency(old, new, r_old, flip(r_new, pos, bit), p)
    k = pos % len(p)
    bad = [*p[:k], flip(p[k], pos, bit), *p[k + 1 :]]
    assert not tree.verify_consistency(old, new, r_old, r_new, bad)
    assert not tree.verify_consistency(new, old, r_new, r_old, p)


def test_compact_range_matches_root() -> None:
    cr = tree.CompactRange()
    for n, h in enumerate(ALL, start=1):
        cr.append(h)
        assert cr.root() == tree.root_of(ALL[:n])
