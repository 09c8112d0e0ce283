"""A tile folder on local disk (C2SP tlog-tiles layout), written durably.

``<dir>/checkpoint`` and ``<dir>/tile/...`` exactly as the specification
lays them out, so the folder can be served as static files. Full tiles and
bundles are written once with mode 0444; partial ones are replaced by
wider versions and removed once their full tile exists.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

from ledger.durable import remove_temporaries, write_atomic, write_many_atomic
from ledger.errors import IntegrityError
from ledger.tiles import TileID, tile_prefix


class FolderTiles:
    """Tiles and the checkpoint under one folder."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, tile: TileID) -> Path:
        return self.root / tile.path()

    def read_tile(self, tile: TileID) -> bytes:
        try:
            return self.path(tile).read_bytes()
        except FileNotFoundError:
            if not tile.full:
                # A full tile holds every prefix of itself; partials may be collected.
                full = self.root / TileID(tile.level, tile.n).path()
                if full.exists():
                    return tile_prefix(tile, full.read_bytes())
            raise

    def write_tiles(self, tiles: Mapping[TileID, bytes]) -> None:
        """Write tiles durably. A full tile that exists must already hold these bytes:
        full tiles never change, so a difference means two histories (refused)."""
        for t, data in tiles.items():
            if t.full:
                try:
                    old = self.path(t).read_bytes()
                except FileNotFoundError:
                    continue
                if old != data:
                    raise IntegrityError(
                        f"{t.path()} exists with different content; full tiles never change",
                        "the state folder does not match the ledger folder: restore both "
                        "from the same backup",
                    )
        files = {self.path(t): (data, 0o444 if t.full else 0o644) for t, data in tiles.items()}
        write_many_atomic(files, self.root)

    def read_checkpoint(self) -> bytes:
        return (self.root / "checkpoint").read_bytes()

    def write_checkpoint(self, note: str) -> None:
        write_atomic(self.root / "checkpoint", note.encode("utf-8"))

    def collect_partials(self, completed: Iterable[TileID]) -> None:
        """Remove the partial versions of tiles that are now full."""
        for t in completed:
            p = self.root / (t.path() + ".p")
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)

    def remove_temporaries(self) -> int:
        if not self.root.exists():
            return 0
        return remove_temporaries(self.root)

    def has_tiles(self) -> bool:
        t = self.root / "tile"
        return t.is_dir() and any(t.iterdir())
