"""The county hub following real stations through one SeaweedFS bucket.

Each station is made by `custody init` (its own data folder, origin and key) and
captures generated clips with `custody ingest`, which replicates them and mirrors the
ledger into the shared bucket. The hub reads that bucket through a counting proxy, so
the tests count its GETs themselves rather than trust the hub's own figure.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ledger.cosignature import CosignatureVerifier, verify_cosignatures
from ledger.note import parse_note

from ..conftest import run_cli
from .hubfix import (
    CountingProxy,
    Hub,
    HubServer,
    RealStation,
    assert_exactly_once,
    by_origin,
    free_port,
    new_station,
    real_stations,
    rows_by_origin,
    tile_keys,
)


def checkpoints_of(stations: list[RealStation]) -> dict[str, dict[str, Any]]:
    """Each station's `custody ledger checkpoint --json`, by origin."""
    return {st.origin: st.checkpoint() for st in stations}


def sizes_of(checkpoints: dict[str, dict[str, Any]]) -> dict[str, int]:
    return {origin: int(cp["size"]) for origin, cp in checkpoints.items()}


def check_followed(doc: dict[str, Any], sizes: dict[str, int]) -> None:
    """Every station `ok` at its real size, verified, catalogued and cosigned there."""
    got = by_origin(doc)
    assert set(got) == set(sizes)
    for origin, size in sizes.items():
        s = got[origin]
        assert s["state"] == "ok", (origin, s["state"], s["problems"])
        assert s["problems"] == [], s
        assert (s["size"], s["checkpoint_size"]) == (size, size), s
        assert s["catalogued"] == size, s
        assert s["cosigned_size"] == size, s


def check_table(hub: Hub, sizes: dict[str, int]) -> None:
    """One row per verified entry, read back by pyiceberg and by DuckDB."""
    from hub.catalog import duckdb_connect, duckdb_entries_sql
    from hub.config import load_hub

    cat = hub.catalog()
    assert_exactly_once(rows_by_origin(cat.scan(None)), sizes)
    assert cat.catalogued() == sizes
    con = duckdb_connect(load_hub(hub.cfg).catalog)
    got = con.execute(
        "SELECT origin, count(*), count(DISTINCT leaf_index), min(leaf_index), max(leaf_index) "
        f"FROM {duckdb_entries_sql(cat.table)} GROUP BY origin"
    ).fetchall()
    assert {o: (n, d, lo, hi) for o, n, d, lo, hi in got} == {
        o: (n, n, 0, n - 1) for o, n in sizes.items()
    }


def check_cosigned(
    seaweed: Any, bucket: str, hub: Hub, checkpoints: dict[str, dict[str, Any]]
) -> None:
    """The hub's cosignature sits beside each station's checkpoint and verifies."""
    w = CosignatureVerifier.parse(hub.witness_vkey())
    kid = w.key_id.hex()
    c = seaweed.client()
    for origin, cp in checkpoints.items():
        for name in (str(cp["size"]), "checkpoint"):
            key = f"ledger/{origin}/cosigned/{kid}/{name}"
            note = c.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
            parsed = parse_note(note)
            assert parsed.text == parse_note(cp["note"]).text, key
            good = verify_cosignatures(parsed, [w])
            assert [v for v, _ in good] == [w], key
            # The station's own signature is kept: a complete note any verifier reads.
            assert any(s.name == origin for s in parsed.signatures)


def test_two_real_stations_followed_catalogued_and_cosigned(
    tmp_path: Path, seaweed: Any, ffmpeg: str
) -> None:
    bucket, stations = real_stations(2, seaweed, tmp_path, ffmpeg)
    with CountingProxy(seaweed.endpoint) as proxy:
        hub = Hub.init(tmp_path)
        hub.follow(stations, proxy.endpoint, bucket)
        before = {st.origin: tile_keys(seaweed.client(), bucket, st.origin) for st in stations}

        _, doc = hub.sync()
        cps = checkpoints_of(stations)
        sizes = sizes_of(cps)
        check_followed(doc, sizes)
        assert doc["sync"]["entries"] == sum(sizes.values())
        first_tiles = proxy.tile_gets()
        assert first_tiles, "the hub verified the entries without reading a tile"
        for st in stations:
            assert set(proxy.tile_gets(st.origin)) <= before[st.origin]
        # The hub's count of its GETs is the proxy's.
        assert doc["sync"]["gets"] == len(proxy.gets())
        check_followed(hub.status(), sizes)
        check_table(hub, sizes)
        check_cosigned(seaweed, bucket, hub, cps)

        # Nothing new: no tile is read again.
        proxy.reset()
        _, doc = hub.sync()
        check_followed(doc, sizes)
        assert doc["sync"]["entries"] == 0
        assert proxy.tile_gets() == [], proxy.tile_gets()
        assert doc["sync"]["gets"] == len(proxy.gets())

        # More captures at one station: only its new tiles are read.
        grown, quiet = stations
        old = tile_keys(seaweed.client(), bucket, grown.origin)
        grown.capture(ffmpeg, 2)
        new = tile_keys(seaweed.client(), bucket, grown.origin) - old
        proxy.reset()
        _, doc = hub.sync()
        cps = checkpoints_of(stations)
        sizes = sizes_of(cps)
        check_followed(doc, sizes)
        read = proxy.tile_gets(grown.origin)
        assert read and set(read) <= new, (read, new)
        assert len(read) == len(set(read)), f"a tile read twice in one sync: {read}"
        assert proxy.tile_gets(quiet.origin) == []
        assert not set(read) & set(first_tiles)
        check_table(hub, sizes)
        check_cosigned(seaweed, bucket, hub, cps)
        assert hub.hub_status()["catalog_rows"] == sum(sizes.values())


def test_ten_real_stations_in_one_bucket(tmp_path: Path, seaweed: Any, ffmpeg: str) -> None:
    t0 = time.monotonic()
    bucket, stations = real_stations(10, seaweed, tmp_path, ffmpeg, clips=1, parallel=2)
    setup_s = time.monotonic() - t0
    assert len({st.vkey for st in stations}) == 10  # ten keys, ten origins
    with CountingProxy(seaweed.endpoint) as proxy:
        hub = Hub.init(tmp_path)
        hub.follow(stations, proxy.endpoint, bucket)
        _, doc = hub.sync()
        cps = checkpoints_of(stations)
        sizes = sizes_of(cps)
        check_followed(doc, sizes)
        check_table(hub, sizes)
        check_cosigned(seaweed, bucket, hub, cps)
        proxy.reset()
        _, doc = hub.sync()
        assert doc["sync"]["entries"] == 0 and proxy.tile_gets() == []
    print(f"ten stations set up in {setup_s:.1f} s, all in {time.monotonic() - t0:.1f} s")


def test_a_station_pushing_to_the_hub_gets_its_cosignature(
    tmp_path: Path, seaweed: Any, ffmpeg: str
) -> None:
    bucket = seaweed.bucket(f"ev-push-{time.time_ns() % 10**9}")
    st = new_station(tmp_path, 1, seaweed.endpoint, bucket)
    hub = Hub.init(tmp_path)
    port = free_port()
    hub.set(listen=f"127.0.0.1:{port}", sync_interval_s=3600)
    hub.follow([st], seaweed.endpoint, bucket)
    server = HubServer(hub, port)
    try:
        wvkey = hub.witness_vkey()
        w = CosignatureVerifier.parse(wvkey)
        (st.data / "witnesses.policy").write_text(
            f"log {st.vkey}\nwitness hub {wvkey} {server.url}\nquorum hub\n"
        )
        st.conf.write_text(
            st.conf.read_text()
            + '\n[witness]\npolicy = "witnesses.policy"\ntimeout_s = 5\nretry_s = 1\n'
            + "publish_wait_s = 30\n"
        )
        size = st.capture(ffmpeg, 1)
        cp = st.checkpoint()
        assert cp["size"] == size
        assert [c["witness"] for c in cp["cosignatures"]] == ["hub"], cp
        assert [v for v, _ in verify_cosignatures(cp["note"], [w])] == [w]
        assert cp["quorum_met"] is True
        # The mirrored checkpoint carries it too, and the hub counts the push.
        note = (
            seaweed.client()
            .get_object(Bucket=bucket, Key=f"ledger/{st.origin}/checkpoint")["Body"]
            .read()
            .decode()
        )
        assert [v for v, _ in verify_cosignatures(note, [w])] == [w]
        s = by_origin(hub.status())[st.origin]
        assert s["pushed_size"] == size, s
    finally:
        assert server.stop() == 0, server.log.read_text()[-3000:]
    assert run_cli("ledger", "verify", config=st.conf).returncode == 0
