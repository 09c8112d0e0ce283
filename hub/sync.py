"""One pass of the hub over every station: follow, catalogue, cosign, alarm.

For each station in ``hub.toml``: read its newest checkpoint from the bucket, verify
what is new (`hub.follow`), hand the rows to the county catalog, and only once the
catalog has committed them write the new verified state (so after a crash the
verified state is never ahead of the catalogue, and a step verified again adds no row
twice: rows below the catalogue's recorded size for a station are not made again).
Then cosign each checkpoint verified, as the hub's witness, and write the cosigned
note back beside the station's checkpoints in the bucket. What goes wrong is a state
per station, one log line, and a signed ``alarm`` entry in the hub's own ledger.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Protocol

from archive.errors import NotFound, StoreError
from archive.local import LocalFolderStore
from archive.s3 import S3Store
from archive.store import ObjectStore, ledger_prefix
from archive.tiles import StoreTileSource
from custody.find import iso
from custody.keys import write_key
from hub.catalog import CountyCatalog
from hub.config import HubConfig, StationConfig
from hub.follow import INTEGRITY_STATES, Alarm, Counter, Followed, Step, verify_step
from hub.state import HubState, StationRow
from ledger.checkpoint import Checkpoint, CheckpointError, open_checkpoint
from ledger.cosignature import Cosigner
from ledger.durable import write_atomic
from ledger.entry import decode_entry
from ledger.errors import LedgerError
from ledger.keys import KeyChain, KeyChainError, follow
from ledger.log import Ledger
from ledger.note import NoteError, Signer, b64, parse_note
from ledger.tiles import TileHashReader, TileID, tile_prefix
from ledger.tree import consistency_proof
from witness.protocol import AddCheckpoint, LogState
from witness.state import WitnessState, init_witness, load_cosigner

log = logging.getLogger("custody.hub")

STATES = ("ok", "behind", "silent", "fork", "rollback", "invalid", "unreachable", "new")


class HubError(LedgerError):
    """An operational problem of the hub itself (exit code 2)."""


class TaggedStore(ObjectStore, Protocol):
    def read_small(self, key: str) -> tuple[bytes, str]: ...

    def list_tagged(self, prefix: str) -> Any: ...


def open_station_store(st: StationConfig) -> TaggedStore:
    sc = st.store
    if sc.kind == "local":
        assert sc.path is not None
        return LocalFolderStore(sc.path)
    assert sc.s3 is not None
    return S3Store(sc.s3)


def init_hub(data_dir: Path, name: str) -> tuple[Path, str, str]:
    """The hub's folder: hub.toml, its witness key and state, its own log key and ledger.
    Returns (config path, witness vkey, log vkey)."""
    from hub.config import HUB_FILE, render_hub

    data_dir = data_dir.resolve()
    conf_path = data_dir / HUB_FILE
    if conf_path.exists():
        raise HubError(f"{conf_path} already exists; refusing to overwrite it")
    try:
        signer = Signer.generate(name)
    except NoteError as e:
        raise HubError(f"hub name {name!r} is not usable as a key name: {e}") from None
    for sub in ("", "keys", "ledger", "state"):
        (data_dir / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir / "keys", 0o700)
    key_path = data_dir / "keys" / "hub.key"
    try:
        write_key(key_path, signer)
    except FileExistsError:
        raise HubError(f"{key_path} already exists; refusing to replace the hub's key") from None
    vkey = signer.verifier().vkey()
    write_atomic(data_dir / "keys" / "hub.vkey", (vkey + "\n").encode())
    cosigner = init_witness(data_dir / "witness", name)
    write_atomic(conf_path, render_hub(data_dir, name).encode())
    with Ledger(data_dir / "ledger", data_dir / "state", name, signer) as ledger:
        ledger.append(
            "key", {"action": "create", "vkey": vkey, "witness_vkey": cosigner.verifier().vkey()}
        )
        ledger.integrate()
    return conf_path, cosigner.verifier().vkey(), vkey


def load_hub_signer(conf: HubConfig) -> Signer:
    try:
        return Signer.parse(conf.key_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HubError(
            f"no hub key at {conf.key_path}", "run `custody hub init --data DIR --name NAME`"
        ) from None
    except NoteError as e:
        raise HubError(f"{conf.key_path} is not a hub key: {e}") from None


class StoreReader:
    """Reads tiles of one station's log, counting requests; a partial tile the mirror
    has since replaced is cut from the full tile (or a larger partial)."""

    def __init__(self, store: TaggedStore, origin: str, counter: Counter, size: int) -> None:
        self.store, self.prefix, self.counter, self.size = (
            store,
            ledger_prefix(origin),
            counter,
            size,
        )

    def _get(self, path: str) -> tuple[bytes, str]:
        self.counter.get()
        return self.store.read_small(self.prefix + path)

    def read(self, tid: TileID) -> tuple[bytes, str | None]:
        try:
            if tid.full:
                return self._get(tid.path())
            try:
                return self._get(tid.path())[0], None
            except NotFound:
                pass
            try:
                return tile_prefix(tid, self._get(TileID(tid.level, tid.n).path())[0]), None
            except NotFound:
                pass
            self.counter.list()
            base = TileID(tid.level, tid.n).path() + ".p/"
            widths = sorted(
                int(k.rsplit("/", 1)[-1])
                for k in self.store.list(self.prefix + base)
                if k.rsplit("/", 1)[-1].isdigit()
            )
            for w in widths:
                if tid.width < w < 256:
                    bigger = TileID(tid.level, tid.n, w)
                    return tile_prefix(tid, self._get(bigger.path())[0]), None
        except NotFound:
            pass
        except ValueError as e:  # a bundle too damaged to cut
            raise Alarm("invalid", f"{tid.path()} is malformed: {e}") from None
        raise Alarm(
            "invalid",
            f"{tid.path()} is missing from the bucket, though the signed checkpoint of size "
            f"{self.size} needs it (deleted or never mirrored)",
        )


@dataclass
class Pending:
    """A station's verified steps whose rows wait in the buffer for the catalog."""

    followed: Followed
    checkpoint: str
    keys: list[tuple[int, bytes]] = field(default_factory=list)
    tags: list[tuple[str, str]] = field(default_factory=list)
    roots: list[tuple[int, bytes]] = field(default_factory=list)
    grew: bool = False


@dataclass
class StationResult:
    origin: str
    state: str
    problems: list[str]
    size: int
    new_entries: int = 0
    checkpoint: str | None = None  # the verified checkpoint to cosign (state ok)


@dataclass
class SyncResult:
    stations: list[StationResult]
    entries: int
    gets: int
    lists: int
    seconds: float
    rows: int


class Hub:
    """The hub's state, stores, catalog, witness and ledger, opened once."""

    def __init__(
        self, conf: HubConfig, clock: Callable[[], float] = time.time, catalog: bool = True
    ) -> None:
        self.conf = conf
        self.clock = clock
        if not conf.witness_dir.is_dir():
            raise HubError(
                f"no hub at {conf.data_dir}", "run `custody hub init --data DIR --name NAME` first"
            )
        self.state = HubState(conf.state_db)
        self.witness = WitnessState(conf.witness_dir)
        self.cosigner: Cosigner = load_cosigner(conf.witness_dir)
        self.signer = load_hub_signer(conf)
        self.ledger = Ledger(conf.ledger_dir, conf.state_dir, conf.name, self.signer)
        self._catalog: CountyCatalog | None = CountyCatalog.open(conf.catalog) if catalog else None
        self.counter = Counter()
        self._stores: dict[Any, TaggedStore] = {}
        self._pool: Executor | None = None
        self._io: ThreadPoolExecutor | None = None
        self._buffer: list[Any] = []
        self._buffer_rows = 0
        self._pending: dict[str, Pending] = {}
        self._catalogued: dict[str, int] = {}
        self._rows_written = 0  # catalog rows committed by this process
        for st in conf.stations:
            self.witness.add_log(st.vkey.vkey(), st.origin)

    @property
    def catalog(self) -> CountyCatalog:
        if self._catalog is None:
            self._catalog = CountyCatalog.open(self.conf.catalog)
        return self._catalog

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
        if self._io is not None:
            self._io.shutdown(cancel_futures=True)
        self.ledger.close()
        self.witness.close()
        self.state.close()

    def __enter__(self) -> Hub:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the pass over every station -------------------------------------------------

    def sync(self) -> SyncResult:
        started = time.monotonic()
        gets0, lists0 = self.counter.gets, self.counter.lists
        workers = self.conf.workers or (os.cpu_count() or 1)
        if workers > 1 and self._pool is None:
            ctx = multiprocessing.get_context("forkserver")
            self._pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx)
        if self._io is None:
            self._io = ThreadPoolExecutor(max_workers=8, thread_name_prefix="hub-io")
        self._catalogued = self.catalog.catalogued()
        results = []
        entries = 0
        rows0 = self._rows_written
        for st in self.conf.stations:
            res = self._sync_station(st)
            results.append(res)
            entries += res.new_entries
        self._flush()
        rows = self._rows_written - rows0
        now = int(self.clock())
        for st, res in zip(self.conf.stations, results, strict=True):
            self._finish(st, res, now)
        self.state.set_meta("last_sync", iso(now) or "")
        self.ledger.integrate()
        return SyncResult(
            results,
            entries,
            self.counter.gets - gets0,
            self.counter.lists - lists0,
            time.monotonic() - started,
            rows,
        )

    def _sync_station(self, st: StationConfig) -> StationResult:
        now = int(self.clock())
        origin = st.origin
        row = self.state.station(origin, now)
        if row.fork:  # stays until a supervisor clears it: the same alarm, not a new one
            return StationResult(origin, "fork", [row.fork], row.followed.size)
        try:
            store = self._store(st)
            return self._follow(st, store, row)
        except Alarm as a:
            if a.state == "fork":
                self.state.set_fork(origin, a.problem)
            return StationResult(origin, a.state, [a.problem], row.followed.size)
        except (StoreError, OSError) as e:
            return StationResult(
                origin,
                "unreachable",
                [f"cannot read the station's log from its store: {e}"],
                row.followed.size,
            )

    def _store(self, st: StationConfig) -> TaggedStore:
        """One store object per distinct ``[stations.store]``: stations sharing a bucket
        share its client (a boto3 client is some 10 MB and a fraction of a second)."""
        s = self._stores.get(st.store)
        if s is None:
            s = self._stores[st.store] = open_station_store(st)
        return s

    def _follow(self, st: StationConfig, store: TaggedStore, row: StationRow) -> StationResult:
        origin = st.origin
        prefix = ledger_prefix(origin)
        old = row.followed
        pend = self._pending.get(origin)
        if pend is not None:  # an earlier pass of this sync (not expected) left it here
            old = pend.followed
        if old.size > 0:
            self._check_tags(store, origin, prefix)
        try:
            self.counter.get()
            text_b, _ = store.read_small(prefix + "checkpoint")
        except NotFound:
            if old.size == 0:
                return StationResult(origin, "new", ["no checkpoint in the bucket yet"], 0)
            raise Alarm(
                "invalid",
                f"the bucket has no checkpoint for this station, though the hub verified size "
                f"{old.size}: it was deleted",
            ) from None
        chain = self._chain(st)
        text, cp = _parse_checkpoint(text_b, origin)
        signed = _signed_by(text, chain, cp.size, origin)
        a = old.size
        if cp.size < a:
            if not signed:
                raise Alarm("invalid", _unsigned(cp.size, text, chain))
            raise Alarm(
                "rollback",
                f"the bucket's checkpoint is size {cp.size}, smaller than the size {a} the hub "
                "verified: the station or its mirror was rolled back",
            )
        if cp.size == a:
            if not signed:
                raise Alarm("invalid", _unsigned(cp.size, text, chain))
            if cp.root != old.root:
                raise Alarm(
                    "fork",
                    f"the bucket's checkpoint of size {a} has another root than the one the hub "
                    "verified at that size: the station signed two histories",
                )
            return StationResult(origin, "ok", [], a, 0, text)
        targets = self._targets(store, prefix, a, cp.size)
        catalog_from = max(self._catalogued.get(origin, 0), a)
        witnessed = self.witness.state(origin)
        new_entries = 0
        try:
            for size in targets:
                final = size == cp.size
                if final:
                    t_text, t_cp = text, cp
                else:
                    self.counter.get()
                    t_b, _ = store.read_small(f"{prefix}checkpoints/{size}")
                    t_text, t_cp = _parse_checkpoint(t_b, origin)
                    if t_cp.size != size:
                        raise Alarm("invalid", f"checkpoints/{size} holds size {t_cp.size}")
                watch = {}
                if witnessed is not None and old.size < witnessed.size <= size:
                    watch[witnessed.size] = witnessed.root
                step = verify_step(
                    StoreReader(store, origin, self.counter, size),
                    origin,
                    chain,
                    old,
                    size,
                    t_cp.root,
                    catalog_from,
                    compare_partials=final,
                    watch=watch,
                    pool=self._pool,
                    io=self._io,
                )
                chain = step.chain
                if not _signed_by(t_text, chain, size, origin):
                    raise Alarm("invalid", _unsigned(size, t_text, chain))
                roots = [(size, t_cp.root), *((w, r) for w, r in watch.items())]
                self._emit(origin, step, t_text, roots)
                catalog_from = max(catalog_from, size)
                old = step.followed
                new_entries += step.entries
        except Alarm as alarm:
            if not signed and alarm.state != "fork":
                # A checkpoint the station's chain does not sign: that is the finding,
                # whatever reading the tiles it names ran into.
                raise Alarm("invalid", _unsigned(cp.size, text, chain)) from None
            raise
        return StationResult(origin, "ok", [], old.size, new_entries, text)

    def _chain(self, st: StationConfig) -> KeyChain:
        pend = self._pending.get(st.origin)
        entries = self.state.key_entries(st.origin) + (pend.keys if pend else [])
        try:
            return follow(st.vkey, [(i, decode_entry(leaf)) for i, leaf in entries])
        except (KeyChainError, ValueError) as e:
            raise Alarm("invalid", f"the station's key chain does not hold: {e}") from None

    def _check_tags(self, store: TaggedStore, origin: str, prefix: str) -> None:
        """A full tile or bundle the hub verified must still be the version it read: a
        listing (no tile read again) shows a new version written over one."""
        seen = self.state.tags(origin)
        if not seen:
            return
        self.counter.list()
        listed = 0
        for key, tag in store.list_tagged(prefix + "tile/"):
            path = key[len(prefix) :]
            old = seen.get(path)
            if old is None:
                continue
            listed += 1
            if old != tag:
                raise Alarm(
                    "invalid",
                    f"{path} was replaced in the bucket after the hub verified it (a new "
                    "version was written over a tile that never changes): the log's mirror "
                    "was tampered with",
                )
        if listed != len(seen):
            keys = {k[len(prefix) :] for k in store.list(prefix + "tile/")}
            gone = sorted(p for p in seen if p not in keys)
            if gone:
                raise Alarm(
                    "invalid",
                    f"{gone[0]} (and {len(gone) - 1} more) is gone from the bucket, though the "
                    "hub verified it: a tile that never changes was deleted",
                )

    def _targets(self, store: TaggedStore, prefix: str, a: int, b: int) -> list[int]:
        """The signed sizes to stop at on the way from ``a`` to ``b``: steps of at most
        ``step_entries`` where the station signed a checkpoint there, so the catalogue
        commits in bounded batches, each on a signed checkpoint."""
        step = self.conf.step_entries
        if b - a <= step:
            return [b]
        self.counter.list()
        sizes = sorted(
            int(k.rsplit("/", 1)[-1])
            for k in store.list(prefix + "checkpoints/")
            if k.rsplit("/", 1)[-1].isdigit()
        )
        sizes = [s for s in sizes if a < s < b]
        out: list[int] = []
        cur = a
        i = 0
        while b - cur > step and i < len(sizes):
            best = None
            while i < len(sizes) and sizes[i] <= cur + step:
                best = sizes[i]
                i += 1
            if best is None:  # no signed size within one step: take the next one
                best = sizes[i]
                i += 1
            out.append(best)
            cur = best
        out.append(b)
        return out

    # -- the catalogue, then the verified state ------------------------------------

    def _emit(self, origin: str, step: Step, text: str, roots: list[tuple[int, bytes]]) -> None:
        p = self._pending.get(origin)
        if p is None:
            p = self._pending[origin] = Pending(step.followed, text)
        p.followed, p.checkpoint = step.followed, text
        p.keys += step.new_key_entries
        p.tags += step.tags
        p.roots += roots
        p.grew = True
        self._buffer += step.rows
        self._buffer_rows += step.row_count
        if self._buffer_rows >= self.conf.batch_rows:
            self._flush()

    def _flush(self) -> int:
        """Commit the buffered rows to the catalog (one Iceberg commit, carrying each
        station's catalogued size), then the stations' verified states."""
        if not self._pending:
            return 0
        import pyarrow as pa

        n = self._buffer_rows
        progress = {
            o: max(self._catalogued.get(o, 0), p.followed.size) for o, p in self._pending.items()
        }
        if self._buffer:
            self.catalog.append(pa.concat_tables(self._buffer), progress)
            self._rows_written += n
        self._catalogued.update(progress)
        now = int(self.clock())
        for origin, p in self._pending.items():
            self.state.commit_verified(
                origin, p.followed, p.checkpoint, p.keys, p.tags, p.roots, now, p.grew
            )
            for _i, leaf in p.keys:  # a rotated station key: pushes signed with it are trusted
                new = decode_entry(leaf).payload().get("new_vkey")
                if isinstance(new, str):
                    self.witness.add_log(new, origin)
        self._pending.clear()
        self._buffer = []
        self._buffer_rows = 0
        return n

    # -- states, alarms, cosignatures -----------------------------------------------

    def _finish(self, st: StationConfig, res: StationResult, now: int) -> None:
        origin = st.origin
        row = self.state.station(origin, now)
        ahead_since = None
        if res.state == "ok":
            witnessed = self.witness.state(origin)
            if witnessed is not None and witnessed.size > row.followed.size:
                ahead_since = row.ahead_since or now
                if now - ahead_since >= self.conf.behind_after_s:
                    res.state = "behind"
                    res.problems.append(
                        f"the station signed size {witnessed.size} (pushed to the hub "
                        f"{_ago(now - ahead_since)} ago), but its mirror in the bucket holds "
                        f"only {row.followed.size}: check its store connection and "
                        "`custody status` on the dock"
                    )
            last = row.last_new or row.first_seen or now
            quiet = now - last
            if res.state == "ok" and quiet >= st.silent_after_h * 3600 and _working(st, now):
                res.state = "silent"
                res.problems.append(
                    f"no new checkpoint for {_ago(quiet)} while its schedule says it works: "
                    "is the dock running, and its mirror?"
                )
            if res.checkpoint is not None and res.state != "silent":
                self._cosign(st, res.checkpoint, row)
        self.state.set_status(origin, res.state, res.problems, res.size, now, ahead_since)
        self._alarm(origin, res, row)

    def _alarm(self, origin: str, res: StationResult, row: StationRow) -> None:
        if res.state in ("ok", "new"):
            if row.alarm:
                self.ledger.append("alarm_cleared", {"origin": origin, "was": row.alarm})
                self.state.set_alarm(origin, "")
                log.info("%s: ok again (was %s)", origin, row.alarm)
            return
        problem = "; ".join(res.problems)
        key = (
            res.state
            if res.state in ("behind", "silent", "unreachable")
            else (f"{res.state}: {problem}")
        )
        level = logging.ERROR if res.state in INTEGRITY_STATES else logging.WARNING
        log.log(level, "%s: %s: %s", origin, res.state, problem)
        if key == row.alarm:
            return
        self.ledger.append(
            "alarm",
            {"origin": origin, "state": res.state, "problem": problem[:2000], "size": res.size},
        )
        self.state.set_alarm(origin, key)

    def _cosign(self, st: StationConfig, text: str, row: StationRow) -> None:
        """Cosign the verified checkpoint as the hub's witness and write it back."""
        origin = st.origin
        cp = Checkpoint.parse_body(parse_note(text).text)
        stored = self.witness.state(origin)
        if stored is None or stored.size > cp.size:
            return
        if stored.size == cp.size:
            if stored.root != cp.root:
                raise_fork = (
                    f"the station showed the hub's witness another root for size {cp.size}: "
                    "two histories"
                )
                self.state.set_fork(origin, raise_fork)
                log.error("%s: fork: %s", origin, raise_fork)
            return
        known = self.state.root_at(origin, stored.size)
        cosigned = None
        if known is not None:
            if known != stored.root:
                msg = (
                    f"the tree of size {stored.size} the hub's witness cosigned is not the one "
                    "in the bucket: two histories"
                )
                self.state.set_fork(origin, msg)
                log.error("%s: fork: %s", origin, msg)
                return
            cosigned = self.witness.cosign_known(text, cp, stored, self.cosigner, self.clock)
        else:
            cosigned = self._cosign_with_proof(st, text, cp, stored)
        if cosigned is None:
            return
        self._write_back(st, cp.size, cosigned)

    def _cosign_with_proof(
        self, st: StationConfig, text: str, cp: Checkpoint, stored: LogState
    ) -> str | None:
        """The witness saw a size the hub never stopped at: prove consistency from the
        bucket's tiles (already verified up to the checkpoint) and decide as any request."""
        source = StoreTileSource(self._store(st), st.origin)
        proof = consistency_proof(TileHashReader(source, cp.size), stored.size, cp.size)
        note = parse_note(text)
        req = AddCheckpoint(stored.size, tuple(proof), cp, note, text)
        answer = self.witness.add_checkpoints([req], self.cosigner, self.clock)[0]
        if answer.status != 200 or answer.new_state is None:
            log.warning("%s: the hub's witness did not cosign: %s", st.origin, answer.reason)
            return None
        return answer.new_state.checkpoint

    def _write_back(self, st: StationConfig, size: int, cosigned: str) -> None:
        import hashlib

        kid = self.cosigner.key_id.hex()
        base = f"{ledger_prefix(st.origin)}cosigned/{kid}/"
        data = cosigned.encode()
        sha = hashlib.sha256(data).hexdigest()
        try:
            store = self._store(st)
            store.put(base + str(size), data, sha)
            store.put(base + "checkpoint", data, sha, replace=True)
        except (StoreError, OSError) as e:
            log.warning("%s: cosigned size %d, but cannot write it back: %s", st.origin, size, e)

    def clear(self, origin: str, reason: str, operator: str) -> int:
        """A supervisor has looked at a station held in a fork (or another alarm) and
        lets the hub follow it again: a signed ``alarm_cleared`` entry says who and why.
        The next sync decides the station's state afresh from the bucket."""
        if self.conf.station(origin) is None:
            raise HubError(f"{origin} is not a station in {self.conf.path}")
        row = self.state.station(origin, int(self.clock()))
        was = row.alarm or (f"fork: {row.fork}" if row.fork else "")
        if not was and row.state in ("ok", "new"):
            raise HubError(f"{origin} is not in alarm ({row.state}): nothing to clear")
        index = self.ledger.append(
            "alarm_cleared",
            {"origin": origin, "was": was or row.state, "reason": reason, "operator": operator},
        )
        self.ledger.integrate()
        self.state.set_fork(origin, None)
        self.state.set_alarm(origin, "")
        self.state.set_status(origin, "new", [], None, int(self.clock()), None)
        return index

    # -- the county audit ------------------------------------------------------------

    def audit(
        self,
        sample: int,
        max_seconds: float | None = None,
        seed: int | None = None,
        out: Path | None = None,
    ) -> tuple[Any, list[Path], int]:
        """Re-hash a random sample of stored objects across the stations, check each
        station's completeness, write the reports, and sign an ``audit`` entry.
        Returns (the result, the report files, the entry's index)."""
        from hub.audit import AUDIT_TYPES, plan_audit, run_audit
        from hub.report import write_reports

        now = datetime.fromtimestamp(self.clock(), UTC)
        rows = self.catalog.scan(types=list(AUDIT_TYPES))
        sizes = {
            st.origin: self.state.station(st.origin, int(now.timestamp())).followed.size
            for st in self.conf.stations
        }
        plan = plan_audit(rows, now, sample, seed, sizes)
        stores: dict[str, ObjectStore] = {}
        for st in self.conf.stations:
            try:
                stores[st.origin] = self._store(st)
            except (StoreError, OSError) as e:
                log.warning("%s: no store for the audit: %s", st.origin, e)
        result = run_audit(plan, stores, max_seconds=max_seconds)
        out = out or self.conf.reports_dir / now.strftime("audit-%Y%m%dT%H%M%SZ")
        paths = write_reports(result, out)
        index = self.ledger.append("audit", result.entry_payload())
        self.ledger.integrate()
        return result, paths, index

    # -- status ------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        now = int(self.clock())
        stations = []
        for st in self.conf.stations:
            row = self.state.station(st.origin, now)
            w = self.witness.state(st.origin)
            stations.append(
                {
                    "origin": st.origin,
                    "unit": st.unit,
                    "size": row.followed.size,
                    "root": b64(row.followed.root),
                    "state": "fork" if row.fork else row.state,
                    "problems": row.problems,
                    "checkpoint_size": row.seen_size,
                    "last_new": iso(row.last_new),
                    "last_sync": iso(row.last_sync),
                    "cosigned_size": w.size if w else 0,
                    "pushed_size": row.pushed_size,
                    "catalogued": self._catalogued.get(st.origin),
                }
            )
        latest = self.ledger.latest()
        return {
            "hub": {
                "name": self.conf.name,
                "witness_vkey": self.cosigner.verifier().vkey(),
                "log_vkey": self.signer.verifier().vkey(),
                "ledger_size": latest.size if latest else 0,
                "last_sync": self.state.meta("last_sync"),
                "catalog_rows": self.catalog.count(),
            },
            "stations": stations,
        }


def _parse_checkpoint(data: bytes, origin: str) -> tuple[str, Checkpoint]:
    try:
        text = data.decode("utf-8")
        cp = Checkpoint.parse_body(parse_note(text).text)
    except (UnicodeDecodeError, NoteError, CheckpointError) as e:
        raise Alarm("invalid", f"the bucket's checkpoint is malformed: {e}") from None
    if cp.origin != origin:
        raise Alarm("invalid", f"the bucket's checkpoint names origin {cp.origin!r}")
    return text, cp


def _signed_by(text: str, chain: KeyChain, size: int, origin: str) -> bool:
    try:
        open_checkpoint(text, chain.keys_for_checkpoint(size), origin)
    except CheckpointError:
        return False
    return True


def _unsigned(size: int, text: str, chain: KeyChain) -> str:
    try:
        names = [s.name + "+" + s.key_id.hex() for s in parse_note(text).signatures]
    except NoteError:
        names = []
    trusted = ", ".join(k.vkey().split("+")[0] + "+" + k.key_id.hex() for k in chain.all_keys())
    return (
        f"the bucket's checkpoint of size {size} is not signed by the station's key "
        f"(signed by {', '.join(names) or 'nobody'}; trusted: {trusted}): it was replaced "
        "by someone who does not hold the station key"
    )


def _working(st: StationConfig, now: int) -> bool:
    if not st.schedule:
        return True
    t = datetime.fromtimestamp(now, timezone(timedelta(minutes=st.utc_offset_min)))
    minute = t.hour * 60 + t.minute
    return any(s.covers(t.weekday(), minute) for s in st.schedule)


def _ago(seconds: int) -> str:
    if seconds >= 2 * 86400:
        return f"{seconds // 86400} days"
    if seconds >= 2 * 3600:
        return f"{seconds // 3600} hours"
    if seconds >= 120:
        return f"{seconds // 60} minutes"
    return f"{seconds} s"


def result_json(res: SyncResult) -> dict[str, Any]:
    return {
        "entries": res.entries,
        "gets": res.gets,
        "lists": res.lists,
        "rows": res.rows,
        "seconds": round(res.seconds, 3),
    }


__all__ = [
    "STATES",
    "Hub",
    "HubError",
    "StationResult",
    "SyncResult",
    "init_hub",
    "open_station_store",
    "result_json",
]
