"""Get an object by its SHA-256 from the dock's store or the cold store, verified.

Bytes are hashed while they stream; a copy is written to a temporary file
and moved into place only when its SHA-256 matches, so a caller never holds
an unverified file. A damaged local copy is reported and the cold store is
tried next. Objects in a cold class (GLACIER, DEEP_ARCHIVE) need a restore
first: `restore` asks for one and reports its status.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from archive.errors import NotFound, ObjectCorrupt, RestoreRequired
from archive.store import ColdStore, Stored, object_key
from ledger.durable import fsync_dir

log = logging.getLogger("custody.archive")


@dataclass(frozen=True)
class Fetched:
    sha256: str
    size: int
    source: str  # "local" or the store id


def verified(chunks: Iterator[bytes], sha256: str, where: str) -> Iterator[bytes]:
    """Pass ``chunks`` through; raise `ObjectCorrupt` at the end if they do not hash to ``sha256``.

    Whoever consumes this must treat the bytes as unverified until it is exhausted.
    """
    h = hashlib.sha256()
    for c in chunks:
        h.update(c)
        yield c
    if h.hexdigest() != sha256:
        raise ObjectCorrupt(
            f"{where}: holds bytes with SHA-256 {h.hexdigest()[:16]}, not {sha256[:16]}",
            "the stored object was altered or damaged; audit the store and keep this report",
        )


class Retriever:
    def __init__(self, local_path: Callable[[str], Path] | None, store: ColdStore | None) -> None:
        self.local_path = local_path
        self.store = store

    def _local_chunks(self, p: Path, chunk: int) -> Iterator[bytes]:
        with open(p, "rb") as f:
            while b := f.read(chunk):
                yield b

    def fetch(self, sha256: str, dest: Path, chunk: int = 8 << 20) -> Fetched:
        """Write the object to ``dest`` once it is verified; local copy first, then the store."""
        errors: list[str] = []
        if self.local_path is not None:
            p = self.local_path(sha256)
            if p.exists():
                try:
                    size = _write_verified(
                        verified(self._local_chunks(p, chunk), sha256, str(p)), dest
                    )
                    return Fetched(sha256, size, "local")
                except ObjectCorrupt as e:
                    log.error("local copy is damaged, trying the cold store: %s", e)
                    errors.append(str(e))
        if self.store is not None:
            key = object_key(sha256)
            where = f"{self.store.id}/{key}"
            size = _write_verified(verified(self.store.get(key, chunk), sha256, where), dest)
            return Fetched(sha256, size, self.store.id)
        if errors:
            raise ObjectCorrupt(errors[0])
        raise NotFound(f"object {sha256} is neither in the dock's store nor in a cold store")

    def describe(self, sha256: str) -> Stored | None:
        return self.store.head(object_key(sha256)) if self.store is not None else None

    def restore(self, sha256: str, days: int = 7) -> str:
        """Ask the cold store to make a cold-class object readable; returns its status."""
        if self.store is None:
            raise NotFound("no cold store is configured")
        return self.store.restore(object_key(sha256), days)


def _write_verified(chunks: Iterator[bytes], dest: Path) -> int:
    tmp = dest.with_name(f".{dest.name}.part")
    size = 0
    try:
        with open(tmp, "wb") as f:
            for c in chunks:
                f.write(c)
                size += len(c)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
        fsync_dir(dest.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return size


__all__ = ["Fetched", "RestoreRequired", "Retriever", "verified"]
