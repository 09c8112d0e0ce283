"""Sweeps: carry out what the applied policy allows, each move a signed entry.

A sweep refreshes the index from the ledger, plans the actions due now, and for each:

- ``lock``: extends the store's retain-until to what the rule needs (never shortens);
- ``legal hold``: sets or clears the store's legal hold to match the holds in force;
- ``evict_local``: removes the dock's copy, only once the cold store still holds the
  object recorded in its `store` entry;
- ``tier``: moves the cold copy to the rule's storage class;
- ``delete``: only when the rule's period has passed, no hold applies, and the store's
  retain-until has passed; the store has the last word (a refused delete is reported,
  never recorded as done). The `delete` entry names the rule; the ledger keeps the
  hash forever.

Clock safety: no eviction or deletion while the clock is behind the ledger's latest
entry, or has jumped forward more than ``max_jump_days`` since the last sweep (a
person confirms with ``accept_clock``). The store is reached through `ColdPort`, which
the appliance wires to its configured store; this package imports no store code.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from ledger.entry import decode_entry, format_time, parse_time
from ledger.log import Ledger
from retention.index import item, orphaned_derivatives, refresh, states
from retention.plan import DAY, Action, actions_for, plan, schedule
from retention.policy import Policy

log = logging.getLogger("custody.retention")


class Refused(Exception):
    """The store refused: its lock or legal hold still protects the object."""


class Unavailable(Exception):
    """The store could not be reached or failed; tried again at the next sweep."""


class ColdPort(Protocol):
    id: str

    def present(self, key: str, size: int) -> bool:
        """The object is in the store with this size (and its recorded checksum)."""
        ...

    def extend_lock(self, key: str, mode: str, until: int) -> int:
        """Extend the retain-until (never shortens); returns the retain-until now held."""
        ...

    def legal_hold(self, key: str, on: bool) -> None: ...

    def move_class(self, key: str, storage_class: str) -> str | None:
        """Move the object to another storage class; returns its new version id."""
        ...

    def delete(self, key: str, version_id: str | None) -> bool:
        """Delete it; False if it was gone already. Raises Refused or Unavailable."""
        ...


@dataclass
class SweepResult:
    done: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    blocked: int = 0
    clock: str = ""  # why deletions and evictions were held back, if they were

    def to_json(self) -> dict[str, Any]:
        return {
            "done": self.done,
            "refused": self.refused,
            "failed": self.failed,
            "blocked": self.blocked,
            "clock": self.clock,
        }


def _iso(t: int) -> str:
    return format_time(datetime.fromtimestamp(t, UTC))


class Sweeper:
    def __init__(
        self,
        ledger: Ledger,
        db: sqlite3.Connection,
        policy: Policy | None,
        cold: ColdPort | None,
        remove_local: Callable[[str], bool],
        clock: Callable[[], float] = time.time,
        operator: str = "custody retention sweep",
        max_jump_days: int = 7,
    ) -> None:
        self.ledger, self.db, self.policy, self.cold = ledger, db, policy, cold
        self.remove_local = remove_local
        self.clock = clock
        self.operator = operator
        self.max_jump_days = max_jump_days

    # -- clock ---------------------------------------------------------------------

    def clock_problem(self, now: int) -> str:
        n = self.ledger.next_index()
        if n:
            latest = parse_time(decode_entry(self.ledger.entry(n - 1)).time).timestamp()
            if now < latest - 300:
                return (
                    f"the system clock ({_iso(now)}) is behind the ledger's latest entry "
                    f"({_iso(int(latest))}); set the clock right before anything is deleted"
                )
        row = self.db.execute("SELECT value FROM retention_meta WHERE key='last_sweep'").fetchone()
        if row:
            last = int(row[0])
            if now < last - 300:
                return f"the system clock ({_iso(now)}) is behind the last sweep ({_iso(last)})"
            if now - last > self.max_jump_days * DAY:
                return (
                    f"the clock moved {(now - last) // DAY} days since the last sweep "
                    f"({_iso(last)}); if that is right, run `custody retention sweep "
                    "--accept-clock` once"
                )
        return ""

    # -- the sweep -----------------------------------------------------------------

    def sweep(self, dry_run: bool = False, accept_clock: bool = False) -> SweepResult:
        res = SweepResult()
        refresh(self.ledger, self.db)
        started_at = self.ledger.next_index()
        now = int(self.clock())
        res.clock = self.clock_problem(now)
        if res.clock and accept_clock and "behind" not in res.clock:
            res.clock = ""
        self._finish_evictions(res, dry_run)
        self._sync_legal_holds(None, res, dry_run)
        if self.policy is None:
            return res
        for a in plan(self.policy, states(self.db), now):
            if a.blocked:
                res.blocked += 1
                continue
            if res.clock and a.kind in ("delete", "evict_local"):
                res.blocked += 1
                continue
            if dry_run:
                res.done.append(f"would {a.kind} {a.sha256[:16]} ({a.rule})")
                continue
            self._act(a, now, res)
        if not res.clock:
            self._delete_derivatives(res, dry_run)
        if not dry_run:
            # Removals recorded before this sweep began are done (this sweep's own are
            # made as they are recorded).
            self.db.execute(
                "INSERT INTO retention_meta VALUES ('finished_from', ?) ON CONFLICT (key) DO "
                "UPDATE SET value=excluded.value",
                (str(started_at),),
            )
            self.db.commit()
        if not dry_run and not res.clock:
            self.db.execute(
                "INSERT INTO retention_meta VALUES ('last_sweep', ?) ON CONFLICT (key) DO "
                "UPDATE SET value=excluded.value",
                (str(now),),
            )
            self.db.commit()
        return res

    def sync(self, shas: list[str], res: SweepResult | None = None) -> SweepResult:
        """Bring the store's locks and legal holds in line for some originals now (after
        an annotation or a hold); what cannot be done now the next sweep does."""
        res = res or SweepResult()
        refresh(self.ledger, self.db)
        self._sync_legal_holds(set(shas), res, False)
        if self.policy is not None:
            wanted = set(shas)
            for st in states(self.db):
                if st.facts.sha256 in wanted:
                    # The plan's own lock action: only stores that keep locks get one.
                    for a in actions_for(self.policy, st):
                        if a.kind == "lock":
                            self._act(a, int(self.clock()), res)
        return res

    def _act(self, a: Action, now: int, res: SweepResult) -> None:
        try:
            if a.kind == "lock":
                self._lock(a, res)
            elif a.kind == "evict_local":
                self._evict(a, res)
            elif a.kind == "tier":
                self._tier(a, res)
            elif a.kind == "delete":
                self._delete(a, now, res)
        except Refused as e:
            res.refused.append(f"{a.kind} {a.sha256[:16]}: {e}")
            log.warning("%s of %s refused by the store: %s", a.kind, a.sha256[:16], e)
        except Unavailable as e:
            res.failed.append(f"{a.kind} {a.sha256[:16]}: {e}")
            log.warning("%s of %s not done now (tried again later): %s", a.kind, a.sha256[:16], e)

    def _record(self, ty: str, payload: dict[str, Any]) -> int:
        return self.ledger.append(ty, payload)

    def _lock(self, a: Action, res: SweepResult) -> None:
        it = item(self.db, a.sha256)
        if it is None or self.cold is None or it["key"] is None:
            return
        rule = next(r for r in self.policy.rules if r.name == a.rule) if self.policy else None
        lock_mode = rule.lock_mode if rule else "COMPLIANCE"
        if lock_mode == "none":
            return
        held = self.cold.extend_lock(it["key"], lock_mode, int(a.detail))
        idx = self._record(
            "lock",
            {
                "sha256": a.sha256,
                "store": self.cold.id,
                "key": it["key"],
                "mode": lock_mode,
                "retain_until": _iso(held),
                "rule": a.rule,
                "operator": self.operator,
            },
        )
        res.done.append(f"lock {a.sha256[:16]} until {_iso(held)} (entry {idx})")

    def _evict(self, a: Action, res: SweepResult) -> None:
        it = item(self.db, a.sha256)
        if it is None or it["store_entry"] is None or self.cold is None:
            return
        if not self.cold.present(it["key"], int(it["size"])):
            res.failed.append(
                f"evict_local {a.sha256[:16]}: the cold store does not hold the object its "
                f"store entry {it['store_entry']} names; the dock's copy is kept"
            )
            return
        idx = self._record(
            "tier",
            {
                "sha256": a.sha256,
                "action": "evict_local",
                "rule": a.rule,
                "store_entry": it["store_entry"],
                "operator": self.operator,
            },
        )
        self.remove_local(a.sha256)
        res.done.append(f"evict_local {a.sha256[:16]} (entry {idx})")

    def _tier(self, a: Action, res: SweepResult) -> None:
        it = item(self.db, a.sha256)
        if it is None or self.cold is None or it["key"] is None:
            return
        version = self.cold.move_class(it["key"], a.detail)
        payload: dict[str, Any] = {
            "sha256": a.sha256,
            "action": "storage_class",
            "store": self.cold.id,
            "key": it["key"],
            "from": it["storage_class"] or "STANDARD",
            "to": a.detail,
            "rule": a.rule,
            "operator": self.operator,
        }
        if version:
            payload["version_id"] = version
        if it["version_id"]:
            payload["previous_version_id"] = it["version_id"]
        idx = self._record("tier", payload)
        res.done.append(f"tier {a.sha256[:16]} to {a.detail} (entry {idx})")

    def _delete(self, a: Action, now: int, res: SweepResult) -> None:
        # A hold or annotation may have arrived since the plan: look again.
        refresh(self.ledger, self.db)
        found = states(self.db, only=a.sha256)
        st = found[0] if found else None
        if st is None or self.policy is None:
            return
        s = schedule(self.policy, st.facts)
        if st.held or s.delete_at is None or s.delete_at > now:
            res.blocked += 1
            return
        if st.retain_until is not None and st.retain_until > now:
            res.blocked += 1
            return
        it = item(self.db, a.sha256)
        assert it is not None
        payload: dict[str, Any] = {
            "sha256": a.sha256,
            "rule": s.rule.name,
            "keep_days": s.rule.keep_days,
            "captured": _iso(st.facts.captured),
            "due": _iso(s.delete_at),
            "ingest_entry": it["ingest_entry"],
            "operator": self.operator,
        }
        if it["store_entry"] is not None and self.cold is not None:
            gone = self.cold.delete(it["key"], it["version_id"])
            payload.update(
                store=self.cold.id,
                key=it["key"],
                store_entry=it["store_entry"],
                cold="deleted" if gone else "already gone",
            )
            if it["version_id"]:
                payload["version_id"] = it["version_id"]
            if it["retain_until"] is not None:
                payload["retain_until"] = _iso(int(it["retain_until"]))
        payload["local"] = "deleted" if self.remove_local(a.sha256) else "not on the dock"
        idx = self._record("delete", payload)
        refresh(self.ledger, self.db)  # capture must see the deletion at once
        res.done.append(f"delete {a.sha256[:16]} by rule {s.rule.name} (entry {idx})")
        log.info("deleted %s by rule %s (entry %d)", a.sha256[:16], s.rule.name, idx)

    def _delete_derivatives(self, res: SweepResult, dry_run: bool) -> None:
        """Access copies and posters go with their originals: once every original a copy
        was made from is deleted, the copy is deleted too (a `delete` entry, role
        derivative). One the store still protects is tried again at the next sweep."""
        refresh(self.ledger, self.db)
        for sha, kind, originals in orphaned_derivatives(self.db):
            if dry_run:
                res.done.append(f"would delete the {kind} {sha[:16]} of deleted originals")
                continue
            row = self.db.execute(
                "SELECT key, version_id, store_entry FROM retention_objects WHERE sha256=?",
                (sha,),
            ).fetchone()
            payload: dict[str, Any] = {
                "sha256": sha,
                "role": "derivative",
                "kind": kind,
                "of": originals,
                "rule": "follows its original",
                "operator": self.operator,
            }
            if row is not None and row[0] and self.cold is not None:
                try:
                    gone = self.cold.delete(row[0], row[1])
                except Refused as e:
                    res.refused.append(f"delete {kind} {sha[:16]}: {e}")
                    continue
                except Unavailable as e:
                    res.failed.append(f"delete {kind} {sha[:16]}: {e}")
                    continue
                payload.update(
                    store=self.cold.id,
                    key=row[0],
                    store_entry=row[2],
                    cold="deleted" if gone else "already gone",
                )
            payload["local"] = "deleted" if self.remove_local(sha) else "not on the dock"
            idx = self._record("delete", payload)
            refresh(self.ledger, self.db)
            res.done.append(f"delete {kind} {sha[:16]} with its original (entry {idx})")

    def _finish_evictions(self, res: SweepResult, dry_run: bool) -> None:
        """A dock copy whose eviction or deletion was recorded since the last complete
        sweep but which is still there (a crash between the entry and the removal) is
        removed now. Older ones are not looked at again: a file docked again after its
        deletion is captured anew and must not be taken for a leftover."""
        row = self.db.execute(
            "SELECT value FROM retention_meta WHERE key='finished_from'"
        ).fetchone()
        since = int(row[0]) if row else 0
        rows = self.db.execute(
            "SELECT sha256 FROM retention_items WHERE local=0 AND local_entry >= ?", (since,)
        ).fetchall()
        for (sha,) in rows:
            if not dry_run and self.remove_local(sha):
                res.done.append(f"removed the dock copy of {sha[:16]} recorded as evicted")

    def _sync_legal_holds(self, only: set[str] | None, res: SweepResult, dry_run: bool) -> None:
        """Set the store's legal hold where a hold is in force, clear it where none is."""
        if self.cold is None:
            return
        recorded = dict(
            self.db.execute(
                "SELECT sha256, legal_hold FROM retention_items WHERE store_entry IS NOT NULL "
                "AND deleted_entry IS NULL"
            ).fetchall()
        )
        for st in states(self.db):
            sha = st.facts.sha256
            if (only is not None and sha not in only) or sha not in recorded:
                continue
            want = bool(st.held)
            if bool(recorded[sha]) == want:
                continue
            it = item(self.db, sha)
            if it is None or it["key"] is None:
                continue
            if dry_run:
                res.done.append(f"would set legal hold {'on' if want else 'off'} for {sha[:16]}")
                continue
            try:
                self.cold.legal_hold(it["key"], want)
            except (Unavailable, Refused) as e:
                res.failed.append(f"legal hold {sha[:16]}: {e}")
                continue
            idx = self._record(
                "legal_hold",
                {
                    "sha256": sha,
                    "store": self.cold.id,
                    "key": it["key"],
                    "on": want,
                    "holds": list(st.held),
                    "operator": self.operator,
                },
            )
            refresh(self.ledger, self.db)
            res.done.append(f"legal hold {'on' if want else 'off'} {sha[:16]} (entry {idx})")
