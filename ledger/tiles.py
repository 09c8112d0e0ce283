"""Tiles and entry bundles (C2SP tlog-tiles v0.1.0, tile height 8).

Pure: tile paths, the tile layout of a tree of a given size, entry bundle
encoding, and a `HashReader` that answers stored-hash queries from tiles read
through a small `TileSource`. The writer side (which files a batch produces)
lives in `ledger.integrate`.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from ledger.tree import HASH_SIZE, node_hash

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT  # 256 hashes
FULL_TILE_BYTES = TILE_WIDTH * HASH_SIZE  # 8,192 bytes
MAX_ENTRY_SIZE = 0xFFFF  # entries are uint16-length-prefixed in bundles

ENTRIES = -1  # level value for entry bundles ("tile/entries/...")


@dataclass(frozen=True, order=True)
class TileID:
    """One tile: ``level`` (ENTRIES for an entry bundle), number ``n``, ``width`` 1..256."""

    level: int
    n: int
    width: int = TILE_WIDTH

    @property
    def full(self) -> bool:
        return self.width == TILE_WIDTH

    def path(self) -> str:
        return tile_path(self.level, self.n, self.width)


def _n_path(n: int) -> str:
    groups = []
    while True:
        groups.append(n % 1000)
        n //= 1000
        if n == 0:
            break
    groups.reverse()
    return "/".join(
        (f"{g:03d}" if i == len(groups) - 1 else f"x{g:03d}") for i, g in enumerate(groups)
    )


def tile_path(level: int, n: int, width: int = TILE_WIDTH) -> str:
    """``tile/<L>/<N>[.p/<W>]`` or ``tile/entries/<N>[.p/<W>]``, N in x-prefixed 3-digit groups."""
    if not 1 <= width <= TILE_WIDTH:
        raise ValueError(f"tile width {width} is outside 1..256")
    lv = "entries" if level == ENTRIES else str(level)
    p = f"tile/{lv}/{_n_path(n)}"
    if width < TILE_WIDTH:
        p += f".p/{width}"
    return p


_TILE_RE = re.compile(
    r"tile/(entries|0|[1-9][0-9]?)/((?:x[0-9]{3}/)*[0-9]{3})(?:\.p/([1-9][0-9]{0,2}))?"
)


def parse_tile_path(path: str) -> TileID:
    """Inverse of `tile_path`; raises ValueError for anything else."""
    m = _TILE_RE.fullmatch(path)
    if not m:
        raise ValueError(f"not a tile path: {path!r}")
    lv, npart, w = m.groups()
    n = int(npart.replace("x", "").replace("/", ""))
    if _n_path(n) != npart:
        raise ValueError(f"not a canonical tile index: {path!r}")
    width = int(w) if w else TILE_WIDTH
    if width > 255 and w:
        raise ValueError(f"partial tile width must be below 256: {path!r}")
    level = ENTRIES if lv == "entries" else int(lv)
    if level > 63:
        raise ValueError(f"tile level above 63: {path!r}")
    return TileID(level, n, width)


def tiles_for_size(size: int) -> Iterator[TileID]:
    """Every hash tile (not entry bundle) a tree of ``size`` has, lowest level first."""
    level = 0
    while True:
        count = size >> (TILE_HEIGHT * level)
        if count == 0:
            return
        for n in range(count // TILE_WIDTH):
            yield TileID(level, n)
        if count % TILE_WIDTH:
            yield TileID(level, count // TILE_WIDTH, count % TILE_WIDTH)
        level += 1


def tiles_to_publish(old: int, new: int) -> list[TileID]:
    """Tiles and entry bundles a mirror at tree size ``old`` lacks for size ``new``.

    The full tiles and bundles completed between the two sizes, then the partial
    ones at the right edge of ``new``; the mirror's earlier partials are not needed
    again (they are prefixes of what is listed).
    """
    if not 0 <= old <= new:
        raise ValueError(f"cannot publish from size {old} to {new}")
    out: list[TileID] = []
    level = 0
    while (new >> (TILE_HEIGHT * level)) > 0:
        count_new = new >> (TILE_HEIGHT * level)
        count_old = old >> (TILE_HEIGHT * level)
        levels = (ENTRIES, 0) if level == 0 else (level,)
        for lv in levels:
            out.extend(
                TileID(lv, n) for n in range(count_old // TILE_WIDTH, count_new // TILE_WIDTH)
            )
            if count_new % TILE_WIDTH and count_new != count_old:
                out.append(TileID(lv, count_new // TILE_WIDTH, count_new % TILE_WIDTH))
        level += 1
    return out


def tile_for_hashes(level: int, n: int, size: int) -> TileID:
    """The tile (level, n) at its width for a tree of ``size``."""
    count = size >> (TILE_HEIGHT * level)
    width = min(TILE_WIDTH, count - n * TILE_WIDTH)
    if width <= 0:
        raise ValueError(f"tree of size {size} has no tile {level}/{n}")
    return TileID(level, n, width)


def bundle_for_size(n: int, size: int) -> TileID:
    """Entry bundle ``n`` at its width for a tree of ``size``."""
    width = min(TILE_WIDTH, size - n * TILE_WIDTH)
    if width <= 0:
        raise ValueError(f"tree of size {size} has no entry bundle {n}")
    return TileID(ENTRIES, n, width)


def encode_bundle(entries: Sequence[bytes]) -> bytes:
    """Entry bundle: each entry prefixed by its big-endian uint16 length."""
    parts = []
    for e in entries:
        if len(e) > MAX_ENTRY_SIZE:
            raise ValueError(f"entry of {len(e)} bytes exceeds {MAX_ENTRY_SIZE}")
        parts.append(len(e).to_bytes(2, "big"))
        parts.append(e)
    return b"".join(parts)


class BundleError(ValueError):
    """An entry bundle that cannot be decoded; ``entries`` holds what could be."""

    def __init__(self, message: str, entries: list[bytes]) -> None:
        super().__init__(message)
        self.entries = entries


def decode_bundle(data: bytes) -> list[bytes]:
    """Split an entry bundle; raises BundleError naming where it is cut."""
    out: list[bytes] = []
    pos = 0
    while pos < len(data):
        if pos + 2 > len(data):
            raise BundleError(f"truncated length prefix at byte {pos}", out)
        n = int.from_bytes(data[pos : pos + 2], "big")
        if pos + 2 + n > len(data):
            raise BundleError(
                f"entry {len(out)} cut short at byte {len(data)} (needs {pos + 2 + n})", out
            )
        out.append(data[pos + 2 : pos + 2 + n])
        pos += 2 + n
    return out


def tile_prefix(tile: TileID, full: bytes) -> bytes:
    """Partial ``tile`` cut from the bytes of its full tile (a full tile holds every
    prefix of itself, so a collected partial can still be served)."""
    if tile.level == ENTRIES:
        return encode_bundle(decode_bundle(full)[: tile.width])
    return full[: tile.width * HASH_SIZE]


def split_hashes(data: bytes) -> list[bytes]:
    """Split a hash tile into its 32-byte hashes."""
    if len(data) % HASH_SIZE:
        raise ValueError(f"tile of {len(data)} bytes is not a whole number of hashes")
    return [data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]


class TileSource(Protocol):
    """Where tile bytes come from (a folder, a bucket, a dict in tests)."""

    def read_tile(self, tile: TileID) -> bytes:
        """The bytes of ``tile``; raises KeyError (or OSError) if it is not there."""
        ...


class _TileNodes:
    """All levels of the 8-level subtree a tile spans, computed lazily."""

    __slots__ = ("levels",)

    def __init__(self, hashes: list[bytes]) -> None:
        self.levels: list[list[bytes]] = [hashes]

    def get(self, height: int, i: int) -> bytes:
        while len(self.levels) <= height:
            below = self.levels[-1]
            self.levels.append(
                [node_hash(below[j], below[j + 1]) for j in range(0, len(below) - 1, 2)]
            )
        return self.levels[height][i]


class TileHashReader:
    """Answers `stored_hash` from the hash tiles of a tree of ``size`` (an LRU of tiles).

    Memory is bounded by ``cache_tiles`` tiles whatever the size of the log.
    """

    def __init__(self, source: TileSource, size: int, cache_tiles: int = 64) -> None:
        self.source = source
        self.size = size
        self._cache: OrderedDict[tuple[int, int], _TileNodes] = OrderedDict()
        self._cap = cache_tiles

    def _tile(self, level: int, n: int) -> _TileNodes:
        key = (level, n)
        t = self._cache.get(key)
        if t is not None:
            self._cache.move_to_end(key)
            return t
        tid = tile_for_hashes(level, n, self.size)
        data = self.source.read_tile(tid)
        if len(data) != tid.width * HASH_SIZE:
            raise ValueError(f"{tid.path()}: {len(data)} bytes, expected {tid.width * HASH_SIZE}")
        t = _TileNodes(split_hashes(data))
        self._cache[key] = t
        if len(self._cache) > self._cap:
            self._cache.popitem(last=False)
        return t

    def stored_hash(self, level: int, index: int) -> bytes:
        if (index + 1) << level > self.size:
            raise ValueError(f"subtree {level}/{index} is beyond tree size {self.size}")
        tile_level, height = divmod(level, TILE_HEIGHT)
        # Index of the first tile-level hash covered, and its tile.
        first = index << height
        n, offset = divmod(first, TILE_WIDTH)
        return self._tile(tile_level, n).get(height, offset >> height)
