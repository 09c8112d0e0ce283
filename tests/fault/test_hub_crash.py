"""Crash campaign for the county hub: SIGKILL `custody hub sync` at random moments,
and right after it wrote an Iceberg data file (that is, inside a catalog commit).

Two real stations in a SeaweedFS bucket, grown by signed notes to a few thousand
entries each; hub.toml asks for small commits (batch_rows, step_entries) so that a
sync makes many of them. After every kill: for each station the hub's verified size
is not ahead of what is catalogued, and the table holds exactly one row for each index
below the catalogued size. After a last clean sync: every entry catalogued exactly
once and every station `ok` at its real size.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from ..conftest import REPO
from ..integration.hubfix import (
    Hub,
    RealStation,
    assert_exactly_once,
    by_origin,
    real_stations,
    rows_by_origin,
)

KILLS = int(os.environ.get("CUSTODY_HUB_KILLS", "24"))


def parquet_files(warehouse: Path) -> int:
    return sum(1 for p in warehouse.rglob("*.parquet")) if warehouse.exists() else 0


def sync_proc(hub: Hub) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("CUSTODY_CONFIG", None)
    cmd = [sys.executable, "-m", "custody", "hub", "-c", str(hub.cfg), "sync"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)


def status_here(hub: Hub) -> dict[str, Any]:
    """What `custody hub status --json` prints, computed by the same code in this
    process: the subprocess spends 2 s importing pyiceberg before it reads anything,
    and the campaign checks the status after every kill."""
    from hub.config import load_hub
    from hub.sync import Hub as HubState

    with HubState(load_hub(hub.cfg)) as h:
        h._catalogued = h.catalog.catalogued()
        return h.status()


def check_after_kill(hub: Hub, kill: int, cli: bool) -> dict[str, Any]:
    """The verified state is never ahead of the catalogue; the catalogue holds each
    index below its mark exactly once. Returns the hub's status it checked (``cli``:
    as the `custody hub status` subprocess printed it)."""
    st = hub.status() if cli else status_here(hub)
    cat = hub.catalog()
    marks: dict[str, int] = dict(cat.catalogued())
    rows = rows_by_origin(cat.scan(None))
    for s in st["stations"]:
        # The catalogue itself (its committed snapshot) is the truth to compare with.
        mark = marks.get(s["origin"], 0)
        assert s["size"] <= mark, f"kill {kill}: verified ahead of catalogued {mark}: {s}"
    assert_exactly_once(rows, {o: marks.get(o, 0) for o in by_origin(st)})
    return st


@pytest.mark.slow
def test_sigkill_during_sync_and_catalog_commits(tmp_path: Path, seaweed: Any, ffmpeg: str) -> None:
    rng = random.Random(int(os.environ.get("CUSTODY_HUB_SEED", time.time_ns() % 10**6)))
    bucket, stations = real_stations(2, seaweed, tmp_path, ffmpeg, clips=1)
    # Each station's checkpoint size, as its `custody note` reported it: nothing else
    # writes to the stations' logs.
    sizes = {st.origin: st.notes(1500, "bulk") for st in stations}
    hub = Hub.init(tmp_path, batch_rows=97, step_entries=256, workers=1)
    hub.follow(stations, seaweed.endpoint, bucket)
    warehouse = hub.data / "warehouse"

    kills = clean = 0
    targeted = True
    while kills < KILLS:
        targeted = not targeted
        before = parquet_files(warehouse)
        p = sync_proc(hub)
        if targeted:
            # Inside a catalog commit: the data file is written, the commit not yet done.
            end = time.monotonic() + 30
            while p.poll() is None and parquet_files(warehouse) == before:
                if time.monotonic() > end:
                    break
                time.sleep(0.005)
            time.sleep(rng.uniform(0, 0.05))
        else:
            time.sleep(rng.uniform(0.3, 4.0))
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            p.wait(30)
            kills += 1
        else:
            err = p.stderr.read().decode() if p.stderr else ""
            assert p.returncode == 0, f"sync exited {p.returncode}: {err[-3000:]}"
            clean += 1
        if p.stderr:
            p.stderr.close()
        # The real subprocess now and then (that it runs after a kill); else the same
        # code in this process, seconds faster.
        now = by_origin(check_after_kill(hub, kills, cli=(kills + clean) % 8 == 0))
        if all(now[o]["size"] == n for o, n in sizes.items()):
            # Caught up: give it more to do (both stations at once: two subprocesses each).
            more = [rng.randint(300, 900) for _ in stations]
            tags = [f"more{kills}"] * len(stations)
            with ThreadPoolExecutor(len(stations)) as pool:
                grown = list(pool.map(RealStation.notes, stations, more, tags))
            sizes.update(zip([s.origin for s in stations], grown, strict=True))

    _, doc = hub.sync()
    assert sizes == {s.origin: s.size() for s in stations}
    for s in doc["stations"]:
        n = sizes[s["origin"]]
        assert (s["state"], s["size"], s["catalogued"], s["cosigned_size"]) == ("ok", n, n, n), s
    cat = hub.catalog()
    assert cat.catalogued() == sizes
    assert {s["origin"]: s["catalogued"] for s in hub.status()["stations"]} == sizes
    assert_exactly_once(rows_by_origin(cat.scan(None)), sizes)
    print(json.dumps({"kills": kills, "clean_syncs": clean, "sizes": sizes}))
