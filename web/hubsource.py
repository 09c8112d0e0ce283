"""`HubSource`: the review site's `Source` over the county hub (every station's footage).

What it reads, and why there:

- **Search, items, cases, overview** come from the county catalog (the Iceberg table
  ``custody.entries``), copied incrementally into a local DuckDB index
  (``<data_dir>/web/hub-index.duckdb``): the table is append-only and each snapshot says,
  per station, below which index rows exist (``custody.catalogued``), so each refresh
  reads only the rows past what the index holds. One row per original (``items``) is
  folded from its ``ingest`` row and the later ``annotate``, ``hold``, ``store``,
  ``probe`` and ``delete`` rows, again only for the objects a refresh touched. Scanning
  ten million rows of Iceberg per page view would take seconds; the folded index
  answers in milliseconds.
- **Entries** (their payloads) are read from the station's entry bundles in the bucket,
  the ones the hub verified, and each leaf is checked against the leaf hash the
  catalog recorded when the hub verified it: a bundle replaced since is caught, not
  shown.
- **Originals and derivatives** stream from the station's store with ranged GETs, a
  window at a time, so memory stays at one chunk whatever the size.
- **Proofs** are built from the station's hash tiles in the bucket at the size the hub
  verified, checked against the station's key chain (the ``vkey`` pinned in hub.toml
  and the ``key`` entries the hub followed), with the witnesses named: the hub's own
  cosignature and any the station's checkpoint carries.
- **Audits** are the county audit's reports; **alarms** the hub's station states;
  **record** appends signed entries to the hub's own ledger (appends are SQLite
  transactions and integration takes the ledger's file lock, so this works while
  `custody hub run` appends and integrates in another process).

Exports are not made here: a bag carries an ``export`` entry signed by the station that
holds the footage, which the hub cannot sign.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from archive.errors import NotFound, StoreError
from archive.local import LocalFolderStore
from archive.s3 import S3Store
from archive.store import ledger_prefix, object_key
from custody.errors import CustodyError
from hub.catalog import CountyCatalog, duckdb_connect, duckdb_entries_sql
from hub.config import HubConfig, StationConfig
from hub.follow import Alarm, Counter
from hub.state import HubState
from hub.sync import StoreReader, TaggedStore, load_hub_signer, open_station_store
from ledger.checkpoint import Checkpoint, CheckpointError
from ledger.cosignature import CosignatureVerifier
from ledger.entry import decode_entry
from ledger.errors import LedgerError
from ledger.keys import KeyChain, KeyChainError, follow
from ledger.log import Ledger
from ledger.note import NoteError, Verifier, parse_note
from ledger.policy import PolicyError, parse_policy
from ledger.proof import ProofError, TlogProof
from ledger.tiles import TILE_WIDTH, TileHashReader, TileID, bundle_for_size, decode_bundle
from ledger.tree import inclusion_proof, leaf_hash
from verify.witnesses import NOT_CHECKED, witnessing
from web.source import SHA256_RE, Blob, FindQuery, Item

log = logging.getLogger("custody.web.hub")

CHUNK = 1 << 20  # bytes handed to the response at a time
WINDOW = 8 << 20  # bytes asked of the store per ranged GET
REFRESH_S = 10.0  # how often a page view may look for a newer catalog snapshot
BUNDLES_KEPT = 64  # decoded entry bundles kept (an object's entries sit in one or two)
INDEX_FILE = "hub-index.duckdb"
INDEX_VERSION = "1"
ALARM_SCAN = 4096  # hub ledger entries read back to find when a station's alarm began
EXPORT_REFUSED = (
    "exports are made on the station that holds the recording: a bag carries an export "
    "entry signed by that station, which the hub cannot sign; ask the station's "
    "supervisor (custody export on the dock, or its review site)"
)

# The catalog columns the index keeps; rows about no object (notes, keys, policies) are
# left out, except case holds.
_ROW_COLUMNS = (
    "origin",
    "leaf_index",
    "leaf_hash",
    "type",
    "time",
    "sha256",
    "unit",
    "officer",
    "recorder",
    "size",
    "media_type",
    "cases",
    "category",
    "important",
    "recorded",
    "duration_ms",
    "role",
    "retain_until",
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS idx.meta (name VARCHAR PRIMARY KEY, value VARCHAR);
CREATE TABLE IF NOT EXISTS idx.rows (
    origin VARCHAR, leaf_index BIGINT, leaf_hash VARCHAR, type VARCHAR,
    time TIMESTAMPTZ, sha256 VARCHAR, unit VARCHAR, officer VARCHAR, recorder VARCHAR,
    size BIGINT, media_type VARCHAR, cases VARCHAR[], category VARCHAR, important BOOLEAN,
    recorded TIMESTAMPTZ, duration_ms BIGINT, role VARCHAR, retain_until TIMESTAMPTZ,
    file_name VARCHAR, batch INTEGER
);
CREATE TABLE IF NOT EXISTS idx.items (
    origin VARCHAR, sha256 VARCHAR, ingest_entry BIGINT, file_name VARCHAR,
    captured TIMESTAMPTZ, recorded TIMESTAMPTZ, size BIGINT, media_type VARCHAR,
    unit VARCHAR, recorder VARCHAR, officer VARCHAR, category VARCHAR,
    category_from VARCHAR, important BOOLEAN, important_from VARCHAR, cases VARCHAR[],
    store_entry BIGINT, retain_until TIMESTAMPTZ, deleted_entry BIGINT, held BOOLEAN,
    duration_ms BIGINT
);
"""

# Fold the rows of the touched objects into one item each (the latest capture of the
# object at that station; later entries about it). A re-capture after a deletion starts
# a new item: entries before the latest ingest belong to the earlier one.
_FOLD = """
INSERT INTO idx.items
WITH ing AS (
    SELECT r.* FROM idx.rows r JOIN touched t ON r.origin = t.origin AND r.sha256 = t.sha256
    WHERE r.type = 'ingest'
    QUALIFY row_number() OVER (PARTITION BY r.origin, r.sha256 ORDER BY r.leaf_index DESC) = 1
),
about AS (
    SELECT r.origin, r.sha256, r.leaf_index, r.type, r.cases, r.category, r.important,
           r.duration_ms, r.role, r.retain_until
    FROM idx.rows r JOIN ing i ON r.origin = i.origin AND r.sha256 = i.sha256
    WHERE r.leaf_index > i.leaf_index
),
later AS (
    SELECT origin, sha256,
        arg_max(category, leaf_index) FILTER (WHERE type = 'annotate' AND category IS NOT NULL)
            AS category,
        arg_max(important, leaf_index) FILTER (WHERE type = 'annotate' AND important IS NOT NULL)
            AS important,
        flatten(list(cases) FILTER (WHERE type = 'annotate' AND cases IS NOT NULL)) AS cases,
        max(leaf_index) FILTER (WHERE type = 'store' AND coalesce(role, 'original') = 'original')
            AS store_entry,
        max(retain_until) FILTER (WHERE type IN ('store', 'lock')) AS retain_until,
        min(leaf_index) FILTER (WHERE type = 'delete' AND coalesce(role, 'original') = 'original')
            AS deleted_entry,
        arg_max(type, leaf_index) FILTER (WHERE type IN ('hold', 'hold_release')) AS last_hold,
        max(duration_ms) FILTER (WHERE type = 'probe') AS duration_ms
    FROM about GROUP BY origin, sha256
),
case_holds AS (
    SELECT origin, c AS case_no FROM (
        SELECT origin, unnest(cases) AS c, type, leaf_index FROM idx.rows
        WHERE type IN ('hold', 'hold_release') AND sha256 IS NULL AND cases IS NOT NULL
    ) GROUP BY origin, c HAVING arg_max(type, leaf_index) = 'hold'
),
folded AS (
    SELECT i.origin, i.sha256, i.leaf_index AS ingest_entry, i.file_name,
        i.time AS captured, i.recorded, i.size, i.media_type, i.unit, i.recorder, i.officer,
        coalesce(l.category, i.category) AS category,
        CASE WHEN l.category IS NOT NULL THEN 'annotation'
             WHEN i.category IS NOT NULL THEN 'file name pattern' END AS category_from,
        coalesce(l.important, i.important, false) AS important,
        CASE WHEN l.important IS NOT NULL THEN 'annotation'
             WHEN i.important IS NOT NULL THEN 'file name pattern' END AS important_from,
        list_sort(list_distinct(coalesce(l.cases, []::VARCHAR[]))) AS cases,
        l.store_entry, l.retain_until, l.deleted_entry,
        coalesce(l.last_hold = 'hold', false) AS held_object,
        l.duration_ms
    FROM ing i LEFT JOIN later l ON l.origin = i.origin AND l.sha256 = i.sha256
)
SELECT f.origin, f.sha256, f.ingest_entry, f.file_name, f.captured, f.recorded, f.size,
    f.media_type, f.unit, f.recorder, f.officer, f.category, f.category_from, f.important,
    f.important_from, f.cases, f.store_entry, f.retain_until, f.deleted_entry,
    f.held_object OR EXISTS (
        SELECT 1 FROM case_holds h WHERE h.origin = f.origin AND list_contains(f.cases, h.case_no)
    ) AS held,
    f.duration_ms
FROM folded f
"""

_ITEM_COLUMNS = (
    "origin",
    "sha256",
    "ingest_entry",
    "file_name",
    "captured",
    "recorded",
    "size",
    "media_type",
    "unit",
    "recorder",
    "officer",
    "category",
    "category_from",
    "important",
    "important_from",
    "cases",
    "store_entry",
    "retain_until",
    "deleted_entry",
    "held",
    "duration_ms",
)
_TIMES = frozenset(("captured", "recorded", "retain_until"))
_SELECT_ITEMS = ", ".join(
    f"CAST(epoch({c}) AS BIGINT)" if c in _TIMES else c for c in _ITEM_COLUMNS
)


def _q(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _get_range(store: TaggedStore, key: str, start: int, end: int) -> Iterator[bytes]:
    """Bytes ``start`` .. ``end`` (exclusive) of an object from one ranged GET, in
    chunks of at most ``CHUNK``."""
    own = getattr(store, "get_range", None)
    if own is not None:
        got: Iterator[bytes] = own(key, start, end, CHUNK)
        return got
    if isinstance(store, S3Store):
        import botocore.exceptions as bx

        try:
            r = store.client.get_object(
                Bucket=store.bucket, Key=store.prefix + key, Range=f"bytes={start}-{end - 1}"
            )
        except (bx.ClientError, bx.BotoCoreError) as e:
            raise store._error(e, key, "download") from e
        return store._stream(r["Body"], key, CHUNK)
    if isinstance(store, LocalFolderStore):
        return _file_range(store.root / key, key, start, end)
    raise StoreError(f"{key}: this store cannot read byte ranges")


def _file_range(path: Path, key: str, start: int, end: int) -> Iterator[bytes]:
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed by the generator
    except FileNotFoundError:
        raise NotFound(f"{key}: not in the store") from None

    def chunks() -> Iterator[bytes]:
        with f:
            f.seek(start)
            left = end - start
            while left > 0 and (b := f.read(min(CHUNK, left))):
                left -= len(b)
                yield b

    return chunks()


def range_reader(store: TaggedStore, key: str, size: int) -> Callable[[int, int], Iterator[bytes]]:
    """``read(start, end)`` over one stored object: a ranged GET per ``WINDOW``, streamed
    in ``CHUNK`` pieces, so a 2 GB original is served with one chunk in memory."""

    def read(start: int, end: int) -> Iterator[bytes]:
        end = min(end, size)
        pos = max(0, start)
        while pos < end:
            stop = min(end, pos + WINDOW)
            got = 0
            for chunk in _get_range(store, key, pos, stop):
                got += len(chunk)
                yield chunk
            if got != stop - pos:
                raise StoreError(
                    f"{key}: the store returned {got} bytes for bytes {pos}-{stop - 1}"
                )
            pos = stop

    return read


class _BucketTiles:
    """`TileSource` over a station's mirror, one GET per tile (a partial tile collected
    into its full one is cut from it, as the hub's follower reads)."""

    def __init__(self, reader: StoreReader) -> None:
        self.reader = reader

    def read_tile(self, tile: TileID) -> bytes:
        try:
            return self.reader.read(tile)[0]
        except Alarm as a:
            raise FileNotFoundError(a.problem) from None


class HubSource:
    """The `web.source.Source` of `custody hub -c HUBCFG web`."""

    kind = "hub"

    def __init__(
        self,
        conf: HubConfig,
        refresh_s: float = REFRESH_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.conf = conf
        self.name = conf.name
        self.refresh_s = refresh_s
        self.clock = clock
        if not conf.witness_dir.is_dir():
            raise CustodyError(
                f"no hub at {conf.data_dir}: run `custody hub init --data DIR --name NAME` first"
            )
        self.catalog = CountyCatalog.open(conf.catalog)
        self._state = HubState(conf.state_db)
        self._state_lock = threading.Lock()
        self.ledger = Ledger(conf.ledger_dir, conf.state_dir, conf.name, load_hub_signer(conf))
        self._stores: dict[Any, TaggedStore] = {}
        self._stores_lock = threading.Lock()
        self._bundles: OrderedDict[tuple[str, int, int], list[bytes]] = OrderedDict()
        self._bundles_lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._checked = 0.0  # when the catalog was last looked at
        self._loaded = False
        self._has_file_name = "file_name" in {f.name for f in self.catalog.table.schema().fields}
        self._db = duckdb_connect(conf.catalog)
        web = conf.data_dir / "web"
        web.mkdir(mode=0o700, exist_ok=True)
        self._access_lock = threading.Lock()
        self._access_db = sqlite3.connect(web / "hub-access.sqlite", check_same_thread=False)
        self._access_db.execute(
            "CREATE TABLE IF NOT EXISTS access (sha256 TEXT NOT NULL, entry INTEGER NOT NULL, "
            "PRIMARY KEY (sha256, entry))"
        )
        self._attach()
        self._witness_key: CosignatureVerifier | None = None

    # -- the local index ------------------------------------------------------------

    def _attach(self) -> None:
        folder = self.conf.data_dir / "web"
        path = folder / INDEX_FILE
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._db.execute(f"ATTACH {_q(str(path))} AS idx")
        except (OSError, duckdb.Error) as e:
            # Another process holds the file (a second web server): index in memory.
            log.warning("hub index %s not usable (%s); keeping it in memory", path, e)
            self._db.execute("ATTACH ':memory:' AS idx")
        self._db.execute(_SCHEMA)
        version = self._meta("version")
        if version not in (None, INDEX_VERSION):
            self._reset()
        self._db.execute("INSERT OR REPLACE INTO idx.meta VALUES ('version', ?)", [INDEX_VERSION])

    def _meta(self, name: str, cur: duckdb.DuckDBPyConnection | None = None) -> str | None:
        r = (
            (cur or self._db)
            .execute("SELECT value FROM idx.meta WHERE name = ?", [name])
            .fetchone()
        )
        return None if r is None else str(r[0])

    def _reset(self) -> None:
        for t in ("rows", "items"):
            self._db.execute(f"DELETE FROM idx.{t}")
        self._db.execute("DELETE FROM idx.meta WHERE name <> 'version'")

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        """A connection of this thread's own (DuckDB connections are not shared between
        threads), after the index has caught up with the catalog if it is time to look."""
        self.refresh()
        return self._db.cursor()

    def refresh(self, force: bool = False) -> bool:
        """Bring the index up to the catalog's current snapshot (at most every
        ``refresh_s``, unless ``force``). Returns whether rows were added."""
        now = self.clock()
        if not force and self._loaded and now - self._checked < self.refresh_s:
            return False
        # Only the first load makes readers wait; later ones let them read the index
        # as it stands while one thread catches up.
        if not self._refresh_lock.acquire(blocking=not self._loaded or force):
            return False
        try:
            if not force and self._loaded and self.clock() - self._checked < self.refresh_s:
                return False
            try:
                added = self._catch_up()
            except Exception as e:
                if not self._loaded:
                    raise
                # The catalog is busy or away for a moment: pages keep reading the index
                # as it stands, and the next look is in refresh_s.
                log.warning("the county catalog cannot be read now (%s); the index waits", e)
                added = False
            self._checked = self.clock()
            self._loaded = True
            return added
        finally:
            self._refresh_lock.release()

    def _catch_up(self) -> bool:
        self.catalog.refresh()
        location = self.catalog.metadata_location
        cur = self._db.cursor()
        if self._meta("location", cur) == location:
            return False
        progress = self.catalog.catalogued()
        have: dict[str, int] = json.loads(self._meta("progress", cur) or "{}")
        if any(progress.get(o, 0) < n for o, n in have.items()):
            # The catalog went back (made anew): the index starts over with it.
            log.warning("the county catalog holds fewer rows than the web index: re-indexing")
            self._reset()
            have = {}
        ranges = [
            f"(origin = {_q(o)} AND leaf_index >= {int(have.get(o, 0))} AND leaf_index < {int(n)})"
            for o, n in sorted(progress.items())
            if n > have.get(o, 0)
        ]
        added = False
        cur.execute("BEGIN TRANSACTION")
        try:
            if ranges:
                batch = int(self._meta("batch", cur) or "0") + 1
                cols = ", ".join(_ROW_COLUMNS)
                name = "file_name" if self._has_file_name else "NULL"
                cur.execute(
                    f"INSERT INTO idx.rows SELECT {cols}, {name}, {batch} "
                    f"FROM {duckdb_entries_sql(location)} "
                    "WHERE (sha256 IS NOT NULL OR type IN ('hold', 'hold_release')) "
                    f"AND ({' OR '.join(ranges)})"
                )
                self._fold(cur, batch)
                cur.execute("INSERT OR REPLACE INTO idx.meta VALUES ('batch', ?)", [str(batch)])
                added = True
            cur.execute(
                "INSERT OR REPLACE INTO idx.meta VALUES ('progress', ?), ('location', ?)",
                [json.dumps(progress, sort_keys=True), location],
            )
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        finally:
            cur.close()
        return added

    def _fold(self, cur: duckdb.DuckDBPyConnection, batch: int) -> None:
        """Fold again every item the new rows touch: the objects they name, and the
        objects of the cases a new case hold (or release) names."""
        cur.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE touched AS
            SELECT DISTINCT origin, sha256 FROM idx.rows
            WHERE batch = {batch} AND sha256 IS NOT NULL
            UNION
            SELECT DISTINCT a.origin, a.sha256 FROM idx.rows a JOIN (
                SELECT origin, unnest(cases) AS c FROM idx.rows
                WHERE batch = {batch} AND type IN ('hold', 'hold_release') AND sha256 IS NULL
                  AND cases IS NOT NULL
            ) h ON a.origin = h.origin
            WHERE a.type = 'annotate' AND list_contains(a.cases, h.c)
            """
        )
        cur.execute(
            "DELETE FROM idx.items USING touched t "
            "WHERE idx.items.origin = t.origin AND idx.items.sha256 = t.sha256"
        )
        cur.execute(_FOLD)
        cur.execute("DROP TABLE touched")

    # -- search ---------------------------------------------------------------------

    def _item(self, row: Sequence[Any]) -> Item:
        d = dict(zip(_ITEM_COLUMNS, row, strict=True))
        st = self.conf.station(d["origin"])
        d["cases"] = list(d["cases"] or [])
        d["held"] = bool(d["held"])
        d["important"] = bool(d["important"])
        d["deleted"] = d["deleted_entry"] is not None
        stored = d["store_entry"] is not None and not d["deleted"]
        d["store"] = _store_name(st) if stored and st is not None else None
        # What a station knows and the catalog does not carry: unknown here.
        d["recorded_from"] = None
        d["storage_class"] = None
        d["local"] = None
        d["complete"] = None
        d["damage"] = None
        d["unit_label"] = st.unit if st is not None else ""
        return d

    def find(self, q: FindQuery, offset: int, limit: int) -> tuple[list[Item], int]:
        if q.shas is not None and not q.shas:
            return [], 0
        where = ["deleted_entry IS NULL"]
        args: list[Any] = []
        for col, v in (
            ("officer", q.officer),
            ("recorder", q.recorder),
            ("unit", q.unit),
            ("category", q.category),
        ):
            if v:
                where.append(f"{col} = ?")
                args.append(v)
        if q.case:
            where.append("list_contains(cases, ?)")
            args.append(q.case)
        if q.since is not None:
            where.append("coalesce(recorded, captured) >= to_timestamp(?)")
            args.append(int(q.since))
        if q.until is not None:
            where.append("coalesce(recorded, captured) < to_timestamp(?)")
            args.append(int(q.until))
        if q.shas is not None:
            where.append("sha256 IN (SELECT unnest(?::VARCHAR[]))")
            args.append(sorted(q.shas))
        if q.units:
            where.append("unit IN (SELECT unnest(?::VARCHAR[]))")
            args.append(list(q.units))
        cond = " AND ".join(where)
        cur = self._cursor()
        try:
            total = cur.execute(f"SELECT count(*) FROM idx.items WHERE {cond}", args).fetchone()
            rows = cur.execute(
                f"SELECT {_SELECT_ITEMS} FROM idx.items WHERE {cond} "
                "ORDER BY coalesce(recorded, captured), sha256, origin LIMIT ? OFFSET ?",
                [*args, max(0, int(limit)), max(0, int(offset))],
            ).fetchall()
        finally:
            cur.close()
        return [self._item(r) for r in rows], int(total[0]) if total else 0

    def _items_of(self, sha256: str) -> list[Item]:
        """Every capture of the object across stations, the one still held first."""
        if not SHA256_RE.fullmatch(sha256):
            return []
        cur = self._cursor()
        try:
            rows = cur.execute(
                f"SELECT {_SELECT_ITEMS} FROM idx.items WHERE sha256 = ? "
                "ORDER BY deleted_entry IS NOT NULL, captured, origin",
                [sha256],
            ).fetchall()
        finally:
            cur.close()
        return [self._item(r) for r in rows]

    def item(self, sha256: str) -> Item | None:
        items = self._items_of(sha256)
        if not items:
            return None
        it = items[0]
        if it["file_name"] is None:
            fields = self._fields(it["origin"], int(it["ingest_entry"]), None)
            if fields is not None:
                it["file_name"] = _file_name(fields)
        if len(items) > 1:
            it["also_at"] = [o["origin"] for o in items[1:]]
        return it

    def case_objects(self, case: str) -> list[str]:
        cur = self._cursor()
        try:
            rows = cur.execute(
                "SELECT sha256, CAST(epoch(min(coalesce(recorded, captured))) AS BIGINT) AS t "
                "FROM idx.items "
                "WHERE list_contains(cases, ?) GROUP BY sha256 ORDER BY t, sha256",
                [case],
            ).fetchall()
        finally:
            cur.close()
        return [str(r[0]) for r in rows]

    def overview(self) -> list[dict[str, Any]]:
        """Per station and unit: recordings held (not deleted), their bytes, hours
        (from the probes' durations; None when no recording was probed), cases and
        recordings under a hold."""
        rows = self._rows(
            """
            WITH live AS (SELECT * FROM idx.items WHERE deleted_entry IS NULL),
            cases AS (
                SELECT origin, unit, count(DISTINCT c) AS n
                FROM (SELECT origin, unit, unnest(cases) AS c FROM live)
                GROUP BY origin, unit
            )
            SELECT l.origin, l.unit, count(*), coalesce(sum(l.size), 0),
                CASE WHEN count(l.duration_ms) > 0
                     THEN sum(l.duration_ms) / 3600000.0 END,
                coalesce(any_value(c.n), 0), count(*) FILTER (WHERE l.held)
            FROM live l LEFT JOIN cases c
                ON c.origin = l.origin AND c.unit IS NOT DISTINCT FROM l.unit
            GROUP BY l.origin, l.unit ORDER BY l.unit NULLS LAST, l.origin
            """,
            [],
        )
        out = []
        for origin, unit, n, nbytes, hours, cases, held in rows:
            st = self.conf.station(origin)
            out.append(
                {
                    "origin": origin,
                    "unit": unit,
                    "unit_label": st.unit if st is not None else "",
                    "recordings": int(n),
                    "bytes": int(nbytes),
                    "hours": None if hours is None else float(hours),
                    "cases": int(cases),
                    "held": int(held),
                }
            )
        return out

    # -- entries, read back from the bucket ----------------------------------------

    def _store(self, st: StationConfig) -> TaggedStore:
        with self._stores_lock:
            s = self._stores.get(st.store)
            if s is None:
                s = self._stores[st.store] = open_station_store(st)
            return s

    def _verified_size(self, origin: str) -> int:
        with self._state_lock:
            r = self._state.db.execute(
                "SELECT size FROM stations WHERE origin = ?", (origin,)
            ).fetchone()
        return int(r[0]) if r else 0

    def _bundle(self, st: StationConfig, n: int, size: int) -> list[bytes]:
        tid = bundle_for_size(n, size)
        key = (st.origin, n, tid.width)
        with self._bundles_lock:
            got = self._bundles.get(key)
            if got is not None:
                self._bundles.move_to_end(key)
                return got
        reader = StoreReader(self._store(st), st.origin, Counter(), size)
        data, _ = reader.read(tid)
        leaves = decode_bundle(data)
        with self._bundles_lock:
            self._bundles[key] = leaves
            while len(self._bundles) > BUNDLES_KEPT:
                self._bundles.popitem(last=False)
        return leaves

    def _leaf(self, origin: str, index: int, expect: str | None) -> bytes | None:
        """Entry ``index`` of a station's log from its bucket, checked against the leaf
        hash the hub recorded when it verified it (None: unreadable or not the same)."""
        st = self.conf.station(origin)
        if st is None:
            return None
        size = max(self._verified_size(origin), index + 1)
        if expect is None:
            cur = self._cursor()
            try:
                r = cur.execute(
                    "SELECT leaf_hash FROM idx.rows WHERE origin = ? AND leaf_index = ?",
                    [origin, index],
                ).fetchone()
            finally:
                cur.close()
            if r is None:
                return None
            expect = str(r[0])
        try:
            leaves = self._bundle(st, index // TILE_WIDTH, size)
            leaf = leaves[index % TILE_WIDTH]
        except (Alarm, StoreError, OSError, ValueError, IndexError) as e:
            log.warning("%s: entry %d cannot be read from the bucket: %s", origin, index, e)
            return None
        if leaf_hash(leaf).hex() != expect:
            log.error(
                "%s: entry %d in the bucket is not the one the hub verified (leaf hash differs)",
                origin,
                index,
            )
            with self._bundles_lock:
                for k in [k for k in self._bundles if k[0] == origin]:
                    del self._bundles[k]
            return None
        return leaf

    def _fields(self, origin: str, index: int, expect: str | None) -> dict[str, Any] | None:
        """The entry's fields (without its signature), as the station signed them."""
        leaf = self._leaf(origin, index, expect)
        if leaf is None:
            return None
        try:
            fields = dict(decode_entry(leaf).fields)
        except ValueError:
            return None
        fields.pop("sig", None)
        return fields

    def _rows(self, sql: str, args: Sequence[Any]) -> list[tuple[Any, ...]]:
        cur = self._cursor()
        try:
            return cur.execute(sql, list(args)).fetchall()
        finally:
            cur.close()

    def cases_of(self, sha256: str) -> list[str]:
        """The cases the object is linked to, at every station that holds it."""
        rows = self._rows(
            "SELECT DISTINCT unnest(cases) AS c FROM idx.items WHERE sha256 = ? ORDER BY c",
            [sha256],
        )
        return [str(r[0]) for r in rows]

    def entries(self, sha256: str) -> list[dict[str, Any]]:
        """Every entry about the object at every station that holds it: those naming it,
        those naming the copies made from it, and the holds on its cases; in time order
        (then by station and index)."""
        if not SHA256_RE.fullmatch(sha256):
            return []
        cols = "origin, leaf_index, type, CAST(epoch(time) AS BIGINT), leaf_hash"
        rows = self._rows(f"SELECT {cols} FROM idx.rows WHERE sha256 = ?", [sha256])
        found: dict[tuple[str, int], tuple[Any, ...]] = {(r[0], int(r[1])): r for r in rows}
        fields: dict[tuple[str, int], dict[str, Any] | None] = {}
        for (origin, index), r in list(found.items()):
            if r[2] != "derive":
                continue
            f = fields[(origin, index)] = self._fields(origin, index, r[4])
            out = (f or {}).get("output")
            osha = out.get("sha256") if isinstance(out, dict) else None
            if isinstance(osha, str) and SHA256_RE.fullmatch(osha):
                for d in self._rows(
                    f"SELECT {cols} FROM idx.rows WHERE origin = ? AND sha256 = ?", [origin, osha]
                ):
                    found[(d[0], int(d[1]))] = d
        for origin, cases in self._rows(
            "SELECT origin, cases FROM idx.items WHERE sha256 = ? AND len(cases) > 0", [sha256]
        ):
            for h in self._rows(
                f"SELECT {cols} FROM idx.rows WHERE origin = ? AND sha256 IS NULL "
                "AND type IN ('hold', 'hold_release') AND list_has_any(cases, ?::VARCHAR[])",
                [origin, list(cases)],
            ):
                found[(h[0], int(h[1]))] = h
        out_list = []
        for (origin, index), (_, _, ty, t, lh) in sorted(
            found.items(),
            key=lambda kv: (kv[1][3] is None, kv[1][3] or 0, kv[0][0], kv[0][1]),
        ):
            f = (
                fields[(origin, index)]
                if (origin, index) in fields
                else self._fields(origin, index, lh)
            )
            e: dict[str, Any] = {
                "origin": origin,
                "index": index,
                "type": ty,
                "time": f.get("time") if f else _rfc3339(t),
                "fields": f,
            }
            if f is None:
                e["problem"] = (
                    "the entry cannot be read back from the station's bucket as the hub "
                    "verified it (missing, or replaced since)"
                )
            out_list.append(e)
        # Who reached it through the hub's site: the hub's own access entries.
        out_list += [
            {"origin": self.name, "index": i, "type": "access", "time": f.get("time"), "fields": f}
            for i, f in self._own_access(sha256)
        ]
        return out_list

    def _own_access(self, sha256: str) -> list[tuple[int, dict[str, Any]]]:
        with self._access_lock:
            rows = self._access_db.execute(
                "SELECT entry FROM access WHERE sha256 = ? ORDER BY entry", (sha256,)
            ).fetchall()
        out = []
        for (i,) in rows:
            f = dict(decode_entry(self.ledger.entry(int(i))).fields)
            f.pop("sig", None)
            out.append((int(i), f))
        return out

    # -- footage ------------------------------------------------------------------------

    def blob(self, sha256: str, kind: str) -> Blob | None:
        it = self._items_of(sha256)
        it = [i for i in it if i["store_entry"] is not None and not i["deleted"]]
        if not it:
            return None
        origin = str(it[0]["origin"])
        st = self.conf.station(origin)
        if st is None:
            return None
        if kind == "original":
            return self._blob(st, sha256, it[0]["media_type"] or "application/octet-stream")
        want = {"access": "access_copy", "poster": "poster"}.get(kind)
        if want is None:
            return None
        cur = self._cursor()
        try:
            derives = cur.execute(
                "SELECT leaf_index, leaf_hash FROM idx.rows WHERE origin = ? AND sha256 = ? "
                "AND type = 'derive' ORDER BY leaf_index DESC",
                [origin, sha256],
            ).fetchall()
        finally:
            cur.close()
        for index, lh in derives:
            fields = self._fields(origin, int(index), lh)
            if not fields or fields.get("kind") != want:
                continue
            out = fields.get("output")
            if not isinstance(out, dict) or not isinstance(out.get("sha256"), str):
                continue
            osha = str(out["sha256"])
            if not SHA256_RE.fullmatch(osha) or not self._stored(origin, osha):
                continue
            media = out.get("media_type")
            default = "video/mp4" if want == "access_copy" else "image/jpeg"
            return self._blob(st, osha, media if isinstance(media, str) else default)
        return None

    def _stored(self, origin: str, sha256: str) -> bool:
        """A derivative's store entry, with no deletion after it."""
        cur = self._cursor()
        try:
            r = cur.execute(
                "SELECT max(leaf_index) FILTER (WHERE type = 'store'), "
                "max(leaf_index) FILTER (WHERE type = 'delete') "
                "FROM idx.rows WHERE origin = ? AND sha256 = ?",
                [origin, sha256],
            ).fetchone()
        finally:
            cur.close()
        return r is not None and r[0] is not None and (r[1] is None or r[1] < r[0])

    def _blob(self, st: StationConfig, sha256: str, media_type: str) -> Blob | None:
        store = self._store(st)
        key = object_key(sha256)
        try:
            head = store.head(key)
        except StoreError as e:
            log.warning("%s: %s cannot be looked up: %s", st.origin, key, e)
            return None
        if head is None:
            return None
        return Blob(head.size, media_type, None, range_reader(store, key, head.size))

    # -- proofs ---------------------------------------------------------------------------

    def _chain(self, st: StationConfig) -> KeyChain:
        with self._state_lock:
            entries = self._state.key_entries(st.origin)
        return follow(st.vkey, [(i, decode_entry(leaf)) for i, leaf in entries])

    def witness_key(self) -> CosignatureVerifier | None:
        """The hub's witness key, as its own log's first entry announces it."""
        if self._witness_key is None:
            try:
                payload = decode_entry(self.ledger.entry(0)).payload()
                self._witness_key = CosignatureVerifier.parse(str(payload["witness_vkey"]))
            except (LedgerError, KeyError, ValueError, NoteError):
                return None
        return self._witness_key

    def _checkpoint(self, st: StationConfig, size: int) -> str | None:
        """The station's checkpoint of ``size`` with the hub's cosignature when there is
        one (the hub wrote it back beside the station's checkpoints), else as verified."""
        wk = self.witness_key()
        if wk is not None:
            key = f"{ledger_prefix(st.origin)}cosigned/{wk.key_id.hex()}/{size}"
            try:
                return self._store(st).read_small(key)[0].decode("utf-8")
            except (NotFound, UnicodeDecodeError):
                pass
            except (StoreError, OSError) as e:
                log.warning("%s: cannot read %s: %s", st.origin, key, e)
        with self._state_lock:
            r = self._state.db.execute(
                "SELECT checkpoint FROM stations WHERE origin = ? AND size = ?",
                (st.origin, size),
            ).fetchone()
        return None if r is None or r[0] is None else str(r[0])

    def proof(self, sha256: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "index": None,
            "size": None,
            "root": None,
            "checkpoint": None,
            "proof": None,
            "ok": False,
            "station_key": None,
            "witnesses": [],
            "quorum": None,
            "problems": [],
        }
        problems: list[str] = out["problems"]
        items = self._items_of(sha256)
        if not items:
            problems.append("no station the hub follows has captured this object")
            return out
        it = items[0]
        origin, index = str(it["origin"]), int(it["ingest_entry"])
        out["origin"] = origin
        out["index"] = index
        st = self.conf.station(origin)
        if st is None:
            problems.append(f"{origin} is no longer a station in {self.conf.path}")
            return out
        size = self._verified_size(origin)
        if size <= index:
            problems.append(
                f"the hub has verified {origin} only up to size {size}; the next sync "
                "covers this entry"
            )
            return out
        out["size"] = size
        text = self._checkpoint(st, size)
        if text is None:
            problems.append(f"no checkpoint of size {size} for {origin}")
            return out
        out["checkpoint"] = text
        try:
            chain = self._chain(st)
        except (KeyChainError, ValueError) as e:
            problems.append(f"the station's key chain does not hold: {e}")
            return out
        keys = chain.keys_for_checkpoint(size)
        out["station_key"] = chain.current().vkey()
        leaf = self._leaf(origin, index, None)
        if leaf is None:
            problems.append(
                f"entry {index} cannot be read back from {origin}'s bucket as the hub "
                "verified it (missing, or replaced since)"
            )
        try:
            reader = TileHashReader(
                _BucketTiles(StoreReader(self._store(st), origin, Counter(), size)), size
            )
            hashes = inclusion_proof(reader, index, size)
        except (OSError, StoreError, ValueError) as e:
            problems.append(f"the hash tiles of {origin} cannot be read from its bucket: {e}")
            return out
        tp = TlogProof(index, tuple(hashes), text)
        out["proof"] = tp.format()
        if leaf is not None:
            try:
                sc = TlogProof.parse(out["proof"]).verify(leaf, keys, origin)
                out["ok"] = True
                out["root"] = sc.checkpoint.root.hex()
                out["station_key"] = sc.verified_by[0].vkey() if sc.verified_by else None
            except ProofError as e:
                problems.append(f"the inclusion proof does not verify: {e}")
        if out["root"] is None:
            with contextlib.suppress(NoteError, CheckpointError):
                out["root"] = Checkpoint.parse_body(parse_note(text).text).root.hex()
        self._witnesses(out, text, keys, st)
        return out

    def _witnesses(
        self, out: dict[str, Any], text: str, keys: Sequence[Verifier], st: StationConfig
    ) -> None:
        """Name every cosignature on the checkpoint; the hub's own is verified (a policy
        of the station's key and the hub's witness), the others listed as not checked:
        the hub does not know the keys of the station's own witnesses."""
        wk = self.witness_key()
        policy = None
        if wk is not None:
            try:
                policy = parse_policy(
                    f"log {keys[0].vkey()}\nwitness {wk.name} {wk.vkey()}\nquorum {wk.name}\n"
                    if keys
                    else ""
                )
            except (PolicyError, IndexError):
                policy = None
        w = witnessing(text, policy, keys, "the county hub's own witness key")
        for c in w.cosignatures:
            if not c.get("checked"):
                c["status"] = NOT_CHECKED if wk is None or c["name"] != wk.name else c["status"]
            c["hub"] = wk is not None and c["name"] == wk.name
        out["witnesses"] = w.cosignatures
        out["quorum"] = w.quorum
        out["problems"] += w.problems

    # -- audits and alarms ----------------------------------------------------------------

    def audits(self) -> list[dict[str, Any]]:
        """The last county audit's result per station, from its ``summary.json``."""
        latest = None
        report = ""
        base = self.conf.reports_dir
        try:
            names = sorted(p.name for p in base.iterdir() if p.name.startswith("audit-"))
        except OSError:
            names = []
        for name in reversed(names):
            p = base / name / "summary.json"
            try:
                latest = json.loads(p.read_text(encoding="utf-8"))
                report = str(p.parent)
                break
            except (OSError, ValueError):
                continue
        if not isinstance(latest, dict):
            return []
        out = []
        for s in latest.get("stations", []):
            origin = s.get("origin")
            results = dict(s.get("results") or {})
            completeness = dict(s.get("completeness") or {})
            checked = sum(int(v) for k, v in results.items() if k != "not_checked")
            bad = sum(int(results.get(k, 0)) for k in ("altered", "missing", "unreadable"))
            found = sum(int(v) for v in completeness.values())
            problems = [
                f"{f['what']} {f['origin']}#{f['leaf_index']} {f['sha256']}: {f.get('detail', '')}"
                for f in latest.get("failures") or []
                if isinstance(f, dict) and f.get("origin") == origin
            ]
            if s.get("unreachable"):
                problems.append(f"unreachable: {s['unreachable']}")
            out.append(
                {
                    "origin": origin,
                    "time": latest.get("as_of"),
                    "ok": not (bad or found or s.get("unreachable")),
                    "checked": checked,
                    "failures": bad + found,
                    "problems": problems,
                    "summary": {
                        "results": results,
                        "completeness": completeness,
                        "objects": s.get("objects"),
                        "county_ok": latest.get("ok"),
                        "report": report,
                    },
                }
            )
        return out

    def alarms(self) -> list[dict[str, Any]]:
        with self._state_lock:
            rows = {
                r[0]: r[1:]
                for r in self._state.db.execute(
                    "SELECT origin, state, problems, fork, ahead_since FROM stations"
                )
            }
        out = []
        for st in self.conf.stations:
            r = rows.get(st.origin)
            if r is None:
                continue
            state, problems, fork, ahead = r
            state = "fork" if fork else state
            if state in ("ok", "new"):
                continue
            out.append(
                {
                    "origin": st.origin,
                    "unit": st.unit,
                    "state": state,
                    "problems": json.loads(problems or "[]") or ([fork] if fork else []),
                    "since": ahead if state == "behind" else None,
                }
            )
        if out:
            since = self._alarm_times({str(a["origin"]) for a in out})
            for a in out:
                a["since"] = since.get(str(a["origin"]), a["since"])
        return out

    def _alarm_times(self, origins: set[str]) -> dict[str, int]:
        """When each station's current alarm was recorded: its latest ``alarm`` entry in
        the hub's log (the newest ``ALARM_SCAN`` entries are read back)."""
        found: dict[str, int] = {}
        try:
            n = self.ledger.next_index()
            for i in range(n - 1, max(-1, n - 1 - ALARM_SCAN), -1):
                f = decode_entry(self.ledger.entry(i)).fields
                o = f.get("origin")
                if f.get("type") == "alarm" and o in origins and o not in found:
                    t = _parse_epoch(f.get("time"))
                    if t is not None:
                        found[str(o)] = t
                    if len(found) == len(origins):
                        break
        except (LedgerError, ValueError):
            pass
        return found

    # -- the hub's own ledger -------------------------------------------------------------

    def record(self, entries: list[tuple[str, dict[str, Any]]]) -> list[int]:
        """Sign ``entries`` with the hub's log key and append them durably, then
        integrate (under the ledger's file lock, beside `custody hub run`)."""
        if not entries:
            return []
        idx = self.ledger.append_entries(entries)
        # The hub's access entries, by object: a recording's page lists who reached it here.
        with self._access_lock:
            self._access_db.executemany(
                "INSERT OR IGNORE INTO access VALUES (?, ?)",
                [
                    (p["sha256"], i)
                    for i, (ty, p) in zip(idx, entries, strict=True)
                    if ty == "access" and isinstance(p.get("sha256"), str)
                ],
            )
            self._access_db.commit()
        self.ledger.integrate()
        return idx

    def export(
        self, shas: list[str], case: str | None, purpose: str, who: str, out: Path
    ) -> dict[str, Any]:
        raise CustodyError(EXPORT_REFUSED)

    def close(self) -> None:
        self._access_db.close()
        self.ledger.close()
        with self._state_lock:
            self._state.close()
        self._db.close()


def _store_name(st: StationConfig) -> str:
    sc = st.store
    if sc.s3 is not None:
        return sc.s3.store_id
    return f"file://{sc.path}"


def _file_name(fields: Mapping[str, Any]) -> str | None:
    src = fields.get("source")
    if isinstance(src, dict) and isinstance(src.get("path"), str):
        return str(src["path"]).rsplit("/", 1)[-1]
    return None


def _rfc3339(t: int | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_epoch(v: object) -> int | None:
    if not isinstance(v, str):
        return None
    try:
        return int(datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return None


__all__ = ["CHUNK", "EXPORT_REFUSED", "WINDOW", "HubSource", "range_reader"]
