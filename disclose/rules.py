"""What a publication may show, as data: the rules file people edit (TOML).

Pure: ``parse_rules`` takes the parsed TOML and returns ``Rules`` or raises
``RulesError`` naming the key. The file says how small a count must be to be withheld,
which time zone the months are in, and the public names of the agency and its units.
What is *never* shown (officer numbers, names, file names, places, case numbers, hashes
of footage) is not configurable: the figures are counts by unit, category and month,
so none of it can reach the folder.

    threshold = 5                 # counts 1..threshold-1 are shown as "<5"
    timezone = "Asia/Shanghai"    # months are months of this zone
    publisher = "勐海县公安局"      # the agency's public name
    [units]                       # unit code -> public name
    "530822000000" = "勐海县公安局交通警察大队"
"""

from __future__ import annotations

import tomllib
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

DEFAULT_THRESHOLD = 5
KEYS = ("threshold", "timezone", "publisher", "units")
MAX_NAME = 200


class RulesError(ValueError):
    """A rules file that cannot be used; the message names the key."""


def _empty() -> Mapping[str, str]:
    return MappingProxyType({})


@dataclass(frozen=True)
class Rules:
    threshold: int = DEFAULT_THRESHOLD
    timezone: str = "Asia/Shanghai"
    publisher: str = ""  # "" = the publishing log's origin
    units: Mapping[str, str] = field(default_factory=_empty)

    def unit_name(self, code: str) -> str:
        return self.units.get(code, code)


def _one_line(value: str, where: str) -> str:
    if any(ord(c) < 0x20 or c in "\u2028\u2029\x7f" for c in value):
        raise RulesError(f"{where}: must be one line without control characters")
    if len(value) > MAX_NAME:
        raise RulesError(f"{where}: at most {MAX_NAME} characters")
    return value.strip()


def parse_rules(doc: Mapping[str, Any], source: str = "rules") -> Rules:
    unknown = sorted(set(doc) - set(KEYS))
    if unknown:
        raise RulesError(f"{source}: unknown key {unknown[0]!r}; known: {', '.join(KEYS)}")
    threshold = doc.get("threshold", DEFAULT_THRESHOLD)
    if type(threshold) is not int or not 2 <= threshold <= 1000:
        raise RulesError(
            f"{source}: threshold must be a whole number from 2 to 1000 (counts below it "
            f"are withheld), not {threshold!r}"
        )
    tz = doc.get("timezone", "Asia/Shanghai")
    if type(tz) is not str:
        raise RulesError(f"{source}: timezone must be a string such as 'Asia/Shanghai'")
    try:
        zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise RulesError(f"{source}: timezone is not an IANA time zone name: {tz!r}") from None
    publisher = doc.get("publisher", "")
    if type(publisher) is not str:
        raise RulesError(f"{source}: publisher must be a string (the agency's public name)")
    units = doc.get("units", {})
    if not isinstance(units, Mapping):
        raise RulesError(f"{source}: [units] must be a table of unit code = public name")
    names: dict[str, str] = {}
    for code, name in units.items():
        if type(name) is not str or not name.strip():
            raise RulesError(f"{source}: units.{code} must be a non-empty string")
        names[code] = _one_line(name, f"{source}: units.{code}")
    return Rules(
        threshold=threshold,
        timezone=tz,
        publisher=_one_line(publisher, f"{source}: publisher"),
        units=MappingProxyType(names),
    )


def load_rules(path: Path | None) -> Rules:
    """The rules in ``path`` (None: the defaults)."""
    if path is None:
        return Rules()
    try:
        with path.open("rb") as f:
            doc = tomllib.load(f)
    except OSError as e:
        raise RulesError(f"cannot read the disclosure rules {path}: {e.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise RulesError(f"the disclosure rules {path} are not valid TOML: {e}") from None
    return parse_rules(doc, str(path))


__all__ = ["DEFAULT_THRESHOLD", "Rules", "RulesError", "load_rules", "parse_rules"]
