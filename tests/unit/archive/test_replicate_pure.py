"""Pure parts of replication: backoff, the tiles a mirror lacks, keys."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from archive.replicate import backoff
from archive.store import Lock, object_key
from ledger.tiles import ENTRIES, TILE_WIDTH, TileID, tiles_for_size, tiles_to_publish


def test_backoff_grows_is_capped_and_jittered() -> None:
    lo = [backoff(n, 2, 600, rnd=lambda: 0.0) for n in range(1, 15)]
    hi = [backoff(n, 2, 600, rnd=lambda: 1.0) for n in range(1, 15)]
    assert lo[0] == 1 and hi[0] == 2
    assert hi[3] == 16 and lo[3] == 8
    assert max(hi) == 600 and max(lo) == 300
    assert all(a <= b for a, b in itertools.pairwise(hi))
    assert backoff(10**6, 2, 600, rnd=lambda: 1.0) == 600  # no overflow on huge counts


def _mirror(size: int) -> set[TileID]:
    """Everything a complete mirror at ``size`` serves: hash tiles and entry bundles."""
    out = set(tiles_for_size(size))
    for n in range(size // TILE_WIDTH):
        out.add(TileID(ENTRIES, n))
    if size % TILE_WIDTH:
        out.add(TileID(ENTRIES, size // TILE_WIDTH, size % TILE_WIDTH))
    return out


@settings(deadline=None, max_examples=150)
@given(st.lists(st.integers(0, 70_000), min_size=1, max_size=5))
def test_publishing_step_by_step_gives_the_whole_mirror(sizes: list[int]) -> None:
    """Whatever the steps, the union of what was published covers the tree at the last
    size, and every full tile is published exactly once."""
    steps = sorted(set(sizes))
    published: list[TileID] = []
    prev = 0
    for s in steps:
        published += tiles_to_publish(prev, s)
        prev = s
    full = [t for t in published if t.full]
    assert len(full) == len(set(full))
    have = set(published)
    for t in _mirror(prev):
        assert t in have, t
    for s in steps:
        assert set(tiles_to_publish(0, s)) == _mirror(s)


def test_no_change_publishes_nothing() -> None:
    assert tiles_to_publish(300, 300) == []
    with pytest.raises(ValueError):
        tiles_to_publish(5, 4)


def test_keys_and_locks() -> None:
    h = "ab" * 32
    assert object_key(h) == f"objects/sha256/ab/ab/{h}"
    with pytest.raises(ValueError):
        object_key("AB" * 32)
    from datetime import datetime

    with pytest.raises(ValueError):
        Lock("COMPLIANCE", datetime(2030, 1, 1))  # no time zone
    with pytest.raises(ValueError):
        Lock("STRICT", datetime.fromisoformat("2030-01-01T00:00:00+00:00"))
