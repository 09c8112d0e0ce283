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
    ``start`` (recording start, parsed with ``time_format``)."""

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
