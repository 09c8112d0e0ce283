"""Read a ledger mirrored into a cold store, for verification from the bucket alone."""

from __future__ import annotations

from archive.errors import NotFound
from archive.store import ObjectStore, ledger_prefix
from ledger.tiles import TileID, tile_prefix


class StoreTileSource:
    """`TileSource` over ``ledger/<origin>/`` in a store; a full tile serves collected partials."""

    def __init__(self, store: ObjectStore, origin: str) -> None:
        self.store = store
        self.prefix = ledger_prefix(origin)

    def _read(self, key: str) -> bytes:
        try:
            return b"".join(self.store.get(self.prefix + key))
        except NotFound:
            raise FileNotFoundError(self.prefix + key) from None

    def read_tile(self, tile: TileID) -> bytes:
        try:
            return self._read(tile.path())
        except FileNotFoundError:
            if tile.full:
                raise
            return tile_prefix(tile, self._read(TileID(tile.level, tile.n).path()))

    def partial_widths(self, tile: TileID) -> list[int]:
        base = TileID(tile.level, tile.n).path() + ".p/"
        out = []
        for k in self.store.list(self.prefix + base):
            w = k.rsplit("/", 1)[-1]
            if w.isdigit() and 0 < int(w) < 256:
                out.append(int(w))
        return sorted(out)

    def read_checkpoint(self) -> bytes | None:
        try:
            return self._read("checkpoint")
        except FileNotFoundError:
            return None

    def checkpoints(self) -> list[bytes]:
        """Every signed checkpoint kept under ``checkpoints/<size>``."""
        out = []
        for k in self.store.list(self.prefix + "checkpoints/"):
            name = k.rsplit("/", 1)[-1]
            if name.isdigit():
                out.append(b"".join(self.store.get(k)))
        return out
