"""Whole-log verification: every entry, tile, root and signature (pure).

Streams the entry bundles of a tile-based log once, in constant memory:
recomputes every leaf hash and checks it against the level-0 tiles, rebuilds
each higher tile and checks it, verifies each entry's signature and form,
and compares the recomputed root with the signed checkpoint. Roots of older
checkpoints the caller knows (the station's history, or one a supervisor
kept) are checked on the way past their sizes, which is exactly consistency.

The station key may change on the way (``key`` entries, see `ledger.keys`):
the chain is followed while the entries stream past. Each entry's signature is
checked with the key current at its index, each ``key`` entry must be signed by
the key it retires, and the published checkpoint (and every known one) is
checked with the keys the chain trusts at its size, once the key entries below
that size have been read. The caller pins any key of the chain; when it is not
the first, the entries before the first ``key`` entry are checked again with the
first key once that entry names it (a second read of that prefix only).

Every problem is collected and reported with where it is and what it means;
nothing stops at the first failure.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ledger.checkpoint import Checkpoint, CheckpointError, open_checkpoint
from ledger.entry import Entry, EntryError, decode_entry
from ledger.integrate import edge_root
from ledger.keys import KEY_TYPE, KeyChain, KeyChainError, extend
from ledger.note import NoteError, Verifier, b64, parse_note
from ledger.tiles import (
    ENTRIES,
    TILE_HEIGHT,
    TILE_WIDTH,
    BundleError,
    TileID,
    TileSource,
    bundle_for_size,
    decode_bundle,
    split_hashes,
)
from ledger.tree import leaf_hash, perfect_root

MAX_LISTED_PER_KIND = 20


@dataclass(frozen=True)
class Problem:
    kind: str  # short stable code, e.g. "tile-mismatch"
    where: str  # file or index
    what: str  # what is wrong and what it means

    def line(self) -> str:
        return f"{self.where}: {self.what}"


@dataclass(frozen=True)
class RevokedRange:
    """Entries signed by a revoked key after the last index it vouches for: they are in
    the log, but their signature proves nothing (a warning, not a failure of the log)."""

    first: int
    last: int
    key: Verifier
    revoked_by: int  # the index of the revoke entry

    def line(self) -> str:
        span = (
            f"entry {self.first}"
            if self.first == self.last
            else (f"entries {self.first} to {self.last}")
        )
        return (
            f"warning: {span} signed by the revoked key {self.key.vkey()} after index "
            f"{self.first - 1}, the last one it vouches for (revoked by key entry "
            f"{self.revoked_by}): they are in the log, but their signature proves nothing"
        )

    def to_json(self) -> dict[str, object]:
        return {
            "first": self.first,
            "last": self.last,
            "count": self.last - self.first + 1,
            "vkey": self.key.vkey(),
            "key_id": self.key.key_id.hex(),
            "revoked_by": self.revoked_by,
        }


def chain_json(chain: KeyChain) -> list[dict[str, object]]:
    """The station keys in log order: the first, then each one a key entry announced."""
    out: list[dict[str, object]] = [
        {"vkey": chain.pinned.vkey(), "key_id": chain.pinned.key_id.hex(), "key_entry": None}
    ]
    for c in chain.changes:
        item: dict[str, object] = {
            "vkey": c.new.vkey(),
            "key_id": c.new.key_id.hex(),
            "key_entry": c.index,
            "action": c.action,
        }
        if c.last_index is not None:
            item["old_key_last_index"] = c.last_index
        out.append(item)
    return out


def checkpoint_keys(chain: KeyChain, pinned: Sequence[Verifier], size: int) -> list[Verifier]:
    """The keys whose signature on a checkpoint of ``size`` is trusted, for a verifier
    that pinned ``pinned``: the chain's keys for that size, less any key before the
    earliest pinned one. A key before the pinned key is trusted for entries only because
    a checkpoint by the pinned key (or a later one) commits to them; its own signature
    on a checkpoint would let whoever wrote the log's first key entry vouch for it."""
    order = chain.all_keys()
    at = [order.index(k) for k in pinned if k in order]
    if not at:
        return []
    first = min(at)
    return [k for k in chain.keys_for_checkpoint(size) if order.index(k) >= first]


@dataclass
class Report:
    size: int = 0
    root: bytes = b""
    entries_checked: int = 0
    signatures_checked: int = 0
    checkpoints_checked: int = 0
    problems: list[Problem] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    chain: KeyChain | None = None  # the station keys the log's key entries lead through
    checkpoint_signed_by: list[Verifier] = field(default_factory=list)
    revoked: list[RevokedRange] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.counts

    def add(self, kind: str, where: str, what: str) -> None:
        n = self.counts.get(kind, 0) + 1
        self.counts[kind] = n
        if n <= MAX_LISTED_PER_KIND:
            self.problems.append(Problem(kind, where, what))

    def add_many(self, kind: str, n: int) -> None:
        """Count ``n`` more problems of ``kind`` beyond those listed."""
        if n > 0:
            self.counts[kind] = self.counts.get(kind, 0) + n

    def lines(self) -> list[str]:
        """Problems, then warnings (entries signed by a revoked key), then key changes."""
        out = [p.line() for p in self.problems]
        for kind, n in sorted(self.counts.items()):
            if n > MAX_LISTED_PER_KIND:
                out.append(f"... and {n - MAX_LISTED_PER_KIND} more problems of kind {kind}")
        out += [r.line() for r in self.revoked]
        if self.chain is not None:
            for c in self.chain.changes:
                out.append(
                    f"key change: entry {c.index} ({c.action}) hands the station key on from "
                    f"{c.old.key_id.hex()} to {c.new.vkey()}"
                )
        return out

    def to_json(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "size": self.size,
            "root": b64(self.root) if self.root else None,
            "entries_checked": self.entries_checked,
            "signatures_checked": self.signatures_checked,
            "checkpoints_checked": self.checkpoints_checked,
            "problem_counts": dict(sorted(self.counts.items())),
            "problems": [{"kind": p.kind, "where": p.where, "what": p.what} for p in self.problems],
            "key_chain": chain_json(self.chain) if self.chain is not None else [],
            "checkpoint_signed_by": [v.vkey() for v in self.checkpoint_signed_by],
            "revoked_signatures": [r.to_json() for r in self.revoked],
        }


def _read(rep: Report, source: TileSource, tid: TileID) -> bytes | None:
    """The tile's bytes, or None after reporting it missing or unreadable."""
    try:
        return source.read_tile(tid)
    except (KeyError, FileNotFoundError):
        kind = "bundle-missing" if tid.level == ENTRIES else "tile-missing"
        rep.add(kind, tid.path(), "is missing")
    except (OSError, ValueError) as e:
        rep.add("tile-unreadable", tid.path(), f"cannot be read: {e}")
    return None


def verify_log(
    source: TileSource,
    checkpoint_text: bytes | None,
    verifiers: Sequence[Verifier],
    origin: str | None = None,
    known_checkpoints: Iterable[bytes | str] = (),
    check_entries: bool = True,
    progress: Callable[[int, int], None] | None = None,
    executor: Executor | None = None,
    on_leaf: Callable[[int, bytes], None] | None = None,
) -> Report:
    """Verify a whole tile-based log; see the module docstring.

    Entry signatures are checked in batches on ``executor`` when the caller gives one
    (a thread pool: libsodium releases the GIL, so they overlap with decoding and
    hashing on the calling thread), else here, in order. This module starts no threads
    itself: `verify.parallel.verify_log` is the threaded shell.
    """
    rep = Report()
    cp = _parse_published(rep, checkpoint_text)
    if cp is None:
        return rep
    rep.size, rep.root = cp.size, cp.root
    known = _parse_known(rep, known_checkpoints)
    roots_at: dict[int, bytes] = {}
    # Start with a pinned key that signs the published checkpoint (the usual case: no
    # rotation, or the pinned key is the newest); the first key entry may correct it.
    first = _signer_of(checkpoint_text, verifiers) if checkpoint_text is not None else None
    with _SignatureChecker(rep, first, executor) as sigs:
        keys = _ChainFollower(rep, source, cp.size, first, sigs)
        _stream(rep, source, cp, known, roots_at, check_entries, progress, sigs, on_leaf, keys)
        keys.finish()
    if first is not None:
        rep.chain = keys.chain
    _check_signatures(rep, checkpoint_text, cp, verifiers, rep.chain, origin)
    _check_known(rep, known, roots_at, rep.chain, verifiers, cp)
    return rep


def _signer_of(text: bytes, verifiers: Sequence[Verifier]) -> Verifier | None:
    """The first pinned key whose signature on ``text`` verifies, else the first pinned."""
    for v in verifiers:
        try:
            open_checkpoint(text, [v])
            return v
        except CheckpointError:
            continue
    return verifiers[0] if verifiers else None


def _parse_published(rep: Report, text: bytes | None) -> Checkpoint | None:
    """The published checkpoint's body; its signature is checked once the key chain up
    to its size is known (`_check_signatures`)."""
    if text is None:
        rep.add("checkpoint-missing", "checkpoint", "no checkpoint file: the log cannot be checked")
        return None
    try:
        return Checkpoint.parse_body(parse_note(text.decode("utf-8", "replace")).text)
    except (NoteError, CheckpointError) as e:
        rep.add("checkpoint-malformed", "checkpoint", f"cannot be parsed: {e}")
        return None


def _check_signatures(
    rep: Report,
    text: bytes | None,
    cp: Checkpoint,
    verifiers: Sequence[Verifier],
    chain: KeyChain | None,
    origin: str | None,
) -> None:
    assert text is not None
    keys = list(verifiers)
    if chain is not None:
        keys = checkpoint_keys(chain, verifiers, cp.size)
        if not keys:
            rep.add(
                "key-chain",
                "checkpoint",
                f"the trusted key {verifiers[0].vkey()} is not in this log's key chain (it "
                f"starts with {chain.pinned.vkey()}): the log is another station's, or a key "
                "entry that hands the key on is missing or forged",
            )
            keys = list(verifiers)
    try:
        rep.checkpoint_signed_by = list(open_checkpoint(text, keys, origin).verified_by)
    except CheckpointError as e:
        what = f"not signed by the station key ({e}); it may be forged or from another station"
        rep.add("checkpoint-signature", "checkpoint", what)


def _parse_known(rep: Report, known: Iterable[bytes | str]) -> list[tuple[Checkpoint, bytes | str]]:
    """Checkpoints the station signed before, parsed (signatures checked at the end)."""
    out: list[tuple[Checkpoint, bytes | str]] = []
    for text in known:
        try:
            raw = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
            out.append((Checkpoint.parse_body(parse_note(raw).text), text))
        except (NoteError, CheckpointError) as e:
            rep.add("history-signature", "checkpoint history", f"a recorded checkpoint is bad: {e}")
    return out


def _check_known(
    rep: Report,
    known: list[tuple[Checkpoint, bytes | str]],
    roots_at: dict[int, bytes],
    chain: KeyChain | None,
    verifiers: Sequence[Verifier],
    published: Checkpoint,
) -> None:
    """Each known checkpoint: signed by a key the chain trusts at its size, and its root
    is the root the stream recomputed at that size (exactly consistency)."""
    seen: dict[int, bytes] = {}
    newest = None
    for c, text in known:
        keys = chain.keys_for_checkpoint(c.size) if chain is not None else list(verifiers)
        try:
            open_checkpoint(text, keys)
        except CheckpointError as e:
            rep.add("history-signature", "checkpoint history", f"a recorded checkpoint is bad: {e}")
            continue
        rep.checkpoints_checked += 1
        if c.size > published.size:
            if newest is None or c.size > newest.size:
                newest = c
            continue
        if c.size in seen and seen[c.size] != c.root:
            rep.add(
                "fork",
                f"size {c.size}",
                "two different signed roots for one size: the station signed a fork",
            )
            continue
        if c.size in seen:
            continue
        seen[c.size] = c.root
        got = roots_at.get(c.size)
        if got is not None and got != c.root:
            what = (
                "recorded checkpoint of size 0 has a wrong root"
                if c.size == 0
                else "a checkpoint the station signed earlier does not match this log: "
                "history was rewritten (not consistent)"
            )
            rep.add("history-root", f"size {c.size}", what)
    if newest is not None:
        rep.add(
            "rollback",
            "checkpoint",
            f"published size {published.size} is older than the signed checkpoint of size "
            f"{newest.size}: the log was rolled back or truncated",
        )


class _ChainFollower:
    """Follows the station key chain through the ``key`` entries as they stream past,
    and tells the signature checker which key to use from each index on."""

    def __init__(
        self,
        rep: Report,
        source: TileSource,
        size: int,
        first: Verifier | None,
        sigs: _SignatureChecker,
    ) -> None:
        self.rep, self.source, self.size, self.sigs = rep, source, size, sigs
        self.chain = KeyChain(first) if first is not None else None
        self.settled = first is None
        if first is None:
            sigs.holding = False  # no key: no signature is checked

    def on_key_entry(self, index: int, entry: Entry) -> None:
        if self.chain is None:
            return
        if not self.settled:
            self._settle(index, entry)
        self.rep.signatures_checked += 1
        try:
            new = extend(self.chain, index, entry)
        except KeyChainError as e:
            self.rep.add(
                "key-entry",
                f"entry {index}",
                f"{e}: the key change is not trusted (the entry was forged or altered)",
            )
            return
        if new.changes != self.chain.changes:
            c = new.changes[-1]
            self.sigs.use(c.new)
            if c.last_index is not None and c.last_index < c.index:
                self.rep.revoked.append(RevokedRange(c.last_index + 1, c.index, c.old, c.index))
        self.chain = new

    def _settle(self, index: int, entry: Entry) -> None:
        """The first key entry names the first key: if it is not the key assumed so far,
        the entries before it are checked again with it."""
        assert self.chain is not None
        p = entry.payload()
        named = p.get("vkey") if p.get("action") == "create" else p.get("old_vkey")
        try:
            first = Verifier.parse(str(named)) if named is not None else None
        except NoteError:
            first = None  # extend() reports the malformed entry
        self.settled = True
        if first is None or first == self.chain.pinned:
            self.sigs.settle(release=True)
            return
        self.sigs.settle(release=False)
        self.chain = KeyChain(first)
        self.sigs.use(first)
        self._recheck(index)

    def _recheck(self, end: int) -> None:
        """Check the signatures of entries [0, end) again with the chain's first key (their
        form and station were judged on the first read)."""
        for n in range((end + TILE_WIDTH - 1) // TILE_WIDTH):
            try:
                leaves = decode_bundle(self.source.read_tile(bundle_for_size(n, self.size)))
            except (KeyError, OSError, ValueError, BundleError):
                continue  # reported on the first read
            for i, leaf in enumerate(leaves):
                index = n * TILE_WIDTH + i
                if index >= end:
                    return
                try:
                    e = decode_entry(leaf)
                except EntryError:
                    continue
                self.sigs.check(index, e.signed_message(), e.signature)

    def finish(self) -> None:
        if not self.settled:
            self.sigs.settle(release=True)
            self.settled = True


class _Levels:
    """Rebuilds tiles above level 0 from recomputed hashes and checks the stored ones."""

    def __init__(self, rep: Report, source: TileSource, size: int) -> None:
        self.rep, self.source, self.size = rep, source, size
        self.acc: list[list[bytes]] = []  # acc[L] = recomputed hashes of the open tile at level L
        self.full: dict[int, int] = {}  # full tiles completed so far, per level

    def push(self, level: int, h: bytes) -> None:
        while len(self.acc) <= level:
            self.acc.append([])
        self.acc[level].append(h)
        if len(self.acc[level]) == TILE_WIDTH:
            hashes = self.acc[level]
            self.acc[level] = []
            n = self.full.get(level, 0)
            self.full[level] = n + 1
            if level > 0:
                self._compare(TileID(level, n), hashes)
            self.push(level + 1, perfect_root(hashes))

    def _compare(self, tid: TileID, hashes: list[bytes]) -> None:
        _check_partials(self.rep, self.source, tid, b"".join(hashes), 32)
        data = _read(self.rep, self.source, tid)
        if data is None:
            return
        if len(data) != len(hashes) * 32:
            self.rep.add(
                "tile-size",
                tid.path(),
                f"{len(data)} bytes, expected {len(hashes) * 32}: the tile is truncated or padded",
            )
            return
        stored = split_hashes(data)
        bad = [i for i, (a, b) in enumerate(zip(stored, hashes, strict=True)) if a != b]
        if bad:
            self.rep.add(
                "tile-mismatch",
                tid.path(),
                f"{len(bad)} hash(es) differ from the recomputed tree (first at position {bad[0]}):"
                " the tile was altered or damaged",
            )

    def finish(self) -> bytes:
        """Check the partial tiles above level 0 and return the recomputed root."""
        for level, hashes in enumerate(self.acc):
            if hashes and level > 0:
                n = self.size >> (TILE_HEIGHT * (level + 1))
                self._compare(TileID(level, n, len(hashes)), hashes)
        return edge_root(self.acc)

    def root_now(self) -> bytes:
        return edge_root(self.acc)


def _stream(
    rep: Report,
    source: TileSource,
    cp: Checkpoint,
    known: list[tuple[Checkpoint, bytes | str]],
    roots_at: dict[int, bytes],
    check_entries: bool,
    progress: Callable[[int, int], None] | None,
    sigs: _SignatureChecker,
    on_leaf: Callable[[int, bytes], None] | None,
    keys: _ChainFollower,
) -> None:
    """Stream every bundle; ``roots_at`` gets the recomputed root at each known size."""
    size = cp.size
    levels = _Levels(rep, source, size)
    pending_sizes = sorted({c.size for c, _ in known if 0 < c.size <= size})
    ki = 0
    roots_at[0] = edge_root([])
    index = 0
    absent_run = 0
    for n in range((size + TILE_WIDTH - 1) // TILE_WIDTH):
        width = min(TILE_WIDTH, size - n * TILE_WIDTH)
        bid = TileID(ENTRIES, n, width)
        tid = TileID(0, n, width)
        leaves: list[bytes] | None
        raw = _read(rep, source, bid)
        if raw is None:
            leaves = None
        else:
            try:
                leaves = decode_bundle(raw)
            except BundleError as e:
                rep.add("bundle-truncated", bid.path(), f"entry bundle is truncated: {e}")
                leaves = e.entries
            if len(leaves) != width:
                rep.add(
                    "bundle-count",
                    bid.path(),
                    f"holds {len(leaves)} entries, expected {width}",
                )
        if raw is not None:
            absent_run = 0
        stored_data = _read(rep, source, tid)
        stored: list[bytes] | None = None
        if stored_data is None:
            absent_run += 1
            if raw is None and absent_run >= 3:
                rep.add(
                    "log-ends",
                    f"entry {n * TILE_WIDTH}",
                    f"no entries or tiles from here on, but the checkpoint claims {size}",
                )
                return
        elif len(stored_data) != width * 32:
            rep.add(
                "tile-size",
                tid.path(),
                f"{len(stored_data)} bytes, expected {width * 32}: truncated or padded",
            )
            stored = split_hashes(stored_data[: (len(stored_data) // 32) * 32])
        else:
            stored = split_hashes(stored_data)
        mismatched = 0
        first_bad = -1
        recomputed: list[bytes] = []
        for i in range(width):
            leaf = leaves[i] if leaves is not None and i < len(leaves) else None
            if leaf is not None:
                h = leaf_hash(leaf)
                if stored is not None and i < len(stored) and stored[i] != h:
                    mismatched += 1
                    if first_bad < 0:
                        first_bad = index
                if check_entries:
                    _check_entry(rep, index, leaf, cp.origin, sigs, keys)
                elif KEY_MARK in leaf:
                    _follow_only(index, leaf, keys)
                if on_leaf is not None:
                    on_leaf(index, leaf)
                rep.entries_checked += 1
            elif stored is not None and i < len(stored):
                h = stored[i]  # entry unreadable: carry on with the stored hash
            else:
                h = b"\x00" * 32
            levels.push(0, h)
            recomputed.append(h)
            index += 1
            while ki < len(pending_sizes) and pending_sizes[ki] == index:
                roots_at[index] = levels.root_now()
                ki += 1
        if mismatched:
            rep.add(
                "tile-mismatch",
                tid.path(),
                f"{mismatched} leaf hash(es) differ from the entries (first at index {first_bad}):"
                " the tile or its entries were altered",
            )
        _check_partials(rep, source, tid, b"".join(recomputed), 32)
        if leaves is not None and len(leaves) == width:
            _check_partials(rep, source, bid, leaves, 0)
        if progress:
            progress(index, size)
    root = levels.finish()
    if root != cp.root:
        rep.add(
            "root-mismatch",
            "checkpoint",
            f"the entries hash to root {b64(root)}, but the checkpoint says {b64(cp.root)}",
        )


def _check_partials(
    rep: Report, source: TileSource, tid: TileID, content: bytes | list[bytes], unit: int
) -> None:
    """Partial tiles of earlier checkpoints are still served: each must be a prefix.

    ``content`` is the recomputed tile (hashes joined, ``unit`` 32) or its entries
    (a list; bundles are compared entry by entry). Widths beyond ``tid`` belong to no
    signed checkpoint of this size and are not judged.
    """
    widths = getattr(source, "partial_widths", None)
    if widths is None:
        return
    for w in widths(tid):
        if w >= tid.width:
            continue
        pid = TileID(tid.level, tid.n, w)
        data = _read(rep, source, pid)
        if data is None:
            continue
        if isinstance(content, list):
            try:
                ok = decode_bundle(data) == content[:w]
            except BundleError:
                ok = False
        else:
            ok = data == content[: w * unit]
        if not ok:
            rep.add(
                "partial-mismatch",
                pid.path(),
                "an older partial tile differs from the log: it was altered after it was "
                "published, and clients of that checkpoint would be misled",
            )


# How a key entry's leaf starts its type (canonical JSON: no spaces), for the pass that
# does not decode every entry.
KEY_MARK = b'"type":"key"'


def _check_entry(
    rep: Report,
    index: int,
    leaf: bytes,
    origin: str,
    sigs: _SignatureChecker,
    keys: _ChainFollower,
) -> None:
    where = f"entry {index}"
    try:
        e = decode_entry(leaf)
    except EntryError as err:
        rep.add("entry-malformed", where, f"not a valid custody entry: {err}")
        return
    if e.station != origin:
        rep.add("entry-station", where, f"names station {e.station!r}, not {origin!r}")
    if e.type == KEY_TYPE:
        keys.on_key_entry(index, e)  # checked with the key it retires
    else:
        sigs.check(index, e.signed_message(), e.signature)


def _follow_only(index: int, leaf: bytes, keys: _ChainFollower) -> None:
    try:
        e = decode_entry(leaf)
    except EntryError:
        return
    if e.type == KEY_TYPE:
        keys.on_key_entry(index, e)


class Outcome(Protocol):
    def result(self) -> list[int]: ...


class Executor(Protocol):
    """What `verify_log` needs of a `concurrent.futures.Executor`."""

    def submit(
        self,
        fn: Callable[[Verifier, list[tuple[int, bytes, bytes]]], list[int]],
        verifier: Verifier,
        items: list[tuple[int, bytes, bytes]],
        /,
    ) -> Outcome: ...


@dataclass(frozen=True)
class _Done:
    value: list[int]

    def result(self) -> list[int]:
        return self.value


class _SignatureChecker:
    """Checks entry signatures in batches (on an executor if given), reporting failures
    in index order. A batch is for one key: `use` closes it when the key changes.

    Until the key chain's first key is settled (`settle`), failures are held back (the
    first few and a count): if the key assumed was not the first, they are dropped and
    those entries checked again."""

    CHUNK = 256
    IN_FLIGHT = 4  # batches queued ahead on an executor

    def __init__(self, rep: Report, verifier: Verifier | None, executor: Executor | None) -> None:
        self.rep, self.verifier = rep, verifier
        self.executor = executor
        self.batch: list[tuple[int, bytes, bytes]] = []
        self.inflight: deque[Outcome] = deque()
        self.holding = True
        self.held: list[int] = []
        self.held_count = 0

    def use(self, verifier: Verifier) -> None:
        """Check the entries from here on with ``verifier``."""
        if verifier != self.verifier:
            self._flush()
            self.verifier = verifier

    def settle(self, release: bool) -> None:
        """Stop holding failures back: report them (``release``) or drop them."""
        self._flush()
        while self.inflight:
            self._collect()
        if release:
            for index in self.held:
                self._report(index)
            self.rep.add_many("entry-signature", self.held_count - len(self.held))
        self.holding, self.held, self.held_count = False, [], 0

    def __enter__(self) -> _SignatureChecker:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self._flush()
            while self.inflight:
                self._collect()

    def check(self, index: int, message: bytes, signature: bytes) -> None:
        if self.verifier is None:
            return
        self.batch.append((index, message, signature))
        if len(self.batch) >= self.CHUNK:
            self._flush()

    def _flush(self) -> None:
        if not self.batch or self.verifier is None:
            return
        if self.executor is None:
            self.inflight.append(_Done(_bad_signatures(self.verifier, self.batch)))
        else:
            self.inflight.append(self.executor.submit(_bad_signatures, self.verifier, self.batch))
        self.rep.signatures_checked += len(self.batch)
        self.batch = []
        while len(self.inflight) > self.IN_FLIGHT:
            self._collect()

    def _collect(self) -> None:
        for index in self.inflight.popleft().result():
            if not self.holding:
                self._report(index)
                continue
            self.held_count += 1
            if len(self.held) < MAX_LISTED_PER_KIND:
                self.held.append(index)

    def _report(self, index: int) -> None:
        self.rep.add(
            "entry-signature",
            f"entry {index}",
            "signature does not verify with the station key: the entry was altered or forged",
        )


def _bad_signatures(verifier: Verifier, items: list[tuple[int, bytes, bytes]]) -> list[int]:
    return [i for i, msg, sig in items if not verifier.verify(msg, sig)]
