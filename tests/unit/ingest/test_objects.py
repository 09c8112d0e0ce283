"""The one-pass capture copy and the local content-addressed store."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest

from ingest.errors import SourceChanged, SourceUnreadable
from ingest.objects import VERIFY_RANGE, LocalObjects, capture_copy


def copy(objects: LocalObjects, src: Path, **kw: object) -> tuple[Path, str]:
    temp, fd = objects.new_temp()
    try:
        d = capture_copy(src, fd, temp, **kw)  # type: ignore[arg-type]
    finally:
        os.close(fd)
    return temp, d.sha256


@pytest.mark.parametrize("size", [0, 1, 4 << 20, (4 << 20) + 1, VERIFY_RANGE + 12345])
@pytest.mark.parametrize("verify", [True, False])
def test_copy_is_identical_and_hashed(tmp_path: Path, size: int, verify: bool) -> None:
    src = tmp_path / "src"
    data = os.urandom(size)
    src.write_bytes(data)
    objects = LocalObjects(tmp_path / "store")
    temp, sha = copy(objects, src, verify=verify, sm3=True)
    assert sha == hashlib.sha256(data).hexdigest()
    assert temp.read_bytes() == data
    assert objects.commit(temp, sha) is True
    stored = objects.path(sha)
    assert stored.read_bytes() == data and oct(stored.stat().st_mode & 0o777) == "0o444"
    # The same content again is not stored twice.
    temp2, _ = copy(objects, src)
    assert objects.commit(temp2, sha) is False and not temp2.exists()


def test_sm3_digest(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_bytes(b"abc")
    objects = LocalObjects(tmp_path / "store")
    temp, fd = objects.new_temp()
    d = capture_copy(src, fd, temp, sm3=True)
    os.close(fd)
    # GB/T 32905-2016 example: SM3("abc").
    assert d.sm3 == "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"


def test_source_replaced_during_copy_is_not_recorded(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_bytes(os.urandom(64 << 20))
    other = tmp_path / "other"
    other.write_bytes(b"replacement")
    objects = LocalObjects(tmp_path / "store")
    before = os.stat(src)
    # Replace the file under the copy (a recorder re-writing its file).
    t = threading.Timer(0.01, lambda: os.replace(other, src))
    t.start()
    with pytest.raises(SourceChanged):
        temp, fd = objects.new_temp()
        try:
            capture_copy(src, fd, temp, chunk=1 << 16, expect=before)
        finally:
            os.close(fd)
            t.join()


def test_source_changed_since_stable(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_bytes(b"one")
    st = os.stat(src)
    src.write_bytes(b"two two")
    objects = LocalObjects(tmp_path / "store")
    with pytest.raises(SourceChanged, match="changed since it was found stable"):
        copy(objects, src, expect=st)


def test_missing_symlink_and_unreadable_sources(tmp_path: Path) -> None:
    objects = LocalObjects(tmp_path / "store")
    with pytest.raises(SourceChanged, match="vanished"):
        copy(objects, tmp_path / "nope")
    (tmp_path / "link").symlink_to(tmp_path / "store")
    with pytest.raises(SourceChanged, match="symlink"):
        copy(objects, tmp_path / "link")
    d = tmp_path / "dir"
    d.mkdir()
    with pytest.raises(SourceChanged, match="no longer a regular file"):
        copy(objects, d)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises((SourceChanged, SourceUnreadable)):
        copy(objects, fifo)


def test_remove_temporaries(tmp_path: Path) -> None:
    objects = LocalObjects(tmp_path / "store")
    _, fd = objects.new_temp()
    os.close(fd)
    assert objects.remove_temporaries() == 1
    assert not list(objects.tmp.iterdir())


def test_an_object_found_in_place_still_has_its_folders_synced(tmp_path: Path) -> None:
    """A copy whose object is already there (an earlier try cut short before its folder
    fsync, another recorder's group in flight) is not recorded before those folders are
    synced: they go into the caller's set like a fresh move's."""
    objs = LocalObjects(tmp_path / "store")
    data = b"evidence"
    sha = hashlib.sha256(data).hexdigest()
    first: set[Path] = set()
    second: set[Path] = set()
    for dirs in (first, second):
        temp, fd = objs.new_temp()
        os.write(fd, data)
        os.fsync(fd)
        os.close(fd)
        objs.commit(temp, sha, dirs)
    assert first == second == {objs.path(sha).parent, objs.path(sha).parent.parent, objs.objects}
