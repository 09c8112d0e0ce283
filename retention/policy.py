"""Retention rules as data: parsing, the floor, and which rule an item falls under.

Pure: takes the parsed TOML (a dict) and item facts, returns values. A policy is a list
of rules, first match wins; the last rule must match everything (the default). A rule
keeps footage for ``keep_days`` or ``keep = "permanent"``, may evict the dock's own copy
after ``local_days`` (only once the cold store confirmed its copy), may move the cold
copy to other storage classes after some days (``tiers``), and names the lock mode. A
floor refuses any rule that keeps footage for less.

The categories are those of administrative enforcement; users may write either the
English key or the Chinese term:

    administrative_penalty  行政处罚      coercive_measure  行政强制
    inspection              行政检查      expropriation     行政征收征用
    licensing               行政许可      other             其他
"""

from __future__ import annotations

import fnmatch
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

CATEGORIES = {
    "administrative_penalty": "行政处罚",
    "coercive_measure": "行政强制",
    "inspection": "行政检查",
    "expropriation": "行政征收征用",
    "licensing": "行政许可",
    "other": "其他",
}
_BY_TERM = {v: k for k, v in CATEGORIES.items()}

DEFAULT_FLOOR_DAYS = 180
RULE_KEYS = ("name", "match", "keep", "keep_days", "local_days", "tiers", "lock_mode")
MATCH_KEYS = ("category", "case", "important", "unit", "group", "media")
LOCK_MODES = ("COMPLIANCE", "GOVERNANCE", "none")


class PolicyError(ValueError):
    """A policy that cannot be used, naming the rule and key."""


def category_key(value: str) -> str:
    """The canonical key of a category given as key or Chinese term."""
    v = value.strip()
    if v in CATEGORIES:
        return v
    if v in _BY_TERM:
        return _BY_TERM[v]
    known = ", ".join(f"{k} ({t})" for k, t in CATEGORIES.items())
    raise PolicyError(f"unknown category {value!r}; one of {known}")


@dataclass(frozen=True)
class Facts:
    """What a rule can match on, for one stored original."""

    sha256: str
    captured: int  # seconds since the epoch, the `ingest` entry's time
    category: str = ""  # a CATEGORIES key, or "" when not annotated
    cases: tuple[str, ...] = ()
    important: bool = False
    unit: str = ""
    recorder: str = ""  # the recorder's serial
    media_type: str = ""


@dataclass(frozen=True)
class Match:
    categories: tuple[str, ...] = ()
    case: bool | None = None  # True: linked to a case; False: not linked
    important: bool | None = None
    units: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    media: tuple[str, ...] = ()  # globs: "video/*"

    @property
    def everything(self) -> bool:
        return self == Match()


@dataclass(frozen=True)
class Tier:
    after_days: int
    storage_class: str


@dataclass(frozen=True)
class Rule:
    name: str
    match: Match
    keep_days: int | None  # None: permanent
    local_days: int | None = None  # evict the dock's copy after this many days
    tiers: tuple[Tier, ...] = ()
    lock_mode: str = "COMPLIANCE"

    @property
    def permanent(self) -> bool:
        return self.keep_days is None

    def describe_keep(self) -> str:
        return "permanent" if self.keep_days is None else f"{self.keep_days} days"


@dataclass(frozen=True)
class Policy:
    rules: tuple[Rule, ...]
    floor_days: int = DEFAULT_FLOOR_DAYS
    groups: Mapping[str, frozenset[str]] = field(default_factory=dict)
    permanent_lock_years: int = 30

    def rule_for(self, f: Facts) -> Rule:
        for r in self.rules:
            if self._matches(r.match, f):
                return r
        return self.rules[-1]  # unreachable: the last rule matches everything

    def _matches(self, m: Match, f: Facts) -> bool:
        if m.categories and f.category not in m.categories:
            return False
        if m.case is not None and bool(f.cases) != m.case:
            return False
        if m.important is not None and f.important != m.important:
            return False
        if m.units and f.unit not in m.units:
            return False
        if m.groups and not any(f.recorder in self.groups.get(g, ()) for g in m.groups):
            return False
        return not m.media or any(fnmatch.fnmatchcase(f.media_type, g) for g in m.media)


# -- parsing -------------------------------------------------------------------------


def _strs(v: Any, where: str) -> tuple[str, ...]:
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise PolicyError(f"{where}: must be a string or a list of strings")
    return tuple(v)


def _int(v: Any, where: str, lo: int = 0) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < lo:
        raise PolicyError(f"{where}: must be a whole number >= {lo}, not {v!r}")
    return v


def _check_keys(t: Mapping[str, Any], allowed: Iterable[str], where: str) -> None:
    extra = sorted(set(t) - set(allowed))
    if extra:
        raise PolicyError(f"{where}: unknown key {extra[0]!r} (allowed: {', '.join(allowed)})")


def parse_policy(data: Mapping[str, Any]) -> Policy:
    """A policy from parsed TOML; raises PolicyError naming the rule and key."""
    _check_keys(data, ("floor_days", "groups", "rules", "permanent_lock_years"), "policy")
    floor = _int(data.get("floor_days", DEFAULT_FLOOR_DAYS), "floor_days", 1)
    lock_years = _int(data.get("permanent_lock_years", 30), "permanent_lock_years", 1)
    groups_raw = data.get("groups", {})
    if not isinstance(groups_raw, dict):
        raise PolicyError("groups: must be a table of group = [recorder serials]")
    groups = {g: frozenset(_strs(v, f"groups.{g}")) for g, v in groups_raw.items()}
    raw_rules = data.get("rules")
    if not isinstance(raw_rules, list) or not raw_rules:
        raise PolicyError("rules: at least one [[rules]] table is needed (the default last)")
    rules: list[Rule] = []
    names: set[str] = set()
    for i, r in enumerate(raw_rules):
        if not isinstance(r, dict):
            raise PolicyError(f"rules[{i}]: must be a table")
        name = r.get("name", f"rule {i + 1}")
        where = f"rule {name!r}"
        if not isinstance(name, str) or not name or name in names:
            raise PolicyError(f"rules[{i}]: a unique, non-empty name is needed")
        names.add(name)
        _check_keys(
            r, ("name", "match", "keep", "keep_days", "local_days", "tiers", "lock_mode"), where
        )
        m = r.get("match", {})
        if not isinstance(m, dict):
            raise PolicyError(f"{where}: match must be a table")
        _check_keys(
            m, ("category", "case", "important", "unit", "group", "media"), f"{where}.match"
        )
        for b in ("case", "important"):
            if b in m and not isinstance(m[b], bool):
                raise PolicyError(f"{where}.match.{b}: must be true or false")
        for g in _strs(m.get("group", []), f"{where}.match.group"):
            if g not in groups:
                raise PolicyError(f"{where}.match.group: no group {g!r} in [groups]")
        match = Match(
            categories=tuple(category_key(c) for c in _strs(m.get("category", []), where)),
            case=m.get("case"),
            important=m.get("important"),
            units=_strs(m.get("unit", []), f"{where}.match.unit"),
            groups=_strs(m.get("group", []), f"{where}.match.group"),
            media=_strs(m.get("media", []), f"{where}.match.media"),
        )
        if ("keep" in r) == ("keep_days" in r):
            raise PolicyError(f'{where}: give keep_days = N or keep = "permanent" (one of them)')
        if "keep" in r and r["keep"] != "permanent":
            raise PolicyError(f'{where}: keep can only be "permanent"; use keep_days = N')
        keep = None if "keep" in r else _int(r["keep_days"], f"{where}.keep_days", 1)
        if keep is not None and keep < floor:
            raise PolicyError(
                f"{where}: keeps footage {keep} days, under the floor of {floor} days "
                "(floor_days); footage may not be kept for less"
            )
        local = r.get("local_days")
        local_days = None if local is None else _int(local, f"{where}.local_days")
        tiers: list[Tier] = []
        for j, t in enumerate(r.get("tiers", [])):
            tw = f"{where}.tiers[{j}]"
            if not isinstance(t, dict):
                raise PolicyError(f'{tw}: must be a table {{ after_days = N, class = "..." }}')
            _check_keys(t, ("after_days", "class"), tw)
            cls = t.get("class")
            if not isinstance(cls, str) or not cls:
                raise PolicyError(f"{tw}.class: the store's storage-class name is needed")
            tiers.append(Tier(_int(t.get("after_days"), f"{tw}.after_days"), cls))
        if [t.after_days for t in tiers] != sorted({t.after_days for t in tiers}):
            raise PolicyError(f"{where}.tiers: after_days must increase")
        lock = r.get("lock_mode", "COMPLIANCE")
        if lock not in LOCK_MODES:
            raise PolicyError(f"{where}.lock_mode: one of {', '.join(LOCK_MODES)}")
        rules.append(Rule(name, match, keep, local_days, tuple(tiers), lock))
    if not rules[-1].match.everything:
        raise PolicyError(
            f"rule {rules[-1].name!r}: the last rule must match everything (the default); "
            "give it no match table"
        )
    for r in rules[:-1]:
        if r.match.everything:
            raise PolicyError(
                f"rule {r.name!r} matches everything, so the rules after it never apply"
            )
    return Policy(tuple(rules), floor, groups, lock_years)


def load_policy(text: str) -> Policy:
    try:
        return parse_policy(tomllib.loads(text))
    except tomllib.TOMLDecodeError as e:
        raise PolicyError(f"not valid TOML: {e}") from None


DEFAULT_POLICY = """\
# Retention policy: first matching rule wins; the last rule is the default.
# Edit a copy, preview it with `custody retention plan --policy FILE`, then
# `custody retention apply --policy FILE` (earlier deletions need --confirm N).
#
# After the police rule on body-worn recorder footage: ordinary footage is kept
# six months, then deleted; footage linked to a case, marked important, or
# covering a major incident is kept permanently.

floor_days = 180              # no rule may keep footage for less
permanent_lock_years = 30     # object-lock period for permanent footage (extended later)

# [groups]                    # recorder groups, by serial
# traffic = ["ABC1234", "ABC1235"]

[[rules]]
name = "case"
match = { case = true }       # linked to a case (custody annotate --case)
keep = "permanent"
local_days = 30

[[rules]]
name = "important"
match = { important = true }  # marked important, or covering a major incident
keep = "permanent"
local_days = 30

# A site rule by category, for example:
# [[rules]]
# name = "penalty"
# match = { category = ["行政处罚", "行政强制"] }
# keep_days = 1095

[[rules]]
name = "ordinary"             # the default: everything else
keep_days = 180
local_days = 30
# tiers = [{ after_days = 60, class = "GLACIER" }]
"""
