"""The station's key history: ``key`` entries announce each new station key.

A station starts with the key that supervisors pinned. ``custody key
rotate`` appends a ``key`` entry signed by the current key:

```
{"type": "key", "action": "rotate", "old_vkey": "<current vkey>",
 "new_vkey": "<next vkey>", "reason": "..."}
```

Every entry after it is signed by the new key. (`custody init` records the
first key as ``{"action": "create", "vkey": ...}``; it changes nothing.)
``custody key revoke`` is the same step for a key that may be compromised,
with ``"action": "revoke"`` and ``"last_index": N``, the last index the old
key still vouches for. Entries after N up to the revoke entry carry the old
key's signature but are trusted for no more than being in the log;
checkpoints signed
only by the revoked key beyond N + 1 are not trusted.

A verifier pinned to any key of the chain follows it forward: each ``key``
entry must be signed by the key current at its index, and names that key as
``old_vkey``. This module is pure: entries in, a `KeyChain` out.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ledger.entry import Entry, EntryError
from ledger.note import NoteError, Verifier

KEY_TYPE = "key"
ACTIONS = ("rotate", "revoke")


class KeyChainError(ValueError):
    """A ``key`` entry that does not continue the chain from the pinned key."""


@dataclass(frozen=True)
class KeyChange:
    index: int  # where the key entry sits in the log
    action: str  # "rotate" or "revoke"
    old: Verifier
    new: Verifier
    last_index: int | None  # revoke: the last index the old key vouches for


@dataclass(frozen=True)
class KeyChain:
    """The pinned key and the changes that follow it, in log order."""

    pinned: Verifier
    changes: tuple[KeyChange, ...] = ()

    def current(self) -> Verifier:
        return self.changes[-1].new if self.changes else self.pinned

    def all_keys(self) -> list[Verifier]:
        return [self.pinned, *(c.new for c in self.changes)]

    def key_for_entry(self, index: int) -> Verifier:
        """The key that must sign the entry at ``index`` (a key entry is signed by the
        key it retires)."""
        key = self.pinned
        for c in self.changes:
            if index > c.index:
                key = c.new
        return key

    def keys_for_checkpoint(self, size: int) -> list[Verifier]:
        """Keys whose signature on a checkpoint of ``size`` is trusted: every key of the
        chain announced by an entry inside that tree (and the first key), less a key
        revoked before the tree grew past its last vouched index."""
        keys = [self.pinned]
        for c in self.changes:
            if c.index < size:
                keys.append(c.new)
                if c.action == "revoke" and c.last_index is not None and size > c.last_index + 1:
                    keys = [k for k in keys if k != c.old]
        return keys

    def suspect(self, index: int) -> KeyChange | None:
        """The revocation that makes the entry at ``index`` untrustworthy (signed by a
        revoked key after the last index that key vouches for, before the revoke entry
        itself), or None."""
        for c in self.changes:
            if c.last_index is not None and c.last_index < index < c.index:
                return c
        return None


def parse_key_change(index: int, entry: Entry) -> KeyChange:
    """Read a ``key`` entry (its signature is checked by `extend`)."""
    p = entry.payload()
    action = p.get("action")
    if action not in ACTIONS:
        raise KeyChainError(f"key entry {index}: action {action!r} is not rotate or revoke")
    try:
        old = Verifier.parse(str(p.get("old_vkey", "")))
        new = Verifier.parse(str(p.get("new_vkey", "")))
    except NoteError as e:
        raise KeyChainError(f"key entry {index}: {e}") from e
    if new.name != old.name:
        raise KeyChainError(f"key entry {index}: the new key's name is not the station's")
    if new.public_key == old.public_key:
        raise KeyChainError(f"key entry {index}: the new key is the old key")
    last = p.get("last_index")
    if action == "revoke":
        if type(last) is not int or not 0 <= last < index:
            raise KeyChainError(f"key entry {index}: last_index must be an index before it")
    elif last is not None:
        raise KeyChainError(f"key entry {index}: only a revoke names a last_index")
    return KeyChange(index, action, old, new, last if action == "revoke" else None)


def extend(chain: KeyChain, index: int, entry: Entry) -> KeyChain:
    """The chain after the ``key`` entry at ``index``; raises if that entry is not
    signed by the key current there or does not name it as the old key."""
    if entry.type != KEY_TYPE:
        raise KeyChainError(f"entry {index} is a {entry.type!r} entry, not a key entry")
    if chain.changes and index <= chain.changes[-1].index:
        raise KeyChainError(f"key entry {index} is not after key entry {chain.changes[-1].index}")
    cur = chain.key_for_entry(index)
    if entry.payload().get("action") == "create":
        # `custody init` records the first key; it changes nothing, but must be true.
        if entry.payload().get("vkey") != cur.vkey() or not entry.verify(cur):
            raise KeyChainError(f"key entry {index} (create) does not match the station key")
        return chain
    change = parse_key_change(index, entry)
    if change.old != cur:
        raise KeyChainError(
            f"key entry {index} retires {change.old.vkey()}, but the key current there is "
            f"{cur.vkey()}"
        )
    if not entry.verify(cur):
        raise KeyChainError(f"key entry {index} is not signed by the key it retires")
    if any(change.new.public_key == k.public_key for k in chain.all_keys()):
        raise KeyChainError(f"key entry {index} brings back a key the chain already used")
    return KeyChain(chain.pinned, (*chain.changes, change))


def follow(pinned: Verifier, key_entries: Iterable[tuple[int, Entry]]) -> KeyChain:
    """Build the chain from a pinned key and the log's ``key`` entries in index order.

    A verifier may have pinned a later key of the chain: the chain then starts
    at the first key entry's old key, and the pinned key must appear in it
    (every link is checked with the key before it, and the pinned key's
    checkpoints commit to everything earlier).
    """
    items = sorted(key_entries, key=lambda x: x[0])
    changes = [(i, e) for i, e in items if e.payload().get("action") != "create"]
    first = pinned
    if changes:
        first = parse_key_change(changes[0][0], changes[0][1]).old
    chain = KeyChain(first)
    for idx, e in items:
        chain = extend(chain, idx, e)
    if pinned not in chain.all_keys():
        raise KeyChainError(
            f"the pinned key {pinned.vkey()} is not in this log's key chain "
            f"(it starts with {first.vkey()})"
        )
    return chain


def key_entry_payload(
    old: Verifier, new: Verifier, reason: str, last_index: int | None = None
) -> dict[str, object]:
    """The payload of a ``key`` entry (rotate, or revoke when ``last_index`` is given)."""
    p: dict[str, object] = {
        "action": "rotate" if last_index is None else "revoke",
        "old_vkey": old.vkey(),
        "new_vkey": new.vkey(),
        "reason": reason,
    }
    if last_index is not None:
        p["last_index"] = last_index
    return p


__all__ = [
    "ACTIONS",
    "KEY_TYPE",
    "EntryError",
    "KeyChain",
    "KeyChainError",
    "KeyChange",
    "extend",
    "follow",
    "key_entry_payload",
    "parse_key_change",
]
