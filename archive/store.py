"""The cold store port: one small interface, two implementations.

`ObjectStore` (put / head / get / delete / list) is what replication,
retrieval and verification use; `LockControl` is the object-lock side
(retention, legal hold, restore from cold classes, bucket checks) that the
retention rules drive. `archive.local.LocalFolderStore` and
`archive.s3.S3Store` implement both and pass one conformance suite
(tests/integration/test_store_conformance.py).

Keys follow the store layout contract (DESIGN.md, "The cold store"):
``objects/sha256/<2 hex>/<2 hex>/<64 hex>``; the ledger under
``ledger/<origin>/`` (``tile/...``, ``checkpoint``, ``checkpoints/<size>``).
A configured prefix is the implementation's business; callers use bare keys.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

LOCK_MODES = ("COMPLIANCE", "GOVERNANCE")
_SHA_RE = re.compile(r"[0-9a-f]{64}")


def object_key(sha256: str) -> str:
    if not _SHA_RE.fullmatch(sha256):
        raise ValueError(f"not a SHA-256 in lowercase hex: {sha256!r}")
    return f"objects/sha256/{sha256[:2]}/{sha256[2:4]}/{sha256}"


def ledger_prefix(origin: str) -> str:
    return f"ledger/{origin}/"


@dataclass(frozen=True)
class Lock:
    """Object-lock retention for one object version."""

    mode: str  # COMPLIANCE or GOVERNANCE
    retain_until: datetime  # timezone-aware

    def __post_init__(self) -> None:
        if self.mode not in LOCK_MODES:
            raise ValueError(f"lock mode must be COMPLIANCE or GOVERNANCE, not {self.mode!r}")
        if self.retain_until.tzinfo is None:
            raise ValueError("retain_until must carry a time zone")


@dataclass(frozen=True)
class Stored:
    """What the store says it holds under a key (the current version)."""

    key: str
    size: int
    sha256: str | None  # full-object SHA-256, hex, as recorded at upload
    checksum: str  # the store's own checksum: base64 SHA-256, or "<b64>-<parts>" if multipart
    version_id: str | None = None
    storage_class: str = "STANDARD"
    lock: Lock | None = None
    legal_hold: bool = False
    restore: str | None = None  # None, "ongoing", or "available until <time>"


class ObjectStore(Protocol):
    """Write-once objects under keys."""

    def put(
        self,
        key: str,
        source: Path | bytes,
        sha256: str,
        lock: Lock | None = None,
        *,
        replace: bool = False,
    ) -> Stored:
        """Store ``source`` under ``key`` and confirm the stored SHA-256 before returning.

        An existing object is accepted (and returned) only when its checksum matches;
        otherwise `ObjectConflict`. ``replace=True`` is for the key that moves on (the
        latest ``checkpoint``): never locked, overwritten in place, one version kept.
        """
        ...

    def head(self, key: str) -> Stored | None:
        """The stored object's description, or None if the key holds nothing."""
        ...

    def get(self, key: str, chunk: int = 8 << 20) -> Iterator[bytes]:
        """The object's bytes, streamed (raises `NotFound`, `RestoreRequired`)."""
        ...

    def delete(self, key: str, version_id: str | None = None) -> None:
        """Remove an object version for good; `LockRefused` while locked or held."""
        ...

    def list(self, prefix: str) -> Iterator[str]:
        """Keys below ``prefix``, in lexical order."""
        ...


class LockControl(Protocol):
    """Object lock, legal holds and cold-class restores."""

    def check_locking(self, required: bool) -> bool:
        """Whether the bucket has object lock; `LockingNotEnabled` if required and absent."""
        ...

    def extend_retention(self, key: str, lock: Lock) -> Lock:
        """Set retain-until to ``lock`` if it is later; never shortens. Returns what holds."""
        ...

    def set_legal_hold(self, key: str, on: bool) -> None: ...

    def set_storage_class(self, key: str, storage_class: str) -> Stored:
        """Move the object to another storage class, keeping its lock; returns the new
        state (a new version in a versioned bucket)."""
        ...

    def restore(self, key: str, days: int) -> str:
        """Ask for a cold-class object to be readable for ``days``; returns its restore status."""
        ...


class ColdStore(ObjectStore, LockControl, Protocol):
    """Both ports, as the appliance holds its configured store."""

    id: str  # names the store in `store` entries, e.g. "s3:host:8333/evidence"
    bucket: str  # "" for a folder
