"""What capture cannot take, said once: each problem (a refused symlink, a folder it
cannot read, a path over the kernel's limit) is one log line when it is first met and
one line in the daemon's status for as long as it lasts. A problem that goes away (the
folder became readable, the symlink was removed) leaves the list, and is said again if
it comes back."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger("custody.ingest")

SHOWN = 50  # lines kept for the status file


class Problems:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: dict[str, str] = {}  # key -> line, oldest first

    def report(self, key: str, line: str, level: int = logging.WARNING) -> bool:
        """Note a problem; logs it if it is new (True then)."""
        with self._lock:
            if self._active.get(key) == line:
                return False
            self._active.pop(key, None)
            self._active[key] = line
        log.log(level, "%s", line)
        return True

    def resolve(self, key: str) -> None:
        with self._lock:
            self._active.pop(key, None)

    def resolve_where(self, pred: Callable[[str], bool]) -> None:
        """Drop every problem whose key ``pred`` accepts (a scan no longer met them)."""
        with self._lock:
            for k in [k for k in self._active if pred(k)]:
                del self._active[k]

    def keys(self) -> set[str]:
        with self._lock:
            return set(self._active)

    def lines(self) -> list[str]:
        """The newest `SHOWN` problems, newest last."""
        with self._lock:
            return list(self._active.values())[-SHOWN:]

    def total(self) -> int:
        with self._lock:
            return len(self._active)
