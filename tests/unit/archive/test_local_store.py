"""The local-folder store's own failure paths (the shared behaviour is in the
conformance suite)."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from archive.errors import LockRefused, ObjectCorrupt
from archive.local import LocalFolderStore
from archive.retrieve import Retriever
from archive.store import Lock, object_key


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def test_crash_between_link_and_metadata_is_mended(tmp_path: Path) -> None:
    store = LocalFolderStore(tmp_path)
    data = b"recording"
    key = object_key(sha(data))
    lock = Lock("COMPLIANCE", datetime.now(UTC) + timedelta(days=1))
    store.put(key, data, sha(data), lock)
    (tmp_path / ".meta" / (key + ".json")).unlink()  # as if the power went right here
    st = store.head(key)
    assert st is not None and st.sha256 == sha(data) and st.lock is None
    again = store.put(key, data, sha(data), lock)
    assert again.lock is not None and again.lock.mode == "COMPLIANCE"


def test_lock_expires_with_the_clock(tmp_path: Path) -> None:
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    store = LocalFolderStore(tmp_path, clock=lambda: now[0])
    data = b"kept six months"
    key = object_key(sha(data))
    store.put(key, data, sha(data), Lock("GOVERNANCE", now[0] + timedelta(days=180)))
    with pytest.raises(LockRefused, match="until 2026-06-30"):
        store.delete(key)
    now[0] += timedelta(days=181)
    store.delete(key)
    assert store.head(key) is None


def test_objects_are_read_only_and_tampering_is_detected(tmp_path: Path) -> None:
    store = LocalFolderStore(tmp_path / "cold")
    data = b"original"
    key = object_key(sha(data))
    store.put(key, data, sha(data))
    p = tmp_path / "cold" / key
    assert p.stat().st_mode & 0o777 == 0o444
    os.chmod(p, 0o644)
    p.write_bytes(b"altered!")
    with pytest.raises(ObjectCorrupt):
        Retriever(None, store).fetch(sha(data), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_damaged_local_copy_falls_back_to_the_cold_store(tmp_path: Path) -> None:
    store = LocalFolderStore(tmp_path / "cold")
    data = b"the evidence"
    h = sha(data)
    store.put(object_key(h), data, h)
    local = tmp_path / "local" / h
    local.parent.mkdir()
    local.write_bytes(b"bit rot here")
    got = Retriever(lambda s: tmp_path / "local" / s, store).fetch(h, tmp_path / "out")
    assert got.source == store.id and (tmp_path / "out").read_bytes() == data
