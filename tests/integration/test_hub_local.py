"""The hub over a store that is a folder (`[stations.store] kind = "local"`): the same
follower as over S3. A verified full tile deleted or rewritten afterwards is caught from
the listing alone, without reading any tile again."""

from __future__ import annotations

import json
import time
from pathlib import Path

from archive.local import LocalFolderStore

from ..conftest import run_cli
from ..stationsim import SimStation, hub_stations_toml


def _hub(tmp: Path, sims: list[SimStation], store: Path) -> Path:
    run_cli("hub", "init", "--data", str(tmp / "hub"), "--name", "witness.test/hub")
    conf = tmp / "hub" / "hub.toml"
    text = conf.read_text().replace('listen = "127.0.0.1:8710"', 'listen = ""')
    stations = [(s.origin, s.vkey(), s.unit) for s in sims]
    conf.write_text(text + hub_stations_toml(stations, {"kind": "local", "path": str(store)}))
    return conf


def _sync(conf: Path, expect: int) -> dict[str, dict[str, object]]:
    p = run_cli("hub", "-c", str(conf), "sync", "--json", check=False)
    assert p.returncode == expect, p.stdout + p.stderr
    return {s["origin"]: s for s in json.loads(p.stdout)["stations"]}


def test_a_verified_tile_deleted_or_rewritten_is_caught(tmp_path: Path) -> None:
    store = tmp_path / "store"
    sims = [
        SimStation(f"custody.example/local/dock-{i}", store=LocalFolderStore(store), seed=i)
        for i in (1, 2, 3)
    ]
    for s in sims:
        s.append(600)
    conf = _hub(tmp_path, sims, store)
    doc = _sync(conf, 0)
    assert {o: (d["state"], d["size"]) for o, d in doc.items()} == {
        s.origin: ("ok", 600) for s in sims
    }
    # Nothing new: nothing changes.
    assert {d["state"] for d in _sync(conf, 0).values()} == {"ok"}
    deleted, rewritten, honest = sims
    (store / "ledger" / deleted.origin / "tile/0/001").unlink()
    bundle = store / "ledger" / rewritten.origin / "tile/entries/000"
    data = bundle.read_bytes()
    time.sleep(0.01)  # a new version: same bytes, written again
    bundle.unlink()
    bundle.write_bytes(data)
    doc = _sync(conf, 1)
    assert doc[deleted.origin]["state"] == "invalid"
    assert "tile/0/001" in " ".join(doc[deleted.origin]["problems"])  # type: ignore[arg-type]
    assert "gone" in " ".join(doc[deleted.origin]["problems"])  # type: ignore[arg-type]
    assert doc[rewritten.origin]["state"] == "invalid"
    assert "tile/entries/000" in " ".join(doc[rewritten.origin]["problems"])  # type: ignore[arg-type]
    assert doc[honest.origin]["state"] == "ok"


def test_a_fork_stays_until_a_supervisor_clears_it(tmp_path: Path) -> None:
    store = tmp_path / "store"
    honest = SimStation("custody.example/local/dock-9", store=LocalFolderStore(store), seed=9)
    honest.append(100)
    conf = _hub(tmp_path, [honest], store)
    assert _sync(conf, 0)[honest.origin]["state"] == "ok"
    twin = honest.fork_from(60)  # the same key, another history from entry 60 on
    twin.append(80)
    for _ in range(2):  # found, and held on the next sync without a new alarm
        doc = _sync(conf, 1)[honest.origin]
        assert doc["state"] == "fork" and doc["size"] == 100, doc
    hub_ledger = tmp_path / "hub"

    def entries(kind: str) -> list[dict[str, object]]:
        from ledger.entry import decode_entry
        from ledger.log import Ledger

        with Ledger(hub_ledger / "ledger", hub_ledger / "state", "witness.test/hub") as led:
            rec = led.latest()
            size = rec.size if rec else 0
            out = [dict(decode_entry(led.entry(i)).fields) for i in range(size)]
        return [e for e in out if e["type"] == kind]

    assert len(entries("alarm")) == 1
    p = run_cli(
        "hub", "-c", str(conf), "clear", honest.origin, "--reason", "twin dock found",
        "--operator", "supervisor 1",
    )  # fmt: skip
    assert "alarm cleared" in p.stdout
    (cleared,) = entries("alarm_cleared")
    assert cleared["reason"] == "twin dock found" and cleared["operator"] == "supervisor 1"
    # The bucket still holds the other history: the next sync finds the fork again.
    assert _sync(conf, 1)[honest.origin]["state"] == "fork"
    assert len(entries("alarm")) == 2
