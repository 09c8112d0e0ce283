"""Simulated stations that write what a real station's mirror writes, straight into a store.

A `SimStation` holds an Ed25519 station key (`ledger.note.Signer`, named after the
origin) and the right edge of its tree (`ledger.integrate.Edge`). It signs real entries
(`ledger.entry.make_entry`) with the payloads a real station writes (docs/entries.md:
``key``, ``policy``, ``ingest``, ``probe``, ``store``, ``wipe``, ``annotate``, ``hold``,
``delete``), signs checkpoints, and publishes into an archive store (`archive.local.
LocalFolderStore`, `archive.s3.S3Store`, or `BulkS3Store` below) the objects
`archive.replicate.Replicator.sync_ledger` writes under ``ledger/<origin>/``: the tiles and
entry bundles `ledger.tiles.tiles_to_publish` lists (full ones, and the partial ones at
the published size), ``checkpoints/<size>`` for every signed checkpoint, the latest as
``checkpoint`` (replaced in place), then the partials whose full tile is now published
are deleted. With ``with_objects=True`` each captured file is a small random object
stored at ``objects/sha256/...`` so an audit can re-hash it.

No station daemon, SQLite or ffmpeg runs: this is for tests and benchmarks of what reads
the bucket (the county hub). Everything it writes verifies with the whole-log verifier
(`ledger.audit.verify_log` over `archive.tiles.StoreTileSource`).

The content is deterministic for a given ``seed``: a station captures recordings (about
``entries_per_day`` entries a day of simulated time from ``start``); each recording gives
``ingest``, ``probe``, ``store`` and usually ``wipe``; some are annotated (cases,
categories, important marks), a few held; once a recording's lock has expired (180 days)
and nothing protects it, retention deletes it (``delete``), as `retention/sweep.py` does.

`generate` builds many stations in parallel processes (one station per task), for the
hub benchmark; `SimStation.resume` continues a station from what its bucket holds.
"""

from __future__ import annotations

import base64
import hashlib
import json
import multiprocessing
import random
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from archive.errors import NotFound
from archive.s3 import S3Store
from archive.store import Lock, ObjectStore, Stored, ledger_prefix, object_key
from archive.tiles import StoreTileSource
from ledger.checkpoint import Checkpoint, open_checkpoint
from ledger.entry import (
    SCHEMA_VERSION,
    SIG_PREFIX,
    decode_entry,
    format_time,
    make_entry,
    parse_time,
)
from ledger.integrate import Edge, edge_from_tiles, edge_tiles, integrate
from ledger.keys import key_entry_payload
from ledger.note import BoundSigner, Signer
from ledger.tiles import (
    ENTRIES,
    TILE_HEIGHT,
    TILE_WIDTH,
    TileID,
    decode_bundle,
    encode_bundle,
    tile_prefix,
    tiles_to_publish,
)

DEFAULT_START = datetime(2025, 12, 1, tzinfo=UTC)
CST = timezone(timedelta(hours=8))  # recorders' clocks (China Standard Time)
KEEP_DAYS = 180  # the "ordinary" rule of the simulated retention policy
CATEGORIES = (
    "administrative_penalty",
    "coercive_measure",
    "inspection",
    "expropriation",
    "licensing",
    "other",
)
KINDS = ("ingest", "probe", "store", "wipe", "annotate", "hold", "delete", "note")
PROBE_TOOL = "PyAV 18.1.0, libavformat 62.12.102"
SWEEP = "custody retention sweep"


def station_signer(origin: str, seed: int) -> Signer:
    """The station key a seed stands for (so a benchmark can resume a station later)."""
    return Signer(origin, hashlib.sha256(f"custody-sim-key/{seed}/{origin}".encode()).digest())


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fmt(t: datetime) -> str:
    """`ledger.entry.format_time` of a UTC time, without strftime (the simulator formats
    several times per entry; `SimStation._add` checks the two agree)."""
    return (
        f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:"
        f"{t.second:02d}.{t.microsecond // 1000:03d}Z"
    )


def _whole_seconds(t: datetime) -> str:
    return format_time(t.replace(microsecond=0))


@dataclass
class Recording:
    """A file the simulated station captured (what later entries refer to)."""

    index: int  # its ingest entry
    sha256: str
    size: int
    media_type: str
    captured: datetime
    source: dict[str, str]
    store_index: int | None = None
    key: str = ""
    version_id: str | None = None
    retain_until: str | None = None
    protected: bool = False  # important, in a case or held: kept by a permanent rule
    cases: list[str] = field(default_factory=list)


class BulkS3Store(S3Store):
    """`S3Store` whose ``put`` is one PUT with a SHA-256 checksum the server checks.

    `S3Store.put` also asks before (HEAD: already there?) and after (HEAD: read-back);
    writing a simulated county of 10^7 entries does not need either, so the benchmark
    saves two thirds of its requests. Reads, lists and deletes are `S3Store`'s own.
    """

    def put(
        self,
        key: str,
        source: Path | bytes,
        sha256: str,
        lock: Lock | None = None,
        *,
        replace: bool = False,
    ) -> Stored:
        body = source if isinstance(source, bytes) else source.read_bytes()
        digest = hashlib.sha256(body).digest()
        extra: dict[str, Any] = {"Metadata": {"sha256": sha256}}
        if lock is not None and not replace:
            extra["ObjectLockMode"] = lock.mode
            extra["ObjectLockRetainUntilDate"] = lock.retain_until
        r = self.client.put_object(
            Bucket=self.bucket,
            Key=self.prefix + key,
            Body=body,
            ChecksumAlgorithm="SHA256",
            ChecksumSHA256=base64.b64encode(digest).decode(),
            **extra,
        )
        return Stored(
            key,
            len(body),
            sha256,
            base64.b64encode(digest).decode(),
            r.get("VersionId"),
            lock=lock,
        )


class SimStation:
    """One simulated station writing its mirror into ``store`` (see the module docstring).

    ``signer`` defaults to `station_signer(origin, seed)` (a random key when ``seed`` is
    None). ``checkpoint_every``: entries between two signed checkpoints (every `append`
    also ends with one). ``lock_days``: full tiles and ``checkpoints/<size>`` are written
    with a COMPLIANCE lock this long (from the real clock), as the mirror does; None
    writes them unlocked. ``overwrite``: every ledger object is written with
    ``replace=True`` (new versions over what is there: how a fork reaches a bucket).
    ``writers``: threads for the PUTs of one publish (0: one after the other).
    ``genesis``: the first two entries are the ``key`` (create) and ``policy`` entries
    `custody init` and `custody retention apply` write.
    """

    def __init__(
        self,
        origin: str,
        signer: Signer | None = None,
        *,
        store: ObjectStore,
        seed: int | None = None,
        start: datetime = DEFAULT_START,
        checkpoint_every: int = 64,
        entries_per_day: int = 150,
        unit: str | None = None,
        with_objects: bool = False,
        object_bytes: tuple[int, int] = (256, 4096),
        lock_days: int | None = None,
        overwrite: bool = False,
        writers: int = 0,
        genesis: bool = True,
    ) -> None:
        if checkpoint_every < 1:
            raise ValueError("checkpoint_every must be at least 1")
        self.origin = origin
        self.seed = seed
        self.signer = signer or (
            station_signer(origin, seed) if seed is not None else Signer.generate(origin)
        )
        if self.signer.name != origin:
            raise ValueError(f"the station key is named {self.signer.name!r}, not {origin!r}")
        self.pinned = self.signer  # the key a supervisor pins (the first one)
        self.store = store
        self.prefix = ledger_prefix(origin)
        self.rng = random.Random(seed)
        self.clock = start.astimezone(UTC)  # `_fmt` formats UTC times only
        self.checkpoint_every = checkpoint_every
        self.entries_per_day = entries_per_day
        digest = hashlib.sha256(origin.encode()).digest()
        self.unit = unit or f"5308{int.from_bytes(digest[:4], 'big') % 10**8:08d}"
        self.with_objects = with_objects
        self.object_bytes = object_bytes
        self.lock_days = lock_days
        self.overwrite = overwrite
        self.writers = writers
        self.edge = Edge()
        self.checkpoints: dict[int, str] = {}  # every signed checkpoint note, by size
        self.signed = 0  # size of the latest signed checkpoint (0: none yet)
        self.published = 0  # size the store holds (its `checkpoint`)
        self.genesis = genesis
        self.also_sign: list[Signer] = []  # a retired key co-signing during an overlap
        self._bound = self.signer.bound()
        self._full: dict[TileID, bytes] = {}  # full tiles made since the last publish
        self._with_partials: set[tuple[int, int]] = set()  # (level, n) with partials out
        self._tidy_all = False  # a fork or a resumed station: partials may be anyone's
        self._earlier: StoreTileSource | None = None  # a fork's parent: tiles before it
        self._since_checkpoint = 0
        self._pending: list[bytes] = []  # signed, not yet integrated
        self._todo: deque[str] = deque()
        self._recordings: deque[Recording] = deque()  # not deleted, in capture order
        self._kept: list[Recording] = []  # protected recordings out of the deletion queue
        self._by_sha: dict[str, Recording] = {}
        self._recent: deque[Recording] = deque(maxlen=400)
        self._unprobed: deque[Recording] = deque()
        self._unstored: deque[Recording] = deque()
        self._unwiped: deque[Recording] = deque(maxlen=64)
        self._cases: list[str] = []
        self._case_no = 0
        self._kind_cycle = 0
        self._people = self._make_people()

    # -- keys ------------------------------------------------------------------------

    def vkey(self) -> str:
        """The verifier key to pin for this station (its first key: hub.toml ``vkey``)."""
        return self.pinned.verifier().vkey()

    def current_vkey(self) -> str:
        """The key signing now (differs from `vkey` after `rotate_key`)."""
        return self.signer.verifier().vkey()

    def rotate_key(
        self, reason: str = "scheduled rotation", *, overlap: bool = True, new: Signer | None = None
    ) -> Signer:
        """Append a ``key`` rotate entry signed by the current key (as `custody key rotate`
        does) and sign everything after it with a new key; with ``overlap`` the old key
        co-signs the checkpoints until `end_overlap`. Returns the new key."""
        old = self.signer
        nxt = new or Signer(
            self.origin, hashlib.sha256(old.seed + b"/next").digest()
        )  # deterministic: a resumed or forked run can find it again
        payload: dict[str, Any] = dict(
            key_entry_payload(old.verifier(), nxt.verifier(), reason), operator="root"
        )
        if overlap:
            payload["overlap_until"] = format_time(
                (self.clock + timedelta(days=30)).replace(microsecond=0)
            ).replace(".000Z", "Z")
        self._add("key", payload)
        self.signer = nxt
        self._bound = nxt.bound()
        self.also_sign = [old] if overlap else []
        return nxt

    def end_overlap(self) -> None:
        self.also_sign = []

    # -- appending ---------------------------------------------------------------------

    @property
    def size(self) -> int:
        return self.edge.size + len(self._pending)

    def append(
        self,
        n: int,
        kinds: Sequence[str] | None = None,
        *,
        publish: bool = True,
        publish_each: bool = False,
    ) -> int:
        """Add ``n`` entries: the realistic mix (``kinds`` None), or the given entry types
        in turn (e.g. ``["ingest"]``, ``["ingest", "annotate", "delete"]``). A checkpoint
        is signed every ``checkpoint_every`` entries and at the end; ``publish`` writes
        the mirror at the end, ``publish_each`` after every checkpoint (so partial
        tiles come and go as a mirror running beside the station makes them). Returns
        the new size."""
        for k in kinds or ():
            if k not in KINDS:
                raise ValueError(f"unknown kind {k!r}; one of {', '.join(KINDS)}")
        for _ in range(n):
            if self.genesis and self.size == 0:
                self._add("key", {"action": "create", "vkey": self.vkey(), "operator": "root"})
            elif self.genesis and self.size == 1:
                self._add("policy", self._policy(), fast=True)
            elif kinds:
                kind = kinds[self._kind_cycle % len(kinds)]
                self._kind_cycle += 1
                self.clock += timedelta(seconds=self.rng.expovariate(self.entries_per_day / 86400))
                self._make(kind)
            else:
                self._make(self._next_planned())
            if self._since_checkpoint >= self.checkpoint_every:
                self.checkpoint()
                if publish_each:
                    self.publish()
        self.checkpoint()
        if publish or publish_each:
            self.publish()
        return self.size

    def append_entries(
        self,
        items: Iterable[tuple[str, Mapping[str, Any]]],
        *,
        time: datetime | None = None,
        publish: bool = True,
    ) -> list[int]:
        """Append entries with the payloads given (signed by the station key, stamped
        ``time`` or the simulated clock), sign a checkpoint, publish; returns their
        indices."""
        if time is not None:
            self.clock = time
        out = [self._add(t, p) for t, p in items]  # any payload: the full make_entry
        self.checkpoint()
        if publish:
            self.publish()
        return out

    def _add(self, type_: str, payload: Mapping[str, Any], fast: bool = False) -> int:
        index = self.size
        if fast:
            leaf = _fast_entry(self._bound, self.origin, type_, payload, _fmt(self.clock))
            if index % TILE_WIDTH == 0:  # the shortcut must give make_entry's exact bytes
                same = make_entry(self._bound, self.origin, type_, payload, self.clock)
                if same != leaf:
                    raise AssertionError(f"fast entry {index} differs from make_entry's")
        else:
            leaf = make_entry(self._bound, self.origin, type_, payload, self.clock)
        self._pending.append(leaf)
        self._since_checkpoint += 1
        self.clock += timedelta(milliseconds=self.rng.randint(3, 400))
        return index

    def _integrate(self) -> None:
        if not self._pending:
            return
        res = integrate(self.edge, self._pending)
        for tid in res.completed:
            self._full[tid] = res.tiles[tid]
        self.edge = res.edge
        self._pending = []

    def checkpoint(self) -> str:
        """Sign a checkpoint for every entry appended so far (none if nothing is new)."""
        self._integrate()
        self._since_checkpoint = 0
        size = self.edge.size
        if size in self.checkpoints:
            return self.checkpoints[size]
        signers: list[Signer | BoundSigner] = [self._bound, *self.also_sign]
        note = Checkpoint(self.origin, size, self.edge.root()).sign(signers)
        self.checkpoints[size] = note
        self.signed = size
        return note

    def checkpoint_note(self, size: int | None = None) -> str:
        """The signed note of the checkpoint at ``size`` (the latest when None)."""
        size = self.signed if size is None else size
        if size not in self.checkpoints:
            raise KeyError(f"{self.origin} signed no checkpoint at size {size}")
        return self.checkpoints[size]

    def root(self) -> bytes:
        """Root of the tree of every integrated entry."""
        self._integrate()
        return self.edge.root()

    # -- the mirror -----------------------------------------------------------------------

    def _lock(self) -> Lock | None:
        if self.lock_days is None or self.overwrite:
            return None
        until = datetime.now(UTC) + timedelta(days=self.lock_days)
        return Lock("COMPLIANCE", until.replace(microsecond=0))

    def _put(self, key: str, data: bytes, lock: Lock | None, replace: bool = False) -> None:
        self.store.put(self.prefix + key, data, _sha(data), lock, replace=replace or self.overwrite)

    def _put_all(self, items: list[tuple[str, bytes, Lock | None]]) -> None:
        if self.writers <= 1 or len(items) < 2:
            for key, data, lock in items:
                self._put(key, data, lock)
            return
        with ThreadPoolExecutor(self.writers) as ex:
            for f in [ex.submit(self._put, k, d, lk) for k, d, lk in items]:
                f.result()

    def _partial(self, tid: TileID) -> bytes:
        """A partial tile at the right edge of the tree (which is at the signed size)."""
        if tid.level == ENTRIES:
            return encode_bundle(self.edge.bundle)
        return b"".join(self.edge.levels[tid.level])

    def publish(self) -> int:
        """Mirror up to the latest signed checkpoint, as `Replicator.sync_ledger` does:
        tiles, then ``checkpoints/<size>``, then ``checkpoint``, then tidy partials."""
        if self.size > self.signed:
            self.checkpoint()
        done, latest = self.published, self.signed
        if latest <= done and done > 0:
            return done
        lock = self._lock()
        tiles: list[tuple[str, bytes, Lock | None]] = []
        completed = []
        for tid in tiles_to_publish(done, latest):
            if tid.full:
                data = self._full.pop(tid, None)
                if data is None and self._earlier is not None:
                    data = self._earlier.read_tile(tid)  # a fork into another store
                if data is None:
                    raise KeyError(f"{self.origin}: tile {tid.path()} was never made here")
                tiles.append((tid.path(), data, lock))
                completed.append(tid)
            else:
                tiles.append((tid.path(), self._partial(tid), None))
                self._with_partials.add((tid.level, tid.n))
        self._full.clear()  # tiles completed and superseded within this publish
        self._put_all(tiles)
        notes = [
            (f"checkpoints/{s}", self.checkpoints[s].encode(), lock)
            for s in sorted(self.checkpoints)
            if done < s <= latest or (s == 0 and done == 0)
        ]
        self._put_all(notes)
        self._put("checkpoint", self.checkpoints[latest].encode(), None, replace=True)
        self.published = latest
        for tid in completed:
            if self._tidy_all or (tid.level, tid.n) in self._with_partials:
                self._with_partials.discard((tid.level, tid.n))
                for k in list(self.store.list(self.prefix + tid.path() + ".p/")):
                    self.store.delete(k)
        return latest

    def put_latest(self, note: str | int) -> None:
        """Write ``checkpoint`` as given: a note text (one signed with another key, say),
        or the size of a checkpoint this station signed earlier (a rollback). For attacks:
        the station's own `publish` writes the next real one over it."""
        text = note if isinstance(note, str) else self.checkpoint_note(note)
        self._put("checkpoint", text.encode(), None, replace=True)

    def recordings(self) -> list[Recording]:
        """The recordings captured and not deleted, in capture order."""
        return sorted([*self._recordings, *self._kept], key=lambda r: r.index)

    # -- forks and resumption ------------------------------------------------------------

    def fork_from(
        self,
        size: int,
        *,
        seed: int | None = None,
        store: ObjectStore | None = None,
        overwrite: bool = True,
    ) -> SimStation:
        """A second history that shares this one's first ``size`` entries and goes on
        differently, signed with the same key (the fork attack). It writes into the same
        store unless given another, over what is there (``overwrite``): its next
        checkpoint at any size beyond ``size`` has another root than this station's."""
        if size > self.size:
            raise ValueError(f"{self.origin} has {self.size} entries, cannot fork at {size}")
        if size > self.published:
            self.publish()
        fork = SimStation(
            self.origin,
            self.signer,
            store=store or self.store,
            seed=(self.rng.randrange(1 << 62) if seed is None else seed),
            start=self.clock,
            checkpoint_every=self.checkpoint_every,
            entries_per_day=self.entries_per_day,
            unit=self.unit,
            with_objects=self.with_objects,
            object_bytes=self.object_bytes,
            lock_days=self.lock_days,
            overwrite=overwrite,
            writers=self.writers,
            genesis=False,
        )
        fork.pinned = self.pinned
        fork.also_sign = list(self.also_sign)
        fork._tidy_all = True
        src = StoreTileSource(self.store, self.origin)
        fork._earlier = src
        fork.edge = _edge_at(src, size)
        fork.checkpoints = {s: n for s, n in self.checkpoints.items() if s <= size}
        fork.signed = max(fork.checkpoints, default=0)
        if fork.signed != size:
            fork.checkpoint()
        fork.published = size if store is None else 0
        fork.clock = _time_at(src, size) if size else self.clock
        for r in self._recordings:
            if r.index < size:
                fork._remember(r)
        return fork

    @classmethod
    def resume(cls, origin: str, signer: Signer, *, store: ObjectStore, **kw: Any) -> SimStation:
        """A station that goes on from what ``store`` holds for ``origin`` (its
        ``checkpoint``, checked with ``signer``'s key, and the tiles at that size). Its
        new content starts fresh (no earlier recording is probed, stored or deleted)."""
        src = StoreTileSource(store, origin)
        text = src.read_checkpoint()
        if text is None:
            raise NotFound(f"{origin}: no checkpoint in {getattr(store, 'id', store)}")
        cp = open_checkpoint(text, [signer.verifier()], origin).checkpoint
        sim = cls(origin, signer, store=store, genesis=False, **kw)
        sim.edge = _edge_at(src, cp.size)
        if sim.edge.root() != cp.root:
            raise ValueError(f"{origin}: the tiles in the store do not hash to its checkpoint")
        sim.checkpoints = {cp.size: text.decode()}
        sim.signed = sim.published = cp.size
        sim._with_partials = {(t.level, t.n) for t in edge_tiles(cp.size)}
        if cp.size:
            sim.clock = _time_at(src, cp.size) + timedelta(seconds=1)
        return sim

    # -- content ----------------------------------------------------------------------------

    def _make_people(self) -> list[tuple[str, str]]:
        """(officer number 警号, recorder serial) of the station's officers."""
        rng = random.Random(f"{self.origin}/people")
        out = []
        for _ in range(rng.randint(8, 30)):
            officer = f"{rng.randint(10000, 999999):06d}"
            serial = f"DSJ{rng.choice('ABCKT')}{rng.randint(1000000, 9999999)}"
            out.append((officer, serial))
        return out

    def _policy(self) -> dict[str, Any]:
        text = "ordinary 180 days; important and case permanent\n"
        return {
            "sha256": _sha(text.encode()),
            "source": "station/retention.toml",
            "rules": [
                {"keep": "permanent", "local_days": 30, "name": "case"},
                {"keep": "permanent", "local_days": 30, "name": "important"},
                {"keep": f"{KEEP_DAYS} days", "local_days": 30, "name": "ordinary"},
            ],
            "floor_days": KEEP_DAYS,
            "operator": "root",
        }

    def _next_planned(self) -> str:
        """The next entry type of the realistic mix: recordings arrive, each is probed,
        stored and usually released; now and then an annotation, a hold, a deletion."""
        while not self._todo:
            self.clock += timedelta(
                seconds=self.rng.expovariate(self.entries_per_day / 86400 / 3.6)
            )
            if self._deletable() is not None and self.rng.random() < 0.9:
                self._todo.append("delete")
            self._todo += ["ingest", "probe", "store"]
            if self.rng.random() < 0.8:
                self._todo.append("wipe")
            if self.rng.random() < 0.05:
                self._todo.append("annotate")
            if self.rng.random() < 0.01:
                self._todo.append("hold")
            if self.rng.random() < 0.002:
                self._todo.append("note")
        return self._todo.popleft()

    def _remember(self, r: Recording) -> None:
        self._recordings.append(r)
        self._by_sha[r.sha256] = r
        self._recent.append(r)

    def _deletable(self) -> Recording | None:
        """The oldest recording whose lock has expired and that nothing protects."""
        while self._recordings and self._recordings[0].protected:
            self._kept.append(self._recordings.popleft())  # kept for good: never deleted
        if not self._recordings:
            return None
        r = self._recordings[0]
        if r.retain_until is None or r.retain_until > _fmt(self.clock):
            return None
        return r

    def _pick(self, pending: deque[Recording]) -> Recording | None:
        while pending:
            r = pending.popleft()
            if r.sha256 in self._by_sha:
                return r
        return self.rng.choice(self._recent) if self._recent else None

    def _make(self, kind: str) -> int:
        make: dict[str, Callable[[], int]] = {
            "ingest": self._ingest,
            "probe": self._probe,
            "store": self._store,
            "wipe": self._wipe,
            "annotate": self._annotate,
            "hold": self._hold,
            "delete": self._delete,
            "note": self._note,
        }
        return make[kind]()

    def _object(self) -> tuple[str, int, bytes | None]:
        if self.with_objects:
            lo, hi = self.object_bytes
            data = self.rng.randbytes(self.rng.randint(lo, hi))
            return _sha(data), len(data), data
        size = int(self.rng.lognormvariate(18.5, 1.0))  # ~100 MB typical, up to GBs
        return self.rng.randbytes(32).hex(), max(size, 1024), None

    def _ingest(self) -> int:
        rng = self.rng
        sha, size, data = self._object()
        officer, serial = rng.choice(self._people)
        media_type = rng.choices(
            ("video/mp4", "video/quicktime", "audio/wav", "video/x-msvideo"), (90, 4, 4, 2)
        )[0]
        ext = {"video/mp4": "MP4", "video/quicktime": "MOV", "audio/wav": "WAV"}.get(
            media_type, "AVI"
        )
        received = self.clock - timedelta(milliseconds=rng.randint(5, 20_000))
        started = received - timedelta(seconds=rng.randint(600, 12 * 3600))
        local = started.astimezone(CST)
        slot = f"slot{rng.randint(1, 12):02d}"
        day = f"{local.year:04d}{local.month:02d}{local.day:02d}"
        name = f"{serial}_{officer}_{day}{local.hour:02d}{local.minute:02d}{local.second:02d}.{ext}"
        recorder: dict[str, Any] = {
            "serial": serial,
            "officer": officer,
            "unit": self.unit,
            "claimed_start": _fmt(local)[:19],
            "claimed_start_offset": "+08:00",
            "identified_by": ["filename:gat947", "table"],
        }
        important = rng.random() < 0.03
        if important:
            recorder["important"] = True
        if rng.random() < 0.15:
            recorder["category"] = rng.choice(CATEGORIES)
        source = {"dock": f"dock-{rng.randint(1, 3)}", "recorder": slot}
        source["path"] = f"{slot}/DCIM/{name}"
        payload = {
            "sha256": sha,
            "size": size,
            "media_type": media_type,
            "source": source,
            "recorder": recorder,
            "times": {
                "dock_received": _fmt(received),
                "file_mtime": _fmt(started + timedelta(seconds=rng.randint(30, 1800))),
            },
        }
        index = self._add("ingest", payload, fast=True)
        r = Recording(index, sha, size, media_type, self.clock, source, protected=important)
        if data is not None:
            st = self.store.put(object_key(sha), data, sha)
            r.key, r.version_id = st.key, st.version_id
        self._remember(r)
        self._unprobed.append(r)
        self._unstored.append(r)
        return index

    def _probe(self) -> int:
        r = self._pick(self._unprobed)
        sha = r.sha256 if r else self.rng.randbytes(32).hex()
        media_type = r.media_type if r else "video/mp4"
        payload: dict[str, Any] = {"sha256": sha, "tool": PROBE_TOOL}
        if self.rng.random() < 0.005:
            payload["error"] = "Invalid data found when processing input"
            return self._add("probe", payload, fast=True)
        ms = self.rng.randint(5_000, 40 * 60_000)
        audio = {"channels": 1, "codec": "aac", "duration_ms": ms, "index": 1}
        audio |= {"sample_rate": 16000, "type": "audio", "frames": ms * 16 // 1024}
        if media_type == "audio/wav":
            streams = [{**audio, "codec": "pcm_s16le", "index": 0, "frames": ms * 16}]
            container, structure = "wav", "wav"
        else:
            video = {"codec": "h264", "duration_ms": ms, "frames": ms * 30 // 1000}
            video |= {"height": 1080, "index": 0, "rate": "30", "type": "video", "width": 1920}
            streams = [video, audio]
            container, structure = "mov,mp4,m4a,3gp,3g2,mj2", "mp4"
        complete = self.rng.random() > 0.01
        summary: dict[str, Any] = {
            "container": container,
            "streams": streams,
            "duration_ms": ms,
            "bit_rate": self.rng.randint(1_000_000, 8_000_000),
            "packets": ms * 30 // 1000 + ms * 16 // 1024,
            "complete": complete,
            "structure": structure,
            "declared": {"duration_ms": ms, "frames": ms * 30 // 1000},
            "found": {"duration_ms": ms if complete else ms // 2, "frames": ms * 30 // 1000},
        }
        if not complete:
            summary["damage"] = ["the last fragment is cut short (recording interrupted)"]
        payload["summary"] = summary
        return self._add("probe", payload, fast=True)

    def _store_id(self) -> str:
        return str(getattr(self.store, "id", "file:///sim"))

    def _store(self) -> int:
        r = self._pick(self._unstored)
        sha = r.sha256 if r else self.rng.randbytes(32).hex()
        size = r.size if r else 1 << 20
        until = (self.clock + timedelta(days=KEEP_DAYS)).replace(microsecond=0)
        payload: dict[str, Any] = {
            "sha256": sha,
            "size": size,
            "role": "original",
            "store": self._store_id(),
            "key": object_key(sha),
            "checksum": base64.b64encode(bytes.fromhex(sha)).decode(),
            "storage_class": "STANDARD",
            "lock_mode": "COMPLIANCE",
        }
        bucket = getattr(self.store, "bucket", "")
        if bucket:
            payload["bucket"] = bucket
        version = r.version_id if r and self.with_objects else None
        if not self.with_objects:
            version = self.rng.randbytes(16).hex()
        if version:
            payload["version_id"] = version
        if self.with_objects:
            payload["lock_mode"] = "none"  # sample objects are stored unlocked
        else:
            payload["retain_until"] = _fmt(until)
        index = self._add("store", payload, fast=True)
        if r is not None:
            r.store_index, r.key, r.version_id = index, object_key(sha), version
            r.retain_until = _fmt(until)
            self._unwiped.append(r)
        return index

    def _wipe(self) -> int:
        r = self._unwiped.pop() if self._unwiped else None  # the one just stored
        if r is not None and r.sha256 not in self._by_sha:
            r = None
        payload: dict[str, Any] = {
            "sha256": r.sha256 if r else self.rng.randbytes(32).hex(),
            "ingest_entry": r.index if r else 0,
            "source": r.source if r else {"dock": "dock-1", "recorder": "", "path": "x.MP4"},
            "rule": "after_replication",
        }
        if r is not None and r.store_index is not None:
            payload["store_entry"] = r.store_index
        return self._add("wipe", payload, fast=True)

    def _new_case(self) -> str:
        self._case_no += 1
        year = self.clock.astimezone(CST).year
        case = f"{year}-{self.rng.choice(['行政处罚', '行政强制', '行政检查'])}-{self._case_no:04d}"
        self._cases.append(case)
        return case

    def _annotate(self) -> int:
        r = self.rng.choice(self._recent) if self._recent else None
        payload: dict[str, Any] = {
            "sha256": r.sha256 if r else self.rng.randbytes(32).hex(),
            "operator": self.rng.choice(self._people)[0],
        }
        if self.rng.random() < 0.5 or not self._cases:
            case = self._new_case() if self.rng.random() < 0.6 or not self._cases else None
            payload["cases_added"] = [case or self.rng.choice(self._cases)]
        if self.rng.random() < 0.6:
            payload["category"] = self.rng.choice(CATEGORIES)
        if self.rng.random() < 0.3 or len(payload) == 2:
            payload["important"] = True
        payload["reason"] = self.rng.choice(
            ["complaint received", "case opened", "supervisor review", "court request"]
        )
        if r is not None and ("cases_added" in payload or payload.get("important")):
            r.protected = True
            r.cases += payload.get("cases_added", [])
        return self._add("annotate", payload, fast=True)

    def _hold(self) -> int:
        if self._cases and self.rng.random() < 0.7:
            scope, target = "case", self.rng.choice(self._cases)
        else:
            r = self.rng.choice(self._recent) if self._recent else None
            scope, target = "object", (r.sha256 if r else self.rng.randbytes(32).hex())
            if r is not None:
                r.protected = True
        payload = {
            "scope": scope,
            "target": target,
            "reason": self.rng.choice(["appeal period", "complaint under review", "litigation"]),
            "operator": self.rng.choice(self._people)[0],
        }
        return self._add("hold", payload, fast=True)

    def _delete(self) -> int:
        # In the mix only expired, unprotected recordings go; a caller asking for deletes
        # (kinds=["delete"]) gets the oldest recording, whatever its rule says.
        r = self._deletable()
        if r is None and (self._recordings or self._kept):
            r = self._recordings[0] if self._recordings else self._kept[0]
        sha = r.sha256 if r else self.rng.randbytes(32).hex()
        captured = r.captured if r else self.clock
        payload: dict[str, Any] = {
            "sha256": sha,
            "rule": "ordinary",
            "keep_days": KEEP_DAYS,
            "captured": _whole_seconds(captured),
            "due": _whole_seconds(captured + timedelta(days=KEEP_DAYS)),
            "ingest_entry": r.index if r else 0,
            "operator": SWEEP,
            "local": "not on the dock",
        }
        if r is not None and r.store_index is not None:
            payload |= {
                "store": self._store_id(),
                "key": r.key,
                "store_entry": r.store_index,
                "cold": "deleted",
            }
            if r.version_id:
                payload["version_id"] = r.version_id
            if r.retain_until and not self.with_objects:  # sample objects are unlocked
                payload["retain_until"] = r.retain_until
        if r is not None:
            (self._recordings if r in self._recordings else self._kept).remove(r)
            del self._by_sha[r.sha256]
            if self.with_objects:
                self.store.delete(object_key(r.sha256))
        return self._add("delete", payload, fast=True)

    def _note(self) -> int:
        officer = self.rng.choice(self._people)[0]
        text = f"Dock opened for shift change by 警号 (officer number) {officer}"
        return self._add("note", {"text": text, "operator": "root"}, fast=True)


_SIG_MARK = ("<" + "sig" * 29 + ">").encode()  # 89 bytes no payload holds
_SIG_CUT = b'"sig":"' + _SIG_MARK + b'",'


def _fast_entry(
    signer: BoundSigner, station: str, type_: str, payload: Mapping[str, Any], time: str
) -> bytes:
    """`make_entry`'s leaf with one JSON encoding instead of two and no domain walk, for
    payloads this module makes (ASCII keys, plain values): the fields are encoded with a
    marker for the signature; cutting the marker's member out gives the signed body
    ("sig" always has a member after it: "station"), and the signature replaces it."""
    fields = {"v": SCHEMA_VERSION, "type": type_, "time": time, "station": station}
    fields.update(payload)
    fields["sig"] = _SIG_MARK.decode()
    template = json.dumps(
        fields, ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False
    ).encode()
    body = template.replace(_SIG_CUT, b"", 1)
    sig = signer.sign(SIG_PREFIX + body)
    return template.replace(_SIG_MARK, base64.b64encode(sig), 1)


def _read_prefix(src: StoreTileSource, tid: TileID) -> bytes:
    """A tile at ``tid``'s width, also when only a wider partial of it was published."""
    try:
        return src.read_tile(tid)
    except FileNotFoundError:
        wider = [w for w in src.partial_widths(tid) if w > tid.width]
        if not wider:
            raise
        return tile_prefix(tid, src.read_tile(TileID(tid.level, tid.n, min(wider))))


def _edge_at(src: StoreTileSource, size: int) -> Edge:
    if size == 0:
        return Edge()
    return edge_from_tiles(size, {t: _read_prefix(src, t) for t in edge_tiles(size)})


def _time_at(src: StoreTileSource, size: int) -> datetime:
    """The time of entry ``size - 1`` as the store holds it."""
    n = (size - 1) >> TILE_HEIGHT
    width = size - n * TILE_WIDTH
    leaves = decode_bundle(_read_prefix(src, TileID(ENTRIES, n, width)))
    return parse_time(decode_entry(leaves[-1]).time)


# -- many stations at once ------------------------------------------------------------------


@dataclass(frozen=True)
class StationSpec:
    """One station of a simulated county: its origin, seed (content and key) and size."""

    origin: str
    seed: int
    entries: int
    unit: str | None = None


@dataclass(frozen=True)
class StationResult:
    origin: str
    vkey: str  # to pin in hub.toml
    unit: str
    size: int
    root: str  # base64, of the published checkpoint
    seconds: float  # wall time of this station's task


def build_station(
    spec: StationSpec,
    store_factory: Callable[[], ObjectStore],
    *,
    resume: bool = False,
    checkpoint_every: int = 256,
    writers: int = 4,
) -> StationResult:
    """Write one station (or add ``spec.entries`` to one already in the store when
    ``resume``); one task of `generate`."""
    import time

    t0 = time.perf_counter()
    store = store_factory()
    signer = station_signer(spec.origin, spec.seed)
    kw: dict[str, Any] = {"checkpoint_every": checkpoint_every, "writers": writers}
    if spec.unit is not None:
        kw["unit"] = spec.unit
    if resume:
        sim = SimStation.resume(spec.origin, signer, store=store, seed=spec.seed + (1 << 32), **kw)
    else:
        sim = SimStation(spec.origin, signer, store=store, seed=spec.seed, **kw)
    sim.append(spec.entries, publish=True)
    return StationResult(
        spec.origin,
        sim.vkey(),
        sim.unit,
        sim.size,
        base64.b64encode(sim.root()).decode(),
        time.perf_counter() - t0,
    )


def _build_task(args: tuple[StationSpec, Callable[[], ObjectStore], bool, int, int]) -> Any:
    spec, factory, resume, every, writers = args
    return build_station(spec, factory, resume=resume, checkpoint_every=every, writers=writers)


def generate(
    specs: Sequence[StationSpec],
    store_factory: Callable[[], ObjectStore],
    *,
    processes: int | None = None,
    resume: bool = False,
    checkpoint_every: int = 256,
    writers: int = 4,
    on_done: Callable[[StationResult], None] | None = None,
) -> list[StationResult]:
    """Build (or, with ``resume``, grow) many stations in parallel processes, one station
    per task; ``store_factory`` must pickle (e.g. ``functools.partial(BulkS3Store,
    settings)``). Results come in the order of ``specs``."""
    tasks = [(s, store_factory, resume, checkpoint_every, writers) for s in specs]
    out: dict[str, StationResult] = {}
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(processes) as pool:
        for r in pool.imap_unordered(_build_task, tasks):
            out[r.origin] = r
            if on_done is not None:
                on_done(r)
    return [out[s.origin] for s in specs]


def county(
    stations: int, entries: int, *, domain: str = "custody.example", seed: int = 1
) -> list[StationSpec]:
    """Specs of ``stations`` stations of ``entries`` entries each, named
    ``<domain>/county/station-NNN``."""
    return [
        StationSpec(f"{domain}/county/station-{i:03d}", seed * 1_000_003 + i, entries)
        for i in range(stations)
    ]


def hub_stations_toml(
    stations: Iterable[tuple[str, str, str]], store: Mapping[str, str | int | bool]
) -> str:
    """``[[stations]]`` blocks for hub.toml: (origin, vkey, unit) each, all reading the
    same ``[stations.store]`` table (e.g. ``{"kind": "s3", "bucket": "evidence",
    "endpoint_url": "http://127.0.0.1:8333"}`` or ``{"kind": "local", "path": "/x"}``)."""

    def val(v: str | int | bool) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int):
            return str(v)
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'

    out = []
    for origin, vkey, unit in stations:
        out.append("[[stations]]\n")
        out.append(f"origin = {val(origin)}\nvkey = {val(vkey)}\n")
        if unit:
            out.append(f"unit = {val(unit)}\n")
        out.append("[stations.store]\n")
        out += [f"{k} = {val(v)}\n" for k, v in store.items()]
        out.append("\n")
    return "".join(out)


__all__ = [
    "CATEGORIES",
    "DEFAULT_START",
    "KINDS",
    "BulkS3Store",
    "Recording",
    "SimStation",
    "StationResult",
    "StationSpec",
    "build_station",
    "county",
    "generate",
    "hub_stations_toml",
    "station_signer",
]
