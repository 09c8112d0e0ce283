"""inotify (watchdog) on the dock roots: every created, moved, written, closed or
touched file is handed to the capturer with what happened to it (a write with
no close-write since means a writer still holds it). Events may be lost (queue
overflow) and a recorder mounted below a dock sends none; the daemon rewatches
and scans when the mount table changes, and the periodic scan covers the rest.
watchdog never follows symlinks (IN_DONT_FOLLOW); the capturer checks every
path again from the dock root anyway."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from watchdog.events import (
    DirCreatedEvent,
    DirMovedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from ingest.problems import Problems
from ledger.errors import IntegrityError

log = logging.getLogger("custody.ingest")


def mount_table() -> bytes:
    """The current mount table (changes when a recorder is mounted or unplugged)."""
    try:
        with open("/proc/self/mountinfo", "rb") as f:
            return f.read()
    except OSError:
        return b""


OnFile = Callable[[Path, str], None]

_KINDS: tuple[tuple[type[FileSystemEvent], str], ...] = (
    (FileCreatedEvent, "created"),
    (FileModifiedEvent, "modified"),  # IN_MODIFY: a write
    (FileClosedEvent, "closed"),  # IN_CLOSE_WRITE: a writer closed it
    (FileAttribEvent, "attrib"),  # times set (cp -a, touch) or permissions changed
    (FileDeletedEvent, "deleted"),
)


def _no_halt(reason: str) -> None:
    pass


class _Handler(FileSystemEventHandler):
    def __init__(
        self,
        on_file: OnFile,
        on_dir: Callable[[Path], object],
        halt: Callable[[str], None] = _no_halt,
    ) -> None:
        self.on_file, self.on_dir, self.halt = on_file, on_dir, halt

    def on_any_event(self, event: FileSystemEvent) -> None:
        try:
            if isinstance(event, FileMovedEvent | DirMovedEvent):
                dest = Path(str(event.dest_path))
                if event.is_directory:
                    self.on_dir(dest)
                else:
                    self.on_file(dest, "moved")
            elif isinstance(event, DirCreatedEvent):
                self.on_dir(Path(str(event.src_path)))
            else:
                for cls, kind in _KINDS:
                    if isinstance(event, cls):
                        if kind == "created" and getattr(event, "is_synthetic", False):
                            # watchdog listing a folder that just appeared: the file was
                            # there already, nobody was seen creating (writing) it.
                            kind = "found"
                        self.on_file(Path(str(event.src_path)), kind)
                        break
        except IntegrityError as e:
            # Never swallowed: capture and release stop (the daemon polls `halted`).
            self.halt(f"while handling {event.event_type} of {event.src_path!r}: {e}")
        except Exception:
            log.exception("error handling %s", event)


class DockWatcher:
    """Watches dock roots that exist; `refresh` adds roots that appeared later."""

    def __init__(
        self,
        roots: list[Path],
        on_file: OnFile,
        on_dir: Callable[[Path], object],
        problems: Problems | None = None,
        halt: Callable[[str], None] = _no_halt,
        events_lost: Callable[[], object] | None = None,
    ) -> None:
        self.roots = roots
        self.handler = _Handler(on_file, on_dir, halt)
        self._overflow = _Overflow(events_lost) if events_lost is not None else None
        self.observer: BaseObserver = Observer()
        self.watched: dict[Path, tuple[Any, int]] = {}  # root -> (watch, inode)
        self.problems = problems or Problems()

    def start(self) -> None:
        if self._overflow is not None:
            logging.getLogger("watchdog").addHandler(self._overflow)
        self.refresh()
        self.observer.start()

    def refresh(self) -> None:
        """Watch docks that exist; rewatch one that was removed and made again."""
        for r in self.roots:
            try:
                ino = r.stat().st_ino if r.is_dir() else 0
            except OSError:
                ino = 0
            current = self.watched.get(r)
            if current is not None and current[1] == ino:
                continue
            if current is not None:
                with contextlib.suppress(KeyError, OSError):
                    self.observer.unschedule(current[0])
                del self.watched[r]
            if not ino:
                self.problems.report(
                    f"dock:{r}",
                    f"dock {r} does not exist (yet); it is watched and scanned once it "
                    "appears (check the path in the config if it never does)",
                )
                continue
            try:
                watch = self.observer.schedule(self.handler, str(r), recursive=True)
                self.watched[r] = (watch, ino)
                self.problems.resolve(f"dock:{r}")
                log.info("watching dock %s", r)
            except OSError as e:
                self.problems.report(
                    f"dock:{r}",
                    f"cannot watch dock {r} yet ({e.strerror}); the periodic scan covers it",
                )

    def set_roots(self, roots: list[Path]) -> None:
        """Docks added or removed by a configuration reload."""
        gone = [r for r in self.watched if r not in roots]
        for r in self.roots:
            if r not in roots:
                self.problems.resolve(f"dock:{r}")
        for r in gone:
            with contextlib.suppress(KeyError, OSError):
                self.observer.unschedule(self.watched[r][0])
            del self.watched[r]
            log.info("no longer watching dock %s", r)
        self.roots = list(roots)
        self.refresh()

    def rewatch(self) -> None:
        """Watch every dock afresh: after a mount appears below a dock, the old watches
        still point at the folder underneath it."""
        self.observer.unschedule_all()
        self.watched.clear()
        self.refresh()

    def stop(self) -> None:
        self.observer.stop()
        self.observer.join(timeout=10)
        if self._overflow is not None:
            logging.getLogger("watchdog").removeHandler(self._overflow)


class _Overflow(logging.Handler):
    """The kernel's inotify queue overflowed (events were lost). watchdog rebuilds its
    watches but tells a handler nothing; it says so in a warning, which is heard here."""

    def __init__(self, events_lost: Callable[[], object]) -> None:
        super().__init__(logging.WARNING)
        self.events_lost = events_lost

    def emit(self, record: logging.LogRecord) -> None:
        if "queue overflow" in str(record.msg).lower():
            log.warning("inotify lost events (its queue overflowed): scanning the docks again")
            self.events_lost()
