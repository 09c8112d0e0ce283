"""Read a tile-based log from a plain folder (e.g. an export or a bucket copy)."""

from __future__ import annotations

from pathlib import Path

from ledger.tiles import TileID, tile_prefix
from verify.readfile import Unreadable, read_regular

# A tile is at most 256 hashes; an entry bundle 256 entries. Anything far larger is
# not a tile, and must not be read whole into memory.
MAX_TILE_BYTES = 64 << 20
MAX_CHECKPOINT_BYTES = 1 << 20


class FolderSource:
    """`TileSource` over ``<dir>/tile/...``; falls back to a full tile for a collected partial.

    Every file is read with `read_regular`: a FIFO, device or folder where a tile
    or checkpoint should be is a named problem, never a hang."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _read(self, rel: str) -> bytes:
        # The caller names the tile; the error says only why it cannot be read.
        try:
            return read_regular(self.root / rel, MAX_TILE_BYTES)
        except Unreadable as e:
            raise ValueError(str(e)) from None

    def read_tile(self, tile: TileID) -> bytes:
        try:
            return self._read(tile.path())
        except FileNotFoundError:
            if tile.full:
                raise
            full = self._read(TileID(tile.level, tile.n).path())
            return tile_prefix(tile, full)

    def partial_widths(self, tile: TileID) -> list[int]:
        """Widths of the partial versions of ``tile`` present in the folder."""
        d = self.root / (TileID(tile.level, tile.n).path() + ".p")
        try:
            names = [p.name for p in d.iterdir()]
        except OSError:
            return []
        return sorted(int(n) for n in names if n.isdigit() and len(n) < 4 and 0 < int(n) < 256)

    def read_checkpoint(self) -> bytes | None:
        try:
            return read_regular(self.root / "checkpoint", MAX_CHECKPOINT_BYTES)
        except FileNotFoundError:
            return None
        except Unreadable as e:
            raise ValueError(f"{self.root / 'checkpoint'} cannot be read: {e}") from None
