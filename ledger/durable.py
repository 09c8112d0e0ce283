"""The one place for durable writes (atomic replace, fsync of files and folders) and
for the advisory file locks that keep two processes of a station apart.

A file written with `write_atomic` is either absent, the old version, or the
complete new version after any crash; once the call returns it survives a
power cut. Temporary files are named ``.<name>.tmp-<pid>-<rand>`` in the same
folder so a rename is atomic and a static file server never serves them;
`remove_temporaries` clears the leftovers of a crash.
"""

from __future__ import annotations

import fcntl
import os
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

TMP_MARK = ".tmp-"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}-{secrets.token_hex(4)}")


def _write_tmp(path: Path, data: bytes, mode: int) -> Path:
    tmp = _tmp_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    except BaseException:
        # A full disk (ENOSPC) or an I/O error must not leave a stray temporary behind.
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    return tmp


def write_atomic(path: Path, data: bytes, mode: int = 0o644, sync_dir: bool = True) -> None:
    """Replace ``path`` with ``data`` atomically and durably."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _write_tmp(path, data, mode)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if sync_dir:
        fsync_dir(path.parent)


def write_many_atomic(files: Mapping[Path, tuple[bytes, int]], root: Path) -> None:
    """Write several files below ``root`` atomically; each is durable when this returns.

    Data of every file is fsynced before any rename. Then every folder from each
    file's folder up to ``root`` is fsynced once, deepest first: a folder made by
    an earlier, interrupted call must have its entry made durable too.
    """
    dirs: set[Path] = set()
    staged: list[tuple[Path, Path]] = []
    try:
        for path, (data, mode) in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            staged.append((_write_tmp(path, data, mode), path))
        for tmp, path in staged:
            os.replace(tmp, path)
            d = path.parent
            while d not in dirs:
                dirs.add(d)
                if d == root or d == d.parent:
                    break
                d = d.parent
        staged = []
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
    for d in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
        fsync_dir(d)


def remove_temporaries(root: Path) -> int:
    """Delete crash leftovers of `write_atomic` below ``root``; returns how many."""
    n = 0
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            if name.startswith(".") and TMP_MARK in name:
                os.unlink(os.path.join(dirpath, name))
                n += 1
    return n


class LockBusy(Exception):
    """Another process holds the lock; ``holder`` is its PID when it wrote one."""

    def __init__(self, path: Path, holder: int | None) -> None:
        self.path = path
        self.holder = holder
        who = f"PID {holder}" if holder else "another process"
        super().__init__(f"{who} holds {path}")


@contextmanager
def file_lock(path: Path, wait: bool = True, record_pid: bool = False) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the block.

    With ``wait`` False a held lock raises `LockBusy` at once, naming the holder's PID
    when the holder recorded it (``record_pid``). The kernel drops the lock when the
    process dies, so a crash never leaves a station locked out.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            raise LockBusy(path, int(text) if text.isdigit() else None) from None
        if record_pid:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            if record_pid:
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
