"""What the rules do to each stored original, and when: the pure plan.

`schedule` gives one item's moves (dock-copy eviction, storage-class moves) and its
deletion date under a policy; `plan` lists the actions due by a date, with what blocks
them (a hold, the store's retain-until, no confirmed cold copy); `compare` shows what a
new policy would change against the current one, above all what it would delete
earlier. Times are seconds since the epoch (UTC); nothing here reads a clock.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from retention.policy import Facts, Policy, Rule

DAY = 86400


@dataclass(frozen=True)
class State:
    """Where an original stands now (from the ledger's entries)."""

    facts: Facts
    held: tuple[str, ...] = ()  # what holds it: "hold entry 12 (case X-1)"
    local: bool = True  # the dock still has its copy
    replicated: bool = False  # a `store` entry confirms the cold copy
    storage_class: str = ""  # in the cold store, as last recorded
    retain_until: int | None = None  # the store's lock, as last recorded
    deleted: bool = False


@dataclass(frozen=True)
class Action:
    sha256: str
    kind: str  # evict_local | tier | delete | lock
    due: int  # when the rule allows it
    rule: str
    detail: str = ""  # the storage class for tier; the retain-until for lock
    blocked: str = ""  # why it cannot happen at its due time ("" = it can)


@dataclass(frozen=True)
class Schedule:
    rule: Rule
    delete_at: int | None  # None: kept permanently
    evict_at: int | None
    tiers: tuple[tuple[int, str], ...]
    lock_until: int  # the retain-until the store should hold at least


def schedule(policy: Policy, f: Facts) -> Schedule:
    r = policy.rule_for(f)
    delete_at = None if r.keep_days is None else f.captured + r.keep_days * DAY
    evict_at = None if r.local_days is None else f.captured + r.local_days * DAY
    if delete_at is not None and evict_at is not None:
        evict_at = min(evict_at, delete_at)
    tiers = tuple((f.captured + t.after_days * DAY, t.storage_class) for t in r.tiers)
    lock_until = (
        delete_at if delete_at is not None else f.captured + policy.permanent_lock_years * 365 * DAY
    )
    return Schedule(r, delete_at, evict_at, tiers, lock_until)


def actions_for(policy: Policy, st: State) -> list[Action]:
    """Every move the policy will make of one original (done ones excluded)."""
    if st.deleted:
        return []
    f = st.facts
    s = schedule(policy, f)
    out: list[Action] = []
    name = s.rule.name
    if st.retain_until is not None and st.retain_until < s.lock_until and st.replicated:
        out.append(Action(f.sha256, "lock", f.captured, name, str(s.lock_until)))
    if s.evict_at is not None and st.local:
        why = "" if st.replicated else "no confirmed copy in the cold store yet"
        out.append(Action(f.sha256, "evict_local", s.evict_at, name, "", why))
    if st.replicated:
        done = {st.storage_class}
        for at, cls in s.tiers:
            if cls in done:
                continue
            if s.delete_at is not None and at >= s.delete_at:
                break
            out.append(Action(f.sha256, "tier", at, name, cls))
            done.add(cls)
    if s.delete_at is not None:
        blocked = ""
        if st.held:
            blocked = "held: " + "; ".join(st.held)
        elif st.retain_until is not None and st.retain_until > s.delete_at:
            blocked = f"store lock until {st.retain_until}"
        out.append(Action(f.sha256, "delete", s.delete_at, name, "", blocked))
    return out


def plan(policy: Policy, states: Iterable[State], as_of: int) -> list[Action]:
    """The actions due by ``as_of``, in date order. A blocked deletion is listed with what
    blocks it; a deletion blocked only by the store's lock is due when the lock ends."""
    out: list[Action] = []
    for st in states:
        for a in actions_for(policy, st):
            due = a.due
            if a.kind == "delete" and a.blocked.startswith("store lock until"):
                due = max(due, st.retain_until or due)
            if due <= as_of:
                out.append(a)
    out.sort(key=lambda a: (a.due, a.kind, a.sha256))
    return out


@dataclass
class Comparison:
    items: int = 0
    deleted_earlier: list[tuple[str, int | None, int]] = field(default_factory=list)
    deleted_later: int = 0  # or no longer deleted
    rule_changes: dict[tuple[str, str], int] = field(default_factory=dict)
    evicted_earlier: int = 0
    tier_changes: int = 0


def compare(current: Policy, new: Policy, states: Iterable[State]) -> Comparison:
    """What ``new`` changes against ``current`` for every original not yet deleted."""
    c = Comparison()
    for st in states:
        if st.deleted:
            continue
        c.items += 1
        a, b = schedule(current, st.facts), schedule(new, st.facts)
        if a.rule.name != b.rule.name:
            key = (a.rule.name, b.rule.name)
            c.rule_changes[key] = c.rule_changes.get(key, 0) + 1
        if b.delete_at is not None and (a.delete_at is None or b.delete_at < a.delete_at):
            c.deleted_earlier.append((st.facts.sha256, a.delete_at, b.delete_at))
        elif a.delete_at is not None and (b.delete_at is None or b.delete_at > a.delete_at):
            c.deleted_later += 1
        if b.evict_at is not None and (a.evict_at is None or b.evict_at < a.evict_at):
            c.evicted_earlier += 1
        if a.tiers != b.tiers:
            c.tier_changes += 1
    c.deleted_earlier.sort(key=lambda x: x[2])
    return c
