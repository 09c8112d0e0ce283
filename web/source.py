"""What the review site reads and writes, from a station or from the county hub.

`Source` is the one seam between the pages and the data: `StationSource` (web/station.py)
reads a station's ledger, its search index and its stores; `HubSource`
(web/hubsource.py) reads the hub's Iceberg catalog, its verified state and every
station's mirror. The pages never touch a ledger or a bucket themselves.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

SHA256_RE = re.compile(r"[0-9a-f]{64}")
KINDS = ("original", "access", "poster")

Item = dict[str, Any]  # custody.find COLUMNS + "origin"; times in epoch seconds


@dataclass(frozen=True)
class FindQuery:
    officer: str = ""
    recorder: str = ""
    unit: str = ""
    case: str = ""
    category: str = ""
    since: int | None = None  # recording started at or after (epoch seconds)
    until: int | None = None  # ... and before
    shas: frozenset[str] | None = None  # only these (a reviewer: their cases' objects)
    units: tuple[str, ...] = ()  # only these units (a supervisor's); () = every unit


@dataclass(frozen=True)
class Blob:
    """Bytes to stream: a local file (served with sendfile-style reads and HTTP Range), or
    a reader of byte ranges (an object in a cold store)."""

    size: int
    media_type: str
    path: Path | None = None
    read: Callable[[int, int], Iterator[bytes]] | None = None  # (start, end exclusive)


class Source(Protocol):
    kind: str  # "station" | "hub"
    name: str  # the station's origin, or the hub's name

    def find(self, q: FindQuery, offset: int, limit: int) -> tuple[list[Item], int]: ...

    def item(self, sha256: str) -> Item | None: ...

    def case_objects(self, case: str) -> list[str]: ...

    def cases_of(self, sha256: str) -> list[str]: ...

    def entries(self, sha256: str) -> list[dict[str, Any]]: ...

    def blob(self, sha256: str, kind: str) -> Blob | None: ...

    def proof(self, sha256: str) -> dict[str, Any]: ...

    def audits(self) -> list[dict[str, Any]]: ...

    def alarms(self) -> list[dict[str, Any]]: ...

    def overview(self) -> list[dict[str, Any]]: ...

    def record(self, entries: list[tuple[str, dict[str, Any]]]) -> list[int]: ...

    def export(
        self, shas: list[str], case: str | None, purpose: str, who: str, out: Path
    ) -> dict[str, Any]: ...

    def close(self) -> None: ...
