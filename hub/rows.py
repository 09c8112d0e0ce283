"""Rows of the county catalog ``custody.entries``: one per verified ledger entry.

Pure: no I/O. ``entry_row`` maps a decoded entry (its JSON object) to the table's
columns; ``RowBuffer`` gathers rows as plain Python lists, one per column, and turns
them into one Arrow table per batch (one conversion per column, never one per row:
that is what lets ten million rows through at well over 100,000 rows a second).

A station is trusted for what it signed, not for the types in its payload: a field
of the wrong type (a size that is a string, a recorder that is a list, a time that
is not RFC 3339) becomes null in its column and never stops the batch. The entry's
signature and the tree were checked before a row is made; the row only says what
the entry says.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from ledger.entry import EntryError, parse_time

TIMESTAMP = pa.timestamp("us", tz="UTC")

# Column order is the table's (docs/catalog.md lists them with their meaning).
ARROW_SCHEMA = pa.schema(
    [
        pa.field("origin", pa.string(), nullable=False),
        pa.field("leaf_index", pa.int64(), nullable=False),
        pa.field("leaf_hash", pa.string(), nullable=False),
        pa.field("type", pa.string()),
        pa.field("time", TIMESTAMP),
        pa.field("station", pa.string()),
        pa.field("unit", pa.string()),
        pa.field("officer", pa.string()),
        pa.field("recorder", pa.string()),
        pa.field("sha256", pa.string()),
        pa.field("size", pa.int64()),
        pa.field("media_type", pa.string()),
        pa.field("cases", pa.list_(pa.field("element", pa.string()))),
        pa.field("category", pa.string()),
        pa.field("important", pa.bool_()),
        pa.field("recorded", TIMESTAMP),
        pa.field("duration_ms", pa.int64()),
        pa.field("deleted", pa.bool_()),
        pa.field("role", pa.string()),
        pa.field("rule", pa.string()),
        pa.field("store_key", pa.string()),
        pa.field("version_id", pa.string()),
        pa.field("retain_until", TIMESTAMP),
    ]
)
COLUMNS: tuple[str, ...] = tuple(ARROW_SCHEMA.names)
REQUIRED = frozenset(f.name for f in ARROW_SCHEMA if not f.nullable)

_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1
_CAPTURES = frozenset(("ingest", "sighting"))  # entries that carry a recorder identity
_HOLDS = frozenset(("hold", "hold_release"))
_WITH_CASES = frozenset(("annotate", "export")) | _HOLDS


def leaf_hash(leaf: bytes) -> str:
    """RFC 6962 leaf hash, hex: what an inclusion proof for this entry starts from."""
    return hashlib.sha256(b"\x00" + leaf).hexdigest()


def _str(v: object) -> str | None:
    return v if type(v) is str else None


def _int(v: object) -> int | None:
    # bool is an int subclass: `type(...) is int` keeps true/false out of size columns.
    if type(v) is int and _INT64_MIN <= v <= _INT64_MAX:
        return v
    return None


def _bool(v: object) -> bool | None:
    return v if type(v) is bool else None


_EMPTY: Mapping[str, Any] = {}


def _dict(v: object) -> Mapping[str, Any]:
    if type(v) is dict:  # what JSON gives; the ABC check below is ten times slower
        return v
    return v if isinstance(v, Mapping) else _EMPTY


def parse_utc(v: object) -> datetime | None:
    """An entry time (RFC 3339, UTC, ``Z``) as an aware UTC datetime in microseconds;
    None for anything else."""
    if type(v) is not str:
        return None
    s = v
    if len(s) == 24 and s[23] == "Z" and s[10] == "T":
        # The station's own form (``2026-11-30T03:22:46.811Z``) takes the C parser: any
        # other ISO 8601 spelling of this length it takes names the same UTC instant.
        try:
            return datetime.fromisoformat(s)
        except ValueError:
            return None
    try:
        return parse_time(s)
    except EntryError:
        return None


def _iso_utc(v: object) -> datetime | None:
    """An ISO 8601 time with or without a zone (none: UTC), as retention reads the
    recorder's claimed start and the dock's receipt time."""
    if type(v) is not str or not v:
        return None
    try:
        d = datetime.fromisoformat(v)
        if d.tzinfo is None:
            return d.replace(tzinfo=UTC)
        return d.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def recording_start(fields: Mapping[str, Any], captured: datetime | None) -> datetime | None:
    """When the recording started, as retention.index.recording_start decides it: the
    start in the file name (read in the offset recorded with it), else when the dock
    received it, else the capture time. Safe on any payload."""
    rec = _dict(fields.get("recorder"))
    start = rec.get("claimed_start")
    offset = rec.get("claimed_start_offset")
    if type(start) is str and type(offset) is str and offset:
        start = start + offset
    t = _iso_utc(start)
    if t is not None:
        return t
    docked = _iso_utc(_dict(fields.get("times")).get("dock_received"))
    return docked if docked is not None else captured


def _cases(ty: str | None, fields: Mapping[str, Any]) -> list[str] | None:
    if ty == "annotate":
        added = fields.get("cases_added")
        if type(added) is list and all(type(c) is str for c in added):
            return list(added)
        return None
    if ty in _HOLDS:
        target = fields.get("target")
        if fields.get("scope") == "case" and type(target) is str:
            return [target]
        return None
    if ty == "export":
        case = fields.get("case")
        return [case] if type(case) is str else None
    return None


def entry_values(
    origin: str, index: int, leaf: bytes, fields: Mapping[str, Any], hashed: str | None = None
) -> tuple[Any, ...]:
    """The row of ``entry_row`` as a tuple in ``COLUMNS`` order (what ``RowBuffer``
    keeps). ``hashed``: the leaf hash in hex when the caller has it already."""
    g = _dict(fields).get
    # Type checks are written out (not helper calls): this runs once per entry.
    ty = g("type")
    if type(ty) is not str:
        ty = None
    unit = officer = serial = category = None
    important = recorded = duration = None
    if ty in _CAPTURES:
        rec = _dict(g("recorder"))
        unit = _str(rec.get("unit"))
        officer = _str(rec.get("officer"))
        serial = _str(rec.get("serial"))
        category = _str(rec.get("category"))
        important = _bool(rec.get("important"))
    elif ty == "annotate":
        category = _str(g("category"))
        important = _bool(g("important"))
    elif ty == "probe":
        duration = _int(_dict(g("summary")).get("duration_ms"))
    time = parse_utc(g("time"))
    if ty == "ingest":
        recorded = recording_start(fields, time)
    station = g("station")
    sha = g("sha256")
    if ty in _HOLDS and sha is None and g("scope") == "object":
        sha = g("target")  # an object's hold names it as its target: the object it is about
    size = g("size")
    media = g("media_type")
    role = g("role")
    rule = g("rule")
    key = g("key")
    version = g("version_id")
    retain = g("retain_until")
    return (
        origin,
        index,
        hashed if hashed is not None else leaf_hash(leaf),
        ty,
        time,
        station if type(station) is str else None,
        unit,
        officer,
        serial,
        sha if type(sha) is str else None,
        size if type(size) is int and _INT64_MIN <= size <= _INT64_MAX else None,
        media if type(media) is str else None,
        _cases(ty, fields) if ty in _WITH_CASES else None,
        category,
        important,
        recorded,
        duration,
        ty == "delete",
        role if type(role) is str else None,
        rule if type(rule) is str else None,
        key if type(key) is str else None,
        version if type(version) is str else None,
        None if retain is None else parse_utc(retain),
    )


def entry_row(
    origin: str, index: int, leaf: bytes, fields: Mapping[str, Any], hashed: str | None = None
) -> dict[str, Any]:
    """The catalog row of entry ``index`` of log ``origin`` (``fields``: its decoded JSON
    object; ``leaf``: its bytes as logged). Never raises on a hostile payload."""
    return dict(zip(COLUMNS, entry_values(origin, index, leaf, fields, hashed), strict=True))


def _utf8(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: no UTF-8 spelling, so no Parquet one
        return False
    return True


def _clean(name: str, values: Sequence[Any]) -> list[Any]:
    """The slow path, only for a column Arrow refused: each value of the wrong kind
    becomes null (a row handed to ``add`` by hand may hold anything)."""
    t = ARROW_SCHEMA.field(name).type
    if pa.types.is_string(t):
        return [v if type(v) is str and _utf8(v) else None for v in values]
    if pa.types.is_int64(t):
        return [_int(v) for v in values]
    if pa.types.is_boolean(t):
        return [_bool(v) for v in values]
    if pa.types.is_timestamp(t):
        return [
            v if isinstance(v, datetime) and v.tzinfo is not None else parse_utc(v) for v in values
        ]
    return [
        v if type(v) is list and all(type(c) is str and _utf8(c) for c in v) else None
        for v in values
    ]


class RowBuffer:
    """A batch of rows, column by column: one Python list per column, converted to Arrow
    once per batch. Values are strings, ints, datetimes and None, which the garbage
    collector does not track, so a batch of 200,000 rows costs it nothing (a list of
    row tuples would make it walk every row again and again). Memory is the batch's:
    the caller clears it after each commit."""

    def __init__(self) -> None:
        self._cols: list[list[Any]] = [[] for _ in COLUMNS]
        self._named = tuple(zip(COLUMNS, [c.append for c in self._cols], strict=True))
        self._appends = tuple(c.append for c in self._cols)

    def add(self, row: Mapping[str, Any]) -> None:
        g = row.get
        for name, append in self._named:
            append(g(name))

    def add_entry(
        self,
        origin: str,
        index: int,
        leaf: bytes,
        fields: Mapping[str, Any],
        hashed: str | None = None,
    ) -> None:
        """``add(entry_row(...))`` without the dict in between (the hub's fast path)."""
        for append, v in zip(
            self._appends, entry_values(origin, index, leaf, fields, hashed), strict=True
        ):
            append(v)

    def __len__(self) -> int:
        return len(self._cols[0])

    def to_arrow(self) -> pa.Table:
        arrays = []
        for f, values in zip(ARROW_SCHEMA, self._cols, strict=True):
            try:
                arr = pa.array(values, type=f.type)
            except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeEncodeError, OverflowError):
                if f.name in REQUIRED:
                    raise ValueError(f"column {f.name} holds a value of the wrong type") from None
                arr = pa.array(_clean(f.name, values), type=f.type)
            if f.name in REQUIRED and arr.null_count:
                raise ValueError(f"column {f.name} must not be null")
            arrays.append(arr)
        return pa.Table.from_arrays(arrays, schema=ARROW_SCHEMA)

    def clear(self) -> None:
        for c in self._cols:
            c.clear()


__all__ = [
    "ARROW_SCHEMA",
    "COLUMNS",
    "RowBuffer",
    "entry_row",
    "entry_values",
    "leaf_hash",
    "parse_utc",
    "recording_start",
]
