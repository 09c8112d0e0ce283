"""The daemon publishes the disclosure (公示) on its schedule: `custody run` with
``[disclose] schedule = "monthly"`` builds every period due and copies it to a folder
and to a public bucket on SeaweedFS (a second bucket, without object lock, beside the
evidence bucket).

The station is set up as if installed last December (its first entry is backdated:
the log's first month bounds what is due), so at any real date the previous month
and the previous year are due. ``day = 1`` keeps that true on the first days of a
month too.

Start 1: the public bucket's endpoint is down. The folder gets every period, the
bucket is one WARNING line naming it, the daemon keeps running. Start 2: the endpoint
fixed, the same builds go to the bucket, no second `disclose` entry. Start 3: nothing
is due, nothing is published twice."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from custody.disclose_schedule import hub_build, scheduled, start_hub_schedule
from hub.config import load_hub
from ledger.entry import decode_entry
from ledger.log import Ledger
from tests.s3server import free_ports

from ..conftest import run_cli
from ..stationsim import hub_stations_toml, station_signer
from .daemon import Daemon, entries, s3_store_conf, wait_for

ORIGIN = "custody.test/capture/dock-01"  # the origin `entries` reads
SH = ZoneInfo("Asia/Shanghai")

DISCLOSE = """
[disclose]
schedule = "monthly"
day = 1
out = "{out}"
[disclose.store]
kind = "s3"
bucket = "{bucket}"
prefix = "disclosure/"
endpoint_url = "{endpoint}"
"""

CONTENT_TYPES = {
    "index.html": "text/html; charset=utf-8",
    "style.css": "text/css",
    "data.json": "application/json",
    "data.csv": "text/csv; charset=utf-8",
    "MANIFEST": "text/plain; charset=utf-8",
    "logs/01/checkpoint": "text/plain; charset=utf-8",
}


def expected_periods(now: datetime) -> tuple[str, str, list[str]]:
    """(previous month, previous year, every period due) for a log begun last December."""
    local = now.astimezone(SH)
    last_year = local.year - 1
    months = [f"{last_year}-12"] + [f"{local.year}-{m:02d}" for m in range(1, local.month)]
    return months[-1], str(last_year), [*months, str(last_year)]


def backdated_station(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`custody init` as run on 15 December last year (a time-travel clock for the
    ledger's entries: the key entry is the log's first)."""
    import ledger.log
    from custody.station import init_station

    local = datetime.now(SH)
    began = datetime(local.year - 1, 12, 15, 4, 0, tzinfo=UTC)
    with monkeypatch.context() as m:
        m.setattr(ledger.log, "now_utc", lambda: began)
        init_station(tmp / "station", ORIGIN)
    conf = tmp / "station" / "custody.toml"
    first = json.loads(run_cli("ledger", "entry", "--index", "0", config=conf).stdout)
    assert first["time"].startswith(f"{local.year - 1}-12-15"), first
    return conf


def state(conf: Path) -> dict[str, Any]:
    path = conf.parent / "state" / "disclose.json"
    if not path.exists():
        return {}
    periods: dict[str, Any] = json.loads(path.read_text())["periods"]
    return periods


def discloses(conf: Path) -> list[dict[str, Any]]:
    return [e for e in entries(conf) if e["type"] == "disclose"]


def folder_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def bucket_keys(s3: Any, bucket: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for o in page.get("Contents", []):
            out[o["Key"]] = o["ETag"]
    return out


def test_the_daemon_publishes_due_periods_to_a_folder_and_a_public_bucket(
    tmp_path: Path, seaweed: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = backdated_station(tmp_path, monkeypatch)
    evidence = seaweed.bucket(f"ev-{os.urandom(6).hex()}")
    public = seaweed.bucket(f"pub-{os.urandom(6).hex()}", lock=False)
    out = tmp_path / "www" / "disclosure"
    base = conf.read_text() + s3_store_conf(seaweed.endpoint, evidence)
    down = f"http://127.0.0.1:{free_ports(1, grpc=False)[0]}"  # nothing listens there
    conf.write_text(base + DISCLOSE.format(out=out, bucket=public, endpoint=down))
    prev_month, prev_year, due = expected_periods(datetime.now(UTC))
    folder = f"folder {out}"
    where = f"s3://{public}/disclosure/"

    # Start 1: the public bucket is away. The folder is not held up.
    d = Daemon(conf)
    d.wait_ready()
    wait_for(
        lambda: all(folder in state(conf).get(p, {}).get("targets", ()) for p in due), 180, d.log
    )
    assert d.alive()
    assert d.stop() == 0
    log = d.log.read_text(errors="replace")
    warnings = [line for line in log.splitlines() if " WARNING " in line and where in line]
    assert len(warnings) == 1, warnings  # one line for the run, naming the bucket
    assert "check the network and [disclose.store] endpoint_url" in warnings[0]
    assert "Traceback" not in log
    assert sorted(p.name for p in out.iterdir()) == sorted([*due, "index.json"])
    for p in (prev_month, prev_year):
        v = run_cli("verify", str(out / p), config=conf, check=False)
        assert v.returncode == 0, v.stdout + v.stderr
    assert len(discloses(conf)) == len(due)
    # The builds wait for the bucket in the state folder.
    assert all((conf.parent / "state" / "disclose-build" / p / "MANIFEST").is_file() for p in due)

    # Start 2: the endpoint fixed; the same builds go up, nothing is built again.
    conf.write_text(base + DISCLOSE.format(out=out, bucket=public, endpoint=seaweed.endpoint))
    d = Daemon(conf)
    d.wait_ready()
    wait_for(lambda: all(state(conf).get(p, {}).get("state") == "published" for p in due), 180)
    assert d.stop() == 0
    assert len(discloses(conf)) == len(due)
    assert sorted(e["period"] for e in discloses(conf)) == sorted(due)
    assert {e["operator"] for e in discloses(conf)} == {"custody daemon"}
    assert not any((conf.parent / "state" / "disclose-build").iterdir())

    s3 = seaweed.client()
    keys = bucket_keys(s3, public)
    for p in (prev_month, prev_year):
        files = folder_files(out / p)
        assert {k for k in keys if k.startswith(f"disclosure/{p}/")} == {
            f"disclosure/{p}/{rel}" for rel in files
        }
        for rel, data in files.items():
            got = s3.get_object(Bucket=public, Key=f"disclosure/{p}/{rel}")
            assert got["Body"].read() == data, rel
            assert "ObjectLockMode" not in got, rel
            if rel in CONTENT_TYPES:
                assert got["ContentType"] == CONTENT_TYPES[rel], rel
    manifests = {p: hashlib.sha256((out / p / "MANIFEST").read_bytes()).hexdigest() for p in due}
    for index in (
        json.loads((out / "index.json").read_text()),
        json.loads(s3.get_object(Bucket=public, Key="disclosure/index.json")["Body"].read()),
    ):
        assert {i["period"]: i["manifest_sha256"] for i in index["periods"]} == manifests
        assert all(i["generated"] for i in index["periods"])
    head = s3.head_object(Bucket=public, Key="disclosure/index.json")
    assert head["ContentType"] == "application/json"

    # Start 3: nothing due, nothing published twice.
    d = Daemon(conf)
    d.wait_ready()
    wait_for(lambda: b"disclosure: nothing due" in d.log.read_bytes()[d.log_start :], 60, d.log)
    assert d.stop() == 0
    assert len(discloses(conf)) == len(due)
    assert bucket_keys(s3, public) == keys
    assert sorted(p.name for p in out.iterdir()) == sorted([*due, "index.json"])


def test_the_evidence_store_is_refused_as_the_public_one(station: Path) -> None:
    cold = station.parent / "cold"
    cold.mkdir()
    station.write_text(
        station.read_text()
        + f'\n[store]\nkind = "local"\npath = "{cold}"\n'
        + f'\n[disclose]\nschedule = "monthly"\n[disclose.store]\nkind = "local"\npath = "{cold}"\n'
    )
    p = run_cli("run", config=station, check=False)
    assert p.returncode == 2, p.stdout + p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    assert "disclose.store" in lines[0] and "is the evidence store" in lines[0], lines[0]


HUB = "witness.test/county-hub"


def test_the_hub_publishes_on_its_schedule(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The job `custody hub run` starts (`start_hub_schedule`) makes a first pass at
    once; then, on a time-travel clock next January, every month from the hub's first
    and the year are built by `disclose_county` into the hub's log and published to
    the folder, once each (a second pass an hour on publishes nothing)."""
    run_cli("hub", "init", "--data", str(tmp_path / "hub"), "--name", HUB)
    cfg = tmp_path / "hub" / "hub.toml"
    origin = "custody.example/menghai/dock-01"
    vkey = station_signer(origin, 1).verifier().vkey()
    out = tmp_path / "www"
    cfg.write_text(
        cfg.read_text().replace('listen = "127.0.0.1:8710"', 'listen = ""')
        + f'\n[disclose]\nschedule = "monthly"\nout = "{out}"\n'
        + hub_stations_toml([(origin, vkey, "")], {"kind": "local", "path": str(tmp_path / "x")})
    )
    conf = load_hub(cfg)
    log = logging.getLogger("custody.hub")
    began = datetime.now(UTC).astimezone(SH)
    with Ledger(conf.ledger_dir, conf.state_dir, HUB, None) as ledger:
        # At start, on the real clock: the hub began this month, nothing is due yet.
        with caplog.at_level(logging.INFO, "custody.hub"):
            stop = start_hub_schedule(conf, ledger)
            assert stop is not None
            try:
                wait_for(lambda: "disclosure: nothing due" in caplog.text, 60)
            finally:
                stop()
        # Next January on the hub's clock: this month, the rest of the year and the year.
        year = began.year
        later = datetime(year + 1, 1, 5, 3, tzinfo=SH).timestamp()
        due = [f"{year}-{m:02d}" for m in range(began.month, 13)] + [str(year)]

        def clock() -> float:
            return later

        caplog.clear()
        with caplog.at_level(logging.INFO, "custody.hub"):
            build = hub_build(conf, clock)
            scheduled(conf.disclose, conf.state_dir, ledger, build, log, clock)
            assert "WARNING" not in caplog.text, caplog.text
            scheduled(conf.disclose, conf.state_dir, ledger, build, log, clock)  # an hour on
        assert sorted(p.name for p in out.iterdir()) == sorted([*due, "index.json"])
        v = run_cli("verify", str(out / due[-1]), "--vkey", conf.vkey_path.read_text().strip(),
                    check=False)  # fmt: skip
        assert v.returncode == 0, v.stdout + v.stderr
    with Ledger(conf.ledger_dir, conf.state_dir, HUB, None) as led:
        types = [decode_entry(led.entry(i)).type for i in range(led.next_index())]
    assert types.count("disclose") == len(due), types
    cfg.write_text(cfg.read_text().replace('schedule = "monthly"', 'schedule = "off"'))
    assert start_hub_schedule(load_hub(cfg), None) is None
