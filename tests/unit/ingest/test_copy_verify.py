"""The verifying re-read catches a copy that does not read back as written: for a large
file (compared byte for byte, range by range) and for a group of small ones (each
re-hashed, each failing alone). The disk's answer is altered in the read itself."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ingest.errors import CopyMismatch
from ingest.objects import VERIFY_RANGE, LocalObjects, capture_copy, settle_copies, start_copy


def flip_reads_of(monkeypatch: pytest.MonkeyPatch, victims: set[Path], at: int) -> None:
    """Reads of the victims' copies return one byte changed (a failing disk)."""
    real = os.pread
    inodes = {os.stat(p).st_ino for p in victims}

    def pread(fd: int, n: int, pos: int) -> bytes:
        b = real(fd, n, pos)
        if os.fstat(fd).st_ino in inodes and pos <= at < pos + len(b):
            i = at - pos
            b = b[:i] + bytes([b[i] ^ 1]) + b[i + 1 :]
        return b

    monkeypatch.setattr(os, "pread", pread)


def test_a_large_copy_that_reads_back_different_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    src.write_bytes(os.urandom(VERIFY_RANGE + (5 << 20)))
    store = LocalObjects(tmp_path / "store")
    temp, fd = store.new_temp()
    flip_reads_of(monkeypatch, {temp}, VERIFY_RANGE + 12345)  # in the second range
    try:
        with pytest.raises(CopyMismatch):
            capture_copy(src, fd, temp, verify=True)
    finally:
        os.close(fd)
    monkeypatch.undo()
    temp2, fd2 = store.new_temp()
    try:
        d = capture_copy(src, fd2, temp2, verify=True)
    finally:
        os.close(fd2)
    assert d.size == src.stat().st_size


def test_one_small_copy_that_reads_back_different_fails_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalObjects(tmp_path / "store")
    copies = []
    for i in range(5):
        src = tmp_path / f"s{i}"
        src.write_bytes(os.urandom(3000 + i))
        temp, fd = store.new_temp()
        copies.append((fd, temp, start_copy(src, fd)))
    flip_reads_of(monkeypatch, {copies[2][1]}, 100)
    try:
        errors = settle_copies(copies, verify=True)
    finally:
        for fd, _, _ in copies:
            os.close(fd)
    assert [type(e) for e in errors] == [type(None)] * 2 + [CopyMismatch] + [type(None)] * 2
