"""When disclosures are due, and how a finished publication is copied where the public
reads it (disclose/target.py). A time-travel clock: ``now`` is a parameter."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from disclose.target import (
    OPERATOR,
    REBUILT,
    TargetError,
    due_periods,
    load_state,
    month_of,
    next_due,
    publish_due,
    publish_folder,
)
from disclose.target import (
    Target as Place,
)

SH = ZoneInfo("Asia/Shanghai")


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    """A time on Shanghai's clock."""
    return datetime(year, month, day, hour, minute, tzinfo=SH)


def months(year: int, first: int = 1, last: int = 12) -> set[str]:
    return {f"{year}-{m:02d}" for m in range(first, last + 1)}


# -- due_periods ----------------------------------------------------------------------


def test_december_and_the_year_are_due_on_the_day_in_january() -> None:
    done = months(2026, 1, 11)
    assert due_periods(at(2027, 1, 2, 23, 59), 3, "Asia/Shanghai", done, "2026-01") == []
    assert due_periods(at(2027, 1, 3), 3, "Asia/Shanghai", done, "2026-01") == ["2026-12", "2026"]
    # Once published, neither is due again.
    done |= {"2026-12", "2026"}
    assert due_periods(at(2027, 1, 20), 3, "Asia/Shanghai", done, "2026-01") == []


def test_the_annual_report_is_due_in_january_only_for_the_previous_year() -> None:
    done = months(2026) | {"2026"}
    # February: January is due; 2026 is not due again, 2027 not until next January.
    assert due_periods(at(2027, 2, 3, 8), 3, "Asia/Shanghai", done, "2026-01") == ["2027-01"]
    assert due_periods(at(2027, 12, 31), 3, "Asia/Shanghai", done, "2026-01") == [
        f"2027-{m:02d}" for m in range(1, 12)
    ]
    # Not published in January (the station was off): still due in February.
    assert due_periods(at(2027, 2, 1), 3, "Asia/Shanghai", months(2026), "2026-01") == ["2026"]


def test_a_year_the_log_began_in_is_published_and_none_before() -> None:
    due = due_periods(at(2027, 1, 5), 3, "Asia/Shanghai", set(), "2026-10")
    assert due == ["2026-10", "2026-11", "2026-12", "2026"]


def test_catch_up_stops_at_twelve_months() -> None:
    due = due_periods(at(2027, 6, 10), 3, "Asia/Shanghai", set(), "2020-01")
    assert due == [f"2026-{m:02d}" for m in range(6, 13)] + ["2026"] + [
        f"2027-{m:02d}" for m in range(1, 6)
    ]
    # In January the twelve months are last year's, all of them, and last year.
    due = due_periods(at(2027, 1, 3), 3, "Asia/Shanghai", set(), "2020-01")
    assert due == [*sorted(months(2026)), "2026"]
    assert "2025" not in due and "2025-12" not in due


def test_day_28() -> None:
    assert due_periods(at(2026, 3, 27, 23, 59), 28, "Asia/Shanghai", set(), "2026-02") == []
    assert due_periods(at(2026, 3, 28), 28, "Asia/Shanghai", set(), "2026-02") == ["2026-02"]
    # February's day 28 for January (the shortest month holds day 28).
    assert due_periods(at(2026, 2, 28), 28, "Asia/Shanghai", set(), "2026-01") == ["2026-01"]


def test_time_zone_at_the_month_edge() -> None:
    now = datetime(2026, 11, 30, 16, 30, tzinfo=UTC)  # 1 December 00:30 in Shanghai
    assert due_periods(now, 1, "Asia/Shanghai", set(), "2026-11") == ["2026-11"]
    assert due_periods(now, 1, "UTC", set(), "2026-11") == []
    assert due_periods(now, 1, "America/Los_Angeles", set(), "2026-11") == []
    # New Year's Eve in UTC is already the new year in Shanghai: December and 2026 due.
    eve = datetime(2026, 12, 31, 17, 0, tzinfo=UTC)
    assert due_periods(eve, 1, "Asia/Shanghai", months(2026, 1, 11), "2026-01") == [
        "2026-12",
        "2026",
    ]
    assert due_periods(eve, 1, "UTC", months(2026, 1, 11), "2026-01") == []
    assert month_of(eve, "Asia/Shanghai") == "2027-01"
    assert month_of(eve, "UTC") == "2026-12"


def test_what_comes_next() -> None:
    assert next_due(at(2026, 12, 31, 23), 3, "Asia/Shanghai") == ("2026-12", at(2027, 1, 3))
    assert next_due(at(2026, 11, 2), 3, "Asia/Shanghai") == ("2026-11", at(2026, 12, 3))


def test_nothing_is_due_in_the_first_month_or_before_it() -> None:
    assert due_periods(at(2026, 11, 30), 3, "Asia/Shanghai", set(), "2026-11") == []
    assert due_periods(at(2026, 11, 30), 3, "Asia/Shanghai", set(), "2027-03") == []


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="time zone"):
        due_periods(datetime(2026, 1, 1), 3, "Asia/Shanghai", set(), "2025-01")
    with pytest.raises(ValueError, match="day"):
        due_periods(at(2026, 1, 1), 29, "Asia/Shanghai", set(), "2025-01")
    with pytest.raises(ValueError, match="YYYY-MM"):
        due_periods(at(2026, 1, 1), 3, "Asia/Shanghai", set(), "2025-13")


# -- publish_folder -------------------------------------------------------------------


def publication(where: Path, period: str = "2026-10", text: str = "figures") -> Path:
    """A folder shaped like a finished publication (contents do not matter here)."""
    files = {
        "index.html": f"<p>{text}</p>",
        "style.css": "p{}",
        "data.json": json.dumps({"period": period, "generated": "2026-11-03T00:00:00Z"}),
        "data.csv": "a,b\n",
        "logs/01/checkpoint": "custody.test/x\n1\nAAAA\n",
        "logs/01/vkey": "custody.test/x+00000000+AAAA\n",
    }
    for rel, body in files.items():
        (where / rel).parent.mkdir(parents=True, exist_ok=True)
        (where / rel).write_text(body)
    manifest = "".join(
        f"{hashlib.sha256((where / r).read_bytes()).hexdigest()}  {r}\n" for r in sorted(files)
    )
    (where / "MANIFEST").write_text(manifest)
    (where / "disclose.entry").write_text('{"type":"disclose"}')
    (where / "disclose.tlog-proof").write_text("c2sp.org/tlog-proof@v1\n")
    return where


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_publish_to_a_folder(tmp_path: Path) -> None:
    src = publication(tmp_path / "build" / "2026-10")
    out = tmp_path / "www"
    old = os.umask(0o077)  # a daemon's strict umask: the web server must still read
    try:
        places = publish_folder(src, out, None, "2026-10")
    finally:
        os.umask(old)
    assert places == [str(out / "2026-10")]
    assert tree(out / "2026-10") == tree(src)
    assert sorted(p.name for p in out.iterdir()) == ["2026-10", "index.json"]  # no .partial
    for p in (out / "2026-10").rglob("*"):
        mode = stat.S_IMODE(p.stat().st_mode)
        assert mode == (0o755 if p.is_dir() else 0o644), p
    index = json.loads((out / "index.json").read_text())
    assert index["periods"] == [
        {
            "period": "2026-10",
            "generated": "2026-11-03T00:00:00Z",
            "manifest_sha256": hashlib.sha256((src / "MANIFEST").read_bytes()).hexdigest(),
            "path": "2026-10/",
        }
    ]
    # The same publication again: nothing changes.
    assert publish_folder(src, out, None, "2026-10") == [f"{out / '2026-10'} (there already)"]
    # Another period joins the index.
    publish_folder(publication(tmp_path / "build" / "2026"), out, None, "2026")
    index = json.loads((out / "index.json").read_text())
    assert [i["period"] for i in index["periods"]] == ["2026", "2026-10"]


def test_a_published_period_is_never_replaced(tmp_path: Path) -> None:
    out = tmp_path / "www"
    publish_folder(publication(tmp_path / "a"), out, None, "2026-10")
    before = tree(out / "2026-10")
    other = publication(tmp_path / "b", text="other figures")
    with pytest.raises(TargetError, match="different publication of 2026-10"):
        publish_folder(other, out, None, "2026-10")
    assert tree(out / "2026-10") == before


def test_a_copy_cut_short_is_made_again(tmp_path: Path) -> None:
    out = tmp_path / "www"
    (out / ".2026-10.partial" / "logs").mkdir(parents=True)
    (out / ".2026-10.partial" / "index.html").write_text("half")
    src = publication(tmp_path / "a")
    publish_folder(src, out, None, "2026-10")
    assert tree(out / "2026-10") == tree(src)
    assert not (out / ".2026-10.partial").exists()
    assert [i["period"] for i in json.loads((out / "index.json").read_text())["periods"]] == [
        "2026-10"
    ]


def test_an_unfinished_build_is_not_published(tmp_path: Path) -> None:
    src = publication(tmp_path / "a")
    (src / "disclose.entry").unlink()
    with pytest.raises(TargetError, match="not a finished publication"):
        publish_folder(src, tmp_path / "www", None, "2026-10")
    with pytest.raises(ValueError, match="YYYY"):
        publish_folder(publication(tmp_path / "b"), tmp_path / "www", None, "../x")


@dataclass
class MemoryBucket:
    """A `PublicStore` in memory: the port's rules, for the index and conflict logic (the
    S3 adapter itself is tested against SeaweedFS in the integration test)."""

    objects: dict[str, tuple[bytes, str]]
    where: str = "mem://public/"
    puts: int = 0

    def sha256(self, key: str) -> str | None:
        o = self.objects.get(key)
        return None if o is None else hashlib.sha256(o[0]).hexdigest()

    def read(self, key: str) -> bytes | None:
        o = self.objects.get(key)
        return None if o is None else o[0]

    def put(
        self, key: str, data: bytes, sha256: str, content_type: str, *, replace: bool = False
    ) -> None:
        assert replace or key not in self.objects
        self.objects[key] = (data, content_type)
        self.puts += 1

    def list(self, prefix: str) -> Iterator[str]:
        return iter(sorted(k for k in self.objects if k.startswith(prefix)))


def test_publish_to_a_bucket(tmp_path: Path) -> None:
    bucket = MemoryBucket({})
    src = publication(tmp_path / "a")
    assert publish_folder(src, None, bucket, "2026-10") == ["mem://public/2026-10/"]
    files = tree(src)
    assert {k: v[0] for k, v in bucket.objects.items() if k != "index.json"} == {
        f"2026-10/{k}": v for k, v in files.items()
    }
    types = {k: v[1] for k, v in bucket.objects.items()}
    assert types["2026-10/index.html"] == "text/html; charset=utf-8"
    assert types["2026-10/style.css"] == "text/css"
    assert types["2026-10/data.json"] == "application/json"
    assert types["2026-10/data.csv"] == "text/csv; charset=utf-8"
    assert types["2026-10/MANIFEST"] == "text/plain; charset=utf-8"
    assert types["index.json"] == "application/json"
    # Again: objects with the same SHA-256 are accepted, nothing is sent but the index.
    n = bucket.puts
    assert publish_folder(src, None, bucket, "2026-10") == ["mem://public/2026-10/ (there already)"]
    assert bucket.puts == n + 1
    # Different bytes under a published key: refused, nothing replaced.
    with pytest.raises(TargetError, match="already holds other bytes"):
        publish_folder(publication(tmp_path / "b", text="other"), None, bucket, "2026-10")
    # A lost index is rebuilt from what the bucket holds.
    del bucket.objects["index.json"]
    publish_folder(publication(tmp_path / "c", "2026-11"), None, bucket, "2026-11")
    index = json.loads(bucket.objects["index.json"][0])
    assert [i["period"] for i in index["periods"]] == ["2026-10", "2026-11"]


# -- publish_due: state, restarts, crashes ----------------------------------------------


@dataclass(frozen=True)
class Result:
    manifest_sha256: str
    entry_index: int


class Builder:
    """Stands in for `disclose_station`: writes a publication aside, renames it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def __call__(self, period: str, out: Path, operator: str) -> Result:
        self.calls.append((period, operator))
        assert not out.exists()
        tmp = out.with_name(out.name + ".partial")
        publication(tmp, period)
        os.rename(tmp, out)
        sha = hashlib.sha256((out / "MANIFEST").read_bytes()).hexdigest()
        return Result(sha, len(self.calls))


def run(state: Path, places: list[Place], build: Builder, now: datetime) -> tuple[str, ...]:
    res = publish_due(
        now=now,
        day=3,
        timezone="Asia/Shanghai",
        first_month="2026-11",
        targets=places,
        build=build,
        state_dir=state,
    )
    return res.problems


def test_each_period_is_built_once_and_restarts_publish_nothing_twice(tmp_path: Path) -> None:
    state, out = tmp_path / "state", tmp_path / "www"
    places = [Place("folder www", out=out)]
    build = Builder()
    assert run(state, places, build, at(2027, 1, 3, 1)) == ()
    assert build.calls == [("2026-11", OPERATOR), ("2026-12", OPERATOR), ("2026", OPERATOR)]
    assert sorted(p.name for p in out.iterdir()) == ["2026", "2026-11", "2026-12", "index.json"]
    assert not any((state / "disclose-build").iterdir())  # builds dropped once out
    recs = load_state(state / "disclose.json")
    assert {k: v["state"] for k, v in recs.items()} == dict.fromkeys(
        ("2026", "2026-11", "2026-12"), "published"
    )
    run(state, places, build, at(2027, 1, 3, 2))  # the next hour, or a restart
    assert len(build.calls) == 3
    # The state file lost (a data folder restored): what the targets hold is read back.
    (state / "disclose.json").unlink()
    assert run(state, places, build, at(2027, 1, 3, 3)) == ()
    assert len(build.calls) == 3
    assert load_state(state / "disclose.json")["2026"]["targets"] == ["folder www"]


def test_a_bucket_away_is_retried_from_the_same_build(tmp_path: Path) -> None:
    state, out = tmp_path / "state", tmp_path / "www"
    objects: dict[str, tuple[bytes, str]] = {}
    away = {"on": True}

    class Flaky(MemoryBucket):
        def sha256(self, key: str) -> str | None:
            if away["on"]:
                raise OSError("connection refused")
            return super().sha256(key)

    places = [Place("folder www", out=out), Place("bucket mem", store=Flaky(objects))]
    build = Builder()
    problems = run(state, places, build, at(2027, 1, 5))
    # The folder is not held up; the bucket is one line for the whole run.
    assert problems == (
        "disclosure 2026-11: cannot look at bucket mem: connection refused; it is tried "
        "again at the next run",
    )
    assert build.calls == [("2026-11", OPERATOR), ("2026-12", OPERATOR), ("2026", OPERATOR)]
    assert all((out / p / "MANIFEST").is_file() for p in ("2026-11", "2026-12", "2026"))
    assert (state / "disclose-build" / "2026" / "MANIFEST").is_file()
    assert objects == {}
    # Back: the same builds go to the bucket, no second entry.
    away["on"] = False
    assert run(state, places, build, at(2027, 1, 5, 1)) == ()
    assert len(build.calls) == 3
    for p in ("2026-11", "2026-12", "2026"):
        assert objects[f"{p}/MANIFEST"][0] == (out / p / "MANIFEST").read_bytes()
    assert not any((state / "disclose-build").iterdir())
    # Away on upload too: one line, and nothing built again.
    (state / "disclose.json").unlink()
    (out / "2026-12").rename(tmp_path / "moved")
    del objects["2026-12/disclose.tlog-proof"]

    class AwayOnPut(MemoryBucket):
        def put(self, *a: object, **k: object) -> None:
            raise OSError("no route to host")

    places = [Place("folder www", out=out), Place("bucket mem", store=AwayOnPut(objects))]
    problems = run(state, places, build, at(2027, 1, 5, 2))
    assert len(problems) == 1 and "not published to bucket mem: no route" in problems[0]
    assert build.calls[3:] == [("2026-12", OPERATOR)]  # neither place held all of it


def test_a_crash_during_a_build_builds_again_and_says_so(tmp_path: Path) -> None:
    state, out = tmp_path / "state", tmp_path / "www"
    places = [Place("folder www", out=out)]
    (state / "disclose-build" / "2026-11.partial").mkdir(parents=True)
    (state / "disclose.json").write_text(
        json.dumps({"periods": {"2026-11": {"state": "building", "targets": []}}})
    )
    build = Builder()
    assert run(state, places, build, at(2026, 12, 5)) == ()
    assert build.calls == [("2026-11", REBUILT)]
    assert (out / "2026-11" / "MANIFEST").is_file()


def test_a_crash_after_a_whole_build_uses_it(tmp_path: Path) -> None:
    state, out = tmp_path / "state", tmp_path / "www"
    places = [Place("folder www", out=out)]
    publication(state / "disclose-build" / "2026-11", "2026-11")
    (state / "disclose.json").write_text(
        json.dumps({"periods": {"2026-11": {"state": "building", "targets": []}}})
    )
    build = Builder()
    assert run(state, places, build, at(2026, 12, 5)) == ()
    assert build.calls == []
    assert (out / "2026-11" / "MANIFEST").is_file()


def test_a_failing_build_is_one_line_and_tried_again(tmp_path: Path) -> None:
    state, out = tmp_path / "state", tmp_path / "www"

    def broken(period: str, out: Path, operator: str) -> Result:
        raise RuntimeError("the rules file has an error")

    problems = publish_due(
        now=at(2026, 12, 5),
        day=3,
        timezone="Asia/Shanghai",
        first_month="2026-11",
        targets=[Place("folder www", out=out)],
        build=broken,
        state_dir=state,
    ).problems
    assert problems == (
        "disclosure 2026-11 not built: the rules file has an error; it is tried again at "
        "the next run",
    )
    build = Builder()
    assert run(state, [Place("folder www", out=out)], build, at(2026, 12, 5, 1)) == ()
    assert build.calls == [("2026-11", REBUILT)]
