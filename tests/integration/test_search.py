"""Searching by when footage was recorded, and what the recorder's file name says.

Real captures (`custody ingest`) of recordings generated with ffmpeg: the recording
start comes from the file name, else the container's creation time, else the docking
time, and `find`, `reindex` and the catalog say which. A vendor's `_IMP` suffix and
category code in the name are the station's annotations, which retention obeys and a
person's `custody annotate` overrides.
"""

from __future__ import annotations

import json
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..conftest import make_clip, run_cli
from .daemon import make_station
from .test_fingerprints import sha

# The recorder's clock is Beijing time: 08:30 on 25 Nov there is 00:30 UTC.
DOCK_EXTRA = """timezone = "Asia/Shanghai"
category_map = { XZCF = "行政处罚" }
[[docks.patterns]]"""
PATTERN = (
    "regex = '^(?P<serial>[A-Z0-9]{7})_(?P<officer>[0-9]{6})_(?P<start>[0-9]{14})"
    "(?:_(?P<category>[A-Z]{4}))?(?P<important>_IMP)?'"
)
NAMED = "ABC1234_010203_20241125083000_XZCF_IMP.mp4"
PLAIN_NAMED = "ABC1234_010203_20241126090000.mp4"


def station(tmp_path: Path) -> tuple[Path, Path]:
    dock = tmp_path / "dock"
    conf = make_station(tmp_path, dock)
    text = conf.read_text()
    text = text.replace("[[docks.patterns]]", DOCK_EXTRA, 1)
    text = "\n".join(PATTERN if ln.startswith("regex = ") else ln for ln in text.split("\n"))
    conf.write_text(text)
    return conf, dock


def remux(ffmpeg: str, src: Path, out: Path, *meta: str) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    args = [a for m in meta for a in ("-metadata", m)]
    cmd = [ffmpeg, "-v", "error", "-y", "-i", str(src), "-c", "copy", *args, str(out)]
    subprocess.run(cmd, check=True, timeout=120)
    return out


def find(conf: Path, *args: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(run_cli("find", "--json", *args, config=conf).stdout)
    return rows


def test_find_by_recording_time_and_name_marks(tmp_path: Path, ffmpeg: str) -> None:
    conf, dock = station(tmp_path)
    slot = dock / "slot01"
    base = make_clip(ffmpeg, tmp_path / "made" / "base.mp4", tone=300)
    named = remux(ffmpeg, base, slot / NAMED)
    plain_named = remux(
        ffmpeg, make_clip(ffmpeg, tmp_path / "made" / "b.mp4", tone=350), slot / PLAIN_NAMED
    )
    # No pattern matches: the container's creation time is the recording start.
    tagged = remux(
        ffmpeg,
        make_clip(ffmpeg, tmp_path / "made" / "c.mp4", tone=400),
        slot / "VID_0003.mp4",
        "creation_time=2024-11-24T10:00:00Z",
    )
    # Neither: the time it was docked. And a recording cut short (no index at the end).
    untold = make_clip(ffmpeg, slot / "VID_0004.mp4", tone=500)
    whole = make_clip(ffmpeg, tmp_path / "made" / "cut.mp4", tone=600).read_bytes()
    cut = slot / "VID_0005.mp4"
    cut.write_bytes(whole[: len(whole) * 6 // 10])
    shas = {p.name: sha(p) for p in (named, plain_named, tagged, untold, cut)}
    before = int(time.time())
    run_cli("ingest", str(dock), "--settle-ms", "0", config=conf)

    # Footage of 25 Nov (Beijing time), docked today, is found by the day it was recorded.
    (row,) = find(conf, "--from", "2024-11-25", "--to", "2024-11-26")
    assert row["sha256"] == shas[NAMED] and row["file_name"] == NAMED
    assert row["recorded"] == "2024-11-25T00:30:00Z" and row["recorded_from"] == "file name"
    assert row["captured"] >= datetime.fromtimestamp(before, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    # The name marks it important and 行政处罚, as the station's reading of the name.
    assert row["important"] is True and row["important_from"] == "file name pattern"
    assert row["category"] == "administrative_penalty"
    assert row["category_from"] == "file name pattern"
    assert row["complete"] is True
    (other,) = find(conf, "--from", "2024-11-26", "--to", "2024-11-27")
    assert other["file_name"] == PLAIN_NAMED and other["recorded"] == "2024-11-26T01:00:00Z"
    assert other["important"] is False and other["important_from"] == ""
    (row,) = find(conf, "--from", "2024-11-24", "--to", "2024-11-25")
    assert row["file_name"] == "VID_0003.mp4" and row["recorded_from"] == "container"
    assert row["recorded"] == "2024-11-24T10:00:00Z"
    today = find(conf, "--from", datetime.fromtimestamp(before, UTC).strftime("%Y-%m-%d"))
    by_name = {r["file_name"]: r for r in today}
    assert set(by_name) == {"VID_0004.mp4", "VID_0005.mp4"}
    assert by_name["VID_0004.mp4"]["recorded_from"] == "docking"
    assert by_name["VID_0004.mp4"]["complete"] is True
    assert by_name["VID_0005.mp4"]["complete"] is False and by_name["VID_0005.mp4"]["damage"]
    assert [r["sha256"] for r in find(conf, "--category", "行政处罚")] == [shas[NAMED]]

    # The signed ingest entry carries what the name said, and the offset it was read in.
    from .daemon import entries

    ing = next(e for e in entries(conf) if e["type"] == "ingest" and e["sha256"] == shas[NAMED])
    assert ing["recorder"]["claimed_start"] == "2024-11-25T08:30:00"
    assert ing["recorder"]["claimed_start_offset"] == "+08:00"
    assert ing["recorder"]["important"] is True
    assert ing["recorder"]["category"] == "administrative_penalty"

    # The text listing shows the recording start, its source, the name and the marks.
    text = run_cli("find", "--from", "2024-11-25", "--to", "2024-11-26", config=conf).stdout
    assert text.startswith("2024-11-25T00:30:00Z (file name)  " + NAMED)
    assert "important (file name)" in text and "administrative_penalty (file name)" in text
    cut_line = run_cli("find", "--sha", shas["VID_0005.mp4"], config=conf).stdout
    assert "complete: false" in cut_line

    # Retention treats the name's mark as the station's annotation: kept permanently.
    run_cli("retention", "apply", "--policy", str(conf.parent / "retention.toml"), config=conf)
    as_of = datetime.fromtimestamp(before + 400 * 86400, UTC).strftime("%Y-%m-%d")
    plan = json.loads(run_cli("retention", "plan", "--as-of", as_of, "--json", config=conf).stdout)
    deleted = {a["sha256"] for a in plan["actions"] if a["kind"] == "delete"}
    assert shas[NAMED] not in deleted and shas[PLAIN_NAMED] in deleted

    # A person's annotation overrides the name, through a rebuild of the index too.
    run_cli("annotate", shas[NAMED], "--not-important", "--reason", "test clip", config=conf)
    for _ in range(2):
        (row,) = find(conf, "--sha", shas[NAMED])
        assert row["important"] is False and row["important_from"] == "annotation"
        assert row["category_from"] == "file name pattern"
        assert row["recorded_from"] == "file name" and row["complete"] is True
        run_cli("reindex", config=conf)
    plan = json.loads(run_cli("retention", "plan", "--as-of", as_of, "--json", config=conf).stdout)
    assert shas[NAMED] in {a["sha256"] for a in plan["actions"] if a["kind"] == "delete"}

    # The catalog has the same columns.
    import pyarrow.dataset as ds

    out = tmp_path / "catalog"
    run_cli("catalog", "export", "--out", str(out), config=conf)
    rows = {
        r["sha256"]: r
        for r in ds.dataset(out, format="parquet", partitioning="hive").to_table().to_pylist()
    }
    assert rows[shas[NAMED]]["file_name"] == NAMED
    assert rows[shas[NAMED]]["recorded"] == datetime(2024, 11, 25, 0, 30, tzinfo=UTC)
    assert rows[shas[NAMED]]["recorded_from"] == "file name"
    assert rows[shas["VID_0003.mp4"]]["recorded_from"] == "container"
    assert rows[shas["VID_0005.mp4"]]["complete"] is False
    assert rows[shas["VID_0004.mp4"]]["complete"] is True


def test_an_index_of_the_earlier_version_is_rebuilt(tmp_path: Path) -> None:
    """A station upgraded in place: its index (version 3, without the recording start)
    is folded afresh from the ledger at the first search, not queried as it is."""
    import sqlite3

    conf, dock = station(tmp_path)
    (dock / "slot01").mkdir(parents=True)
    (dock / "slot01" / PLAIN_NAMED).write_bytes(b"not really a video")
    run_cli("ingest", str(dock), "--settle-ms", "0", config=conf)
    assert len(find(conf)) == 1  # the index is folded
    db = sqlite3.connect(conf.parent / "state" / "ledger.sqlite")
    cols = [r[1] for r in db.execute("PRAGMA table_info(retention_items)")]
    new = ("file_name", "recorded", "recorded_from", "complete", "damage")
    old = [c for c in cols if c not in new and not c.endswith("_from")]
    db.execute("DROP INDEX IF EXISTS retention_items_recorded")
    db.execute(f"CREATE TABLE v3 AS SELECT {', '.join(old)} FROM retention_items")
    db.execute("DROP TABLE retention_items")
    db.execute("ALTER TABLE v3 RENAME TO retention_items")
    db.execute("UPDATE retention_meta SET value='3' WHERE key='version'")
    db.commit()
    db.close()
    (row,) = find(conf)
    assert row["file_name"] == PLAIN_NAMED and row["recorded"] == "2024-11-26T01:00:00Z"
