"""``hub.toml``: the county hub's settings, and the stations it follows.

Read with the same strictness as a station's ``custody.toml`` (unknown keys are
refused, every error names the file and the key). A station listed twice, or a
verifier key whose name is not the station's origin, is a configuration error: the
hub would otherwise follow one log under two names, or trust a key for a log it
does not sign.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from custody.config import (
    DiscloseSettings,
    StoreConfig,
    WebSettings,
    _int,
    _no_nul,
    _parse_store,
    _path,
    _read,
    _Table,
    check_disclose_places,
    parse_disclose,
    parse_web,
)
from custody.errors import ConfigError
from ledger.note import NoteError, Verifier, check_key_name

HUB_FILE = "hub.toml"
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_SCHEDULE_RE = re.compile(
    r"(?P<d1>mon|tue|wed|thu|fri|sat|sun)(?:-(?P<d2>mon|tue|wed|thu|fri|sat|sun))?"
    r"\s+(?P<h1>\d{2}):(?P<m1>\d{2})-(?P<h2>\d{2}):(?P<m2>\d{2})"
)


@dataclass(frozen=True)
class Shift:
    """One line of a station's working schedule: days of the week and hours (local)."""

    days: frozenset[int]  # 0 = Monday
    start_min: int  # minutes after midnight
    end_min: int  # exclusive; may be below start_min for a night shift

    def covers(self, weekday: int, minute: int) -> bool:
        if self.start_min <= self.end_min:
            return weekday in self.days and self.start_min <= minute < self.end_min
        # A night shift: the evening part on a listed day, the morning part the day after.
        if weekday in self.days and minute >= self.start_min:
            return True
        return (weekday - 1) % 7 in self.days and minute < self.end_min


def parse_schedule(text: str) -> tuple[Shift, ...]:
    """``"mon-fri 07:00-19:00, sat 08:00-12:00"``; "" means every day, all day."""
    out = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        m = _SCHEDULE_RE.fullmatch(part.lower())
        if m is None:
            raise ValueError(f"{part!r} is not like 'mon-fri 07:00-19:00'")
        d1 = _DAYS.index(m["d1"])
        d2 = _DAYS.index(m["d2"]) if m["d2"] else d1
        days = frozenset((d1 + i) % 7 for i in range((d2 - d1) % 7 + 1))
        h1, m1, h2, m2 = (int(m[k]) for k in ("h1", "m1", "h2", "m2"))
        if h1 > 24 or h2 > 24 or m1 > 59 or m2 > 59:
            raise ValueError(f"{part!r} has an hour or minute out of range")
        out.append(Shift(days, h1 * 60 + m1, h2 * 60 + m2))
    return tuple(out)


@dataclass(frozen=True)
class StationConfig:
    """One ``[[stations]]`` entry: a station log the hub follows."""

    origin: str
    vkey: Verifier  # the key pinned for this log (its first, or any later one of its chain)
    store: StoreConfig
    unit: str = ""  # a label for reports (the unit the station serves), optional
    schedule: tuple[Shift, ...] = ()  # when the station works; () = always
    silent_after_h: float = 24  # no new checkpoint this long while working: `silent`
    utc_offset_min: int = 480  # the schedule's clock (China Standard Time by default)


@dataclass(frozen=True)
class CatalogConfig:
    """``[catalog]``: the Iceberg SQL catalog and where its data files go."""

    uri: str  # sqlite:///… (default, in data_dir) or postgresql+psycopg://…
    warehouse: str  # file:///… (default, in data_dir) or s3://bucket/prefix
    properties: tuple[tuple[str, str], ...] = ()  # passed to pyiceberg (e.g. s3.endpoint)


@dataclass(frozen=True)
class HubConfig:
    path: Path
    data_dir: Path
    name: str  # the hub's witness key name, and its own log's origin
    catalog: CatalogConfig
    stations: tuple[StationConfig, ...] = ()
    listen: str = "127.0.0.1:8710"  # `custody hub run` serves add-checkpoint here ("" = off)
    sync_interval_s: int = 60
    batch_rows: int = 200_000  # rows per Iceberg commit (memory is bounded by this)
    step_entries: int = 65_536  # entries verified between two commits for one station
    behind_after_s: int = 3600  # a pushed checkpoint the bucket lacks this long: `behind`
    workers: int = 0  # processes checking signatures; 0 = one per core
    web: WebSettings = field(default_factory=WebSettings)  # `custody hub web`
    disclose: DiscloseSettings = field(default_factory=DiscloseSettings)  # `custody hub disclose`
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def witness_dir(self) -> Path:
        return self.data_dir / "witness"

    @property
    def state_db(self) -> Path:
        return self.data_dir / "hub.sqlite"

    @property
    def ledger_dir(self) -> Path:
        return self.data_dir / "ledger"

    @property
    def state_dir(self) -> Path:
        return self.data_dir / "state"

    @property
    def key_path(self) -> Path:
        return self.data_dir / "keys" / "hub.key"

    @property
    def vkey_path(self) -> Path:
        return self.data_dir / "keys" / "hub.vkey"

    @property
    def reports_dir(self) -> Path:
        return self.data_dir / "reports"

    def station(self, origin: str) -> StationConfig | None:
        for s in self.stations:
            if s.origin == origin:
                return s
        return None


def load_hub(path: Path) -> HubConfig:
    raw = _read(path)
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(path, "", "is not UTF-8 text (save it as UTF-8)") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(path, "", f"is not valid TOML: {e}") from None
    return parse_hub(path, data)


def _keep_public_apart(
    path: Path,
    disclose: DiscloseSettings,
    data_dir: Path,
    warehouse: str,
    stations: list[StationConfig],
) -> None:
    """The county's publication never shares a place with what it is made from: the
    hub's ledger, the Iceberg warehouse (its rows name officers) or a station's store."""
    private = [(data_dir / "ledger", "the hub's ledger")]
    if warehouse.startswith("file://"):
        private.append((Path(unquote(urlparse(warehouse).path)), "the catalog's warehouse"))
    private += [(s.store.path, "a station's store") for s in stations if s.store.path]
    check_disclose_places(disclose, private, path)
    sc = disclose.store
    s3 = sc.s3 if sc is not None else None
    if s3 is not None and warehouse.startswith("s3://") and urlparse(warehouse).netloc == s3.bucket:
        raise ConfigError(
            path,
            "disclose.store.bucket",
            f"is the catalog's warehouse bucket ({warehouse}): publish to a bucket meant "
            "for public reading",
        )


def parse_hub(path: Path, data: dict[str, Any]) -> HubConfig:
    _no_nul(path, data)
    top = _Table(path, data)
    base = path.parent
    data_dir_s = top.get("data_dir", str, required=True)
    if not data_dir_s:
        raise top.error("data_dir", "must not be empty")
    data_dir = _path(top, "data_dir", base, data_dir_s)
    name = top.get("name", str, required=True)
    try:
        check_key_name(name)
    except NoteError as e:
        raise top.error("name", str(e)) from None
    listen = top.get("listen", str, "127.0.0.1:8710")
    if listen and not re.fullmatch(r"(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):\d{1,5}", listen):
        raise top.error("listen", f"must be HOST:PORT or '' (off), not {listen!r}")
    sync_interval = _int(top, "sync_interval_s", 60, 1, 86400)
    batch_rows = _int(top, "batch_rows", 200_000, 1, 10_000_000)
    step = _int(top, "step_entries", 65_536, 256, 10_000_000)
    behind = _int(top, "behind_after_s", 3600, 1, 30 * 86400)
    workers = _int(top, "workers", 0, 0, 256)
    web = parse_web(top, base)

    ct = top.get("catalog", dict, {})
    t = _Table(path, ct, "catalog.")
    uri = t.get("uri", str, f"sqlite:///{data_dir / 'catalog.db'}")
    warehouse = t.get("warehouse", str, f"file://{data_dir / 'warehouse'}")
    if not re.match(r"(sqlite|postgresql)(\+\w+)?://", uri):
        raise t.error("uri", f"must be a sqlite:/// or postgresql:// URI, not {uri!r}")
    if not re.match(r"(file|s3)://", warehouse):
        raise t.error("warehouse", f"must be a file:// or s3:// location, not {warehouse!r}")
    props = t.get("properties", dict, {})
    for k, v in props.items():
        if not isinstance(v, str):
            raise t.error(f"properties.{k}", "must be a string")
    t.finish()
    catalog = CatalogConfig(uri, warehouse, tuple(sorted(props.items())))

    stations = []
    seen: dict[str, int] = {}
    for i, st in enumerate(top.get("stations", list, [])):
        if not isinstance(st, dict):
            raise top.error("stations", "must be a list of tables ([[stations]])")
        stations.append(_parse_station(path, st, f"stations[{i}].", base, seen, i))
    disclose = parse_disclose(top, base, [s.store for s in stations])
    _keep_public_apart(path, disclose, data_dir, warehouse, stations)
    top.finish()
    return HubConfig(
        path=path,
        data_dir=data_dir,
        name=name,
        catalog=catalog,
        stations=tuple(stations),
        listen=listen,
        sync_interval_s=sync_interval,
        batch_rows=batch_rows,
        step_entries=step,
        behind_after_s=behind,
        workers=workers,
        web=web,
        disclose=disclose,
    )


def _parse_station(
    path: Path, data: dict[str, Any], prefix: str, base: Path, seen: dict[str, int], i: int
) -> StationConfig:
    t = _Table(path, data, prefix)
    origin = t.get("origin", str, required=True)
    try:
        check_key_name(origin)
    except NoteError as e:
        raise t.error("origin", str(e)) from None
    if origin in seen:
        raise t.error(
            "origin",
            f"{origin!r} is listed twice (also stations[{seen[origin]}]): list each station once",
        )
    seen[origin] = i
    vkey_s = t.get("vkey", str, required=True)
    try:
        vkey = Verifier.parse(vkey_s.strip())
    except NoteError as e:
        raise t.error("vkey", f"is not a station verifier key: {e}") from None
    if vkey.name != origin:
        raise t.error(
            "vkey",
            f"names {vkey.name!r}, not the station's origin {origin!r}: a station's key is "
            "named after its origin (check that the vkey and the origin are the same station's)",
        )
    st = t.get("store", dict, required=True)
    store = _parse_store(_Table(path, st, prefix + "store."), base)
    unit = t.get("unit", str, "")
    sched_s = t.get("schedule", str, "")
    try:
        schedule = parse_schedule(sched_s)
    except ValueError as e:
        raise t.error("schedule", str(e)) from None
    silent = t.get("silent_after_h", (int, float), 24)
    if not 0 < silent <= 24 * 365:
        raise t.error("silent_after_h", f"must be more than 0 and at most 8760 hours, not {silent}")
    offset = _int(t, "utc_offset_min", 480, -720, 840)
    t.finish()
    return StationConfig(origin, vkey, store, unit, schedule, float(silent), offset)


def render_hub(data_dir: Path, name: str) -> str:
    """A fresh ``hub.toml``: embedded defaults, no station yet (add them by hand)."""
    return f"""\
# custody hub: follows station logs from the shared S3 cluster (see docs/hub.md).
data_dir = {_q(str(data_dir))}
name = {_q(name)}                 # the hub's witness key name and its own log's origin
listen = "127.0.0.1:8710"         # add-checkpoint for stations that push to the hub
sync_interval_s = 60

[catalog]                          # the Iceberg catalog custody.entries
uri = {_q("sqlite:///" + str(data_dir / "catalog.db"))}
warehouse = {_q("file://" + str(data_dir / "warehouse"))}

# One block per station (its origin and the vkey its supervisor pinned):
# [[stations]]
# origin = "custody.example/menghai/dock-01"
# vkey = "custody.example/menghai/dock-01+1234abcd+AQ..."
# unit = "menghai traffic police"
# schedule = "mon-fri 07:00-19:00"   # silent alarms only in working hours
# silent_after_h = 24
# [stations.store]
# kind = "s3"
# bucket = "evidence"
# endpoint_url = "http://127.0.0.1:8333"
"""


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


__all__ = [
    "HUB_FILE",
    "CatalogConfig",
    "HubConfig",
    "Shift",
    "StationConfig",
    "load_hub",
    "parse_hub",
    "parse_schedule",
    "render_hub",
]
