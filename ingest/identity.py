"""Who recorded a file: recorder serial, officer number (警号) and unit code.

Sources, in order of trust: the site's table (by dock slot folder, then by
serial), the identity command a site plugs in for its vendor's device tool
(prints JSON), and the vendor filename pattern. The claimed recording start
time from the filename is kept as the recorder said it, with the UTC offset
the station read it in (the dock's ``timezone``, else the station's own zone),
so the instant it names is fixed in the signed entry.

The file name may also mark the recording: ``important`` (a non-empty match of
the pattern's group, e.g. a vendor's ``_IMP`` suffix) and a ``category`` (the
group's text through the dock's ``category_map``). They go into the `ingest`
entry as the station's reading of the name; the retention index takes them as
annotations a person's later ``custody annotate`` overrides.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ingest.settings import DockSettings, RecorderInfo

log = logging.getLogger("custody.ingest")

COMMAND_CACHE_S = 60


@dataclass(frozen=True)
class Identity:
    serial: str = ""
    officer: str = ""
    unit: str = ""
    claimed_start: str = ""  # as the recorder wrote it (local time, no zone)
    sources: tuple[str, ...] = ()
    claimed_start_offset: str = ""  # "+08:00": the UTC offset claimed_start was read in
    important: bool = False  # the file name marks it important
    category: str = ""  # a category key the file name gives

    def payload(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k in ("serial", "officer", "unit", "claimed_start", "claimed_start_offset"):
            v = getattr(self, k)
            if v:
                out[k] = v
        if self.important:
            out["important"] = True
        if self.category:
            out["category"] = self.category
        out["identified_by"] = list(self.sources) or ["unknown"]
        return out


class IdentityResolver:
    def __init__(self, dock: DockSettings) -> None:
        self.dock = dock
        # (folder, its device and inode) -> (answer, when). Short-lived: a slot folder
        # can hold the next recorder a minute later, with the same numbers.
        self._command_cache: dict[tuple[str, int, int], tuple[dict[str, str], float]] = {}

    def forget(self) -> None:
        """Drop cached answers (a recorder was plugged in or out)."""
        self._command_cache.clear()

    def _from_command(self, recorder_dir: str, dev: int) -> dict[str, str]:
        if not self.dock.identity_command:
            return {}
        try:
            ino = os.stat(recorder_dir).st_ino
        except OSError:
            ino = 0
        key = (recorder_dir, dev, ino)
        hit = self._command_cache.get(key)
        if hit is not None and time.monotonic() - hit[1] < COMMAND_CACHE_S:
            return hit[0]
        argv = [a.replace("{recorder}", recorder_dir) for a in self.dock.identity_command]
        result: dict[str, str] = {}
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=15, check=False)
            if p.returncode != 0:
                log.warning(
                    "identity command %s failed for %s (exit %d): %s",
                    argv[0],
                    recorder_dir,
                    p.returncode,
                    p.stderr.strip()[:200],
                )
            else:
                data = json.loads(p.stdout)
                if isinstance(data, dict):
                    result = {k: str(data[k]) for k in ("serial", "officer", "unit") if data.get(k)}
        except (OSError, subprocess.TimeoutExpired, json.JSONDecodeError) as e:
            log.warning("identity command %s failed for %s: %s", argv[0], recorder_dir, e)
        if len(self._command_cache) > 1000:
            self._command_cache.clear()
        self._command_cache[key] = (result, time.monotonic())
        return result

    def resolve(self, slot: str, recorder_dir: str, name: str, dev: int) -> Identity:
        found: dict[str, str] = {}
        sources: list[str] = []
        important, category = False, ""
        for pat in self.dock.patterns:
            m = pat.regex.search(name)
            if m:
                groups = {k: v for k, v in m.groupdict().items() if v}
                if "start" in groups:
                    found["claimed_start"] = _normal_start(groups.pop("start"), pat.time_format)
                    offset = start_offset(found["claimed_start"], self.dock.timezone)
                    if offset:
                        found["claimed_start_offset"] = offset
                found.update({k: groups[k] for k in ("serial", "officer", "unit") if k in groups})
                important = "important" in groups
                category = self.dock.category_map.get(groups.get("category", ""), "")
                sources.append(f"filename:{pat.vendor}")
                break
        cmd = self._from_command(recorder_dir, dev)
        if cmd:
            for k, v in cmd.items():
                found.setdefault(k, v)
            sources.append("command")
        info: RecorderInfo | None = self.dock.recorders.get(slot)
        if info is None and found.get("serial"):
            info = self.dock.recorders.get(found["serial"])
        if info is not None:
            for k in ("serial", "officer", "unit"):
                v = getattr(info, k)
                if v:
                    found[k] = v
            sources.append("table")
        return Identity(
            found.get("serial", ""),
            found.get("officer", ""),
            found.get("unit", ""),
            found.get("claimed_start", ""),
            tuple(sources),
            found.get("claimed_start_offset", ""),
            important,
            category,
        )


def _normal_start(raw: str, fmt: str) -> str:
    """The claimed start as ``YYYY-MM-DDTHH:MM:SS`` (no zone: the recorder's local clock)."""
    try:
        return datetime.strptime(raw, fmt).strftime("%Y-%m-%dT%H:%M:%S")
    except ValueError:
        return raw


def start_offset(start: str, zone: str) -> str:
    """The UTC offset (``+08:00``) of a local ``YYYY-MM-DDTHH:MM:SS`` in ``zone`` (an IANA
    name; "" = the station's own zone), or "" when the start is not such a time."""
    try:
        naive = datetime.strptime(start, "%Y-%m-%dT%H:%M:%S")
        aware = naive.replace(tzinfo=ZoneInfo(zone)) if zone else naive.astimezone()
    except (ValueError, OverflowError, OSError, ZoneInfoNotFoundError):
        return ""
    off = aware.utcoffset()
    if off is None:
        return ""
    minutes = int(off.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
