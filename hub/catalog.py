"""The county catalog: the Apache Iceberg table ``custody.entries`` (docs/catalog.md).

pyiceberg's SQL catalog keeps the pointer to the table's current metadata file in a
SQL database (SQLite by default, PostgreSQL by ``uri``); data files and metadata go
to the warehouse (a folder, or ``s3://bucket/prefix`` on a bucket *without* object
lock). The hub is the only writer.

Exactly-once: every ``append`` is one Iceberg commit that carries, in its snapshot
summary, the property ``custody.catalogued``: per station origin, how many of its
entries have rows (indices ``0 .. n-1``). The rows and that map become visible in
the same compare-and-set of the SQL catalog's pointer, so a crash at any moment
leaves either the old snapshot (no rows, old map) or the new one (rows and map);
files written before a crash and never committed are unreferenced garbage, never
rows. The sync catalogues only indices at or above ``catalogued()[origin]`` and
records its own verified state after the commit.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import json
import re
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

import pyarrow as pa
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.exceptions import (
    CommitFailedException,
    NamespaceAlreadyExistsError,
    NoSuchTableError,
    TableAlreadyExistsError,
)
from pyiceberg.expressions import AlwaysTrue, And, BooleanExpression, In, Reference
from pyiceberg.expressions.literals import literal
from pyiceberg.partitioning import (
    PartitionField,
    PartitionFieldValue,
    PartitionKey,
    PartitionSpec,
)
from pyiceberg.schema import Schema
from pyiceberg.table import Table, TableProperties, WriteTask
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.table.snapshots import Snapshot, ancestors_of
from pyiceberg.transforms import IdentityTransform, MonthTransform
from pyiceberg.types import (
    BooleanType,
    ListType,
    LongType,
    NestedField,
    StringType,
    TimestamptzType,
)
from pyiceberg.utils.properties import property_as_int
from sqlalchemy.exc import (
    DBAPIError,
    IntegrityError,
    OperationalError,
    ProgrammingError,
    SQLAlchemyError,
)

from custody.errors import CustodyError
from hub.config import CatalogConfig
from hub.rows import ARROW_SCHEMA

if TYPE_CHECKING:
    import duckdb

CATALOG_NAME = "custody"
NAMESPACE = "custody"
TABLE = "entries"
IDENTIFIER = (NAMESPACE, TABLE)
PROGRESS_PROPERTY = "custody.catalogued"
# Snapshots kept in the table's metadata: each carries the whole progress map, and the
# metadata file (rewritten on every commit) lists them all; older ones are expired.
SNAPSHOTS_KEPT = 50

_S = StringType()
_L = LongType()
_B = BooleanType()
_T = TimestamptzType()

# Field ids are part of the table's format: never renumber (add new columns at the end).
ICEBERG_SCHEMA = Schema(
    NestedField(1, "origin", _S, required=True, doc="the station log's origin"),
    NestedField(2, "leaf_index", _L, required=True, doc="the entry's index in that log"),
    NestedField(3, "leaf_hash", _S, required=True, doc="hex SHA-256(0x00 || leaf)"),
    NestedField(4, "type", _S, required=False, doc="entry type"),
    NestedField(5, "time", _T, required=False, doc="entry time"),
    NestedField(6, "station", _S, required=False, doc="the entry's station field"),
    NestedField(7, "unit", _S, required=False, doc="ingest: recorder unit code"),
    NestedField(8, "officer", _S, required=False, doc="ingest: officer number"),
    NestedField(9, "recorder", _S, required=False, doc="ingest: recorder serial"),
    NestedField(10, "sha256", _S, required=False, doc="the object the entry is about"),
    NestedField(11, "size", _L, required=False, doc="bytes"),
    NestedField(12, "media_type", _S, required=False, doc="MIME type"),
    NestedField(
        13,
        "cases",
        ListType(24, _S, element_required=False),
        required=False,
        doc="case numbers (annotate, hold, export)",
    ),
    NestedField(14, "category", _S, required=False, doc="enforcement category"),
    NestedField(15, "important", _B, required=False, doc="marked important"),
    NestedField(16, "recorded", _T, required=False, doc="ingest: recording start"),
    NestedField(17, "duration_ms", _L, required=False, doc="probe: container duration"),
    NestedField(18, "deleted", _B, required=False, doc="a delete entry"),
    NestedField(19, "role", _S, required=False, doc="store/delete: object role"),
    NestedField(20, "rule", _S, required=False, doc="the retention rule"),
    NestedField(21, "store_key", _S, required=False, doc="key in the cold store"),
    NestedField(22, "version_id", _S, required=False, doc="object version"),
    NestedField(23, "retain_until", _T, required=False, doc="object-lock retain-until"),
)
# By station and month: a station's month is what an inspection asks for first.
PARTITION_SPEC = PartitionSpec(
    PartitionField(source_id=1, field_id=1000, transform=IdentityTransform(), name="origin"),
    PartitionField(source_id=5, field_id=1001, transform=MonthTransform(), name="time_month"),
)
TABLE_PROPERTIES = {
    "write.parquet.compression-codec": "zstd",
    # Old metadata files go once 20 newer ones exist (each is rewritten per commit).
    "write.metadata.delete-after-commit.enabled": "true",
    "write.metadata.previous-versions-max": "20",
}


class CatalogError(CustodyError):
    """The catalog cannot be opened or written (exit code 2)."""


def _props(conf: CatalogConfig) -> dict[str, str]:
    props = dict(conf.properties)
    region = props.get("s3.region") or props.get("client.region")
    if conf.warehouse.startswith("s3://") and props.get("s3.endpoint") and not region:
        # An S3-compatible cluster: without a region pyiceberg asks AWS where the bucket
        # is, which a county network cannot reach (and must not try).
        props["s3.region"] = "us-east-1"
    props["uri"] = conf.uri
    props["warehouse"] = conf.warehouse
    return props


def _shown(uri: str) -> str:
    """The catalog URI for a message, without its password."""
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", uri)


def _sqlite_path(uri: str) -> Path | None:
    m = re.match(r"sqlite(\+\w+)?:///(.+)", uri)
    return Path(m.group(2)) if m else None


def _local_warehouse(warehouse: str) -> Path | None:
    if not warehouse.startswith("file://"):
        return None
    return Path(unquote(urlparse(warehouse).path))


def _refuse_locked_bucket(conf: CatalogConfig, props: Mapping[str, str]) -> None:
    """The catalog's files are rewritten and deleted as it grows; a bucket with object
    lock (the evidence bucket) would keep every one of them, and mixing them with the
    evidence blurs what the lock protects. Refuse it in one line."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    bucket = urlparse(conf.warehouse).netloc
    client = boto3.client(
        "s3",
        endpoint_url=props.get("s3.endpoint"),
        region_name=props.get("s3.region") or props.get("client.region"),
        aws_access_key_id=props.get("s3.access-key-id") or props.get("client.access-key-id"),
        aws_secret_access_key=props.get("s3.secret-access-key")
        or props.get("client.secret-access-key"),
        aws_session_token=props.get("s3.session-token") or props.get("client.session-token"),
        config=Config(
            s3={"addressing_style": "path"},
            connect_timeout=10,
            read_timeout=30,
            retries={"max_attempts": 2},
        ),
    )
    try:
        got = client.get_object_lock_configuration(Bucket=bucket)
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code", "")
        if code in ("ObjectLockConfigurationNotFoundError", "NoSuchObjectLockConfiguration"):
            return
        if code == "NoSuchBucket":
            raise CatalogError(
                f"catalog warehouse {conf.warehouse}: bucket {bucket!r} does not exist "
                "(create it, without object lock)"
            ) from None
        return  # not allowed to ask: the write itself will say what is wrong
    except BotoCoreError as e:
        raise CatalogError(f"catalog warehouse {conf.warehouse}: cannot reach it: {e}") from None
    if got.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled":
        raise CatalogError(
            f"catalog warehouse {conf.warehouse}: bucket {bucket!r} has object lock on "
            "(the evidence bucket?): put the catalog in a bucket without object lock"
        )


def _open_table(props: dict[str, str]) -> tuple[SqlCatalog, Table]:
    """The catalog and the table, made if missing. Several first opens at once race on
    creating the catalog's SQL tables, the namespace and the table; a loser's statement
    fails (already exists, or SQLite busy), and looking again finds what the winner made."""
    last: Exception | None = None
    for attempt in range(8):
        try:
            catalog = SqlCatalog(CATALOG_NAME, **props)
            if not catalog.namespace_exists(NAMESPACE):
                with contextlib.suppress(NamespaceAlreadyExistsError, IntegrityError):
                    catalog.create_namespace(NAMESPACE)
            with contextlib.suppress(NoSuchTableError):
                return catalog, catalog.load_table(IDENTIFIER)
            try:
                table = catalog.create_table(
                    IDENTIFIER,
                    schema=ICEBERG_SCHEMA,
                    partition_spec=PARTITION_SPEC,
                    properties=TABLE_PROPERTIES,
                )
            except TableAlreadyExistsError:
                table = catalog.load_table(IDENTIFIER)
            return catalog, table
        except (OperationalError, ProgrammingError, IntegrityError) as e:
            last = e
            time.sleep(0.05 * (attempt + 1))
    assert last is not None
    raise last


def months(t: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """Iceberg's month transform: whole months since 1970-01 (UTC)."""
    import pyarrow.compute as pc

    return pc.add(pc.multiply(pc.subtract(pc.year(t), 1970), 12), pc.subtract(pc.month(t), 1))


def partition_runs(rows: pa.Table) -> Iterator[tuple[str, int | None, pa.Table]]:
    """``rows`` sorted by station, month and index, cut into one slice per partition:
    (origin, month, slice). pyiceberg's own split filters the batch once per partition
    it holds, which for a batch spanning 200 stations reads it 200 times; one sort and
    zero-copy slices read it once."""
    import pyarrow.compute as pc

    if rows.num_rows == 0:
        return
    keys = pa.table(
        {
            "o": rows.column("origin"),
            "m": months(rows.column("time")),
            "i": rows.column("leaf_index"),
        }
    )
    order = pc.sort_indices(
        keys, sort_keys=[("o", "ascending"), ("m", "ascending"), ("i", "ascending")]
    )
    rows = rows.take(order)
    keys = keys.take(order)
    # Single-threaded grouping keeps groups in order of first appearance: sorted order.
    runs = keys.group_by(["o", "m"], use_threads=False).aggregate([([], "count_all")])
    start = 0
    for o, m, n in zip(
        runs.column("o").to_pylist(),
        runs.column("m").to_pylist(),
        runs.column("count_all").to_pylist(),
        strict=True,
    ):
        yield o, m, rows.slice(start, n)
        start += n


def _write_tasks(meta: TableMetadata, write_uuid: uuid.UUID, rows: pa.Table) -> Iterator[WriteTask]:
    """What pyiceberg's ``_dataframe_to_data_files`` makes for a partitioned table, from
    our own split (its file writer, names, sizes and statistics are kept)."""
    from pyiceberg.io.pyarrow import pyarrow_to_schema

    spec = meta.spec()
    schema = meta.schema()
    task_schema = pyarrow_to_schema(
        rows.schema, name_mapping=schema.name_mapping, format_version=meta.format_version
    )
    target = property_as_int(
        meta.properties,
        TableProperties.WRITE_TARGET_FILE_SIZE_BYTES,
        TableProperties.WRITE_TARGET_FILE_SIZE_BYTES_DEFAULT,
    )
    by_source = {f.source_id: f for f in spec.fields}
    origin_field, month_field = by_source[1], by_source[5]
    # Rows per file from the batch's average row (pyiceberg's bin packing measures each
    # slice, which costs as much as the slice's parent table: once per partition).
    per_file = max(1, int((target or 512 << 20) / max(1.0, rows.nbytes / max(1, rows.num_rows))))
    counter = itertools.count()
    for origin, month, part in partition_runs(rows):
        key = PartitionKey(
            field_values=[
                PartitionFieldValue(field=origin_field, value=origin),
                PartitionFieldValue(field=month_field, value=month),
            ],
            partition_spec=spec,
            schema=schema,
        )
        for start in range(0, part.num_rows, per_file):
            yield WriteTask(
                write_uuid=write_uuid,
                task_id=next(counter),
                schema=task_schema,
                record_batches=part.slice(start, per_file).to_batches(),
                partition_key=key,
            )


def progress_of(snapshot: Snapshot | None) -> dict[str, int] | None:
    """The ``custody.catalogued`` map a snapshot carries (None: it carries none)."""
    if snapshot is None or snapshot.summary is None:
        return None
    raw = snapshot.summary[PROGRESS_PROPERTY]
    if raw is None:
        return None
    data = json.loads(raw)
    return {str(k): int(v) for k, v in data.items()}


@dataclass
class CountyCatalog:
    conf: CatalogConfig
    catalog: SqlCatalog
    table: Table

    @classmethod
    def open(cls, conf: CatalogConfig) -> CountyCatalog:
        """Open the catalog, creating the namespace and the table when missing (several
        processes may do this at once: whoever loses a race loads what the winner made)."""
        props = _props(conf)
        db = _sqlite_path(conf.uri)
        try:
            if db is not None:
                db.parent.mkdir(parents=True, exist_ok=True)
            wh = _local_warehouse(conf.warehouse)
            if wh is not None:
                wh.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CatalogError(f"catalog: cannot create {e.filename}: {e.strerror}") from None
        if conf.warehouse.startswith("s3://"):
            _refuse_locked_bucket(conf, props)
        try:
            catalog, table = _open_table(props)
        except DBAPIError as e:
            raise CatalogError(_shown(f"catalog {conf.uri}: {e.orig or e}")) from None
        except SQLAlchemyError as e:
            raise CatalogError(_shown(f"catalog {conf.uri}: {e}")) from None
        except ImportError as e:
            raise CatalogError(
                f"catalog {_shown(conf.uri)}: the database driver is missing ({e.name}): "
                "pip install psycopg[binary] for postgresql+psycopg://"
            ) from None
        except OSError as e:
            raise CatalogError(f"catalog warehouse {conf.warehouse}: {e}") from None
        return cls(conf, catalog, table)

    def refresh(self) -> None:
        self.table = self.catalog.load_table(IDENTIFIER)

    def catalogued(self) -> dict[str, int]:
        """Per origin: rows exist for every index below this (read from the current
        snapshot; a snapshot some other tool made, such as a compaction, carries no
        map, so the newest ancestor that does is the answer)."""
        meta = self.table.metadata
        for snap in ancestors_of(self.table.current_snapshot(), meta):
            found = progress_of(snap)
            if found is not None:
                return found
        return {}

    def append(self, rows: pa.Table, progress: Mapping[str, int]) -> None:
        """Add ``rows`` and the new ``progress`` (origin -> entries catalogued) in one
        Iceberg commit; origins not in ``progress`` keep what the last commit said."""
        from pyiceberg.io.pyarrow import write_file

        self.refresh()  # the pointer may have moved (another hub process, an analyst's tool)
        merged = self.catalogued()
        for origin, size in progress.items():
            if size < merged.get(origin, 0):
                raise CatalogError(
                    f"catalog: progress for {origin} would go back from "
                    f"{merged[origin]} to {size} (two hubs writing one catalog?)"
                )
            merged[origin] = int(size)
        summary = {PROGRESS_PROPERTY: json.dumps(merged, sort_keys=True, separators=(",", ":"))}
        if rows.schema != ARROW_SCHEMA:
            rows = rows.select(list(ARROW_SCHEMA.names)).cast(ARROW_SCHEMA)
        try:
            with (
                self.table.transaction() as tx,
                tx.update_snapshot(snapshot_properties=summary).fast_append() as fa,
            ):
                meta = tx.table_metadata
                for data_file in write_file(
                    io=self.table.io,
                    table_metadata=meta,
                    tasks=_write_tasks(meta, fa.commit_uuid, rows),
                ):
                    fa.append_data_file(data_file)
        except CommitFailedException as e:
            # Nothing of this batch is visible: the caller retries from catalogued().
            raise CatalogError(f"catalog: commit refused ({e}); sync again") from None
        # The transaction updated self.table to the committed metadata in place.
        self._expire()

    def _expire(self) -> None:
        snaps = self.table.metadata.snapshots
        if len(snaps) <= SNAPSHOTS_KEPT * 2:
            return
        old = sorted(snaps, key=lambda s: s.timestamp_ms)[: len(snaps) - SNAPSHOTS_KEPT]
        current = self.table.current_snapshot()
        keep = current.snapshot_id if current is not None else None
        ids = [s.snapshot_id for s in old if s.snapshot_id != keep]
        # A separate commit: a crash before it only leaves more snapshots than needed.
        with contextlib.suppress(CommitFailedException):
            self.table.maintenance.expire_snapshots().by_ids(ids).commit()

    def scan(
        self,
        types: Sequence[str] | None = None,
        origins: Sequence[str] | None = None,
        columns: Sequence[str] | None = None,
    ) -> pa.Table:
        """Rows of the current snapshot, filtered (pushed down to the files and, for
        ``origins``, to the station partitions)."""
        terms: list[BooleanExpression] = []
        if types is not None:
            terms.append(In(term=Reference("type"), values={literal(t) for t in types}))
        if origins is not None:
            terms.append(In(term=Reference("origin"), values={literal(o) for o in origins}))
        expr: BooleanExpression = AlwaysTrue()
        for t in terms:
            expr = t if isinstance(expr, AlwaysTrue) else And(expr, t)
        fields = tuple(columns) if columns is not None else ("*",)
        return self.table.scan(row_filter=expr, selected_fields=fields).to_arrow()

    def count(self) -> int:
        """Rows in the table (from the snapshot summary: the table is append-only)."""
        snap = self.table.current_snapshot()
        if snap is None or snap.summary is None:
            return 0
        return int(snap.summary["total-records"] or 0)

    @property
    def metadata_location(self) -> str:
        return str(self.table.metadata_location)


# ---- DuckDB: its iceberg extension, from the pip packages, never downloaded.

_NO_AUTO: dict[str, str | bool | int | float | list[str]] = {
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
}


def duckdb_extension_path(name: str, con: duckdb.DuckDBPyConnection | None = None) -> Path:
    """The file of DuckDB extension ``name`` as the ``duckdb-ext-<name>`` wheel installs
    it (``duckdb_ext/extensions/v<duckdb version>/<platform>/<name>.duckdb_extension``)."""
    import duckdb

    spec = importlib.util.find_spec("duckdb_ext")
    roots: Iterable[str] = (spec.submodule_search_locations or []) if spec else []
    if con is None:
        with duckdb.connect(config=_NO_AUTO) as own:
            platform = own.execute("PRAGMA platform").fetchone()
    else:
        platform = con.execute("PRAGMA platform").fetchone()
    plat = str(platform[0]) if platform else ""
    for root in roots:
        p = Path(root) / "extensions" / f"v{duckdb.__version__}" / plat / f"{name}.duckdb_extension"
        if p.is_file():
            return p
    raise CatalogError(
        f"DuckDB extension {name!r} is not installed: pip install "
        f"duckdb-ext-{name}=={duckdb.__version__}.* (the version must match duckdb's)"
    )


def duckdb_connect(conf: CatalogConfig | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the iceberg extension loaded from its pip package
    (never from the network: automatic install and load are off), UTC as its time
    zone (months are UTC months, as the partitions), and for an ``s3://`` warehouse
    an S3 secret made of ``[catalog.properties]``."""
    import duckdb

    con = duckdb.connect(config=_NO_AUTO)
    # iceberg needs avro loaded first (it would otherwise try to install it).
    names = ["avro", "iceberg"]
    if conf is not None and conf.warehouse.startswith("s3://"):
        names.insert(0, "httpfs")
    for name in names:
        path = str(duckdb_extension_path(name, con)).replace("'", "''")
        con.execute(f"LOAD '{path}'")
    con.execute("SET TimeZone = 'UTC'")
    if conf is not None and conf.warehouse.startswith("s3://"):
        _duckdb_s3_secret(con, _props(conf))
    return con


def _duckdb_s3_secret(con: duckdb.DuckDBPyConnection, props: Mapping[str, str]) -> None:
    opts: dict[str, str] = {}
    key = props.get("s3.access-key-id") or props.get("client.access-key-id")
    secret = props.get("s3.secret-access-key") or props.get("client.secret-access-key")
    if key and secret:
        opts["KEY_ID"] = key
        opts["SECRET"] = secret
    region = props.get("s3.region") or props.get("client.region")
    if region:
        opts["REGION"] = region
    endpoint = props.get("s3.endpoint")
    if endpoint:
        u = urlparse(endpoint)
        opts["ENDPOINT"] = u.netloc or endpoint
        opts["USE_SSL"] = "true" if u.scheme == "https" else "false"
        opts["URL_STYLE"] = "path"
    parts = ["TYPE s3"]
    for k, v in opts.items():
        if v in ("true", "false"):
            parts.append(f"{k} {v}")
        else:
            parts.append(f"{k} '{v.replace(chr(39), chr(39) * 2)}'")
    con.execute(f"CREATE OR REPLACE SECRET custody_catalog ({', '.join(parts)})")


def duckdb_entries_sql(table: Table | str) -> str:
    """The table expression DuckDB reads ``custody.entries`` with: ``iceberg_scan`` of
    the current metadata file (DuckDB does not speak the SQL catalog; the file the
    catalog points at is the whole table state)."""
    loc = table if isinstance(table, str) else str(table.metadata_location)
    if loc.startswith("file://"):
        loc = unquote(urlparse(loc).path)
    return "iceberg_scan('" + loc.replace("'", "''") + "')"


UNIT_MONTH_SQL = """\
SELECT unit, strftime(time, '%Y-%m') AS month, count(*) AS entries
FROM {entries}
GROUP BY ALL
ORDER BY unit NULLS LAST, month NULLS LAST"""


def duckdb_count_by_unit_month(
    con: duckdb.DuckDBPyConnection, table: Table | str
) -> list[tuple[Any, ...]]:
    """The inspection's first question, and the benchmark's query."""
    return con.execute(UNIT_MONTH_SQL.format(entries=duckdb_entries_sql(table))).fetchall()


__all__ = [
    "CATALOG_NAME",
    "ICEBERG_SCHEMA",
    "IDENTIFIER",
    "NAMESPACE",
    "PARTITION_SPEC",
    "PROGRESS_PROPERTY",
    "TABLE",
    "UNIT_MONTH_SQL",
    "CatalogError",
    "CountyCatalog",
    "duckdb_connect",
    "duckdb_count_by_unit_month",
    "duckdb_entries_sql",
    "duckdb_extension_path",
    "progress_of",
]
