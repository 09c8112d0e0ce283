"""inotify (watchdog) on the dock roots: every created, moved, written or closed
file is handed to the capturer. Events may be lost (queue overflow) and a
recorder mounted below a dock sends none; the daemon rewatches and scans when
the mount table changes, and the periodic scan covers the rest."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from watchdog.events import (
    DirCreatedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

log = logging.getLogger("custody.ingest")


def mount_table() -> bytes:
    """The current mount table (changes when a recorder is mounted or unplugged)."""
    try:
        with open("/proc/self/mountinfo", "rb") as f:
            return f.read()
    except OSError:
        return b""


class _Handler(FileSystemEventHandler):
    def __init__(self, on_file: Callable[[Path], None], on_dir: Callable[[Path], None]) -> None:
        self.on_file, self.on_dir = on_file, on_dir

    def on_any_event(self, event: FileSystemEvent) -> None:
        try:
            if isinstance(event, FileMovedEvent | DirMovedEvent):
                dest = Path(str(event.dest_path))
                (self.on_dir if event.is_directory else self.on_file)(dest)
            elif isinstance(event, DirCreatedEvent):
                self.on_dir(Path(str(event.src_path)))
            elif isinstance(event, FileCreatedEvent | FileModifiedEvent | FileClosedEvent):
                self.on_file(Path(str(event.src_path)))
        except Exception:
            log.exception("error handling %s", event)


class DockWatcher:
    """Watches dock roots that exist; `refresh` adds roots that appeared later."""

    def __init__(
        self, roots: list[Path], on_file: Callable[[Path], None], on_dir: Callable[[Path], None]
    ) -> None:
        self.roots = roots
        self.handler = _Handler(on_file, on_dir)
        self.observer: BaseObserver = Observer()
        self.watched: dict[Path, tuple[Any, int]] = {}  # root -> (watch, inode)
        self.missing_logged: set[Path] = set()

    def start(self) -> None:
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
                if r not in self.missing_logged:
                    self.missing_logged.add(r)
                    log.warning(
                        "dock %s does not exist (yet); it is watched once it appears "
                        "(check the path in the config if it never does)",
                        r,
                    )
                continue
            try:
                watch = self.observer.schedule(self.handler, str(r), recursive=True)
                self.watched[r] = (watch, ino)
                self.missing_logged.discard(r)
                log.info("watching dock %s", r)
            except OSError as e:
                log.warning("cannot watch dock %s yet (%s); the periodic scan covers it", r, e)

    def set_roots(self, roots: list[Path]) -> None:
        """Docks added or removed by a configuration reload."""
        gone = [r for r in self.watched if r not in roots]
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
