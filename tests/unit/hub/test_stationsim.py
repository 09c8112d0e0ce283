"""The station simulator writes what a real station's mirror writes, and it verifies.

Every check reads the store back through the same code a verifier uses
(`archive.tiles.StoreTileSource`, `ledger.audit.verify_log`, `python -m verify`).
"""

from __future__ import annotations

import functools
import hashlib
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from archive.local import LocalFolderStore
from archive.store import object_key
from archive.tiles import StoreTileSource
from hub.config import parse_hub
from ledger.audit import Report, verify_log
from ledger.checkpoint import Checkpoint, open_checkpoint
from ledger.entry import decode_entry, make_entry
from ledger.note import Signer, Verifier
from ledger.tiles import ENTRIES, TILE_WIDTH, TileID, decode_bundle
from tests.stationsim import (
    SimStation,
    StationSpec,
    _fast_entry,
    generate,
    hub_stations_toml,
    station_signer,
)

REPO = Path(__file__).resolve().parents[3]
ORIGIN = "custody.test/county/station-001"


def verify(store: LocalFolderStore, sim: SimStation, known: bool = True) -> Report:
    src = StoreTileSource(store, sim.origin)
    return verify_log(
        src,
        src.read_checkpoint(),
        [Verifier.parse(sim.vkey())],
        sim.origin,
        known_checkpoints=src.checkpoints() if known else (),
    )


def entries(store: LocalFolderStore, origin: str, size: int) -> list[dict[str, Any]]:
    src = StoreTileSource(store, origin)
    out: list[dict[str, Any]] = []
    for n in range(-(-size // TILE_WIDTH)):
        width = min(TILE_WIDTH, size - n * TILE_WIDTH)
        leaves = decode_bundle(src.read_tile(TileID(ENTRIES, n, width)))
        out += [dict(decode_entry(leaf).fields) for leaf in leaves]
    return out


def keys(store: LocalFolderStore, prefix: str) -> list[str]:
    return sorted(store.list(prefix))


@pytest.mark.parametrize("size", [1, 255, 256, 257, 600])
def test_what_it_writes_verifies_whole(tmp_path: Path, size: int) -> None:
    store = LocalFolderStore(tmp_path / "bucket")
    sim = SimStation(ORIGIN, store=store, seed=size, checkpoint_every=50)
    assert sim.append(size, publish_each=True) == size
    rep = verify(store, sim)
    assert rep.ok, rep.lines()
    assert (rep.size, rep.root) == (size, sim.root())
    assert rep.entries_checked == size
    # Every checkpoint the station signed was mirrored and matches the log.
    assert (
        rep.checkpoints_checked
        == len(sim.checkpoints)
        == len(keys(store, f"ledger/{ORIGIN}/checkpoints/"))
    )


def test_python_m_verify_reads_the_mirror(tmp_path: Path) -> None:
    store = LocalFolderStore(tmp_path / "bucket")
    sim = SimStation(ORIGIN, store=store, seed=3)
    sim.append(300)
    folder = tmp_path / "bucket" / "ledger" / ORIGIN
    p = subprocess.run(
        [sys.executable, "-m", "verify", "ledger", str(folder), "--vkey", sim.vkey()],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert p.returncode == 0, p.stdout + p.stderr


def test_the_mirror_layout(tmp_path: Path) -> None:
    """Full tiles once, partials at each published size, partials dropped once their
    full tile is out, every checkpoints/<size>, and the latest as `checkpoint`."""
    store = LocalFolderStore(tmp_path / "bucket")
    sim = SimStation(ORIGIN, store=store, seed=5, checkpoint_every=100)
    sim.append(200, publish_each=True)
    pre = f"ledger/{ORIGIN}/"
    assert keys(store, pre + "tile/entries/") == [
        pre + "tile/entries/000.p/100",
        pre + "tile/entries/000.p/200",
    ]
    sim.append(100, publish_each=True)  # 300: bundle 0 is full, its partials go
    assert keys(store, pre + "tile/entries/") == [
        pre + "tile/entries/000",
        pre + "tile/entries/001.p/44",
    ]
    assert keys(store, pre + "tile/0/") == [pre + "tile/0/000", pre + "tile/0/001.p/44"]
    assert keys(store, pre + "tile/1/") == [pre + "tile/1/000.p/1"]
    assert keys(store, pre + "checkpoints/") == [
        pre + f"checkpoints/{s}" for s in sorted(map(str, (100, 200, 300)))
    ]
    latest = b"".join(store.get(pre + "checkpoint")).decode()
    assert latest == sim.checkpoint_note(300) == sim.checkpoint_note()
    cp = open_checkpoint(latest, [Verifier.parse(sim.vkey())], ORIGIN).checkpoint
    assert (cp.size, cp.root) == (300, sim.root())


def test_entries_are_real_signed_station_entries(tmp_path: Path) -> None:
    store = LocalFolderStore(tmp_path / "bucket")
    sim = SimStation(ORIGIN, store=store, seed=7, unit="530822000000", checkpoint_every=500)
    sim.append(1200)
    got = entries(store, ORIGIN, 1200)
    vk = Verifier.parse(sim.vkey())
    src = StoreTileSource(store, ORIGIN)
    leaves = decode_bundle(src.read_tile(TileID(ENTRIES, 0)))
    assert all(decode_entry(leaf).verify(vk) for leaf in leaves)
    types = Counter(str(e["type"]) for e in got)
    assert got[0]["type"] == "key" and got[0]["vkey"] == sim.vkey()
    assert got[1]["type"] == "policy"
    assert types["ingest"] > 250 and types["probe"] > 250 and types["store"] > 250
    assert types["annotate"] > 0
    ingests = {e["sha256"]: i for i, e in enumerate(got) if e["type"] == "ingest"}
    for i, e in enumerate(got):
        if e["type"] == "ingest":
            rec = e["recorder"]
            assert isinstance(rec, dict) and rec["unit"] == "530822000000"
            assert {"serial", "officer", "claimed_start", "claimed_start_offset"} <= set(rec)
            assert {"dock_received", "file_mtime"} <= set(e["times"])
            assert str(e["source"]["path"]).startswith(e["source"]["recorder"])
        if e["type"] in ("probe", "store"):
            assert ingests[e["sha256"]] < i  # about a recording captured before
        if e["type"] == "store":
            assert e["role"] == "original" and e["key"] == object_key(str(e["sha256"]))
            assert {"version_id", "retain_until", "checksum"} <= set(e)
        if e["type"] == "probe" and "summary" in e:
            assert int(e["summary"]["duration_ms"]) > 0
    times = [str(e["time"]) for e in got]
    assert times == sorted(times)


def test_kinds_and_deletes(tmp_path: Path) -> None:
    """Asked-for kinds come in turn; a delete names an earlier capture and its store
    entry; an annotation and a hold carry the fields the catalog reads."""
    store = LocalFolderStore(tmp_path / "bucket")
    sim = SimStation(ORIGIN, store=store, seed=11, genesis=False)
    sim.append(6, kinds=["ingest", "store", "annotate"])
    sim.append(2, kinds=["delete", "hold"])
    got = entries(store, ORIGIN, 8)
    assert [e["type"] for e in got] == [
        "ingest", "store", "annotate", "ingest", "store", "annotate", "delete", "hold"
    ]  # fmt: skip
    d = got[6]
    i = int(d["ingest_entry"])
    assert got[i]["type"] == "ingest" and got[i]["sha256"] == d["sha256"]
    assert got[int(d["store_entry"])]["sha256"] == d["sha256"]
    assert d["rule"] == "ordinary" and d["cold"] == "deleted"
    assert {"cases_added", "category", "important"} & set(got[2])
    assert got[7]["scope"] in ("case", "object")
    assert verify(store, sim).ok


def test_the_mix_deletes_only_what_a_rule_allows(tmp_path: Path) -> None:
    """Over ~8 months of simulated time: deletions start after the 180-day lock, never
    touch a protected recording, and name their capture."""
    store = LocalFolderStore(tmp_path / "bucket")
    sim = SimStation(ORIGIN, store=store, seed=13, entries_per_day=15, checkpoint_every=1000)
    sim.append(3500, publish=True)
    got = entries(store, ORIGIN, 3500)
    deletes = [e for e in got if e["type"] == "delete"]
    assert deletes
    protected = set()
    for e in got:
        rec = e.get("recorder")
        if e["type"] == "ingest" and isinstance(rec, dict) and rec.get("important"):
            protected.add(e["sha256"])
        if e["type"] == "annotate" and (e.get("cases_added") or e.get("important")):
            protected.add(e["sha256"])
        if e["type"] == "hold" and e["scope"] == "object":
            protected.add(e["target"])
        if e["type"] == "delete":
            assert e["sha256"] not in protected
            assert str(e["retain_until"]) <= str(e["time"])
            assert got[int(e["ingest_entry"])]["sha256"] == e["sha256"]


def test_with_objects_the_bucket_holds_what_the_entries_name(tmp_path: Path) -> None:
    store = LocalFolderStore(tmp_path / "bucket")
    sim = SimStation(ORIGIN, store=store, seed=17, with_objects=True, genesis=False)
    sim.append(9, kinds=["ingest", "probe", "store"])
    sim.append(1, kinds=["delete"])
    got = entries(store, ORIGIN, 10)
    assert got[-1]["type"] == "delete"
    gone = str(got[-1]["sha256"])
    ingests = [e for e in got if e["type"] == "ingest"]
    assert len(ingests) == 3 and gone in {e["sha256"] for e in ingests}
    for e in ingests:
        key = object_key(str(e["sha256"]))
        if e["sha256"] == gone:
            assert store.head(key) is None  # retention removed the cold copy
            continue
        data = b"".join(store.get(key))
        assert hashlib.sha256(data).hexdigest() == e["sha256"] and len(data) == e["size"]


def test_fork_from_is_a_second_history_with_the_same_key(tmp_path: Path) -> None:
    store = LocalFolderStore(tmp_path / "bucket")
    sim = SimStation(ORIGIN, store=store, seed=19, checkpoint_every=64)
    sim.append(300)
    honest = sim.checkpoint_note(300)
    fork = sim.fork_from(200)
    assert fork.size == 200 and fork.root() != sim.root()
    fork.append(100)
    forged = fork.checkpoint_note(300)
    vk = Verifier.parse(sim.vkey())
    a = open_checkpoint(honest, [vk], ORIGIN).checkpoint
    b = open_checkpoint(forged, [vk], ORIGIN).checkpoint
    assert a.size == b.size == 300 and a.root != b.root  # same key, same size, two roots
    # The bucket now serves the fork, which is a valid log on its own...
    assert verify(store, fork, known=False).ok
    # ...but not one consistent with what the station published before.
    src = StoreTileSource(store, ORIGIN)
    rep = verify_log(src, src.read_checkpoint(), [vk], ORIGIN, known_checkpoints=[honest])
    assert "history-root" in rep.counts
    # The shared first 200 entries are the same in both histories.
    assert sim.checkpoint_note(192) == fork.checkpoint_note(192)


def test_fork_into_another_store(tmp_path: Path) -> None:
    store = LocalFolderStore(tmp_path / "bucket")
    sim = SimStation(ORIGIN, store=store, seed=23)
    sim.append(700)
    other = LocalFolderStore(tmp_path / "elsewhere")
    fork = sim.fork_from(600, store=other)
    fork.append(10)
    assert verify(other, fork, known=False).ok
    assert verify(store, sim).ok  # the original bucket is untouched


def test_rotated_key_verifies_from_the_pinned_key(tmp_path: Path) -> None:
    store = LocalFolderStore(tmp_path / "bucket")
    sim = SimStation(ORIGIN, store=store, seed=29)
    sim.append(100)
    new = sim.rotate_key("scheduled rotation")
    sim.append(100)
    sim.end_overlap()
    sim.append(60)
    assert sim.current_vkey() == new.verifier().vkey() != sim.vkey()
    rep = verify(store, sim)
    assert rep.ok, rep.lines()
    assert rep.chain is not None and [c.index for c in rep.chain.changes] == [100]
    assert rep.checkpoint_signed_by == [new.verifier()]


def test_resume_goes_on_from_the_store(tmp_path: Path) -> None:
    store = LocalFolderStore(tmp_path / "bucket")
    signer = station_signer(ORIGIN, 31)
    SimStation(ORIGIN, signer, store=store, seed=31).append(300)
    again = SimStation.resume(ORIGIN, signer, store=store, seed=32)
    assert again.size == 300
    again.append(30)
    rep = verify(store, again)
    assert rep.ok and rep.size == 330, rep.lines()
    first_new = entries(store, ORIGIN, 330)[300]
    assert str(first_new["time"]) > str(entries(store, ORIGIN, 300)[299]["time"])


def test_fast_entries_are_make_entry_bytes() -> None:
    s = Signer.generate(ORIGIN).bound()
    payload = {"sha256": "ab" * 32, "size": 5, "cases_added": ["2026-行政处罚-0042"], "z": [1]}
    t = "2026-01-02T03:04:05.006Z"
    assert _fast_entry(s, ORIGIN, "annotate", payload, t) == make_entry(
        s, ORIGIN, "annotate", payload, t
    )


def test_generate_in_processes_and_the_hub_config(tmp_path: Path) -> None:
    root = tmp_path / "bucket"
    LocalFolderStore(root)
    specs = [StationSpec(f"custody.test/county/s-{i}", 40 + i, 300 + i) for i in range(3)]
    factory = functools.partial(LocalFolderStore, root)
    results = generate(specs, factory, processes=2, checkpoint_every=128)
    store = LocalFolderStore(root)
    for spec, r in zip(specs, results, strict=True):
        assert r.origin == spec.origin and r.size == spec.entries
        assert r.vkey == station_signer(spec.origin, spec.seed).verifier().vkey()
        src = StoreTileSource(store, r.origin)
        rep = verify_log(src, src.read_checkpoint(), [Verifier.parse(r.vkey)], r.origin)
        assert rep.ok and rep.size == r.size
    grown = generate(
        [StationSpec(s.origin, s.seed, 5) for s in specs], factory, processes=2, resume=True
    )
    assert [g.size for g in grown] == [r.size + 5 for r in results]
    text = "data_dir = 'hub'\nname = 'county-hub'\n" + hub_stations_toml(
        [(r.origin, r.vkey, r.unit) for r in results], {"kind": "local", "path": str(root)}
    )
    conf = parse_hub(tmp_path / "hub.toml", __import__("tomllib").loads(text))
    assert [s.origin for s in conf.stations] == [s.origin for s in specs]
    assert conf.stations[0].unit == results[0].unit


def test_put_latest_rolls_back_or_forges(tmp_path: Path) -> None:
    store = LocalFolderStore(tmp_path / "bucket")
    sim = SimStation(ORIGIN, store=store, seed=37, checkpoint_every=100)
    sim.append(300)
    vk = Verifier.parse(sim.vkey())
    src = StoreTileSource(store, ORIGIN)
    sim.put_latest(200)
    rep = verify_log(src, src.read_checkpoint(), [vk], ORIGIN, known_checkpoints=src.checkpoints())
    assert rep.size == 200 and "rollback" in rep.counts
    other = Signer.generate(ORIGIN)
    sim.put_latest(Checkpoint(ORIGIN, 300, sim.root()).sign([other]))
    rep = verify_log(src, src.read_checkpoint(), [vk], ORIGIN)
    assert "checkpoint-signature" in rep.counts
    sim.append(1)  # the station's next publish puts its own checkpoint back
    assert verify(store, sim).ok
    assert [r.index for r in sim.recordings()] == sorted(r.index for r in sim.recordings())


@pytest.mark.slow
def test_a_log_past_the_second_tile_level_verifies(tmp_path: Path) -> None:
    """65,537 entries: the first size with a level-2 hash tile (about 20 s)."""
    store = LocalFolderStore(tmp_path / "bucket")
    sim = SimStation(ORIGIN, store=store, seed=41, checkpoint_every=20_000)
    sim.append(65_536, publish=True)
    sim.append(1, publish=True)
    pre = f"ledger/{ORIGIN}/"
    assert keys(store, pre + "tile/2/") == [pre + "tile/2/000.p/1"]
    assert keys(store, pre + "tile/1/") == [pre + "tile/1/000"]
    assert pre + "tile/0/256.p/1" in keys(store, pre + "tile/0/")
    rep = verify(store, sim)
    assert rep.ok and rep.size == 65_537 and rep.root == sim.root(), rep.lines()
