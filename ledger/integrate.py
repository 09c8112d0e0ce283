"""Integration: new leaves in, tiles and the new root out (pure).

The right edge of the tree is held as an `Edge`: the entries of the partial
entry bundle and the hashes of the partial tile at each level. `integrate`
returns the tiles a batch creates or changes; the caller writes them durably,
then signs and publishes a checkpoint for the new size. Full tiles are never
produced twice for the same position.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ledger.tiles import (
    ENTRIES,
    TILE_HEIGHT,
    TILE_WIDTH,
    TileID,
    decode_bundle,
    encode_bundle,
    split_hashes,
)
from ledger.tree import EMPTY_ROOT, leaf_hash, node_hash, perfect_root


@dataclass
class Edge:
    """Right edge of a tree of ``size`` leaves."""

    size: int = 0
    bundle: list[bytes] = field(default_factory=list)
    levels: list[list[bytes]] = field(default_factory=list)

    def root(self) -> bytes:
        """Root hash of the tree, from the partial tiles alone."""
        return edge_root(self.levels)

    def copy(self) -> Edge:
        return Edge(self.size, list(self.bundle), [list(lv) for lv in self.levels])


def edge_root(levels: Sequence[Sequence[bytes]]) -> bytes:
    """Root of a tree given the hashes of the partial tile at each level."""
    subtrees: list[bytes] = []  # complete subtrees, left to right
    for hashes in reversed(levels):
        pos = 0
        w = len(hashes)
        for bit in range(TILE_HEIGHT - 1, -1, -1):
            if w & (1 << bit):
                subtrees.append(perfect_root(hashes[pos : pos + (1 << bit)]))
                pos += 1 << bit
    if not subtrees:
        return EMPTY_ROOT
    r = subtrees[-1]
    for h in reversed(subtrees[:-1]):
        r = node_hash(h, r)
    return r


@dataclass(frozen=True)
class Integration:
    edge: Edge
    tiles: dict[TileID, bytes]  # every tile to write (full and partial)
    completed: list[TileID]  # full tiles finished by this batch (their partials are garbage)


def integrate(edge: Edge, leaves: Sequence[bytes]) -> Integration:
    """Append ``leaves`` to the tree whose right edge is ``edge`` (not modified)."""
    e = edge.copy()
    tiles: dict[TileID, bytes] = {}
    completed: list[TileID] = []
    touched: set[int] = set()
    bundle_touched = False
    for leaf in leaves:
        e.bundle.append(leaf)
        bundle_touched = True
        size = e.size + 1
        if len(e.bundle) == TILE_WIDTH:
            tid = TileID(ENTRIES, (size >> TILE_HEIGHT) - 1)
            tiles[tid] = encode_bundle(e.bundle)
            completed.append(tid)
            e.bundle = []
        h = leaf_hash(leaf)
        level = 0
        while True:
            if level == len(e.levels):
                e.levels.append([])
            e.levels[level].append(h)
            touched.add(level)
            if len(e.levels[level]) < TILE_WIDTH:
                break
            tid = TileID(level, (size >> (TILE_HEIGHT * (level + 1))) - 1)
            tiles[tid] = b"".join(e.levels[level])
            completed.append(tid)
            h = perfect_root(e.levels[level])
            e.levels[level] = []
            level += 1
        e.size = size
    if bundle_touched and e.bundle:
        tiles[TileID(ENTRIES, e.size >> TILE_HEIGHT, len(e.bundle))] = encode_bundle(e.bundle)
    for level in sorted(touched):
        hashes = e.levels[level]
        if hashes:
            n = e.size >> (TILE_HEIGHT * (level + 1))
            tiles[TileID(level, n, len(hashes))] = b"".join(hashes)
    return Integration(e, tiles, completed)


def edge_tiles(size: int) -> list[TileID]:
    """The partial tiles (and partial bundle) that hold the right edge at ``size``."""
    out: list[TileID] = []
    if size % TILE_WIDTH:
        out.append(TileID(ENTRIES, size >> TILE_HEIGHT, size % TILE_WIDTH))
    level = 0
    while size >> (TILE_HEIGHT * level):
        w = (size >> (TILE_HEIGHT * level)) % TILE_WIDTH
        if w:
            out.append(TileID(level, size >> (TILE_HEIGHT * (level + 1)), w))
        level += 1
    return out


def edge_from_tiles(size: int, tiles: dict[TileID, bytes]) -> Edge:
    """Rebuild the right edge from the partial tiles listed by `edge_tiles`."""
    e = Edge(size)
    level_count = 0
    while size >> (TILE_HEIGHT * level_count):
        level_count += 1
    e.levels = [[] for _ in range(level_count)]
    for tid, data in tiles.items():
        if tid.level == ENTRIES:
            e.bundle = decode_bundle(data)
            if len(e.bundle) != tid.width:
                raise ValueError(f"{tid.path()} holds {len(e.bundle)} entries, not {tid.width}")
        else:
            hashes = split_hashes(data)
            if len(hashes) != tid.width:
                raise ValueError(f"{tid.path()} holds {len(hashes)} hashes, not {tid.width}")
            e.levels[tid.level] = hashes
    return e
