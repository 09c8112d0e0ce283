"""Configuration: a TOML file, validated into frozen values.

Where the file is: ``-c/--config PATH``, else ``$CUSTODY_CONFIG``, else
``/etc/custody/custody.toml``. A relative ``data_dir`` is taken relative to
the file's folder. Every problem is reported as one line naming the file,
the key and what is wrong; unknown keys are refused, because a typo in an
evidence system's configuration must not pass silently.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import stat
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from archive.settings import ReplicationSettings, S3Settings
from custody.errors import ConfigError
from ingest.derive import ACCESS_MODES, MediaSettings
from ingest.settings import (
    RELEASE_MODES,
    CaptureSettings,
    DockSettings,
    FilenamePattern,
    RecorderInfo,
)
from ledger.note import NoteError, check_key_name
from retention.policy import CATEGORIES, PolicyError, category_key

DEFAULT_PATH = Path("/etc/custody/custody.toml")
ENV_VAR = "CUSTODY_CONFIG"

LOCK_MODES = ("COMPLIANCE", "GOVERNANCE", "none")
PATTERN_GROUPS = ("serial", "officer", "unit", "start", "important", "category")
_SAMPLE_TIME = datetime(2026, 11, 25, 8, 30, 5)  # checks a time_format reads what it writes


@dataclass(frozen=True)
class LedgerSettings:
    checkpoint_interval_ms: int = 1000
    # After an integrity error the daemon retries integration this long (someone may
    # restore the damaged file) before it stops with exit 1.
    halt_grace_s: int = 30


@dataclass(frozen=True)
class StoreConfig:
    """``[store]``: which cold store, and the replication rules for it."""

    kind: str  # local | s3
    replication: ReplicationSettings
    path: Path | None = None  # kind = "local"
    s3: S3Settings | None = None  # kind = "s3"


@dataclass(frozen=True)
class RetentionSettings:
    """``[retention]``: where the policy people edit lives, and how sweeps run."""

    policy: Path | None = None  # the editable policy file; the applied copy is in state/
    sweep_interval_min: int = 60
    max_clock_jump_days: int = 7


@dataclass(frozen=True)
class WitnessSettings:
    """``[witness]``: the trust policy naming the witnesses to ask, and how long to wait.

    Capture never waits for a witness; only the cold store's write-once
    ``checkpoints/<size>`` is held back, for at most ``publish_wait_s``, so that the
    locked copy carries the cosignatures."""

    policy: Path | None = None  # a C2SP tlog-policy file whose witness lines carry URLs
    timeout_s: int = 5  # per request
    publish_wait_s: int = 30  # hold checkpoints/<size> back this long for cosignatures
    alarm_after_s: int = 300  # quorum unmet this long: status, metrics and STATUS say so
    retry_s: int = 10  # a witness that failed is asked again after this long


@dataclass(frozen=True)
class WebSettings:
    """``[web]``: the review site (`custody web`). Loopback by default: put it behind a
    reverse proxy, or give a certificate and key to serve TLS itself."""

    listen: str = "127.0.0.1:8080"
    tls_cert: Path | None = None  # PEM certificate chain; with tls_key, serve HTTPS
    tls_key: Path | None = None
    proxy: str = ""  # the reverse proxy's address: its X-Forwarded-For/-Proto are believed
    idle_minutes: int = 30  # a session ends after this long without a request
    session_hours: int = 12  # ... and after this long in any case
    timezone: str = "Asia/Shanghai"  # times on the pages (the log keeps UTC)


@dataclass(frozen=True)
class DiscloseSettings:
    """``[disclose]``: the public disclosure (公示). ``rules`` is the file of what may be
    shown (threshold, time zone, the agency's and units' public names; the defaults
    without one). With ``schedule = "monthly"`` the daemon publishes the previous month
    on ``day`` of each month, and in January the previous year too, into ``out`` (a
    folder a web server serves) and/or ``store`` (a bucket prefix meant for public
    reading, never the evidence store's)."""

    rules: Path | None = None
    schedule: str = "off"  # "off" | "monthly"
    day: int = 3  # day of the month the previous month is published (1-28)
    out: Path | None = None
    store: StoreConfig | None = None


@dataclass(frozen=True)
class Config:
    path: Path
    data_dir: Path
    origin: str
    ledger: LedgerSettings = field(default_factory=LedgerSettings)
    docks: tuple[DockSettings, ...] = ()
    store: StoreConfig | None = None
    capture: CaptureSettings = field(default_factory=CaptureSettings)
    media: MediaSettings = field(default_factory=MediaSettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    metrics_listen: str = ""  # [metrics] listen = "127.0.0.1:9108"; "" = off
    witness: WitnessSettings = field(default_factory=WitnessSettings)
    web: WebSettings = field(default_factory=WebSettings)
    disclose: DiscloseSettings = field(default_factory=DiscloseSettings)

    @property
    def witness_policy(self) -> Path | None:
        """The witness policy file (``[witness] policy``), None when none is configured."""
        return self.witness.policy

    @property
    def ledger_dir(self) -> Path:
        return self.data_dir / "ledger"

    @property
    def state_dir(self) -> Path:
        return self.data_dir / "state"

    @property
    def store_dir(self) -> Path:
        return self.data_dir / "store"

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


_CONTROL = {c: f"\\x{c:02x}" for c in range(0x20)} | {0x7F: "\\x7f"}


_KIND_NAMES: dict[type, str] = {
    int: "an integer",
    str: "a string",
    bool: "true or false",
    float: "a number",
    list: "a list",
    dict: "a table",
}


class _Table:
    """A TOML table being read; tracks used keys so unknown ones are refused."""

    def __init__(self, path: Path, data: dict[str, Any], prefix: str = "") -> None:
        self.path, self.data, self.prefix = path, data, prefix
        self.used: set[str] = set()

    def name(self, key: str) -> str:
        # A quoted TOML key may hold anything: keep the message on one short line.
        shown = key.translate(_CONTROL)
        return f"{self.prefix}{shown if len(shown) <= 80 else shown[:80] + '...'}"

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(self.path, self.name(key), problem)

    def get(
        self, key: str, kind: type | tuple[type, ...], default: Any = None, required: bool = False
    ) -> Any:
        self.used.add(key)
        if key not in self.data:
            if required:
                raise self.error(key, "is required but missing")
            return default
        v = self.data[key]
        if (kind is int and isinstance(v, bool)) or not isinstance(v, kind):
            kinds = kind if isinstance(kind, tuple) else (kind,)
            names = " or ".join(_KIND_NAMES.get(k, k.__name__) for k in kinds)
            got = repr(v)
            got = got if len(got) <= 80 else got[:80] + "..."
            raise self.error(
                key, f"must be {names}, not {_KIND_NAMES.get(type(v), type(v).__name__)} {got}"
            )
        return v

    def finish(self) -> None:
        for k in self.data:
            if k not in self.used:
                raise self.error(k, "is not a known setting (check the spelling)")


MAX_CONFIG_BYTES = 1 << 20  # a station's configuration is a few kilobytes
PATH_MAX = 4095  # Linux: longest path, and longest file name, in bytes
NAME_MAX = 255


def _read(path: Path) -> bytes:
    """The file's bytes; never blocks on a FIFO or a device, never reads without bound."""
    try:
        # O_NONBLOCK: opening a FIFO with no writer would wait for ever.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ConfigError(
            path,
            "",
            "file not found (create one with 'custody init --data DIR', "
            "then pass -c DIR/custody.toml or set CUSTODY_CONFIG)",
        ) from None
    except (OSError, ValueError) as e:  # ValueError: a NUL in the path itself
        raise ConfigError(
            path, "", f"cannot be read: {getattr(e, 'strerror', None) or e}"
        ) from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise ConfigError(path, "", "is a folder, not a file")
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(path, "", "is not a regular file (a FIFO, socket or device?)")
        chunks = []
        left = MAX_CONFIG_BYTES + 1
        while left > 0:
            b = os.read(fd, min(left, 1 << 16))
            if not b:
                break
            chunks.append(b)
            left -= len(b)
    except OSError as e:
        raise ConfigError(path, "", f"cannot be read: {e.strerror or e}") from None
    finally:
        os.close(fd)
    raw = b"".join(chunks)
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(path, "", f"is larger than {MAX_CONFIG_BYTES >> 10} KiB: not a config")
    return raw


def _line(raw: bytes, pos: int) -> int:
    return raw.count(b"\n", 0, pos) + 1


def load(path: Path) -> Config:
    raw = _read(path)
    if b"\0" in raw:
        at = _line(raw, raw.index(b"\0"))
        raise ConfigError(path, "", f"contains a NUL byte (line {at}): not a text file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(
            path,
            "",
            f"is not UTF-8 text: byte 0x{raw[e.start]:02x} on line {_line(raw, e.start)} "
            "(save it as UTF-8)",
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(path, "", f"is not valid TOML: {e}") from None
    except RecursionError:
        raise ConfigError(
            path, "", "is not valid TOML: arrays or tables nested too deeply"
        ) from None
    return parse(path, data)


def _no_nul(path: Path, data: dict[str, Any]) -> None:
    """Refuse a NUL character in any key or string (a TOML escape can make one): no
    path, command or name can hold it, and it would surface later as a traceback."""
    todo: list[tuple[str, Any]] = [("", data)]
    while todo:
        where, v = todo.pop()
        if isinstance(v, dict):
            for k, x in v.items():
                name = f"{where}.{k}" if where else str(k)
                if "\0" in str(k):
                    raise ConfigError(path, name.replace("\0", "\\0"), "contains a NUL character")
                todo.append((name, x))
        elif isinstance(v, list):
            todo.extend((f"{where}[{i}]", x) for i, x in enumerate(v))
        elif isinstance(v, str) and "\0" in v:
            raise ConfigError(path, where, "contains a NUL character")


def parse(path: Path, data: dict[str, Any]) -> Config:
    _no_nul(path, data)
    top = _Table(path, data)
    base = path.parent
    data_dir_s = top.get("data_dir", str, required=True)
    if not data_dir_s:
        raise top.error("data_dir", "must not be empty")
    data_dir = _path(top, "data_dir", base, data_dir_s)
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
        grace = _int(t, "halt_grace_s", 30, 1, 3600)
        t.finish()
        ledger = LedgerSettings(iv, grace)

    docks = []
    for i, d in enumerate(top.get("docks", list, [])):
        if not isinstance(d, dict):
            raise top.error(f"docks[{i}]", "must be a table ([[docks]])")
        docks.append(_parse_dock(_Table(path, d, f"docks[{i}]."), base))
    for i, d in enumerate(docks):
        if d.path == data_dir or d.path in data_dir.parents or data_dir in d.path.parents:
            raise top.error(
                f"docks[{i}].path",
                f"{d.path} overlaps the data folder {data_dir}: the station would capture "
                "its own store and key",
            )
    labels = [d.label for d in docks]
    for lb in labels:
        if labels.count(lb) > 1:
            raise top.error("docks", f"two docks are named {lb!r}; give each a distinct name")

    capture = CaptureSettings(release="")
    ct = top.get("capture", dict)
    if ct is not None:
        capture = _parse_capture(_Table(path, ct, "capture."))

    store = None
    st = top.get("store", dict)
    if st is not None:
        store = _parse_store(_Table(path, st, "store."), base)
    if capture.release == "":
        capture = replace(capture, release="after_replication" if store else "never")
    elif capture.release == "after_replication" and store is None:
        raise ConfigError(
            path, "capture.release", "is after_replication but there is no [store] to replicate to"
        )
    media = MediaSettings()
    mt = top.get("media", dict)
    if mt is not None:
        media = _parse_media(_Table(path, mt, "media."), base)
    retention = RetentionSettings()
    rt = top.get("retention", dict)
    if rt is not None:
        t = _Table(path, rt, "retention.")
        pol = t.get("policy", str, "")
        retention = RetentionSettings(
            policy=_path(t, "policy", base, pol) if pol else None,
            sweep_interval_min=_int(t, "sweep_interval_min", 60, 1, 24 * 60),
            max_clock_jump_days=_int(t, "max_clock_jump_days", 7, 1, 3650),
        )
        t.finish()
    metrics = ""
    mt2 = top.get("metrics", dict)
    if mt2 is not None:
        t = _Table(path, mt2, "metrics.")
        metrics = _listen(t)
        t.finish()
    witness = WitnessSettings()
    wt = top.get("witness", dict)
    if wt is not None:
        witness = _parse_witness(_Table(path, wt, "witness."), base)
    web = parse_web(top, base)
    disclose = parse_disclose(top, base, [store])
    check_disclose_places(
        disclose,
        [(d.path, "a dock") for d in docks]
        + [(data_dir / "ledger", "the ledger"), (data_dir / "store", "the store")]
        + ([(store.path, "the cold store")] if store is not None and store.path else []),
        path,
    )
    top.finish()
    return Config(
        path,
        data_dir,
        origin,
        ledger,
        tuple(docks),
        store,
        capture,
        media,
        retention,
        metrics,
        witness,
        web,
        disclose,
    )


def _parse_witness(t: _Table, base: Path) -> WitnessSettings:
    pol = t.get("policy", str, "")
    ws = WitnessSettings(
        policy=_path(t, "policy", base, pol) if pol else None,
        timeout_s=_int(t, "timeout_s", 5, 1, 300),
        publish_wait_s=_int(t, "publish_wait_s", 30, 0, 86_400),
        alarm_after_s=_int(t, "alarm_after_s", 300, 1, 30 * 86_400),
        retry_s=_int(t, "retry_s", 10, 1, 86_400),
    )
    t.finish()
    return ws


def _timezone(t: _Table) -> str:
    import zoneinfo

    tz: str = t.get("timezone", str, "Asia/Shanghai")
    try:
        zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise t.error("timezone", f"is not an IANA time zone name: {tz!r}") from None
    return tz


def parse_disclose(
    top: _Table, base: Path, evidence: Sequence[StoreConfig | None]
) -> DiscloseSettings:
    """``[disclose]`` of a station's or the hub's configuration. ``evidence``: the
    evidence stores, which a publication must never share a bucket prefix with."""
    dt = top.get("disclose", dict)
    if dt is None:
        return DiscloseSettings()
    t = _Table(top.path, dt, "disclose.")
    rules = t.get("rules", str, "")
    schedule = t.get("schedule", str, "off")
    if schedule not in ("off", "monthly"):
        raise t.error("schedule", f"must be 'off' or 'monthly', not {schedule!r}")
    day = _int(t, "day", 3, 1, 28)
    out = t.get("out", str, "")
    st = t.get("store", dict)
    store = _parse_store(_Table(top.path, st, "disclose.store."), base) if st is not None else None
    if store is not None and any(e is not None and _same_place(store, e) for e in evidence):
        raise t.error(
            "store",
            "is the evidence store: publish to a bucket or prefix of its own, meant for "
            "public reading",
        )
    if schedule == "monthly" and not out and store is None:
        raise t.error("schedule", "is monthly but neither out nor [disclose.store] is given")
    t.finish()
    return DiscloseSettings(
        rules=_path(t, "rules", base, rules) if rules else None,
        schedule=schedule,
        day=day,
        out=_path(t, "out", base, out) if out else None,
        store=store,
    )


def _inside(a: Path, b: Path) -> bool:
    """One folder is the other or below it (either way round)."""
    return a == b or a.is_relative_to(b) or b.is_relative_to(a)


def _same_place(a: StoreConfig, b: StoreConfig) -> bool:
    """The two stores share objects: the same folder or one inside the other, or the
    same bucket with one prefix inside the other ("" holds every prefix)."""
    if a.kind != b.kind:
        return False
    if a.kind == "local":
        assert a.path is not None and b.path is not None
        return _inside(a.path, b.path)
    assert a.s3 is not None and b.s3 is not None
    if (a.s3.bucket, a.s3.endpoint_url) != (b.s3.bucket, b.s3.endpoint_url):
        return False
    pa, pb = a.s3.prefix.strip("/"), b.s3.prefix.strip("/")
    pa, pb = (pa + "/" if pa else ""), (pb + "/" if pb else "")
    return pa.startswith(pb) or pb.startswith(pa)


def check_disclose_places(
    d: DiscloseSettings, private: Sequence[tuple[Path, str]], where: Path
) -> None:
    """A publication folder must not be inside a dock (it would be captured as footage)
    or the ledger, store or catalog (public files mixed with evidence), nor they in it."""
    for target in (
        d.out,
        d.store.path if d.store is not None and d.store.kind == "local" else None,
    ):
        if target is None:
            continue
        for folder, what in private:
            if _inside(target, folder):
                raise ConfigError(
                    where,
                    "disclose.out" if target == d.out else "disclose.store.path",
                    f"publishes to {target}, which is {what} ({folder}) or holds it: "
                    "publish to a folder of its own",
                )


def parse_web(top: _Table, base: Path) -> WebSettings:
    """``[web]`` of a station's or the hub's configuration."""
    wt = top.get("web", dict)
    if wt is None:
        return WebSettings()
    t = _Table(top.path, wt, "web.")
    listen = t.get("listen", str, "127.0.0.1:8080")
    m = re.fullmatch(r"(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):([0-9]{1,5})", listen)
    if m is None or not 0 < int(m.group(2)) < 65536:
        raise t.error("listen", f"must be HOST:PORT or [V6]:PORT, not {listen!r}")
    cert, key = t.get("tls_cert", str, ""), t.get("tls_key", str, "")
    if bool(cert) != bool(key):
        raise t.error("tls_cert" if key else "tls_key", "give tls_cert and tls_key together")
    proxy = t.get("proxy", str, "")
    if proxy:
        try:
            ipaddress.ip_address(proxy)
        except ValueError:
            raise t.error("proxy", f"must be the proxy's IP address, not {proxy!r}") from None
    ws = WebSettings(
        listen=listen,
        tls_cert=_path(t, "tls_cert", base, cert) if cert else None,
        tls_key=_path(t, "tls_key", base, key) if key else None,
        proxy=proxy,
        idle_minutes=_int(t, "idle_minutes", 30, 1, 24 * 60),
        session_hours=_int(t, "session_hours", 12, 1, 7 * 24),
        timezone=_timezone(t),
    )
    t.finish()
    return ws


def _parse_media(t: _Table, base: Path) -> MediaSettings:
    exe = t.get("ffmpeg", str, "")
    mode = t.get("access_copies", str, "remux")
    if mode not in ACCESS_MODES:
        raise t.error("access_copies", f"must be one of {', '.join(ACCESS_MODES)}, not {mode!r}")
    preset = t.get("preset", str, "veryfast")
    if preset not in ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow"):
        raise t.error("preset", f"is not an x264 preset: {preset!r}")
    ms = MediaSettings(
        ffmpeg=str(_path(t, "ffmpeg", base, exe)) if exe else "",
        access_copies=mode,
        preset=preset,
        crf=_int(t, "crf", 23, 0, 51),
        posters=t.get("posters", bool, True),
        timeout_s=_int(t, "timeout_s", 3600, 10, 86400),
        memory_mb=_int(t, "memory_mb", 4096, 1024, 1 << 20),
        transcode_budget_min=_int(t, "transcode_budget_min", 0, 0, 24 * 60),
        frame_hashes=t.get("frame_hashes", bool, False),
        signature=t.get("signature", bool, False),
    )
    t.finish()
    return ms


def _path(t: _Table, key: str, base: Path, value: str) -> Path:
    """A configured path, absolute (a relative one is taken from the config's folder)."""
    try:
        p = (base / value).resolve()
    except (OSError, RuntimeError, ValueError) as e:  # RuntimeError: a symlink loop
        raise t.error(key, f"cannot be resolved: {e}") from None
    b = os.fsencode(p)
    if len(b) > PATH_MAX or any(len(c) > NAME_MAX for c in b.split(b"/")):
        raise t.error(
            key,
            f"is longer than the system allows ({PATH_MAX} bytes, {NAME_MAX} per name): "
            f"{value[:60]!r}...",
        )
    return p


def _listen(t: _Table) -> str:
    """``[metrics] listen``: a loopback address and a port, ``HOST:PORT`` or ``[V6]:PORT``.
    Localhost only: the metrics say what the station holds, to anyone who can ask."""
    v: str = t.get("listen", str, "")
    if not v:
        return ""
    m = re.fullmatch(r"(\[[^\]]*\]|[^:\[\]]*):([^:]*)", v)
    if m is None:
        raise t.error(
            "listen",
            f"must be HOST:PORT, an IPv6 host in brackets ([::1]:9108), not {v!r}",
        )
    host, port = m.group(1), m.group(2)
    if not re.fullmatch(r"[0-9]{1,5}", port) or not 0 < int(port) < 65536:
        raise t.error("listen", f"port must be a number from 1 to 65535, not {port!r} in {v!r}")
    loopback = host == "localhost"
    if not loopback and "%" not in host:
        try:
            addr = host[1:-1] if host.startswith("[") else host
            ip = ipaddress.ip_address(addr)
            loopback = ip.is_loopback and (ip.version == 6) == host.startswith("[")
        except ValueError:
            loopback = False
    if not loopback:
        raise t.error(
            "listen",
            f"must be a loopback address (127.0.0.1:PORT, [::1]:PORT or localhost:PORT), "
            f"not {host!r} in {v!r}",
        )
    return v


def _url(t: _Table, key: str) -> str:
    v: str = t.get(key, str, "")
    if not v:
        return ""
    try:
        u = urlsplit(v)
        port = u.port  # raises for a port out of range or not a number
    except ValueError as e:
        raise t.error(key, f"is not a usable URL ({e}): {v!r}") from None
    if u.scheme not in ("http", "https") or not u.hostname or port == 0:
        raise t.error(key, f"must be http(s)://HOST[:PORT] (a port from 1 to 65535), not {v!r}")
    return v


def _int(t: _Table, key: str, default: int, lo: int, hi: int) -> int:
    v: int = t.get(key, int, default)
    if not lo <= v <= hi:
        raise t.error(key, f"must be between {lo} and {hi}, not {v}")
    return v


def _str_list(t: _Table, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
    v = t.get(key, list, None)
    if v is None:
        return default
    if not all(isinstance(x, str) for x in v):
        raise t.error(key, "must be a list of strings")
    return tuple(v)


def _parse_capture(t: _Table) -> CaptureSettings:
    hashes = _str_list(t, "hashes", ("sha256",))
    for h in hashes:
        if h not in ("sha256", "sm3"):
            raise t.error("hashes", f"knows sha256 and sm3, not {h!r}")
    if "sha256" not in hashes:
        raise t.error("hashes", "must include sha256 (content addresses are SHA-256)")
    if "sm3" in hashes and "sm3" not in hashlib.algorithms_available:
        raise t.error("hashes", "sm3 is not offered by this system's OpenSSL")
    release = t.get("release", str, "")  # "": after_replication with a [store], else never
    if release and release not in RELEASE_MODES:
        raise t.error("release", f"must be one of {', '.join(RELEASE_MODES)}, not {release!r}")
    cs = CaptureSettings(
        settle_ms=_int(t, "settle_ms", 5000, 0, 3_600_000),
        scan_interval_s=_int(t, "scan_interval_s", 60, 1, 86_400),
        max_parallel_recorders=_int(t, "max_parallel_recorders", 4, 1, 64),
        verify_copy=t.get("verify_copy", bool, True),
        sm3="sm3" in hashes,
        release=release,
        min_free_mb=_int(t, "min_free_mb", 1024, 0, 1 << 30),
        clock_skew_s=_int(t, "clock_skew_s", 300, 1, 1 << 30),
        chunk_mb=_int(t, "chunk_mb", 4, 1, 64),
    )
    t.finish()
    return cs


def _parse_dock(t: _Table, base: Path) -> DockSettings:
    p = t.get("path", str, required=True)
    name = t.get("name", str, "")
    include = _str_list(t, "include", ("*",))
    exclude = _str_list(t, "exclude", ())
    cmd = _str_list(t, "identity_command", ())
    patterns = []
    for j, pt in enumerate(t.get("patterns", list, [])):
        if not isinstance(pt, dict):
            raise t.error(f"patterns[{j}]", "must be a table ([[docks.patterns]])")
        pt_t = _Table(t.path, pt, f"{t.prefix}patterns[{j}].")
        vendor = pt_t.get("vendor", str, required=True)
        rx = pt_t.get("regex", str, required=True)
        try:
            compiled = re.compile(rx)
        except re.error as e:
            raise pt_t.error("regex", f"is not a valid regular expression: {e}") from None
        unknown = set(compiled.groupindex) - set(PATTERN_GROUPS)
        if unknown:
            raise pt_t.error(
                "regex", f"unknown group(s) {sorted(unknown)}: use {', '.join(PATTERN_GROUPS)}"
            )
        fmt = pt_t.get("time_format", str, "%Y%m%d%H%M%S")
        try:
            datetime.strptime(_SAMPLE_TIME.strftime(fmt), fmt)
        except ValueError as e:
            raise pt_t.error("time_format", f"is not a strptime format: {e}") from None
        pt_t.finish()
        patterns.append(FilenamePattern(vendor, compiled, fmt))
    # Every category's own key and Chinese term map to it; the site adds its vendor's codes.
    category_map = {k: k for k in CATEGORIES} | {term: k for k, term in CATEGORIES.items()}
    for code, value in t.get("category_map", dict, {}).items():
        if not isinstance(value, str):
            raise t.error(f"category_map.{code}", f"must be a category, not {value!r}")
        try:
            category_map[code] = category_key(value)
        except PolicyError as e:
            raise t.error(f"category_map.{code}", str(e)) from None
    zone = t.get("timezone", str, "")
    if zone:
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise t.error(
                "timezone", f"is not a time zone this system knows (e.g. Asia/Shanghai): {zone!r}"
            ) from None
    recorders: dict[str, RecorderInfo] = {}
    rt = t.get("recorders", dict, {})
    for key, info in rt.items():
        if not isinstance(info, dict):
            raise t.error(f"recorders.{key}", "must be a table with serial, officer, unit")
        it = _Table(t.path, info, f"{t.prefix}recorders.{key}.")
        recorders[key] = RecorderInfo(
            it.get("serial", str, ""), it.get("officer", str, ""), it.get("unit", str, "")
        )
        it.finish()
    t.finish()
    return DockSettings(
        path=_path(t, "path", base, p),
        name=name,
        include=include,
        exclude=exclude,
        patterns=tuple(patterns),
        recorders=recorders,
        identity_command=cmd,
        category_map=category_map,
        timezone=zone,
    )


def _parse_store(t: _Table, base: Path) -> StoreConfig:
    kind = t.get("kind", str, required=True)
    if kind not in ("local", "s3"):
        raise t.error("kind", f"must be 'local' or 's3', not {kind!r}")
    lock = t.get("lock_mode", str, "COMPLIANCE")
    if lock not in LOCK_MODES:
        raise t.error("lock_mode", f"must be one of {', '.join(LOCK_MODES)}, not {lock!r}")
    replication = ReplicationSettings(
        lock_mode=lock,
        retain_days=_int(t, "retain_days", 180, 1, 36500),
        ledger_retain_days=_int(t, "ledger_retain_days", 3650, 1, 36500),
        retry_max_s=float(_int(t, "retry_max_s", 600, 1, 86400)),
        stale_upload_hours=_int(t, "stale_upload_hours", 24, 1, 24 * 365) if kind == "s3" else 24,
    )
    if kind == "local":
        p = t.get("path", str, required=True)
        t.finish()
        return StoreConfig("local", replication, path=_path(t, "path", base, p))
    bucket = t.get("bucket", str, required=True)
    if not 3 <= len(bucket) <= 63:
        raise t.error("bucket", f"must be 3 to 63 characters long, not {bucket!r}")
    if not re.fullmatch(r"[A-Za-z0-9._-]+", bucket):  # what botocore sends at all
        raise t.error("bucket", f"may hold letters, digits, '.', '-' and '_' only: {bucket!r}")
    region = t.get("region", str, "us-east-1")
    if not re.fullmatch(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?", region):
        raise t.error("region", f"is not a region name (e.g. us-east-1): {region!r}")
    prefix = t.get("prefix", str, "")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    verify = t.get("verify_tls", (bool, str), True)
    checksums = t.get("checksums", str, "when_required")
    if checksums not in ("when_required", "when_supported"):
        raise t.error("checksums", f"must be when_required or when_supported, not {checksums!r}")
    part = _int(t, "part_size_mb", 16, 5, 512)  # (concurrency + 1) parts are held in memory
    s3 = S3Settings(
        bucket=bucket,
        prefix=prefix,
        endpoint_url=_url(t, "endpoint_url"),
        region=region,
        path_style=t.get("path_style", bool, True),
        verify_tls=verify,
        checksums=checksums,
        conditional_writes=t.get("conditional_writes", bool, True),
        profile=t.get("profile", str, ""),
        access_key_id=t.get("access_key_id", str, ""),
        secret_access_key=t.get("secret_access_key", str, ""),
        multipart_threshold_mb=_int(t, "multipart_threshold_mb", 32, 5, 512),
        part_size_mb=part,
        concurrency=_int(t, "concurrency", 4, 1, 64),
        storage_class=t.get("storage_class", str, ""),
    )
    if bool(s3.access_key_id) != bool(s3.secret_access_key):
        raise t.error(
            "secret_access_key", "give both access_key_id and secret_access_key, or neither"
        )
    t.finish()
    return StoreConfig("s3", replication, s3=s3)


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
        "# After an integrity error, retry integrating this long, then stop (exit 1).\n"
        "# halt_grace_s = 30\n"
        "\n"
        "\n"
        "[capture]\n"
        "# A file is taken once unchanged this long and not open for writing.\n"
        "settle_ms = 5000\n"
        "scan_interval_s = 60\n"
        "max_parallel_recorders = 4\n"
        "verify_copy = true\n"
        'hashes = ["sha256"]            # add "sm3" where OpenSSL offers it\n'
        "# release: after_replication (the default with a [store]: delete from the\n"
        "# recorder once the cold store confirmed its copy), after_capture, or never\n"
        "# (the default without a [store]).\n"
        '# release = "after_replication"\n'
        "min_free_mb = 1024             # pause capture below this much free space\n"
        "\n"
        "[media]\n"
        "# Access copies (MP4, H.264 + AAC, <= 1080p): remux = only those that need no\n"
        "# video transcode (H.264 already), the rest on request; all = transcode too\n"
        "# (about a quarter of real time on two cores); off.\n"
        'access_copies = "remux"\n'
        "# With all: minutes of footage transcoded per day at most (0: no cap); the rest\n"
        "# waits for the next day. One hour takes about 16 minutes of both cores.\n"
        "transcode_budget_min = 0\n"
        'preset = "veryfast"\n'
        "crf = 23\n"
        "posters = true\n"
        "# Decoded-frame hashes (survive a re-mux; about a fifth of real time to make) for\n"
        "# every video, not only on request (custody fingerprint --frames SHA256).\n"
        "frame_hashes = false\n"
        "signature = false              # the MPEG-7 video signature in the same pass\n"
        '# ffmpeg = "/usr/bin/ffmpeg"     # default: ffmpeg on PATH, else the imageio-ffmpeg one\n'
        "\n"
        "# Witnesses (C2SP tlog-witness) that cosign each checkpoint: a C2SP tlog-policy\n"
        "# file whose witness lines carry URLs. Capture never waits for them; the cold\n"
        "# store's checkpoints/<size> waits publish_wait_s for the cosignatures.\n"
        "# [witness]\n"
        '# policy = "witnesses.policy"\n'
        "# timeout_s = 5                 # per request\n"
        "# publish_wait_s = 30\n"
        "# alarm_after_s = 300           # quorum unmet this long: status and metrics say so\n"
        "# retry_s = 10                  # a failing witness is asked again this often\n"
        "\n"
        "# Public disclosure (公示, `custody disclose`): the rules file (threshold, time\n"
        "# zone, public names) and the daemon's monthly publication (and, in January,\n"
        "# the year's) to a folder and/or a public bucket prefix (docs/disclosure.md).\n"
        "# [disclose]\n"
        '# rules = "disclose.toml"\n'
        '# schedule = "monthly"\n'
        "# day = 3\n"
        '# out = "/srv/www/disclosure"\n'
        "\n"
        "# Prometheus metrics on localhost (off unless set):\n"
        "# [metrics]\n"
        '# listen = "127.0.0.1:9108"\n'
        "\n"
        "[retention]\n"
        "# The policy to edit; it takes effect through `custody retention apply`.\n"
        'policy = "retention.toml"\n'
        "sweep_interval_min = 60\n"
        "max_clock_jump_days = 7        # no deletion after a larger clock jump until confirmed\n"
        "\n"
        "# The cold store (absent: the dock's own disk only). S3-compatible:\n"
        "# [store]\n"
        '# kind = "s3"                   # or "local" with path = "/srv/cold"\n'
        '# bucket = "evidence"           # created with object lock enabled\n'
        '# endpoint_url = "https://s3.county.example"\n'
        '# lock_mode = "COMPLIANCE"      # or "GOVERNANCE", or "none"\n'
        "# retain_days = 180             # lock period until retention rules set one\n"
        "# Credentials: the standard AWS chain (AWS_ACCESS_KEY_ID, ~/.aws, profile = ...).\n"
        "\n"
        "# One [[docks]] table per dock root (one folder per docked recorder below it).\n"
        "# [[docks]]\n"
        '# path = "/srv/dock"\n'
        '# exclude = ["*.tmp"]\n'
        "# timezone = \"Asia/Shanghai\"    # the recorders' clocks (default: the station's zone)\n"
        "# The codes a file name gives for a category (a category's own key or Chinese\n"
        "# term needs no entry):\n"
        '# category_map = { XZCF = "行政处罚", XZQZ = "行政强制" }\n'
        "# One [[docks.patterns]] per vendor's file naming. Groups: serial, officer, unit,\n"
        "# start (the recording start, read with time_format), important (a non-empty match\n"
        "# marks the file important, e.g. _IMP) and category (through category_map). The\n"
        "# station records what the name says; `custody annotate` overrides it.\n"
        "# [[docks.patterns]]\n"
        '# vendor = "gat947"\n'
        "# regex = '^(?P<serial>[A-Z0-9]{7})_(?P<officer>[0-9]{6})_(?P<start>[0-9]{14})"
        "(?:_(?P<category>[A-Z]{4}))?(?P<important>_IMP)?'\n"
        '# time_format = "%Y%m%d%H%M%S"\n'
        "# [docks.recorders.slot01]\n"
        '# serial = "ABC1234"\n'
        '# officer = "010203"\n'
        '# unit = "530822000000"\n'
    )


def _toml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
