"""Capture settings (plain values; the appliance builds them from its config)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

RELEASE_MODES = ("never", "after_capture", "after_replication")


@dataclass(frozen=True)
class FilenamePattern:
    """A vendor's file naming: a regex with named groups ``serial``, ``officer``, ``unit``,
    ``start`` (recording start, parsed with ``time_format``), ``important`` (a non-empty
    match marks the file important: vendors append ``_IMP`` when the officer pressed the
    key) and ``category`` (text the dock's ``category_map`` turns into a category)."""

    vendor: str
    regex: re.Pattern[str]
    time_format: str = "%Y%m%d%H%M%S"


@dataclass(frozen=True)
class RecorderInfo:
    """What the site knows about one recorder (keyed by dock slot folder or serial)."""

    serial: str = ""
    officer: str = ""
    unit: str = ""


@dataclass(frozen=True)
class DockSettings:
    path: Path
    name: str = ""
    include: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()
    patterns: tuple[FilenamePattern, ...] = ()
    recorders: Mapping[str, RecorderInfo] = field(default_factory=dict)
    identity_command: tuple[str, ...] = ()
    # The text a pattern's ``category`` group matched -> a category key (the config adds
    # every category's own key and Chinese term, so those need no entry).
    category_map: Mapping[str, str] = field(default_factory=dict)
    # The recorders' clock zone (IANA name) for the start in their file names; "" = the
    # station's own zone.
    timezone: str = ""
    # Only these names directly in the dock's folder, nothing below it (`custody ingest`
    # of single files: a file of the same name deeper down is not taken with them).
    files: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return self.name or self.path.name or str(self.path)


@dataclass(frozen=True)
class CaptureSettings:
    settle_ms: int = 5000
    scan_interval_s: int = 60
    max_parallel_recorders: int = 4
    verify_copy: bool = True
    sm3: bool = False
    release: str = "never"
    min_free_mb: int = 1024
    clock_skew_s: int = 300
    chunk_mb: int = 4
