"""Read a small input file as a verifier must: bounded, never blocking, never a folder.

A verifier is handed paths by people who may be mistaken or hostile. A FIFO
would block a plain ``open()`` for ever, ``/dev/zero`` would fill memory, a
folder gives an error that names nothing. So every input file is opened with
``O_NONBLOCK``, must be a regular file (checked on the open descriptor, so a
swap after the check changes nothing), and is read only up to a limit.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path


class Unreadable(Exception):
    """One line that says why the file cannot be used (for the caller to prefix)."""


def open_regular(path: str | Path, follow: bool = True) -> int:
    """A descriptor on the regular file ``path``; with ``follow`` False a symbolic link
    is refused too (inside a package, a link may point anywhere, /dev/zero included).

    Raises `FileNotFoundError` for a missing file and `Unreadable` for anything else.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        fd = os.open(path, flags | (0 if follow else os.O_NOFOLLOW))
    except FileNotFoundError:
        raise
    except OSError as e:
        if e.errno == errno.ELOOP and not follow:
            raise Unreadable("it is a symbolic link, not a file") from None
        raise Unreadable(e.strerror or str(e)) from None
    st = os.fstat(fd)
    if stat.S_ISREG(st.st_mode):
        return fd
    os.close(fd)
    if stat.S_ISDIR(st.st_mode):
        raise Unreadable("it is a folder, not a file")
    raise Unreadable("it is not a regular file (a pipe, socket or device)")


def read_regular(path: str | Path, limit: int, follow: bool = True) -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` of them.

    Raises `FileNotFoundError` for a missing file (callers may treat it as absent)
    and `Unreadable` for anything else that is not a readable regular file, or
    holds more than ``limit`` bytes.
    """
    fd = open_regular(path, follow)
    try:
        st = os.fstat(fd)
        if st.st_size > limit:
            raise Unreadable(f"it holds {st.st_size} bytes, more than the {limit} expected")
        chunks: list[bytes] = []
        got = 0
        while got <= limit:
            b = os.read(fd, min(1 << 20, limit + 1 - got))
            if not b:
                break
            chunks.append(b)
            got += len(b)
        if got > limit:  # grew while we read it
            raise Unreadable(f"it holds more than the {limit} bytes expected")
        return b"".join(chunks)
    except OSError as e:
        raise Unreadable(e.strerror or str(e)) from None
    finally:
        os.close(fd)


def read_text(path: str | Path, limit: int) -> str:
    """`read_regular` decoded as UTF-8; `Unreadable` when it is not UTF-8 text."""
    data = read_regular(path, limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise Unreadable("it is not UTF-8 text") from None
