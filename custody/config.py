"""Configuration: a TOML file, validated into frozen values.

Where the file is: ``-c/--config PATH``, else ``$CUSTODY_CONFIG``, else
``/etc/custody/custody.toml``. A relative ``data_dir`` is taken relative to
the file's folder. Every problem is reported as one line naming the file,
the key and what is wrong; unknown keys are refused, because a typo in an
evidence system's configuration must not pass silently.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from custody.errors import ConfigError
from ledger.note import NoteError, check_key_name

DEFAULT_PATH = Path("/etc/custody/custody.toml")
ENV_VAR = "CUSTODY_CONFIG"

LOCK_MODES = ("COMPLIANCE", "GOVERNANCE", "none")


@dataclass(frozen=True)
class LedgerSettings:
    checkpoint_interval_ms: int = 1000


@dataclass(frozen=True)
class DockConfig:
    path: Path


@dataclass(frozen=True)
class StoreConfig:
    kind: str
    path: Path | None = None
    bucket: str = ""
    prefix: str = ""
    endpoint_url: str = ""
    region: str = "us-east-1"
    lock_mode: str = "COMPLIANCE"


@dataclass(frozen=True)
class Config:
    path: Path
    data_dir: Path
    origin: str
    ledger: LedgerSettings = field(default_factory=LedgerSettings)
    docks: tuple[DockConfig, ...] = ()
    store: StoreConfig | None = None

    @property
    def ledger_dir(self) -> Path:
        return self.data_dir / "ledger"

    @property
    def state_dir(self) -> Path:
        return self.data_dir / "state"

    @property
    def key_path(self) -> Path:
        return self.data_dir / "keys" / "station.key"

    @property
    def vkey_path(self) -> Path:
        return self.data_dir / "keys" / "station.vkey"


def config_path(cli_value: str | None) -> Path:
    if cli_value:
        return Path(cli_value)
    env = os.environ.get(ENV_VAR)
    return Path(env) if env else DEFAULT_PATH


class _Table:
    """A TOML table being read; tracks used keys so unknown ones are refused."""

    def __init__(self, path: Path, data: dict[str, Any], prefix: str = "") -> None:
        self.path, self.data, self.prefix = path, data, prefix
        self.used: set[str] = set()

    def name(self, key: str) -> str:
        return f"{self.prefix}{key}"

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(self.path, self.name(key), problem)

    def get(self, key: str, kind: type, default: Any = None, required: bool = False) -> Any:
        self.used.add(key)
        if key not in self.data:
            if required:
                raise self.error(key, "is required but missing")
            return default
        v = self.data[key]
        if (kind is int and isinstance(v, bool)) or not isinstance(v, kind):
            raise self.error(key, f"must be a {kind.__name__}, not {type(v).__name__} {v!r}")
        return v

    def finish(self) -> None:
        for k in self.data:
            if k not in self.used:
                raise self.error(k, "is not a known setting (check the spelling)")


def load(path: Path) -> Config:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            path,
            "",
            "file not found (create one with 'custody init --data DIR', "
            "then pass -c DIR/custody.toml or set CUSTODY_CONFIG)",
        ) from None
    except OSError as e:
        raise ConfigError(path, "", f"cannot be read: {e.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(path, "", f"is not valid TOML: {e}") from None
    return parse(path, data)


def parse(path: Path, data: dict[str, Any]) -> Config:
    top = _Table(path, data)
    base = path.parent
    data_dir_s = top.get("data_dir", str, required=True)
    if not data_dir_s:
        raise top.error("data_dir", "must not be empty")
    data_dir = (base / data_dir_s).resolve()
    origin = top.get("origin", str, required=True)
    try:
        check_key_name(origin)
    except NoteError as e:
        raise top.error("origin", str(e)) from None

    ledger = LedgerSettings()
    lt = top.get("ledger", dict)
    if lt is not None:
        t = _Table(path, lt, "ledger.")
        iv = t.get("checkpoint_interval_ms", int, 1000)
        if not 10 <= iv <= 3_600_000:
            raise t.error("checkpoint_interval_ms", f"must be between 10 and 3600000, not {iv}")
        t.finish()
        ledger = LedgerSettings(iv)

    docks = []
    for i, d in enumerate(top.get("docks", list, [])):
        if not isinstance(d, dict):
            raise top.error(f"docks[{i}]", "must be a table ([[docks]])")
        t = _Table(path, d, f"docks[{i}].")
        p = t.get("path", str, required=True)
        t.finish()
        docks.append(DockConfig((base / p).resolve()))

    store = None
    st = top.get("store", dict)
    if st is not None:
        store = _parse_store(_Table(path, st, "store."), base)
    top.finish()
    return Config(path, data_dir, origin, ledger, tuple(docks), store)


def _parse_store(t: _Table, base: Path) -> StoreConfig:
    kind = t.get("kind", str, required=True)
    if kind not in ("local", "s3"):
        raise t.error("kind", f"must be 'local' or 's3', not {kind!r}")
    lock = t.get("lock_mode", str, "COMPLIANCE")
    if lock not in LOCK_MODES:
        raise t.error("lock_mode", f"must be one of {', '.join(LOCK_MODES)}, not {lock!r}")
    if kind == "local":
        p = t.get("path", str, required=True)
        t.finish()
        return StoreConfig("local", path=(base / p).resolve(), lock_mode=lock)
    bucket = t.get("bucket", str, required=True)
    sc = StoreConfig(
        "s3",
        bucket=bucket,
        prefix=t.get("prefix", str, ""),
        endpoint_url=t.get("endpoint_url", str, ""),
        region=t.get("region", str, "us-east-1"),
        lock_mode=lock,
    )
    t.finish()
    return sc


def render(data_dir: Path, origin: str) -> str:
    """The config file `custody init` writes."""
    return (
        "# custody station configuration (TOML). See README.md.\n"
        f"data_dir = {_toml_str(str(data_dir))}\n"
        f"origin = {_toml_str(origin)}\n"
        "\n"
        "[ledger]\n"
        "# Sign and publish a checkpoint at most this often while entries arrive.\n"
        "checkpoint_interval_ms = 1000\n"
        "\n"
        "# One [[docks]] table per dock root (one folder per docked recorder below it).\n"
        "# [[docks]]\n"
        '# path = "/srv/dock"\n'
    )


def _toml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
