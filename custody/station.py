"""A station on disk: its folders, its key and its ledger.

Layout under ``data_dir``::

    custody.toml          written by `custody init` (may live elsewhere)
    keys/station.key      Ed25519 signer key, C2SP note key string, mode 0600
    keys/station.vkey     verifier key (public; supervisors pin it)
    ledger/               C2SP tlog-tiles: checkpoint, tile/...
    state/                SQLite job state and the ledger's pending appends
"""

from __future__ import annotations

import getpass
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from custody import config as cfg
from custody.errors import CustodyError
from ledger.durable import write_atomic
from ledger.log import Ledger
from ledger.note import NoteError, Signer, Verifier


def default_origin() -> str:
    host = socket.gethostname().split(".")[0] or "dock"
    return f"custody.local/{host}"


@dataclass(frozen=True)
class InitResult:
    config_path: Path
    vkey: str


def init_station(data_dir: Path, origin: str | None = None) -> InitResult:
    """Create the folders, the station key and the config; record a `key` entry."""
    data_dir = data_dir.resolve()
    origin = origin or default_origin()
    try:
        Signer.generate(origin)
    except NoteError as e:
        raise CustodyError(f"origin {origin!r} is not usable as a key name: {e}") from None
    conf_path = data_dir / "custody.toml"
    key_path = data_dir / "keys" / "station.key"
    if key_path.exists():
        raise CustodyError(
            f"{key_path} already exists; refusing to replace a station key",
            "a station keeps its key for life: back it up, do not re-run init",
        )
    if conf_path.exists():
        raise CustodyError(f"{conf_path} already exists; refusing to overwrite it")
    for sub in ("", "keys", "ledger", "state"):
        (data_dir / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir / "keys", 0o700)
    signer = Signer.generate(origin)
    from custody.keys import write_key

    try:
        write_key(key_path, signer)  # O_EXCL: never overwrites a key that appeared since
    except FileExistsError:
        raise CustodyError(f"{key_path} already exists; refusing to replace it") from None
    vkey = signer.verifier().vkey()
    write_atomic(data_dir / "keys" / "station.vkey", (vkey + "\n").encode())
    write_atomic(conf_path, cfg.render(data_dir, origin).encode())
    conf = cfg.load(conf_path)
    from custody.retain import write_default_policy

    # The retention policy is written, not applied: nothing is ever deleted until a
    # person has read it and run `custody retention apply`.
    write_default_policy(conf)
    with open_ledger(conf) as ledger:
        ledger.append("key", {"action": "create", "vkey": vkey, "operator": operator()})
        ledger.integrate()
    return InitResult(conf_path, vkey)


def load_signer(conf: cfg.Config) -> Signer:
    try:
        st = conf.key_path.stat()
    except FileNotFoundError:
        raise CustodyError(
            f"station key {conf.key_path} is missing",
            "restore it from backup, or run 'custody init' for a new station",
        ) from None
    if st.st_mode & 0o077:
        raise CustodyError(
            f"station key {conf.key_path} is readable by others (mode {st.st_mode & 0o777:o})",
            f"run: chmod 600 {conf.key_path}",
        )
    try:
        signer = Signer.parse(conf.key_path.read_text())
    except (NoteError, UnicodeDecodeError) as e:
        raise CustodyError(f"station key {conf.key_path} is unreadable: {e}") from None
    if signer.name != conf.origin:
        raise CustodyError(
            f"station key is for {signer.name!r} but the config says origin {conf.origin!r}"
        )
    return signer


def station_verifier(conf: cfg.Config) -> Verifier:
    """The station's verifier key: from the private key when readable, else keys/station.vkey."""
    try:
        return load_signer(conf).verifier()
    except (CustodyError, PermissionError):
        pass
    try:
        return Verifier.parse(conf.vkey_path.read_text())
    except FileNotFoundError:
        raise CustodyError(
            f"no station key or verifier key under {conf.data_dir / 'keys'}",
            "pass --vkey with the verifier key you trust",
        ) from None
    except NoteError as e:
        raise CustodyError(f"{conf.vkey_path}: {e}") from None


def open_ledger(conf: cfg.Config, writable: bool = True) -> Ledger:
    if not conf.data_dir.is_dir():
        raise CustodyError(
            f"data folder {conf.data_dir} does not exist",
            "run 'custody init --data DIR' first",
        )
    if not writable:
        return Ledger(conf.ledger_dir, conf.state_dir, conf.origin, None)
    from custody import keys

    keys.finish_interrupted(conf)
    signer = load_signer(conf)
    previous = keys.overlap_signer(conf)
    return Ledger(
        conf.ledger_dir,
        conf.state_dir,
        conf.origin,
        signer,
        also_sign=[previous] if previous else [],
        known_keys=keys.read_history(keys.key_files(conf)),
    )


def operator() -> str:
    """Who is at the keyboard (sudo's caller when run through sudo)."""
    return os.environ.get("SUDO_USER") or getpass.getuser()
