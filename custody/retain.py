"""Retention wired into the station: the applied policy, the store port, the sweeper.

The policy people edit is the file ``[retention] policy`` names; what sweeps obey is
the copy applied last (``state/retention/applied.toml``), whose SHA-256 a signed
`policy` entry records. Applying a policy that would delete anything earlier than the
one in force needs ``--confirm`` with the number of items; editing the file alone
changes nothing.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from archive.errors import LockRefused, NotFound, StoreError
from archive.store import ColdStore, Lock
from custody import config as cfg
from custody.errors import CustodyError
from ingest.objects import LocalObjects
from ledger.durable import file_lock, write_atomic
from ledger.log import Ledger
from retention.index import refresh, states
from retention.plan import Comparison, compare
from retention.policy import DEFAULT_POLICY, Policy, PolicyError, load_policy
from retention.sweep import Refused, Sweeper, Unavailable


class StorePort:
    """The retention sweeper's view of the configured cold store."""

    def __init__(self, store: ColdStore) -> None:
        self.store = store
        self.id = store.id

    def present(self, key: str, size: int) -> bool:
        try:
            st = self.store.head(key)
        except StoreError as e:
            raise Unavailable(str(e)) from None
        return st is not None and st.size == size

    def extend_lock(self, key: str, mode: str, until: int) -> int:
        try:
            held = self.store.extend_retention(key, Lock(mode, datetime.fromtimestamp(until, UTC)))
        except StoreError as e:
            raise Unavailable(str(e)) from None
        return int(held.retain_until.timestamp())

    def legal_hold(self, key: str, on: bool) -> None:
        try:
            self.store.set_legal_hold(key, on)
        except StoreError as e:
            raise Unavailable(str(e)) from None

    def move_class(self, key: str, storage_class: str) -> str | None:
        try:
            return self.store.set_storage_class(key, storage_class).version_id
        except StoreError as e:
            raise Unavailable(str(e)) from None

    def delete(self, key: str, version_id: str | None) -> bool:
        try:
            self.store.delete(key, version_id)
        except NotFound:
            return False
        except LockRefused as e:
            raise Refused(str(e)) from None
        except StoreError as e:
            raise Unavailable(str(e)) from None
        return True


@contextmanager
def sweep_lock(conf: cfg.Config) -> Iterator[None]:
    """One sweep at a time per station (the daemon's and a person's)."""
    with file_lock(conf.state_dir / "retention" / "sweep.lock"):
        yield


def applied_path(conf: cfg.Config) -> Path:
    return conf.state_dir / "retention" / "applied.toml"


def applied_policy(conf: cfg.Config) -> tuple[Policy | None, str]:
    """The policy in force and its text; (None, "") if none was ever applied."""
    p = applied_path(conf)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, ""
    try:
        return load_policy(text), text
    except PolicyError as e:
        raise CustodyError(f"{p}: the applied policy is not usable: {e}") from None


def read_policy(path: Path) -> tuple[Policy, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise CustodyError(f"{path}: cannot be read: {e.strerror}") from None
    try:
        return load_policy(text), text
    except PolicyError as e:
        raise CustodyError(f"{path}: {e}") from None


def index_db(ledger: Ledger) -> sqlite3.Connection:
    db = sqlite3.connect(ledger.db_path, timeout=60)
    db.execute("PRAGMA busy_timeout=60000")
    return db


def difference(conf: cfg.Config, ledger: Ledger, new: Policy) -> Comparison | None:
    current, _ = applied_policy(conf)
    if current is None:
        return None
    db = index_db(ledger)
    try:
        refresh(ledger, db)
        return compare(current, new, states(db))
    finally:
        db.close()


def apply_policy(
    conf: cfg.Config,
    ledger: Ledger,
    text: str,
    operator: str,
    source: str,
    confirm: int | None = None,
) -> tuple[int, Comparison | None]:
    """Make ``text`` the policy in force; returns the `policy` entry and the comparison.
    Refused (CustodyError) when it deletes anything earlier and ``confirm`` is not that
    number."""
    try:
        new = load_policy(text)
    except PolicyError as e:
        raise CustodyError(f"{source}: {e}") from None
    diff = difference(conf, ledger, new)
    earlier = len(diff.deleted_earlier) if diff else 0
    if earlier and confirm != earlier:
        raise CustodyError(
            f"this policy deletes {earlier} item(s) earlier than the policy in force",
            f"review them with `custody retention plan --policy {source}`, then apply with "
            f"--confirm {earlier}",
        )
    digest = hashlib.sha256(text.encode()).hexdigest()
    payload: dict[str, Any] = {
        "sha256": digest,
        "source": source,
        "rules": [
            {"name": r.name, "keep": r.describe_keep(), "local_days": r.local_days}
            for r in new.rules
        ],
        "floor_days": new.floor_days,
        "operator": operator,
    }
    if diff is not None:
        payload["deleted_earlier"] = earlier
        payload["items"] = diff.items
    idx = ledger.append("policy", payload)
    applied_path(conf).parent.mkdir(parents=True, exist_ok=True)
    write_atomic(applied_path(conf), text.encode())
    return idx, diff


def write_default_policy(conf: cfg.Config) -> Path | None:
    """At init: the editable policy file (if the config names one and it is absent)."""
    p = conf.retention.policy
    if p is None or p.exists():
        return p
    write_atomic(p, DEFAULT_POLICY.encode())
    return p


def make_sweeper(
    conf: cfg.Config,
    ledger: Ledger,
    db: sqlite3.Connection,
    clock: Callable[[], float] = time.time,
    operator: str = "custody retention sweep",
    store: ColdStore | None = None,
) -> Sweeper:
    from custody.cold import open_store

    policy, _ = applied_policy(conf)
    store = store or open_store(conf)
    objects = LocalObjects(conf.store_dir)
    return Sweeper(
        ledger,
        db,
        policy,
        StorePort(store) if store is not None else None,
        objects.remove,
        clock=clock,
        operator=operator,
        max_jump_days=conf.retention.max_clock_jump_days,
    )
