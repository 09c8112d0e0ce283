"""The local-folder cold store: the embedded default, and a test double with teeth.

``<root>/<key>`` holds each object as a read-only file, written once (a
hard link from a fsynced temporary, so an existing key is never replaced);
``<root>/.meta/<key>.json`` holds its SHA-256, size, lock and legal hold.
Deletes are refused while retain-until is in the future or a hold is on, as
an object-locked bucket would. The folder can live on a second disk or an
NFS mount; it is not tamper-proof against root on this machine, which is
why the ledger, not the store, is the evidence of what was stored.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import os
import secrets
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from archive.errors import (
    LocalCopyCorrupt,
    LockRefused,
    NotFound,
    ObjectConflict,
    ObjectCorrupt,
    StoreError,
)
from archive.store import Lock, Stored
from ledger.durable import fsync_dir, write_atomic

_META = ".meta"
_TMP = ".tmp"


def _now() -> datetime:
    return datetime.now(UTC)


class LocalFolderStore:
    """`ObjectStore` and `LockControl` over a folder."""

    def __init__(self, root: Path, clock: Callable[[], datetime] = _now) -> None:
        self.root = root
        self.clock = clock
        self.id = f"file://{root}"
        self.bucket = ""
        (root / _TMP).mkdir(parents=True, exist_ok=True)
        (root / _META).mkdir(parents=True, exist_ok=True)

    # -- paths -------------------------------------------------------------------

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if not key or any(p in ("", ".", "..") for p in parts) or parts[0] in (_META, _TMP):
            raise ValueError(f"not a usable object key: {key!r}")
        return self.root / key

    def _meta_path(self, key: str) -> Path:
        return self.root / _META / (key + ".json")

    def _read_meta(self, key: str) -> dict[str, object] | None:
        try:
            data: dict[str, object] = json.loads(self._meta_path(key).read_bytes())
            return data
        except FileNotFoundError:
            return None

    def _write_meta(self, key: str, meta: dict[str, object]) -> None:
        write_atomic(self._meta_path(key), json.dumps(meta, sort_keys=True).encode())

    # -- ObjectStore ---------------------------------------------------------------

    def put(
        self,
        key: str,
        source: Path | bytes,
        sha256: str,
        lock: Lock | None = None,
        *,
        replace: bool = False,
    ) -> Stored:
        dest = self._path(key)
        if not replace:
            existing = self.head(key)
            if existing is not None:
                return self._accept_existing(key, existing, sha256, lock)
        tmp = self.root / _TMP / f"put-{os.getpid()}-{secrets.token_hex(8)}"
        try:
            size, got = _copy_hashing(source, tmp)
            if got != sha256:
                raise LocalCopyCorrupt(
                    f"{key}: the bytes given hash to {got[:16]}, not {sha256[:16]}",
                    "the dock's copy is damaged: check the disk; nothing was stored",
                )
            os.chmod(tmp, 0o444)
            dest.parent.mkdir(parents=True, exist_ok=True)
            if replace:
                os.replace(tmp, dest)
            else:
                try:
                    os.link(tmp, dest)
                except FileExistsError:
                    # Someone stored it between our check and now: same rule as above.
                    existing = self.head(key)
                    assert existing is not None
                    return self._accept_existing(key, existing, sha256, lock)
            # Every folder on the way, whoever made it: the store entry must survive a
            # power cut, and so must the path to the object.
            d = dest.parent
            while True:
                fsync_dir(d)
                if d == self.root or self.root not in d.parents:
                    break
                d = d.parent
        finally:
            tmp.unlink(missing_ok=True)
        if _hash_file(dest) != sha256:
            raise ObjectCorrupt(f"{key}: the stored copy does not read back with its SHA-256")
        meta: dict[str, object] = {"sha256": sha256, "size": size, "stored": _fmt(self.clock())}
        if lock is not None and not replace:
            meta["lock_mode"] = lock.mode
            meta["retain_until"] = _fmt(lock.retain_until)
        self._write_meta(key, meta)
        st = self.head(key)
        assert st is not None
        return st

    def _accept_existing(
        self, key: str, existing: Stored, sha256: str, lock: Lock | None
    ) -> Stored:
        if existing.sha256 != sha256:
            raise ObjectConflict(
                f"{key} already holds an object with SHA-256 {str(existing.sha256)[:16]}, "
                f"not {sha256[:16]}",
                "the store holds different bytes under this name; audit the store",
            )
        if self._read_meta(key) is None:  # a crash came between the link and its metadata
            meta: dict[str, object] = {
                "sha256": sha256,
                "size": existing.size,
                "stored": _fmt(self.clock()),
            }
            if lock is not None:
                meta["lock_mode"], meta["retain_until"] = lock.mode, _fmt(lock.retain_until)
            self._write_meta(key, meta)
            again = self.head(key)
            assert again is not None
            return again
        return existing

    def head(self, key: str) -> Stored | None:
        p = self._path(key)
        try:
            st = os.stat(p)
        except FileNotFoundError:
            return None
        meta = self._read_meta(key)
        if meta is None:
            sha: str | None = _hash_file(p)
        else:
            sha = str(meta["sha256"])
        lock = None
        if meta is not None and "retain_until" in meta:
            lock = Lock(str(meta["lock_mode"]), _parse(str(meta["retain_until"])))
        checksum = base64.b64encode(bytes.fromhex(sha)).decode() if sha else ""
        return Stored(
            key,
            st.st_size,
            sha,
            checksum,
            version_id=None,
            storage_class=str(meta.get("storage_class", "LOCAL")) if meta else "LOCAL",
            lock=lock,
            legal_hold=bool(meta and meta.get("legal_hold")),
        )

    def get(self, key: str, chunk: int = 8 << 20) -> Iterator[bytes]:
        try:
            f = open(self._path(key), "rb")  # noqa: SIM115 - closed by the generator
        except FileNotFoundError:
            raise NotFound(f"{key}: not in the store {self.root}") from None
        return _chunks(f, chunk)

    def get_range(self, key: str, start: int, end: int, chunk: int = 1 << 20) -> Iterator[bytes]:
        """Bytes ``start`` .. ``end`` (exclusive) of an object, streamed."""
        try:
            f = open(self._path(key), "rb")  # noqa: SIM115 - closed by the generator
        except FileNotFoundError:
            raise NotFound(f"{key}: not in the store {self.root}") from None

        def chunks() -> Iterator[bytes]:
            with f:
                f.seek(start)
                left = end - start
                while left > 0 and (b := f.read(min(chunk, left))):
                    left -= len(b)
                    yield b

        return chunks()

    def read_small(self, key: str) -> tuple[bytes, str]:
        """A small object's bytes and a tag that changes when the file is replaced."""
        try:
            with open(self._path(key), "rb") as f:
                st = os.fstat(f.fileno())
                data = f.read()
        except FileNotFoundError:
            raise NotFound(f"{key}: not in the store {self.root}") from None
        return data, _tag(st)

    def list_tagged(self, prefix: str) -> Iterator[tuple[str, str]]:
        """Keys below ``prefix`` with the same tags as `read_small`, in lexical order."""
        for k in self.list(prefix):
            try:
                st = os.stat(self._path(k))
            except FileNotFoundError:
                continue
            yield k, _tag(st)

    def delete(self, key: str, version_id: str | None = None) -> None:
        st = self.head(key)
        if st is None:
            raise NotFound(f"{key}: not in the store {self.root}")
        if st.legal_hold:
            raise LockRefused(f"{key}: under legal hold; release the hold first")
        if st.lock is not None and st.lock.retain_until > self.clock():
            raise LockRefused(
                f"{key}: locked ({st.lock.mode}) until {_fmt(st.lock.retain_until)}; "
                "it cannot be deleted before then"
            )
        p = self._path(key)
        p.unlink()
        self._meta_path(key).unlink(missing_ok=True)
        fsync_dir(p.parent)

    def list(self, prefix: str) -> Iterator[str]:
        base = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self.root / base if base else self.root
        found: list[str] = []
        for dirpath, dirs, names in os.walk(start):
            rel = os.path.relpath(dirpath, self.root)
            if rel == ".":
                dirs[:] = [d for d in dirs if d not in (_META, _TMP)]
                rel = ""
            for n in names:
                k = f"{rel}/{n}" if rel else n
                if k.startswith(prefix):
                    found.append(k)
        return iter(sorted(found))

    # -- LockControl ---------------------------------------------------------------

    def check_locking(self, required: bool) -> bool:
        return True  # this folder enforces its own locks

    def extend_retention(self, key: str, lock: Lock) -> Lock:
        meta = self._read_meta(key)
        if meta is None:
            raise NotFound(f"{key}: not in the store {self.root}")
        if "retain_until" in meta:
            cur = Lock(str(meta["lock_mode"]), _parse(str(meta["retain_until"])))
            if cur.retain_until >= lock.retain_until:
                return cur
            mode = "COMPLIANCE" if "COMPLIANCE" in (cur.mode, lock.mode) else lock.mode
            lock = Lock(mode, lock.retain_until)
        meta["lock_mode"], meta["retain_until"] = lock.mode, _fmt(lock.retain_until)
        self._write_meta(key, meta)
        return lock

    def set_legal_hold(self, key: str, on: bool) -> None:
        meta = self._read_meta(key)
        if meta is None:
            raise NotFound(f"{key}: not in the store {self.root}")
        meta["legal_hold"] = on
        self._write_meta(key, meta)

    def set_storage_class(self, key: str, storage_class: str) -> Stored:
        """A folder has one class of storage: the class is recorded, nothing moves."""
        meta = self._read_meta(key)
        if meta is None:
            raise NotFound(f"{key}: not in the store {self.root}")
        meta["storage_class"] = storage_class
        self._write_meta(key, meta)
        st = self.head(key)
        assert st is not None
        return st

    def restore(self, key: str, days: int) -> str:
        if self.head(key) is None:
            raise NotFound(f"{key}: not in the store {self.root}")
        return "available"

    def remove_temporaries(self) -> int:
        n = 0
        for p in (self.root / _TMP).iterdir():
            p.unlink()
            n += 1
        return n


def _fmt(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(s: str) -> datetime:
    return datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def _chunks(f: object, chunk: int) -> Iterator[bytes]:
    import io

    assert isinstance(f, io.BufferedReader)
    with f:
        while b := f.read(chunk):
            yield b


def _hash_file(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        fd = f.fileno()
        # Read what the disk holds, not what the page cache remembers of our write.
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        while b := f.read(4 << 20):
            h.update(b)
    return h.hexdigest()


def _copy_hashing(source: Path | bytes, tmp: Path) -> tuple[int, str]:
    h = hashlib.sha256()
    size = 0
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        if isinstance(source, bytes):
            chunks: Iterator[bytes] = iter([source])
            src = None
        else:
            src = open(source, "rb")  # noqa: SIM115
            chunks = iter(lambda: src.read(8 << 20), b"")
        try:
            for b in chunks:
                h.update(b)
                size += len(b)
                view = memoryview(b)
                while view:
                    try:
                        n = os.write(fd, view)
                    except OSError as e:
                        if e.errno in (errno.ENOSPC, errno.EDQUOT):
                            raise StoreError(f"cold store folder is full ({e.strerror})") from e
                        raise
                    view = view[n:]
        finally:
            if src is not None:
                src.close()
        os.fsync(fd)
    finally:
        os.close(fd)
    return size, h.hexdigest()


def _tag(st: os.stat_result) -> str:
    """What identifies one version of a file: replaced or rewritten, it changes."""
    return f"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}"
