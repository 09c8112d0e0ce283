"""One conformance suite for every cold store: the local folder and S3 (SeaweedFS).

Both implementations must behave the same at the port: write once, accept an
existing object only when its checksum matches, refuse deletes while locked
or held, only extend retention, stream objects back.
"""

from __future__ import annotations

import base64
import hashlib
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from archive.errors import (
    LocalCopyCorrupt,
    LockRefused,
    NotFound,
    ObjectConflict,
)
from archive.local import LocalFolderStore
from archive.s3 import S3Store
from archive.settings import S3Settings
from archive.store import ColdStore, Lock, object_key


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ColdStore]:
    if request.param == "local":
        yield LocalFolderStore(tmp_path / "cold")
        return
    server = request.getfixturevalue("seaweed")
    bucket = server.bucket(f"conf-{uuid.uuid4().hex[:12]}")
    yield S3Store(
        S3Settings(
            bucket=bucket,
            endpoint_url=server.endpoint,
            multipart_threshold_mb=5,
            part_size_mb=5,
            concurrency=3,
        )
    )


def soon(seconds: int = 3600) -> Lock:
    return Lock("COMPLIANCE", datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=seconds))


def test_put_head_get_roundtrip(store: ColdStore, tmp_path: Path) -> None:
    data = os.urandom(100_000)
    key = object_key(sha(data))
    st = store.put(key, data, sha(data))
    assert (st.size, st.sha256) == (len(data), sha(data))
    assert st.checksum == base64.b64encode(hashlib.sha256(data).digest()).decode()
    assert b"".join(store.get(key, chunk=4096)) == data
    f = tmp_path / "src"
    f.write_bytes(data[:5000])
    st2 = store.put("objects/x/file", f, sha(data[:5000]))
    assert st2.size == 5000
    head = store.head("objects/x/file")
    assert head is not None and head.sha256 == sha(data[:5000])


def test_large_object_goes_in_parts_and_reads_back(store: ColdStore, tmp_path: Path) -> None:
    f = tmp_path / "big"
    data = os.urandom(12 * 1024 * 1024 + 17)
    f.write_bytes(data)
    key = object_key(sha(data))
    st = store.put(key, f, sha(data), soon())
    assert st.size == len(data) and st.sha256 == sha(data)
    if isinstance(store, S3Store):
        assert st.checksum.endswith("-3"), st.checksum  # composite of three 5 MiB parts
    got = hashlib.sha256()
    for c in store.get(key):
        got.update(c)
    assert got.hexdigest() == sha(data)
    # The same object again is accepted (its composite checksum is recomputed and matches).
    again = store.put(key, f, sha(data), soon())
    assert again.version_id == st.version_id


def test_existing_object_accepted_only_when_checksum_matches(store: ColdStore) -> None:
    a, b = b"evidence A", b"evidence B"
    key = object_key(sha(a))
    first = store.put(key, a, sha(a), soon())
    same = store.put(key, a, sha(a), soon())
    assert same.version_id == first.version_id and same.sha256 == sha(a)
    with pytest.raises(ObjectConflict):
        store.put(key, b, sha(b), soon())
    assert b"".join(store.get(key)) == a


def test_bytes_that_do_not_match_their_hash_are_not_stored(store: ColdStore) -> None:
    with pytest.raises(LocalCopyCorrupt):
        store.put("objects/y", b"what is on disk", sha(b"what was captured"))
    assert store.head("objects/y") is None


def test_locked_object_cannot_be_deleted(store: ColdStore) -> None:
    data = b"locked"
    key = object_key(sha(data))
    store.put(key, data, sha(data), soon())
    st = store.head(key)
    assert st is not None and st.lock is not None and st.lock.mode == "COMPLIANCE"
    with pytest.raises(LockRefused):
        store.delete(key)
    assert store.head(key) is not None


def test_legal_hold_blocks_deletion_until_released(store: ColdStore) -> None:
    data = b"held"
    key = object_key(sha(data))
    store.put(key, data, sha(data))
    store.set_legal_hold(key, True)
    st = store.head(key)
    assert st is not None and st.legal_hold
    with pytest.raises(LockRefused):
        store.delete(key)
    store.set_legal_hold(key, False)
    store.delete(key)
    assert store.head(key) is None


def test_retention_is_only_extended(store: ColdStore) -> None:
    data = b"retained"
    key = object_key(sha(data))
    first = soon(3600)
    store.put(key, data, sha(data), first)
    later = Lock("COMPLIANCE", first.retain_until + timedelta(days=30))
    assert store.extend_retention(key, later).retain_until == later.retain_until
    earlier = Lock("COMPLIANCE", first.retain_until)
    kept = store.extend_retention(key, earlier)
    assert kept.retain_until == later.retain_until
    st = store.head(key)
    assert st is not None and st.lock is not None
    assert st.lock.retain_until == later.retain_until


def test_storage_class_move_keeps_bytes_lock_and_hold(store: ColdStore) -> None:
    data = b"tiered" * 1000
    key = object_key(sha(data))
    lock = soon(3600)
    store.put(key, data, sha(data), lock)
    store.set_legal_hold(key, True)
    moved = store.set_storage_class(key, "STANDARD_IA")
    assert moved.storage_class == "STANDARD_IA" and moved.size == len(data)
    assert moved.lock is not None and moved.lock.retain_until == lock.retain_until
    assert moved.legal_hold
    assert b"".join(store.get(key)) == data
    again = store.head(key)
    assert again is not None and again.storage_class == "STANDARD_IA"
    with pytest.raises(LockRefused):
        store.delete(key)


def test_replace_moves_a_mutable_key_on(store: ColdStore) -> None:
    store.put("ledger/o/checkpoint", b"one", sha(b"one"), replace=True)
    store.put("ledger/o/checkpoint", b"two", sha(b"two"), replace=True)
    assert b"".join(store.get("ledger/o/checkpoint")) == b"two"


def test_list_and_missing(store: ColdStore) -> None:
    for k in ("ledger/o/tile/0/000", "ledger/o/tile/0/001.p/3", "ledger/p/checkpoint"):
        store.put(k, k.encode(), sha(k.encode()))
    assert list(store.list("ledger/o/")) == ["ledger/o/tile/0/000", "ledger/o/tile/0/001.p/3"]
    assert list(store.list("ledger/o/tile/0/001.p/")) == ["ledger/o/tile/0/001.p/3"]
    assert store.head("nothing/here") is None
    with pytest.raises(NotFound):
        store.get("nothing/here")
    with pytest.raises(NotFound):
        store.delete("nothing/here")


def test_unlocked_object_can_be_deleted(store: ColdStore) -> None:
    data = b"free"
    key = object_key(sha(data))
    store.put(key, data, sha(data))
    store.delete(key)
    assert store.head(key) is None


def test_locking_check(store: ColdStore) -> None:
    assert store.check_locking(required=True) is True
