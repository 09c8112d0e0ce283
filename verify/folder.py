"""Read a tile-based log from a plain folder (e.g. an export or a bucket copy)."""

from __future__ import annotations

from pathlib import Path

from ledger.tiles import TileID, tile_prefix


class FolderSource:
    """`TileSource` over ``<dir>/tile/...``; falls back to a full tile for a collected partial."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def read_tile(self, tile: TileID) -> bytes:
        p = self.root / tile.path()
        try:
            return p.read_bytes()
        except FileNotFoundError:
            if tile.full:
                raise
            full = (self.root / TileID(tile.level, tile.n).path()).read_bytes()
            return tile_prefix(tile, full)

    def partial_widths(self, tile: TileID) -> list[int]:
        """Widths of the partial versions of ``tile`` present in the folder."""
        d = self.root / (TileID(tile.level, tile.n).path() + ".p")
        try:
            names = [p.name for p in d.iterdir()]
        except OSError:
            return []
        return sorted(int(n) for n in names if n.isdigit() and 0 < int(n) < 256)

    def read_checkpoint(self) -> bytes | None:
        try:
            return (self.root / "checkpoint").read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise ValueError(f"{self.root / 'checkpoint'} cannot be read: {e.strerror}") from e
