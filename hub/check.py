"""Checking a run of entries: form, station, signature, and their catalog rows.

This is the work that scales with the number of entries (JSON parsing, the RFC 8785
form check, an Ed25519 verification, a row), so the follower hands it to worker
processes one entry bundle at a time. It is pure: the same leaves and key chain give
the same answer in any process.

A worker checks each signature with the key the chain it was given names for that
index. A ``key`` entry inside the run changes the chain only once the follower has
checked that entry (with the key it retires); the follower then checks again, with
the new chain, the signatures the worker found bad after it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hub.rows import RowBuffer
from ledger.entry import SIG_PREFIX, Entry, EntryError, decode_entry
from ledger.keys import KEY_TYPE, KeyChain


@dataclass(frozen=True)
class Failure:
    index: int
    kind: str  # "entry-malformed", "entry-station", "entry-signature"
    what: str


@dataclass(frozen=True)
class BatchResult:
    first: int
    rows: Any  # a pyarrow Table of catalog rows (indices >= catalog_from), or None
    failures: tuple[Failure, ...]
    key_entries: tuple[tuple[int, bytes], ...]


def check_batch(
    origin: str,
    chain: KeyChain,
    first: int,
    leaves: list[bytes],
    catalog_from: int,
    hashes: list[bytes] | None = None,
) -> BatchResult:
    """Check the entries ``first``, ``first + 1``, … and build the rows of those at or
    after ``catalog_from`` (the rows below it are in the catalog already). ``hashes``:
    their leaf hashes, when the caller has them (the row carries each in hex)."""
    rows = RowBuffer()
    failures: list[Failure] = []
    keys: list[tuple[int, bytes]] = []
    for i, leaf in enumerate(leaves):
        index = first + i
        try:
            e = decode_entry(leaf)
        except EntryError as err:
            failures.append(Failure(index, "entry-malformed", f"not a valid custody entry: {err}"))
            continue
        if e.station != origin:
            failures.append(
                Failure(index, "entry-station", f"names station {e.station!r}, not {origin!r}")
            )
            continue
        if e.type == KEY_TYPE:
            keys.append((index, leaf))  # the follower checks it with the key it retires
        elif not chain.key_for_entry(index).verify(signed_message(e), e.signature):
            failures.append(
                Failure(index, "entry-signature", "its signature is not the station key's")
            )
        if index >= catalog_from:
            rows.add_entry(origin, index, leaf, e.fields, hashes[i].hex() if hashes else None)
    return BatchResult(first, rows.to_arrow() if len(rows) else None, tuple(failures), tuple(keys))


def signed_message(e: Entry) -> bytes:
    """What the station signed: the canonical entry without its ``sig`` member.

    `decode_entry` has checked that the leaf is the canonical encoding, whose top-level
    members are in key order; removing the ``sig`` member (and one comma) from it gives
    the canonical encoding of the rest, without encoding the entry again. Only when that
    member's text occurs once in the leaf is it certainly the top-level one; otherwise
    the message is encoded from the fields, as `Entry.signed_message` does."""
    leaf = e.leaf
    member = b'"sig":"' + str(e.fields["sig"]).encode() + b'"'
    at = leaf.find(member)
    if at < 0 or leaf.find(member, at + 1) >= 0:
        return e.signed_message()
    end = at + len(member)
    if leaf[at - 1 : at] == b",":
        return SIG_PREFIX + leaf[: at - 1] + leaf[end:]
    return SIG_PREFIX + leaf[:at] + leaf[end + 1 :]  # the first member: drop its comma


__all__ = ["BatchResult", "Failure", "check_batch", "signed_message"]
