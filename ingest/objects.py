"""The local content-addressed store and the one-pass capture copy.

Objects live at ``<root>/objects/sha256/<2 hex>/<2 hex>/<64 hex>`` (read-only
files); copies in progress at ``<root>/tmp/``. A capture reads each source
byte once: a reader, a hasher, a writer and (with copy verification) a
re-reader run as a pipeline of threads, so hashing, writing and the
verifying re-read overlap. The re-read happens after the written range
(`VERIFY_RANGE`) is fsynced and dropped from the page cache, so it reads what
the disk holds, and compares it byte for byte with the chunks written (kept
until then: as strict as re-hashing, without a second SHA-256 pass over every
byte). Memory is bounded by a few chunks and two verify ranges whatever the
file size.

Files under one chunk are copied in two steps so a group of them costs about
one journal commit, not one each: `start_copy` reads, hashes and writes a copy
and asks the kernel to start writing it out; `settle_copies` then fsyncs every
copy of the group and, with verification, drops each from the page cache and
reads it back from the disk (all re-reads in flight at once). A copy is moved
into place (`LocalObjects.commit`) only after it is settled; with ``dirs`` the
folders a move touched are collected and fsynced once each (`sync_dirs`)
before anything is recorded about them.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import queue
import secrets
import stat
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ingest.errors import CaptureError, CopyMismatch, DiskFull, SourceChanged, SourceUnreadable
from ledger.durable import fsync_dir

log = logging.getLogger("custody.ingest")
T = TypeVar("T")

VERIFY_RANGE = 16 << 20  # fsync + re-read granularity (and what is held to compare)
_DONE = None
# fsyncs of one group run side by side: the kernel merges the journal commits and the
# disk cache flushes of fsyncs in flight together, where one after another each waits
# for its own flush. Each call still returns only once its file is on the disk.
FSYNC_THREADS = 16
_fsync_pool: ThreadPoolExecutor | None = None
_fsync_pool_lock = threading.Lock()


def fsync_each(fsync: Callable[[T], None], items: Sequence[T]) -> list[OSError | None]:
    """``fsync(item)`` for every item, in flight together; one error (or None) per item."""

    def one(item: T) -> OSError | None:
        try:
            fsync(item)
        except OSError as e:
            return e
        return None

    if len(items) <= 1:
        return [one(i) for i in items]
    global _fsync_pool
    with _fsync_pool_lock:
        if _fsync_pool is None:
            _fsync_pool = ThreadPoolExecutor(FSYNC_THREADS, thread_name_prefix="fsync")
        pool = _fsync_pool
    return list(pool.map(one, items))


@dataclass(frozen=True)
class Digests:
    size: int
    sha256: str
    sm3: str | None = None
    # The first bytes of the file (what its media type is sniffed from).
    head: bytes = field(default=b"", compare=False, repr=False)


class LocalObjects:
    """Content-addressed objects on the dock's own disk."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp = root / "tmp"
        self.objects = root / "objects" / "sha256"
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.objects.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        return self.objects / sha256[:2] / sha256[2:4] / sha256

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).exists()

    def new_temp(self) -> tuple[Path, int]:
        """A new temp copy, open for writing and reading back (the verifying re-read)."""
        p = self.tmp / f"capture-{os.getpid()}-{secrets.token_hex(8)}"
        fd = os.open(p, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        return p, fd

    def commit(self, temp: Path, sha256: str, dirs: set[Path] | None = None) -> bool:
        """Move a verified, fsynced temp copy into place; False if a sound object existed.

        An existing object is trusted only after it is re-hashed: a damaged one is
        replaced by the fresh copy rather than kept in its place. The folders the move
        touched are fsynced now, or with ``dirs`` added to it for the caller to fsync
        once each (`sync_dirs`) before it records the object anywhere.
        """
        dest = self.path(sha256)
        # Every folder on the way, whoever made it: the entry must survive a power cut.
        touched = (dest.parent, dest.parent.parent, self.objects)
        if dest.exists():
            if self.hash_of(sha256) == sha256:
                temp.unlink()
                # Its folder entries too: the move that put it there (an earlier try cut
                # short, another recorder's group still in flight) may not be synced yet.
                if dirs is not None:
                    dirs.update(touched)
                else:
                    self.sync_dirs(touched)
                return False
            log.error(
                "stored object %s was damaged; replaced with a fresh verified copy", sha256[:16]
            )
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(temp, 0o444)
        os.replace(temp, dest)
        if dirs is not None:
            dirs.update(touched)
        else:
            self.sync_dirs(touched)
        return True

    @staticmethod
    def sync_dirs(dirs: Iterable[Path]) -> None:
        """fsync folders whose entries changed, all at once (see `fsync_each`); raises
        the first error."""
        for e in fsync_each(fsync_dir, list(dirs)):
            if e is not None:
                raise e

    def put_bytes(self, data: bytes) -> str:
        """Store a small object made here (a sidecar) by its SHA-256; returns the hash."""
        sha = hashlib.sha256(data).hexdigest()
        if self.exists(sha):
            return sha
        temp, fd = self.new_temp()
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        self.commit(temp, sha)
        return sha

    def remove(self, sha256: str) -> bool:
        """Delete the dock's copy (retention: evicted after the cold store confirmed its
        copy, or deleted by rule); False if it was not here."""
        p = self.path(sha256)
        try:
            p.unlink()
        except FileNotFoundError:
            return False
        fsync_dir(p.parent)
        return True

    def hash_of(self, sha256: str) -> str | None:
        """SHA-256 of the stored object as it reads now (None if it is missing)."""
        h = hashlib.sha256()
        try:
            with open(self.path(sha256), "rb") as f:
                while b := f.read(4 << 20):
                    h.update(b)
        except FileNotFoundError:
            return None
        return h.hexdigest()

    def remove_temporaries(self) -> int:
        """Clear half-made copies left by a crash (none of them was ever recorded)."""
        n = 0
        for p in self.tmp.iterdir():
            p.unlink()
            n += 1
        return n

    def free_bytes(self) -> int:
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize


class _Stage(threading.Thread):
    """Consumes items from a queue in order; remembers the first error."""

    def __init__(self, name: str, fn: Callable[[Any], None], queued: int = 4) -> None:
        super().__init__(name=name, daemon=True)
        self.q: queue.Queue[Any] = queue.Queue(maxsize=queued)
        self.fn = fn
        self.error: BaseException | None = None

    def run(self) -> None:
        while True:
            item = self.q.get()
            if item is _DONE:
                return
            if self.error is None:
                try:
                    self.fn(item)
                except BaseException as e:
                    self.error = e

    def put(self, item: Any) -> None:
        if self.error is not None:
            raise self.error
        self.q.put(item)


def _same_version(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_size, a.st_mtime_ns, a.st_ino, a.st_dev) == (
        b.st_size,
        b.st_mtime_ns,
        b.st_ino,
        b.st_dev,
    )


def capture_copy(
    src: Path,
    dst_fd: int,
    dst_path: Path,
    *,
    sm3: bool = False,
    verify: bool = True,
    chunk: int = 4 << 20,
    expect: os.stat_result | None = None,
) -> Digests:
    """Copy ``src`` into the open temp file ``dst_fd`` in one read pass, hashing on the way;
    the copy is fsynced (and with ``verify`` read back from the disk) when this returns.

    Raises SourceChanged if the source is not the same file version from start
    to end (size, mtime, inode), SourceUnreadable on open/read errors,
    DiskFull on ENOSPC, CopyMismatch if the re-read differs.
    """
    fd, before = _open_source(src, expect)
    try:
        if before.st_size < chunk:
            digests = _read_small(fd, dst_fd, sm3, chunk)
        else:
            digests = _pipeline(fd, dst_fd, dst_path, sm3, verify, chunk)
        _same_from_start_to_end(src, fd, before, digests)
    finally:
        os.close(fd)
    if before.st_size < chunk:
        error = settle_copies([(dst_fd, dst_path, digests)], verify)[0]
        if error is not None:
            raise error
    return digests


def open_source(src: Path, expect: os.stat_result | None = None) -> tuple[int, os.stat_result]:
    """Open a source file under one chunk for `start_copy` and ask the disk for all of it
    now (POSIX_FADV_WILLNEED): a group's sources opened first are read in parallel, not
    one request at a time. Raises as `capture_copy` does."""
    fd, before = _open_source(src, expect)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
    return fd, before


def start_copy(
    src: Path,
    dst_fd: int,
    *,
    sm3: bool = False,
    chunk: int = 4 << 20,
    expect: os.stat_result | None = None,
    opened: tuple[int, os.stat_result] | None = None,
) -> Digests:
    """The first step of copying a file under one chunk as one of a group: read it once,
    hash it, write the copy and ask the kernel to start writing it out. Not durable
    yet: `settle_copies` fsyncs (and verifies) it. ``opened``: the source as
    `open_source` gave it (closed here). Raises as `capture_copy` does."""
    fd, before = opened if opened is not None else _open_source(src, expect)
    try:
        digests = _read_small(fd, dst_fd, sm3, chunk)
        _same_from_start_to_end(src, fd, before, digests)
    finally:
        os.close(fd)
    # On Linux DONTNEED starts writeback of dirty pages (and drops none of them): the
    # group's copies reach the disk together and the fsyncs that follow mostly wait.
    os.posix_fadvise(dst_fd, 0, 0, os.POSIX_FADV_DONTNEED)
    return digests


def settle_copies(
    copies: Sequence[tuple[int, Path, Digests]], verify: bool = True
) -> list[CaptureError | None]:
    """The second step for copies made by `start_copy` (open fd, path, digests): fsync
    each, then with ``verify`` drop each from the page cache and read it back from the
    disk, comparing its SHA-256. Returns one error (or None) per copy, in order: one
    copy's failure is its own."""
    errors: list[CaptureError | None] = [
        None if e is None else _write_error(e, "while making the copy durable")
        for e in fsync_each(os.fsync, [fd for fd, _, _ in copies])
    ]
    if not verify:
        return errors
    live = [i for i, e in enumerate(errors) if e is None]
    for i in live:
        fd = copies[i][0]
        # fsynced, so clean: dropped now, and read back from the disk below; every
        # re-read of the group is asked for first, so they are in flight together.
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
    for i in live:
        fd, path, d = copies[i]
        try:
            back = os.pread(fd, d.size + 1, 0)
        except OSError as e:
            errors[i] = CopyMismatch(f"{path}: the stored copy cannot be read back: {e.strerror}")
            continue
        if len(back) != d.size or hashlib.sha256(back).hexdigest() != d.sha256:
            errors[i] = _mismatch(path)
    return errors


def _open_source(src: Path, expect: os.stat_result | None) -> tuple[int, os.stat_result]:
    """The source opened for one sequential read, checked to be the regular file
    version ``expect`` describes."""
    try:
        # O_NONBLOCK: opening a FIFO or device must not hang the worker (regular files
        # ignore the flag).
        fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            raise SourceChanged(f"{src}: vanished before it could be read") from e
        if e.errno == errno.ELOOP:
            raise SourceChanged(f"{src}: became a symlink") from e
        raise SourceUnreadable(f"{src}: cannot open: {e.strerror}") from e
    try:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            raise SourceChanged(f"{src}: is no longer a regular file")
        if expect is not None and not _same_version(before, expect):
            raise SourceChanged(f"{src}: changed since it was found stable")
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
    except BaseException:
        os.close(fd)
        raise
    return fd, before


def _same_from_start_to_end(src: Path, fd: int, before: os.stat_result, d: Digests) -> None:
    after = os.fstat(fd)
    if not _same_version(before, after) or d.size != before.st_size:
        raise SourceChanged(f"{src}: changed while it was being read")
    try:
        now = os.lstat(src)
    except FileNotFoundError:
        raise SourceChanged(f"{src}: was removed while it was being read") from None
    if not _same_version(before, now):
        raise SourceChanged(f"{src}: was replaced while it was being read")
    # Some recorders drop off the bus without an error on read: the size check above
    # and the unchanged mtime catch a short copy.


def _write_error(e: OSError, doing: str) -> CaptureError:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFull(f"local disk full {doing} ({e.strerror})")
    return CaptureError(f"local disk error {doing}: {e.strerror}")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFull(f"local disk full while copying ({e.strerror})") from e
            raise
        view = view[n:]


def _mismatch(dst_path: Path) -> CopyMismatch:
    return CopyMismatch(
        f"{dst_path}: the stored copy does not read back identical; "
        "check the local disk (dmesg, smartctl)"
    )


def _read_small(fd: int, dst_fd: int, sm3: bool, chunk: int) -> Digests:
    """Files under one chunk: read whole, hashed and written on the calling thread
    (threads cost more than they save here)."""
    parts = []
    while True:
        try:
            b = os.read(fd, chunk)
        except OSError as e:
            raise SourceUnreadable(f"read failed: {e.strerror}") from e
        if not b:
            break
        parts.append(b)
    data = b"".join(parts)
    _write_all(dst_fd, data)
    sha = hashlib.sha256(data).hexdigest()
    sm = hashlib.new("sm3", data).hexdigest() if sm3 else None
    return Digests(len(data), sha, sm, head=data[:64])


def _pipeline(fd: int, dst_fd: int, dst_path: Path, sm3: bool, verify: bool, chunk: int) -> Digests:
    h256 = hashlib.sha256()
    hsm3 = hashlib.new("sm3") if sm3 else None
    written = [0]
    synced = [0]
    verified = [0]
    # The chunks written since the last sync, kept until the verifier has compared them
    # with what the disk gives back (at most about two verify ranges are held).
    kept: list[list[bytes]] = [[]]

    def do_hash(buf: bytes) -> None:
        h256.update(buf)

    def do_sm3(buf: bytes) -> None:
        assert hsm3 is not None
        hsm3.update(buf)

    verifier: _Stage | None = None

    def do_verify(rng: tuple[int, int, list[bytes]]) -> None:
        # Byte for byte against what was written (and hashed): as strict as hashing the
        # re-read, at a fraction of the CPU.
        start, end, bufs = rng
        rfd = os.open(dst_path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            pos = start
            for buf in bufs:
                if os.pread(rfd, len(buf), pos) != buf:
                    raise _mismatch(dst_path)
                pos += len(buf)
        finally:
            os.close(rfd)
        if pos != end:
            raise CopyMismatch(f"{dst_path}: verified {pos - start} of {end - start} bytes")
        verified[0] += end - start

    def sync_range() -> None:
        os.fdatasync(dst_fd)
        if written[0] > synced[0]:
            os.posix_fadvise(dst_fd, synced[0], written[0] - synced[0], os.POSIX_FADV_DONTNEED)
            if verifier is not None:
                verifier.put((synced[0], written[0], kept[0]))
            kept[0] = []
            synced[0] = written[0]

    def do_write(buf: bytes) -> None:
        _write_all(dst_fd, buf)
        written[0] += len(buf)
        if verify:
            kept[0].append(buf)
            if written[0] - synced[0] >= VERIFY_RANGE:
                sync_range()

    stages = [_Stage("hash", do_hash), _Stage("write", do_write)]
    if hsm3 is not None:
        stages.append(_Stage("sm3", do_sm3))
    if verify:
        verifier = _Stage("verify", do_verify, queued=1)
    for s in [*stages, *([verifier] if verifier else [])]:
        s.start()
    try:
        return _run_pipeline(
            fd, dst_fd, chunk, verify, stages, verifier, sync_range, h256, hsm3, verified, dst_path
        )
    finally:
        if verifier is not None and verifier.is_alive():
            verifier.q.put(_DONE)
            verifier.join()


def _run_pipeline(
    fd: int,
    dst_fd: int,
    chunk: int,
    verify: bool,
    stages: list[_Stage],
    verifier: _Stage | None,
    sync_range: Callable[[], None],
    h256: Any,
    hsm3: Any,
    verified: list[int],
    dst_path: Path,
) -> Digests:
    size = 0
    head = b""
    try:
        while True:
            try:
                buf = os.read(fd, chunk)
            except OSError as e:
                raise SourceUnreadable(f"read failed after {size} bytes: {e.strerror}") from e
            if not buf:
                break
            if not size:
                head = buf[:64]
            size += len(buf)
            for s in stages:
                s.put(buf)
    finally:
        for s in stages:
            s.q.put(_DONE)
        for s in stages:
            s.join()
    for s in stages:
        if s.error is not None:
            raise s.error  # the caller stops the verifier
    try:
        os.fsync(dst_fd)
        if verify:
            sync_range()
    finally:
        if verifier is not None:
            verifier.q.put(_DONE)
            verifier.join()
    if verifier is not None:
        if verifier.error is not None:
            raise verifier.error
        if verified[0] != size:
            raise _mismatch(dst_path)
    return Digests(size, h256.hexdigest(), hsm3.hexdigest() if hsm3 else None, head=head)
