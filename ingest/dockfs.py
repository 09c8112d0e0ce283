"""Reading a dock without ever leaving it: every folder below a dock root is entered
through a file descriptor of its parent with ``O_NOFOLLOW``, never by a path that the
kernel resolves again, so a symlink at any depth (a recorder folder copied with
``cp -a``, ``rsync -a`` or ``tar``) is refused instead of followed to ``/etc`` or the
station's own key. Each folder opened is checked against what its parent listed
(``st_dev``/``st_ino``), so a folder swapped for another between the two is not
entered either.

The dock root itself is configuration and is trusted as named.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

# The kernel's limit on a path handed to a system call (linux/limits.h). Capture opens
# sources by path, so a file whose full path is this long or longer cannot be captured.
PATH_MAX = 4096

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


@dataclass(frozen=True)
class Refused:
    """A path below a dock that the station will not take, and why (one human line)."""

    path: bytes
    reason: str


class Outside(Exception):
    """A path that cannot be reached from its dock root without following a symlink (or
    that the kernel refuses); ``refused`` says which component and why."""

    def __init__(self, refused: Refused) -> None:
        super().__init__(refused.reason)
        self.refused = refused


class FolderGone(FileNotFoundError):
    """A folder on the way to a path is gone (the dock root, or the recorder's folder: a
    recorder unplugged, a folder renamed away), as opposed to the file itself missing
    from a folder that is there."""


def _reason(err: OSError, what: str) -> str:
    if err.errno in (errno.ELOOP, errno.EMLINK):
        return f"a symlink to a {what} (never followed)"
    if err.errno == errno.ENAMETOOLONG:
        return f"path longer than the kernel's limit ({PATH_MAX} bytes): not captured"
    if err.errno == errno.EMFILE:
        return "folders nested too deeply to open (too many open files): not captured"
    return f"cannot open the {what}: {err.strerror}"


def open_dir_at(parent_fd: int, name: bytes, expect: os.stat_result | None = None) -> int:
    """Open the folder ``name`` of ``parent_fd`` without following a symlink; with
    ``expect`` (its lstat as listed), refuse a folder swapped for another since."""
    fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    if expect is not None:
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (expect.st_dev, expect.st_ino):
            os.close(fd)
            raise OSError(errno.ESTALE, "the folder was replaced while it was being read")
    return fd


def open_root(root: Path) -> int:
    return os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NONBLOCK)


def parts_below(root: Path, path: Path) -> tuple[bytes, ...]:
    """The components of ``path`` below ``root`` (ValueError if it is not below)."""
    return tuple(os.fsencode(p) for p in path.relative_to(root).parts)


def open_parent(root: Path, parts: tuple[bytes, ...]) -> int:
    """A descriptor of the folder holding ``root/parts``, reached one folder at a time
    from the dock root without following a symlink. Raises `Outside` naming the first
    component that is a symlink (or that cannot be opened), `FolderGone` if a folder on
    the way is gone."""
    try:
        fd = open_root(root)
    except (FileNotFoundError, NotADirectoryError) as e:
        raise FolderGone(errno.ENOENT, "gone", str(root)) from e
    here = os.fsencode(root)
    try:
        for name in parts[:-1]:
            here = here + b"/" + name
            try:
                nxt = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError as e:
                if e.errno == errno.ENOENT:
                    raise FolderGone(errno.ENOENT, "gone", os.fsdecode(here)) from e
                if e.errno == errno.ENOTDIR:
                    try:
                        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                    except OSError:
                        raise FolderGone(errno.ENOENT, "gone", os.fsdecode(here)) from e
                    if not stat.S_ISLNK(st.st_mode):
                        raise FolderGone(errno.ENOENT, "gone", os.fsdecode(here)) from e
                    e = OSError(errno.ELOOP, "symlink")
                raise Outside(Refused(here, _reason(e, "folder"))) from None
            os.close(fd)
            fd = nxt
        return fd
    except BaseException:
        os.close(fd)
        raise


def lstat_below(root: Path, path: Path) -> os.stat_result:
    """The lstat of ``path``, reached from ``root`` without following a symlink on the
    way (see `open_parent`); the path itself is not followed either."""
    return lstat_with_folder(root, path)[0]


def lstat_with_folder(root: Path, path: Path) -> tuple[os.stat_result, os.stat_result]:
    """The lstat of ``path`` and the fstat of the folder holding it, both through one
    descriptor of that folder (see `lstat_below`). `FileAbsent` (with the folder's
    fstat) if the folder is there and the file is not, so a caller can tell a
    recorder's folder from the mount point left behind when the recorder is unplugged
    (another device); `FolderGone` if a folder on the way is gone."""
    parts = parts_below(root, path)
    if not parts:
        st = os.stat(root)
        return st, st
    fd = open_parent(root, parts)
    try:
        folder = os.fstat(fd)
        try:
            return os.stat(parts[-1], dir_fd=fd, follow_symlinks=False), folder
        except FileNotFoundError:
            raise FileAbsent(folder) from None
    finally:
        os.close(fd)


class FileAbsent(FileNotFoundError):
    """The file is not in its folder, which is there (``folder``: its fstat)."""

    def __init__(self, folder: os.stat_result) -> None:
        super().__init__(errno.ENOENT, "not in its folder")
        self.folder = folder


def unlink_below(root: Path, path: Path, check: Callable[[os.stat_result], bool]) -> bool:
    """Remove the file ``path`` from its folder reached from ``root`` without following
    a symlink, if ``check`` accepts its lstat taken through the same folder descriptor
    immediately before; returns False (nothing removed) if it does not. The folder is
    fsynced after. `FileAbsent` if the file is gone, `FolderGone` if its folder is."""
    parts = parts_below(root, path)
    fd = open_parent(root, parts)
    try:
        try:
            st = os.stat(parts[-1], dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            raise FileAbsent(os.fstat(fd)) from None
        if not stat.S_ISREG(st.st_mode) or not check(st):
            return False
        os.unlink(parts[-1], dir_fd=fd)
        with contextlib.suppress(OSError):  # durable where the recorder's file system can be
            os.fsync(fd)
        return True
    finally:
        os.close(fd)


def walk(
    root: Path, start: tuple[bytes, ...] = ()
) -> Iterator[tuple[bytes, os.stat_result] | Refused]:
    """Every entry below ``root/start`` that is not a folder, as (absolute path, lstat),
    and every place it would not or could not go, as `Refused`: symlinks (never
    followed, to folders or files), folders it cannot open or list, paths over the
    kernel's limit. Folders are entered by descriptor, depth first."""
    base = os.fsencode(root)
    for name in start:
        base = base + b"/" + name
    try:
        # (start, ".") : open_parent opens every folder of ``start`` by descriptor.
        top = open_parent(root, (*start, b".")) if start else open_root(root)
    except FileNotFoundError:
        return
    except Outside as e:
        yield e.refused
        return
    except OSError as e:
        yield Refused(base, _reason(e, "folder"))
        return
    stack: list[tuple[int, bytes, Iterator[os.DirEntry[str]]]] = []
    try:
        try:
            stack.append((top, base, iter(list(os.scandir(top)))))
        except OSError as e:
            os.close(top)
            yield Refused(base, _reason(e, "folder"))
            return
        while stack:
            fd, here, entries = stack[-1]
            entry = next(entries, None)
            if entry is None:
                stack.pop()
                os.close(fd)
                continue
            name = os.fsencode(entry.name)
            path = here + b"/" + name
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            except OSError as e:
                yield Refused(path, _reason(e, "file"))
                continue
            if stat.S_ISLNK(st.st_mode):
                kind = "folder" if _points_to_dir(fd, name) else "file"
                yield Refused(path, f"a symlink to a {kind} (never followed)")
                continue
            if len(path) + 1 > PATH_MAX:
                yield Refused(path, f"path longer than the kernel's limit ({PATH_MAX} bytes)")
                continue
            if not stat.S_ISDIR(st.st_mode):
                yield path, st
                continue
            try:
                sub = open_dir_at(fd, name, st)
            except FileNotFoundError:
                continue
            except OSError as e:
                yield Refused(path, _reason(e, "folder"))
                continue
            try:
                listing = list(os.scandir(sub))
            except OSError as e:
                os.close(sub)
                yield Refused(path, _reason(e, "folder"))
                continue
            stack.append((sub, path, iter(listing)))
    finally:
        for fd, _, _ in stack:
            os.close(fd)


def _points_to_dir(dir_fd: int, name: bytes) -> bool:
    """Whether a symlink names a folder (for the log line only: it is never entered)."""
    try:
        return stat.S_ISDIR(os.stat(name, dir_fd=dir_fd).st_mode)
    except OSError:
        return False


@dataclass(frozen=True)
class Reached:
    """A path named by a person (a `custody ingest` argument), reached one component at
    a time without following a symlink: its absolute path (no symlink in it), its lstat,
    and the (st_dev, st_ino) of every folder passed through on the way."""

    path: Path
    st: os.stat_result
    through: tuple[tuple[int, int], ...]


def reach(given: Path) -> Reached:
    """Reach ``given`` (relative to the working folder, which the kernel already holds
    resolved) opening each folder with ``O_NOFOLLOW`` from the one before, so a
    symlinked folder anywhere in it, or a symlink as its last component, is refused
    (`Outside`) instead of followed. FileNotFoundError if a component does not exist."""
    raw = os.fsencode(given)
    start = b"/" if raw.startswith(b"/") else os.fsencode(os.getcwd())
    parts = [p for p in raw.split(b"/") if p and p != b"."]
    fd = os.open(start, _DIR_FLAGS & ~os.O_NOFOLLOW)
    through = [_dev_ino(os.fstat(fd))]
    here = start.rstrip(b"/")
    try:
        for i, name in enumerate(parts):
            here = b"/".join(here.split(b"/")[:-1]) if name == b".." else here + b"/" + name
            if i == len(parts) - 1:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                if stat.S_ISLNK(st.st_mode):
                    kind = "folder" if _points_to_dir(fd, name) else "file"
                    raise Outside(Refused(here or b"/", f"a symlink to a {kind} (never followed)"))
                break
            try:
                nxt = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError as e:
                if e.errno in (errno.ENOTDIR, errno.ELOOP):
                    try:
                        link = stat.S_ISLNK(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode)
                    except OSError:
                        link = False
                    if link:
                        e = OSError(errno.ELOOP, "symlink")
                    elif e.errno == errno.ENOTDIR:
                        raise FileNotFoundError(
                            errno.ENOTDIR, "not a folder", os.fsdecode(here)
                        ) from None
                if e.errno == errno.ENOENT:
                    raise
                raise Outside(Refused(here or b"/", _reason(e, "folder"))) from None
            os.close(fd)
            fd = nxt
            through.append(_dev_ino(os.fstat(fd)))
        else:
            st = os.fstat(fd)  # the argument named the starting folder itself
    finally:
        os.close(fd)
    path = Path(os.fsdecode(here or b"/"))
    # Built from names that are no symlinks, this path is the one the kernel reached; a
    # component swapped since is caught here rather than trusted.
    if _dev_ino(os.stat(path, follow_symlinks=False)) != _dev_ino(st):
        raise Outside(Refused(os.fsencode(path), "it changed while it was being checked"))
    return Reached(path, st, tuple(through))


def _dev_ino(st: os.stat_result) -> tuple[int, int]:
    return (st.st_dev, st.st_ino)
