"""Following one station's log in the bucket: verify only what is new, trust nothing.

The hub keeps, per station, the right edge of the tree it verified (the hashes of the
partial tile at each level, as the station's own integrator does, `ledger.integrate`)
and the size and root of the signed checkpoint it ends at. A step from that size to a
newer signed checkpoint reads the entry bundles and hash tiles the new entries live
in (C2SP tlog-tiles), and nothing older:

- every new entry is decoded, its station checked and its signature verified with
  the key the station's chain names for its index (`hub.check`, in worker
  processes); ``key`` entries extend the chain, checked with the key they retire;
- every new leaf hash extends the verified edge, and each hash tile the step
  completes (at every level) must be byte for byte what the entries give;
- entries of a partial bundle the hub verified before are read again with the rest
  of their bundle and must hash to the same leaves;
- the root the edge gives at the new size must be the signed checkpoint's root.

So a new checkpoint is accepted only when it extends exactly the tree the hub verified:
consistency is recomputed, not taken from a proof the station wrote. What goes wrong is
classified: a checkpoint or entry that is not the station's, or tiles that do not
match their entries, is ``invalid``; a signed history that does not extend the verified
one is a ``fork``; a signed checkpoint smaller than the verified size is a
``rollback`` (decided by the caller, which sees the sizes first).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import Any, Protocol

from hub.check import BatchResult, Failure, check_batch
from ledger.entry import EntryError, decode_entry
from ledger.integrate import edge_root
from ledger.keys import KeyChain, KeyChainError, extend
from ledger.tiles import (
    ENTRIES,
    TILE_HEIGHT,
    TILE_WIDTH,
    BundleError,
    TileID,
    decode_bundle,
    tiles_to_publish,
)
from ledger.tree import EMPTY_ROOT, HASH_SIZE, leaf_hash, perfect_root

INTEGRITY_STATES = ("fork", "rollback", "invalid")


class Alarm(Exception):
    """An integrity alarm about a station's log: ``state`` is fork, rollback or invalid."""

    def __init__(self, state: str, problem: str) -> None:
        super().__init__(problem)
        self.state = state
        self.problem = problem


@dataclass
class Followed:
    """What the hub verified of one log: the signed checkpoint it stands on, and the
    right edge of its tree (enough to extend it without reading anything older)."""

    size: int = 0
    root: bytes = EMPTY_ROOT
    levels: list[list[bytes]] = field(default_factory=list)

    def copy(self) -> Followed:
        return Followed(self.size, self.root, [list(lv) for lv in self.levels])


def encode_levels(levels: Sequence[Sequence[bytes]]) -> bytes:
    """One byte of count per level, then that many 32-byte hashes."""
    out = bytearray()
    for lv in levels:
        out.append(len(lv))
        out += b"".join(lv)
    return bytes(out)


def decode_levels(data: bytes) -> list[list[bytes]]:
    levels, pos = [], 0
    while pos < len(data):
        n = data[pos]
        pos += 1
        levels.append([data[pos + i * HASH_SIZE : pos + (i + 1) * HASH_SIZE] for i in range(n)])
        pos += n * HASH_SIZE
    return levels


class Reader(Protocol):
    """Reads one tile or bundle of the station's log (partials may come from a larger
    tile, cut); returns its bytes and, for a full tile, the store's tag of the version."""

    def read(self, tid: TileID) -> tuple[bytes, str | None]: ...


@dataclass
class Step:
    """The outcome of one verified step."""

    followed: Followed
    chain: KeyChain
    rows: list[Any]  # pyarrow Tables of catalog rows
    row_count: int
    new_key_entries: list[tuple[int, bytes]]
    tags: list[tuple[str, str]]  # full tiles and bundles read: (path, tag)
    entries: int  # new entries verified


CheckFn = Callable[[str, KeyChain, int, list[bytes], int], BatchResult]


def verify_step(
    reader: Reader,
    origin: str,
    chain: KeyChain,
    old: Followed,
    size: int,
    root: bytes,
    catalog_from: int,
    *,
    compare_partials: bool,
    watch: dict[int, bytes] | None = None,
    pool: Executor | None = None,
    io: Executor | None = None,
    window: int = 16,
) -> Step:
    """Extend ``old`` to the signed ``size``/``root``; raises `Alarm` with what is wrong.

    ``compare_partials``: also compare the partial hash tiles at ``size`` (they exist
    in the bucket for the sizes the station's mirror published: its latest checkpoint).
    ``watch``: roots other parties hold for sizes inside the step (a witness that
    cosigned a checkpoint the station pushed): each must be the tree's root there.
    ``pool`` checks entries in other processes, ``io`` prefetches tiles."""
    a = old.size
    if size <= a:
        raise ValueError(f"a step goes forward: {a} -> {size}")
    levels = [list(lv) for lv in old.levels]
    watch = dict(watch or {})
    plan = _plan(a, size, compare_partials)
    planned = set(plan)
    tags: list[tuple[str, str]] = []
    rows: list[Any] = []
    row_count = 0
    new_keys: list[tuple[int, bytes]] = []
    expected: dict[TileID, bytes] = {}
    pending: deque[tuple[Future[BatchResult] | BatchResult, list[bytes], KeyChain]] = deque()
    state = {"chain": chain}
    count = a

    def settle(res: BatchResult, leaves: list[bytes], used: KeyChain) -> None:
        nonlocal row_count
        ch = state["chain"]
        for index, leaf in res.key_entries:
            try:
                ch = extend(ch, index, decode_entry(leaf))
            except (KeyChainError, EntryError) as err:
                raise Alarm("invalid", f"key entry {index}: {err}") from None
            new_keys.append((index, leaf))
        state["chain"] = ch
        for f in res.failures:
            if f.kind == "entry-signature" and ch is not used:
                # Checked with the chain as it stood when the batch left: a key entry
                # since names another key for it.
                ent = decode_entry(leaves[f.index - res.first])
                if ent.verify(ch.key_for_entry(f.index)):
                    continue
            raise Alarm("invalid", _failure_line(f))
        if res.rows is not None:
            rows.append(res.rows)
            row_count += res.rows.num_rows

    def drain(limit: int) -> None:
        while len(pending) > limit:
            fut, leaves, used = pending.popleft()
            res = fut.result() if isinstance(fut, Future) else fut
            settle(res, leaves, used)

    for tid, data, tag in _fetch(reader, plan, io, window):
        if tag is not None:
            tags.append((tid.path(), tag))
        if tid.level != ENTRIES:
            want = expected.pop(TileID(tid.level, tid.n), None)
            if want is None:
                raise AssertionError(f"tile {tid.path()} read before its hashes were known")
            if data != want:
                raise Alarm("invalid", _tile_mismatch(tid, data, want))
            continue
        start = tid.n * TILE_WIDTH
        try:
            leaves = decode_bundle(data)
        except BundleError as e:
            raise Alarm(
                "invalid", f"entry bundle {tid.path()} is malformed: {e} (altered or damaged)"
            ) from None
        if len(leaves) < tid.width:
            raise Alarm(
                "invalid",
                f"entry bundle {tid.path()} holds {len(leaves)} entries, not {tid.width}: "
                "it was cut short or replaced",
            )
        leaves = leaves[: tid.width]
        skip = max(0, a - start)
        for i in range(skip):  # entries verified before, read again with their bundle
            if leaf_hash(leaves[i]) != levels[0][i]:
                raise _changed_entry(origin, state["chain"], start + i, leaves[i], tid)
        new = leaves[skip:]
        hashes = [leaf_hash(leaf) for leaf in new]
        args = (origin, state["chain"], start + skip, new, catalog_from, hashes)
        if pool is not None:
            pending.append((pool.submit(check_batch, *args), new, state["chain"]))
        else:
            pending.append((check_batch(*args), new, state["chain"]))
        for h in hashes:
            count += 1
            _push(levels, 0, h, count, expected)
            if watch:
                w = watch.pop(count, None)
                if w is not None and edge_root(levels) != w:
                    raise Alarm(
                        "fork",
                        f"the tree of size {count} the station showed a witness (root "
                        f"{w.hex()[:16]}…) is not the one in the bucket: two histories",
                    )
        if count == size and compare_partials:
            for level, hashes in enumerate(levels):
                # The partial tiles the step changed (an unchanged one is not re-read).
                ptid = TileID(level, size >> (TILE_HEIGHT * (level + 1)), len(hashes))
                if hashes and ptid in planned:
                    expected[TileID(level, ptid.n)] = b"".join(hashes)
        drain(2 * (getattr(pool, "_max_workers", 1) or 1) + 2)
    drain(0)
    if count != size:
        raise AssertionError(f"read {count - a} entries, expected {size - a}")
    if expected:
        raise AssertionError(f"tiles never compared: {sorted(t.path() for t in expected)}")
    got = edge_root(levels)
    if got != root:
        raise Alarm(
            "fork",
            f"the signed checkpoint of size {size} does not extend the tree the hub verified "
            f"at size {a}: its root is not the one its entries and the verified tree give "
            "(the station signed two histories, or its checkpoint was made for other entries)",
        )
    return Step(
        Followed(size, root, levels),
        state["chain"],
        rows,
        row_count,
        new_keys,
        tags,
        size - a,
    )


def _push(
    levels: list[list[bytes]], level: int, h: bytes, count: int, expected: dict[TileID, bytes]
) -> None:
    while True:
        if level == len(levels):
            levels.append([])
        levels[level].append(h)
        if len(levels[level]) < TILE_WIDTH:
            return
        data = b"".join(levels[level])
        expected[TileID(level, (count >> (TILE_HEIGHT * (level + 1))) - 1)] = data
        h = perfect_root(levels[level])
        levels[level] = []
        level += 1


def _plan(a: int, size: int, compare_partials: bool) -> list[TileID]:
    """What to read, in the order the hashes become known: each bundle, then the hash
    tiles it completes (level 0 first), and the partial tiles at the end."""
    tids = tiles_to_publish(a, size)
    bundles = [t for t in tids if t.level == ENTRIES]
    hashes = [t for t in tids if t.level != ENTRIES and (t.full or compare_partials)]

    def known_at(t: TileID) -> int:  # the tree size at which the tile's hashes are known
        if not t.full:
            return size  # partial tiles are compared at the end only
        return (t.n + 1) << (TILE_HEIGHT * (t.level + 1))

    hashes.sort(key=lambda t: (known_at(t), t.level))
    order: list[TileID] = []
    hi = 0
    for b in bundles:
        order.append(b)
        end = b.n * TILE_WIDTH + b.width
        while hi < len(hashes) and known_at(hashes[hi]) <= end:
            order.append(hashes[hi])
            hi += 1
    if hi != len(hashes):
        raise AssertionError(f"tiles not placed: {[t.path() for t in hashes[hi:]]}")
    return order


def _fetch(
    reader: Reader, plan: list[TileID], io: Executor | None, window: int
) -> Iterator[tuple[TileID, bytes, str | None]]:
    if io is None:
        for tid in plan:
            data, tag = reader.read(tid)
            yield tid, data, tag
        return
    q: deque[tuple[TileID, Future[tuple[bytes, str | None]]]] = deque()
    it = iter(plan)
    try:
        for tid in it:
            q.append((tid, io.submit(reader.read, tid)))
            if len(q) >= window:
                break
        while q:
            tid, fut = q.popleft()
            nxt = next(it, None)
            if nxt is not None:
                q.append((nxt, io.submit(reader.read, nxt)))
            data, tag = fut.result()
            yield tid, data, tag
    finally:
        for _, fut in q:
            fut.cancel()


def _failure_line(f: Failure) -> str:
    return f"entry {f.index}: {f.what}"


def _tile_mismatch(tid: TileID, data: bytes, want: bytes) -> str:
    if len(data) != len(want):
        return (
            f"tile {tid.path()} holds {len(data)} bytes, not the {len(want)} its entries give: "
            "it was altered, cut short or replaced"
        )
    first = next(i for i in range(0, len(want), HASH_SIZE) if data[i : i + 32] != want[i : i + 32])
    return (
        f"tile {tid.path()} does not match its entries (first at hash {first // HASH_SIZE}): "
        "the tile was altered in the bucket"
    )


def _changed_entry(origin: str, chain: KeyChain, index: int, leaf: bytes, tid: TileID) -> Alarm:
    """An entry the hub verified earlier reads differently now: signed by the station,
    it is another history (a fork); otherwise the bucket was altered."""
    try:
        e = decode_entry(leaf)
        signed = e.station == origin and e.verify(chain.key_for_entry(index))
    except EntryError:
        signed = False
    if signed:
        return Alarm(
            "fork",
            f"entry {index} in {tid.path()} is signed by the station but is not the entry the "
            "hub verified at that index: the station signed two histories",
        )
    return Alarm(
        "invalid",
        f"entry bundle {tid.path()} was altered: entry {index} is not the entry the hub "
        "verified, and is not signed by the station",
    )


class Counter:
    """Counts requests to the store (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.gets = 0
        self.lists = 0

    def get(self) -> None:
        with self._lock:
            self.gets += 1

    def list(self) -> None:
        with self._lock:
            self.lists += 1


__all__ = [
    "INTEGRITY_STATES",
    "Alarm",
    "Counter",
    "Followed",
    "Reader",
    "Step",
    "decode_levels",
    "encode_levels",
    "verify_step",
]
