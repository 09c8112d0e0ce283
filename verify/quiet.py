"""Output to a reader that may leave early (`custody status | head -1`).

Python ignores SIGPIPE, so writing to a pipe whose reader has gone raises
`BrokenPipeError`, and the flush at exit prints "Exception ignored ... Broken
pipe". Restoring SIGPIPE's default would instead kill the process in the
middle of its work (and on any socket the S3 client writes to). So stdout is
wrapped: the first write that finds the reader gone points file descriptor 1
at /dev/null, and the command runs to its end and returns its own exit code,
as if the reader had read everything.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any


def _to_devnull(fd: int) -> None:
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, fd)
    finally:
        os.close(null)


class _Guarded:
    """A stream whose writes and flushes survive the reader leaving."""

    def __init__(self, stream: Any, fd: int) -> None:
        self._stream = stream
        self._fd = fd

    def write(self, data: Any) -> int:
        try:
            n: int = self._stream.write(data)
            return n
        except BrokenPipeError:
            _to_devnull(self._fd)
            return len(data)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            _to_devnull(self._fd)
            self._stream.flush()  # what was buffered now goes to /dev/null

    @property
    def buffer(self) -> _Guarded:
        return _Guarded(self._stream.buffer, self._fd)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def guard_stdout() -> None:
    """Wrap sys.stdout (once) so a reader that leaves early costs no error message."""
    if isinstance(sys.stdout, _Guarded) or sys.stdout is None:
        return
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return  # not a real file (captured in-process): nothing to guard
    sys.stdout = _Guarded(sys.stdout, fd)


def finish_stdout() -> None:
    """Flush stdout now, while a broken pipe can still be handled quietly."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        with contextlib.suppress(OSError, ValueError):
            _to_devnull(sys.stdout.fileno())
