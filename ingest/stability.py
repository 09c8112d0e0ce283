"""When a file on a dock is done being written, without depending on seeing the
writer: the daemon runs as its own unprivileged user (and under
``ProtectProc=invisible``), so /proc shows it nothing of other users' processes.

Signals, strongest first: inotify saw a write (IN_MODIFY) with no close-write
since (`WriteMarks`); the kernel refuses a read lease while any process has the
file open for writing (`lease_says_writing`, where a lease is allowed); /proc,
where the daemon can see other processes at all (`open_for_writing`). Release
waits longer than capture (`release_settle_s`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import threading
from pathlib import Path

from ingest import dockfs

# Release waits this many times the capture settle window (at least 2 s more) after the
# capture, with the source unchanged all along: a writer that paused longer than the
# settle window gets a second chance to show itself before its file is deleted.
RELEASE_SETTLE_FACTOR = 4
RELEASE_SETTLE_MIN_EXTRA_S = 2.0
# A file inotify saw written and not yet closed is held back this long at most (a writer
# that died with it open); then its mark is dropped and it is taken as it stands.
HOLD_OPEN_MAX_S = 600.0


def release_settle_s(settle_ms: int) -> float:
    settle_s = settle_ms / 1000
    return max(RELEASE_SETTLE_FACTOR * settle_s, settle_s + RELEASE_SETTLE_MIN_EXTRA_S)


class WriteMarks:
    """Files inotify saw written and not yet closed: path -> time of the last write.

    A file seen created (IN_CREATE) and not closed since is open for writing by its
    creator, who may pause before the first write: it is `unsure` for release (not for
    capture: the close-write of a file created in a folder that appeared a moment
    before can be missed while its watch is being added, and capture must not wait on
    that). An open alone (IN_OPEN) sets no mark: it does not say whether for reading or
    writing, and the station's own reads and lease checks open files too.

    The marks live in memory: after the daemon starts, or after the kernel's inotify
    queue overflowed, a writer that was already holding a file open left no mark, so
    until `HOLD_OPEN_MAX_S` has passed every file not seen arriving or closed since is
    `unsure` too. Release of an unsure file needs the kernel's word that no one has it
    open for writing (`lease_says_writing`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: dict[bytes, float] = {}
        self._created: dict[bytes, float] = {}
        self._blind_until = 0.0
        self._known: set[bytes] = set()

    def event(self, key: bytes, kind: str, now: float) -> None:
        with self._lock:
            if kind == "modified":
                self._last[key] = now
            elif kind == "created":
                self._created[key] = now
            elif kind in ("closed", "deleted"):
                self._last.pop(key, None)
                self._created.pop(key, None)
            # Seen arriving or closed since the marks were lost: its writers are seen.
            if kind in ("created", "moved", "closed"):
                self._known.add(key)
            elif kind == "deleted":
                self._known.discard(key)

    def blind(self, now: float) -> None:
        """Events may have been missed (the daemon started, the inotify queue
        overflowed): every file already there is `unsure` for one hold window."""
        with self._lock:
            self._blind_until = now + HOLD_OPEN_MAX_S
            self._known.clear()

    def unsure(self, key: bytes, now: float) -> bool:
        """Whether a writer may hold this file open unseen: created and not closed since
        (up to `HOLD_OPEN_MAX_S`), or within the hold window after `blind` and not seen
        arriving or closed since."""
        with self._lock:
            made = self._created.get(key)
            if made is not None:
                if now - made < HOLD_OPEN_MAX_S:
                    return True
                del self._created[key]
            if now >= self._blind_until:
                self._known.clear()
                return False
            return key not in self._known

    def held(self, key: bytes, now: float) -> bool:
        """Written and not closed since (up to `HOLD_OPEN_MAX_S`)."""
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last >= HOLD_OPEN_MAX_S:
                del self._last[key]  # a writer that died with it open: held long enough
                return False
        return last is not None


def open_for_writing() -> set[tuple[int, int]]:
    """(dev, ino) of every file some process has open for writing (from /proc)."""
    out: set[tuple[int, int]] = set()
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return out
    for pid in pids:
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                with open(f"/proc/{pid}/fdinfo/{fd}", "rb") as f:
                    flags = 0
                    for line in f:
                        if line.startswith(b"flags:"):
                            flags = int(line.split()[1], 8)
                            break
                if flags & (os.O_WRONLY | os.O_RDWR) == 0:
                    continue
                st = os.stat(f"{fd_dir}/{fd}")
            except (OSError, ValueError):
                continue
            if stat.S_ISREG(st.st_mode):
                out.add((st.st_dev, st.st_ino))
    return out


def lease_says_writing(dock: Path, path: Path) -> bool | None:
    """Whether some process has ``path`` open for writing, from the kernel itself: a read
    lease is refused (EAGAIN) while any process holds the file open for writing, whoever
    it is and whatever /proc shows. None when the kernel will not say (a lease is granted
    only on the daemon's own files, or with CAP_LEASE). The lease is dropped at once."""
    try:
        parts = dockfs.parts_below(dock, path)
        dfd = dockfs.open_parent(dock, parts)
    except (OSError, ValueError, dockfs.Outside):
        return None
    try:
        fd = os.open(
            parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd
        )
    except OSError:
        return None
    finally:
        os.close(dfd)
    try:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
    except OSError as e:
        return True if e.errno == errno.EAGAIN else None
    else:
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
        return False
    finally:
        os.close(fd)


def ignore_lease_breaks() -> None:
    """A writer opening a file during the instant the daemon holds its read lease makes
    the kernel send SIGIO, whose default action ends the process; the lease is dropped
    at once anyway, so the signal carries nothing the daemon needs."""
    import signal

    with contextlib.suppress(ValueError):  # not the main thread: leases stay unused
        if signal.getsignal(signal.SIGIO) == signal.SIG_DFL:
            signal.signal(signal.SIGIO, signal.SIG_IGN)
