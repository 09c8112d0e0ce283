"""Catalog rows: each entry type's columns, and payloads of the wrong types."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.rows import ARROW_SCHEMA, COLUMNS, RowBuffer, entry_row, parse_utc
from ledger.entry import decode_entry, make_entry
from ledger.note import Signer
from ledger.tree import leaf_hash

ORIGIN = "custody.test/county/dock-01"
SIGNER = Signer(ORIGIN, bytes(range(32)))
T = "2026-11-30T03:22:46.811Z"
T_DT = datetime(2026, 11, 30, 3, 22, 46, 811000, tzinfo=UTC)
SHA = "2b9ae3ffc3df654e3ed49ea68a14866d62a3dab85c36d13b4ea3f923bd5ff338"
KEY = f"objects/sha256/2b/9a/{SHA}"


def row_of(type_: str, payload: dict[str, Any], index: int = 7) -> dict[str, Any]:
    leaf = make_entry(SIGNER, ORIGIN, type_, payload, T)
    row = entry_row(ORIGIN, index, leaf, decode_entry(leaf).fields)
    assert row["leaf_hash"] == leaf_hash(leaf).hex()
    assert (row["origin"], row["leaf_index"], row["type"]) == (ORIGIN, index, type_)
    assert (row["time"], row["station"]) == (T_DT, ORIGIN)
    assert list(row) == list(COLUMNS)
    return row


def nulls(row: dict[str, Any], *names: str) -> None:
    assert {n: row[n] for n in names} == dict.fromkeys(names)


INGEST = {
    "sha256": SHA,
    "size": 170109,
    "media_type": "video/mp4",
    "recorder": {
        "claimed_start": "2025-11-29T08:15:01",
        "claimed_start_offset": "+08:00",
        "identified_by": ["filename:gat947", "table"],
        "officer": "010203",
        "serial": "ABC1234",
        "unit": "530822000000",
        "important": True,
        "category": "inspection",
    },
    "source": {"dock": "d", "path": "slot01/DCIM/ABC1234.MP4", "recorder": "slot01"},
    "times": {"dock_received": "2026-11-30T03:22:46.804Z"},
}


def test_ingest_row_carries_the_recorder_and_the_recording_start() -> None:
    row = row_of("ingest", INGEST)
    assert row["unit"] == "530822000000"
    assert row["officer"] == "010203"
    assert row["recorder"] == "ABC1234"
    assert row["sha256"] == SHA
    assert row["size"] == 170109
    assert row["media_type"] == "video/mp4"
    assert row["category"] == "inspection"
    assert row["important"] is True
    # 08:15:01 at +08:00, as retention reads the file name.
    assert row["recorded"] == datetime(2025, 11, 29, 0, 15, 1, tzinfo=UTC)
    assert row["deleted"] is False
    nulls(row, "cases", "duration_ms", "role", "rule", "store_key", "version_id", "retain_until")


def test_recording_start_falls_back_to_docking_then_capture() -> None:
    no_name = dict(INGEST, recorder={"unit": "5308"})
    assert row_of("ingest", no_name)["recorded"] == datetime(
        2026, 11, 30, 3, 22, 46, 804000, tzinfo=UTC
    )
    nothing = {k: v for k, v in no_name.items() if k != "times"}
    assert row_of("ingest", nothing)["recorded"] == T_DT
    # Without an offset the file name's time is read as UTC (entries from before offsets).
    no_offset = dict(INGEST, recorder={"claimed_start": "2025-11-29T08:15:01"})
    assert row_of("ingest", no_offset)["recorded"] == datetime(2025, 11, 29, 8, 15, 1, tzinfo=UTC)


def test_sighting_names_the_recorder_but_no_recording_start() -> None:
    row = row_of("sighting", dict(INGEST, first_entry=2))
    assert (row["unit"], row["officer"], row["recorder"]) == ("530822000000", "010203", "ABC1234")
    assert row["recorded"] is None


def test_probe_row_has_the_duration() -> None:
    row = row_of(
        "probe",
        {"sha256": SHA, "tool": "PyAV", "summary": {"duration_ms": 2000, "complete": True}},
    )
    assert row["duration_ms"] == 2000
    assert row["sha256"] == SHA
    nulls(row, "unit", "officer", "recorder", "size", "recorded", "cases", "important")
    failed = row_of("probe", {"sha256": SHA, "tool": "PyAV", "error": "not media"})
    assert failed["duration_ms"] is None


def test_annotate_row_has_cases_category_and_importance() -> None:
    row = row_of(
        "annotate",
        {
            "sha256": SHA,
            "operator": "root",
            "cases_added": ["2026-行政处罚-0042", "2026-7"],
            "category": "administrative_penalty",
            "important": False,
        },
    )
    assert row["cases"] == ["2026-行政处罚-0042", "2026-7"]
    assert row["category"] == "administrative_penalty"
    assert row["important"] is False
    nulls(row, "unit", "recorded")


def test_hold_on_a_case_names_the_case_and_on_an_object_names_the_object() -> None:
    case = {"scope": "case", "target": "2026-行政处罚-0042", "reason": "appeal", "operator": "r"}
    assert row_of("hold", case)["cases"] == ["2026-行政处罚-0042"]
    assert row_of("hold_release", dict(case, holds=[3]))["cases"] == ["2026-行政处罚-0042"]
    obj = {"scope": "object", "target": SHA, "reason": "appeal", "operator": "r"}
    row = row_of("hold", obj)
    assert row["cases"] is None
    # The object held is what the hold is about: the audit finds deletions under it.
    assert row["sha256"] == SHA
    assert row_of("hold_release", dict(obj, holds=[3]))["sha256"] == SHA


def test_export_names_its_case() -> None:
    row = row_of("export", {"purpose": "court", "operator": "r", "case": "2026-7", "bytes": 3})
    assert row["cases"] == ["2026-7"]


def test_store_row_has_where_the_copy_is() -> None:
    row = row_of(
        "store",
        {
            "sha256": SHA,
            "size": 170109,
            "role": "original",
            "store": "s3:10.0.0.5:8333/evidence",
            "key": KEY,
            "checksum": "K5rj",
            "storage_class": "STANDARD",
            "lock_mode": "COMPLIANCE",
            "version_id": "v-1",
            "retain_until": "2027-05-29T03:22:46.000Z",
        },
    )
    assert (row["role"], row["store_key"], row["version_id"]) == ("original", KEY, "v-1")
    assert row["size"] == 170109
    assert row["retain_until"] == datetime(2027, 5, 29, 3, 22, 46, tzinfo=UTC)
    assert row["deleted"] is False


def test_lock_row_has_the_new_retain_until_and_rule() -> None:
    row = row_of(
        "lock",
        {
            "sha256": SHA,
            "store": "file:///cold",
            "key": KEY,
            "mode": "COMPLIANCE",
            "retain_until": "2056-11-22T03:22:46.000Z",
            "rule": "case",
            "operator": "root",
        },
    )
    assert row["retain_until"] == datetime(2056, 11, 22, 3, 22, 46, tzinfo=UTC)
    assert (row["rule"], row["store_key"]) == ("case", KEY)


def test_delete_row_is_marked_deleted_with_its_rule() -> None:
    row = row_of(
        "delete",
        {
            "sha256": SHA,
            "rule": "ordinary",
            "keep_days": 180,
            "captured": "2026-11-30T03:22:46.000Z",
            "due": "2027-05-29T03:22:46.000Z",
            "ingest_entry": 3,
            "operator": "custody retention sweep",
            "local": "not on the dock",
            "store": "file:///cold",
            "key": KEY,
            "store_entry": 5,
            "cold": "deleted",
            "version_id": "v-9",
            "retain_until": "2027-05-29T03:22:46.000Z",
        },
    )
    assert row["deleted"] is True
    assert (row["rule"], row["store_key"], row["version_id"]) == ("ordinary", KEY, "v-9")
    assert row["retain_until"] == datetime(2027, 5, 29, 3, 22, 46, tzinfo=UTC)
    derivative = row_of(
        "delete",
        {"sha256": SHA, "role": "derivative", "kind": "poster", "of": [SHA], "rule": "f"},
    )
    assert (derivative["deleted"], derivative["role"]) == (True, "derivative")


def test_a_type_the_hub_does_not_know_still_gets_its_row() -> None:
    row = row_of("future_thing", {"sha256": SHA, "size": "320x180", "novel": {"x": 1}})
    assert row["sha256"] == SHA
    assert row["size"] is None  # a size that is not bytes (fingerprint frames use "WxH")


def test_wrong_types_become_null() -> None:
    hostile = {
        "type": "ingest",
        "time": 12,
        "station": ["x"],
        "sha256": 5,
        "size": "170109",
        "media_type": {"a": 1},
        "recorder": ["not", "an", "object"],
        "times": "yesterday",
        "role": True,
        "rule": None,
        "key": 1.5,
        "version_id": [],
        "retain_until": "tomorrow",
    }
    row = entry_row(ORIGIN, 3, b"{}", hostile)
    assert row["type"] == "ingest"
    nulls(row, "time", "station", "sha256", "size", "media_type", "unit", "officer")
    nulls(row, "recorder", "recorded", "role", "rule", "store_key", "version_id", "retain_until")
    assert entry_row(ORIGIN, 3, b"{}", {"type": "ingest", "size": True})["size"] is None
    assert entry_row(ORIGIN, 3, b"{}", {"type": "ingest", "size": 1 << 70})["size"] is None
    bad_cases = {"type": "annotate", "cases_added": ["ok", 3], "important": "yes"}
    assert entry_row(ORIGIN, 3, b"{}", bad_cases)["cases"] is None
    assert entry_row(ORIGIN, 3, b"{}", bad_cases)["important"] is None
    for recorder in ({"unit": 5308, "officer": None, "serial": ["A"]}, "x", 3, None):
        r = entry_row(ORIGIN, 3, b"{}", {"type": "ingest", "recorder": recorder})
        nulls(r, "unit", "officer", "recorder")


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-30T03:22:46Z",
        "2026-11-30T03:22:46.8Z",
        "2026-11-30T03:22:46.811123Z",
        "2026-11-30T03:22:46.811123999Z",
    ],
)
def test_times_are_rfc3339_utc_to_the_microsecond(text: str) -> None:
    got = parse_utc(text)
    assert got is not None and got.utcoffset() is not None and not got.utcoffset()
    assert got.isoformat().startswith(text[:19])


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-30 03:22:46.811Z",
        "2026-11-30T03:22:46.811",
        "2026-11-30T03:22:46.811+08:00",
        "2026-13-30T03:22:46.811Z",
        "0000-01-01T00:00:00.000Z",
        "",
        "now",
    ],
)
def test_other_time_spellings_are_null(text: str) -> None:
    assert parse_utc(text) is None


def test_buffer_builds_the_table_and_clears() -> None:
    buf = RowBuffer()
    leaf = make_entry(SIGNER, ORIGIN, "ingest", INGEST, T)
    fields = decode_entry(leaf).fields
    for i in range(5):
        buf.add_entry(ORIGIN, i, leaf, fields)
    buf.add(entry_row(ORIGIN, 5, leaf, fields))
    assert len(buf) == 6
    table = buf.to_arrow()
    assert table.schema == ARROW_SCHEMA
    assert table.column("leaf_index").to_pylist() == list(range(6))
    assert table.slice(5).to_pylist()[0] == entry_row(ORIGIN, 5, leaf, fields)
    buf.clear()
    assert len(buf) == 0
    assert buf.to_arrow().num_rows == 0
    assert buf.to_arrow().schema == ARROW_SCHEMA


def test_buffer_turns_what_arrow_cannot_hold_into_null() -> None:
    buf = RowBuffer()
    row = entry_row(ORIGIN, 0, b"{}", {"type": "annotate", "cases_added": ["a"]})
    buf.add(row)
    # A lone surrogate has no UTF-8 spelling (json.loads makes one from "\\ud800").
    buf.add(dict(row, leaf_index=1, station="bad\ud800", cases=["ok", "bad\udc00"]))
    buf.add(dict(row, leaf_index=2, size="12", time="2026-11-30T03:22:46.811Z", deleted=1))
    table = buf.to_arrow()
    assert table.column("station").to_pylist() == [None, None, None]
    assert table.column("cases").to_pylist() == [["a"], None, ["a"]]
    assert table.column("size").to_pylist() == [None, None, None]
    assert table.column("time").to_pylist()[2] == T_DT
    assert table.column("deleted").to_pylist() == [False, False, None]


def test_buffer_refuses_rows_without_their_identity() -> None:
    buf = RowBuffer()
    buf.add({"origin": ORIGIN, "leaf_index": None, "leaf_hash": "00"})
    with pytest.raises(ValueError, match="leaf_index"):
        buf.to_arrow()


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(1 << 64), 1 << 64),
    st.text(max_size=30),
    st.sampled_from(
        ["2026-11-30T03:22:46.811Z", "2025-11-29T08:15:01", "+08:00", "case", "9999-12-31"]
    ),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
field_names = st.sampled_from(
    [
        "type",
        "time",
        "station",
        "sha256",
        "size",
        "media_type",
        "recorder",
        "times",
        "summary",
        "cases_added",
        "category",
        "important",
        "scope",
        "target",
        "case",
        "role",
        "rule",
        "key",
        "version_id",
        "retain_until",
    ]
)
recorders = st.dictionaries(
    st.sampled_from(
        [
            "unit",
            "officer",
            "serial",
            "category",
            "important",
            "claimed_start",
            "claimed_start_offset",
        ]
    ),
    json_values,
)
payloads = st.fixed_dictionaries(
    {
        "type": st.sampled_from(
            [
                "ingest",
                "sighting",
                "probe",
                "annotate",
                "hold",
                "export",
                "store",
                "lock",
                "delete",
                "note",
            ]
        )
    },
    optional={"recorder": st.one_of(recorders, json_values)},
).flatmap(lambda base: st.dictionaries(field_names, json_values).map(lambda d: {**d, **base}))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(payloads, st.dictionaries(field_names, json_values)), max_size=8))
def test_no_payload_stops_a_batch(items: list[dict[str, Any]]) -> None:
    buf = RowBuffer()
    for i, fields in enumerate(items):
        row = entry_row(ORIGIN, i, b"leaf", fields)
        for name in ("station", "sha256", "unit", "officer", "recorder", "role", "rule"):
            assert row[name] is None or type(row[name]) is str
        for name in ("size", "duration_ms"):
            assert row[name] is None or type(row[name]) is int
        for name in ("time", "recorded", "retain_until"):
            v = row[name]
            assert v is None or (isinstance(v, datetime) and v.utcoffset() is not None)
        buf.add_entry(ORIGIN, i, b"leaf", fields)
    table = buf.to_arrow()
    assert table.num_rows == len(items)
    assert table.schema == ARROW_SCHEMA
    assert isinstance(table, pa.Table)
