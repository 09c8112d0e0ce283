"""Whole-log verification: every entry, tile, root and signature (pure).

Streams the entry bundles of a tile-based log once, in constant memory:
recomputes every leaf hash and checks it against the level-0 tiles, rebuilds
each higher tile and checks it, verifies each entry's signature and form,
and compares the recomputed root with the signed checkpoint. Roots of older
checkpoints the caller knows (the station's history, or one a supervisor
kept) are checked on the way past their sizes, which is exactly consistency.

Every problem is collected and reported with where it is and what it means;
nothing stops at the first failure.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ledger.checkpoint import Checkpoint, CheckpointError, open_checkpoint
from ledger.entry import EntryError, decode_entry
from ledger.integrate import edge_root
from ledger.note import NoteError, Verifier, b64, parse_note
from ledger.tiles import (
    ENTRIES,
    TILE_HEIGHT,
    TILE_WIDTH,
    BundleError,
    TileID,
    TileSource,
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


@dataclass
class Report:
    size: int = 0
    root: bytes = b""
    entries_checked: int = 0
    signatures_checked: int = 0
    checkpoints_checked: int = 0
    problems: list[Problem] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.counts

    def add(self, kind: str, where: str, what: str) -> None:
        n = self.counts.get(kind, 0) + 1
        self.counts[kind] = n
        if n <= MAX_LISTED_PER_KIND:
            self.problems.append(Problem(kind, where, what))

    def lines(self) -> list[str]:
        out = [p.line() for p in self.problems]
        for kind, n in sorted(self.counts.items()):
            if n > MAX_LISTED_PER_KIND:
                out.append(f"... and {n - MAX_LISTED_PER_KIND} more problems of kind {kind}")
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
    cp = _check_published(rep, checkpoint_text, verifiers, origin)
    if cp is None:
        return rep
    rep.size, rep.root = cp.size, cp.root
    known = _check_known(rep, known_checkpoints, verifiers, cp)
    with _SignatureChecker(rep, verifiers[0] if verifiers else None, executor) as sigs:
        _stream(rep, source, cp, known, check_entries, progress, sigs, on_leaf)
    return rep


def _check_published(
    rep: Report, text: bytes | None, verifiers: Sequence[Verifier], origin: str | None
) -> Checkpoint | None:
    if text is None:
        rep.add("checkpoint-missing", "checkpoint", "no checkpoint file: the log cannot be checked")
        return None
    try:
        return open_checkpoint(text, verifiers, origin).checkpoint
    except CheckpointError as e:
        what = f"not signed by the station key ({e}); it may be forged or from another station"
        rep.add("checkpoint-signature", "checkpoint", what)
    # Go on with the unverified body so the rest of the log is still examined.
    try:
        return Checkpoint.parse_body(parse_note(text.decode("utf-8", "replace")).text)
    except (NoteError, CheckpointError) as e:
        rep.add("checkpoint-malformed", "checkpoint", f"cannot be parsed: {e}")
        return None


def _check_known(
    rep: Report,
    known: Iterable[bytes | str],
    verifiers: Sequence[Verifier],
    published: Checkpoint,
) -> dict[int, bytes]:
    """Checkpoints the station signed before; returns size -> root to check in the stream."""
    out: dict[int, bytes] = {}
    newest = None
    for text in known:
        try:
            sc = open_checkpoint(text, verifiers)
        except CheckpointError as e:
            rep.add("history-signature", "checkpoint history", f"a recorded checkpoint is bad: {e}")
            continue
        c = sc.checkpoint
        rep.checkpoints_checked += 1
        if c.size > published.size:
            if newest is None or c.size > newest.size:
                newest = c
            continue
        if c.size in out and out[c.size] != c.root:
            rep.add(
                "fork",
                f"size {c.size}",
                "two different signed roots for one size: the station signed a fork",
            )
        out[c.size] = c.root
    if newest is not None:
        rep.add(
            "rollback",
            "checkpoint",
            f"published size {published.size} is older than the signed checkpoint of size "
            f"{newest.size}: the log was rolled back or truncated",
        )
    return out


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
    known: dict[int, bytes],
    check_entries: bool,
    progress: Callable[[int, int], None] | None,
    sigs: _SignatureChecker,
    on_leaf: Callable[[int, bytes], None] | None = None,
) -> None:
    size = cp.size
    levels = _Levels(rep, source, size)
    pending_sizes = sorted(s for s in known if s > 0)
    ki = 0
    if 0 in known and known[0] != edge_root([]):
        rep.add("history-root", "size 0", "recorded checkpoint of size 0 has a wrong root")
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
                    _check_entry(rep, index, leaf, cp.origin, sigs)
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
                if levels.root_now() != known[index]:
                    rep.add(
                        "history-root",
                        f"size {index}",
                        "a checkpoint the station signed earlier does not match this log: "
                        "history was rewritten (not consistent)",
                    )
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


def _check_entry(
    rep: Report, index: int, leaf: bytes, origin: str, sigs: _SignatureChecker
) -> None:
    where = f"entry {index}"
    try:
        e = decode_entry(leaf)
    except EntryError as err:
        rep.add("entry-malformed", where, f"not a valid custody entry: {err}")
        return
    if e.station != origin:
        rep.add("entry-station", where, f"names station {e.station!r}, not {origin!r}")
    sigs.check(index, e.signed_message(), e.signature)


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
    in index order."""

    CHUNK = 256
    IN_FLIGHT = 4  # batches queued ahead on an executor

    def __init__(self, rep: Report, verifier: Verifier | None, executor: Executor | None) -> None:
        self.rep, self.verifier = rep, verifier
        self.executor = executor
        self.batch: list[tuple[int, bytes, bytes]] = []
        self.inflight: deque[Outcome] = deque()

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
            self.rep.add(
                "entry-signature",
                f"entry {index}",
                "signature does not verify with the station key: the entry was altered or forged",
            )


def _bad_signatures(verifier: Verifier, items: list[tuple[int, bytes, bytes]]) -> list[int]:
    return [i for i, msg, sig in items if not verifier.verify(msg, sig)]
