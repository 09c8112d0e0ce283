"""Replication through the real daemon and a real S3 server (SeaweedFS).

The outage test: the server goes away while uploads are queued, the daemon
is SIGKILLed and restarted during the outage, the server comes back; every
object ends up replicated exactly once (one object version, one `store`
entry) and no recorder file was wiped before its copy was confirmed.
"""

from __future__ import annotations

import hashlib
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from archive.store import ledger_prefix, object_key

from ..conftest import make_clip, run_cli
from ..s3server import SeaweedFS
from .daemon import (
    Daemon,
    entries,
    make_station,
    s3_store_conf,
    status,
    verify_bucket,
    wait_for,
)


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def of_type(es: list[dict[str, Any]], t: str) -> list[dict[str, Any]]:
    """Entries of one type; for `store`, originals only (fingerprint sidecars go up too)."""
    return [e for e in es if e["type"] == t and (t != "store" or e["role"] == "original")]


def check_replication_invariants(
    es: list[dict[str, Any]], server: SeaweedFS, bucket: str, shas: set[str]
) -> None:
    index = {id(e): i for i, e in enumerate(es)}
    stores = [e for e in of_type(es, "store") if e["role"] == "original"]
    assert sorted(e["sha256"] for e in stores) == sorted(shas), "one store entry per object"
    c = server.client()
    for h in shas:
        key = object_key(h)
        vs = [v for v in c.list_object_versions(Bucket=bucket, Prefix=key).get("Versions", [])]
        assert len(vs) == 1, f"{h[:16]}: {len(vs)} versions in the bucket"
        body = c.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert hashlib.sha256(body).hexdigest() == h
    store_at = {e["sha256"]: index[id(e)] for e in stores}
    sidecars = [e["sidecar"]["sha256"] for e in es if e["type"] == "fingerprint" and "sidecar" in e]
    side_stored = [e["sha256"] for e in es if e["type"] == "store" and e["role"] == "sidecar"]
    assert sorted(side_stored) == sorted(sidecars), "one store entry per fingerprint sidecar"
    wiped = [e["source"]["path"] for e in of_type(es, "wipe")]
    assert len(wiped) == len(set(wiped)), "a recorder file was wiped twice"
    for w in of_type(es, "wipe"):
        assert w["rule"] == "after_replication"
        assert index[id(w)] > store_at[w["sha256"]], "wiped before its copy was confirmed"
        assert w["store_entry"] == store_at[w["sha256"]]


def test_outage_delays_uploads_and_loses_nothing(tmp_path: Path, ffmpeg: str, clip: Path) -> None:
    server = SeaweedFS(tmp_path / "s3").start()
    bucket = server.bucket(f"ev-{uuid.uuid4().hex[:12]}")
    dock = tmp_path / "dock"
    conf = make_station(
        tmp_path,
        dock,
        release="after_replication",
        extra=s3_store_conf(server.endpoint, bucket),
    )
    slot = dock / "slot01"
    slot.mkdir(parents=True)
    d = Daemon(conf)
    try:
        d.wait_ready()
        shutil.copy(clip, slot / "A.mp4")
        a = sha(clip)
        wait_for(lambda: len(of_type(entries(conf), "wipe")) == 1, 60, d.log)
        assert not (slot / "A.mp4").exists()

        server.stop()  # the county store goes away
        clips = {
            name: make_clip(ffmpeg, tmp_path / "media" / name, seconds=1, tone=tone)
            for name, tone in (("B.mp4", 500), ("C.mp4", 700))
        }
        for name, src in clips.items():
            shutil.copy(src, slot / name)
        wait_for(lambda: len(of_type(entries(conf), "ingest")) == 3, 60, d.log)
        wait_for(lambda: bool(status(conf)["cold_store"]["last_error"]), 30, d.log)
        st = status(conf)["cold_store"]
        assert st["backlog"] >= 2 and st["oldest_unreplicated"], st  # with fingerprint sidecars
        assert (slot / "B.mp4").exists() and (slot / "C.mp4").exists()

        d.kill()  # and the dock loses power during the outage
        d = Daemon(conf)
        d.wait_ready()
        time.sleep(3)
        assert (slot / "B.mp4").exists() and (slot / "C.mp4").exists()
        assert len(of_type(entries(conf), "store")) == 1

        server.start()  # the store is back, same folder and ports
        wait_for(lambda: len(of_type(entries(conf), "wipe")) == 3, 120, d.log)
        assert not any(slot.iterdir())
        wait_for(lambda: status(conf)["cold_store"]["backlog"] == 0, 30, d.log)
        # The mirror runs every few seconds; the server may have been away at each run so far.
        wait_for(lambda: status(conf)["cold_store"]["ledger_mirrored_size"] > 1, 60, d.log)
    finally:
        if d.alive():
            assert d.stop() == 0
    es = entries(conf)
    shas = {a} | {sha(p) for p in clips.values()}
    check_replication_invariants(es, server, bucket, shas)
    # The ledger mirror in the bucket verifies with nothing from the dock but the key.
    v = verify_bucket(server.endpoint, bucket, conf.parent / "keys" / "station.vkey")
    assert ": OK;" in v.stdout, v.stdout
    keys = list(
        server.client()
        .list_objects_v2(Bucket=bucket, Prefix=ledger_prefix("custody.test/capture/dock-01"))
        .get("Contents", [])
    )
    assert keys
    server.stop()


def test_release_waits_for_replication_by_default(tmp_path: Path, clip: Path, seaweed: Any) -> None:
    bucket = seaweed.bucket(f"ev-{uuid.uuid4().hex[:12]}")
    dock = tmp_path / "dock"
    conf = make_station(tmp_path, dock, extra=s3_store_conf(seaweed.endpoint, bucket))
    # No release key: with a [store] the default is after_replication.
    conf.write_text(conf.read_text().replace('release = "never"\n', ""))
    (dock / "slot01").mkdir()
    shutil.copy(clip, dock / "slot01" / "x.mp4")
    out = run_cli("ingest", str(dock), "--settle-ms", "0", config=conf)
    assert "replicat" in out.stdout or "replicat" in out.stderr, out.stdout + out.stderr
    es = entries(conf)
    originals = [e for e in es if e["type"] != "store" or e["role"] == "original"]
    assert [e["type"] for e in originals if e["type"] in ("ingest", "store", "wipe")] == [
        "ingest",
        "store",
        "wipe",
    ]
    assert not (dock / "slot01" / "x.mp4").exists()
    check_replication_invariants(es, seaweed, bucket, {sha(clip)})


def test_local_folder_cold_store_end_to_end(tmp_path: Path, clip: Path) -> None:
    """The embedded default: a folder (e.g. a second disk) as the cold store."""
    dock = tmp_path / "dock"
    cold = tmp_path / "cold"
    conf = make_station(tmp_path, dock, extra=f'\n[store]\nkind = "local"\npath = "{cold}"\n')
    conf.write_text(conf.read_text().replace('release = "never"\n', ""))
    (dock / "slot01").mkdir()
    shutil.copy(clip, dock / "slot01" / "x.mp4")
    run_cli("ingest", str(dock), "--settle-ms", "0", config=conf)
    es = entries(conf)
    (store,) = [e for e in of_type(es, "store") if e["role"] == "original"]
    assert store["store"] == f"file://{cold}" and store["lock_mode"] == "COMPLIANCE"
    assert (cold / object_key(sha(clip))).read_bytes() == clip.read_bytes()
    assert of_type(es, "wipe")[0]["store_entry"] == es.index(store)
    v = run_cli(
        "ledger",
        "verify",
        "--dir",
        str(cold / "ledger" / "custody.test/capture/dock-01"),
        "--vkey",
        str(conf.parent / "keys" / "station.vkey"),
    )
    assert ": OK;" in v.stdout
    assert ": OK;" in run_cli("ledger", "verify", "--store", config=conf).stdout
    out = tmp_path / "fetched.mp4"
    got = run_cli("store", "fetch", sha(clip), "--out", str(out), "--cold", config=conf)
    assert "verified (from file://" in got.stdout and out.read_bytes() == clip.read_bytes()


def test_a_store_added_later_receives_what_was_captured_before(tmp_path: Path, clip: Path) -> None:
    """Footage captured while no cold store was configured is queued once one is."""
    dock = tmp_path / "dock"
    cold = tmp_path / "cold"
    conf = make_station(tmp_path, dock)
    (dock / "slot01").mkdir()
    shutil.copy(clip, dock / "slot01" / "x.mp4")
    (dock / "slot01" / "y.bin").write_bytes(b"not media, still evidence")
    run_cli("ingest", str(dock), "--settle-ms", "0", config=conf)
    assert of_type(entries(conf), "store") == []
    conf.write_text(conf.read_text() + f'\n[store]\nkind = "local"\npath = "{cold}"\n')
    d = Daemon(conf)
    try:
        d.wait_ready()

        def originals_stored() -> int:
            return len([e for e in of_type(entries(conf), "store") if e["role"] == "original"])

        wait_for(lambda: originals_stored() == 2, 60, d.log)
        assert b"queued 2 captured object(s)" in d.log.read_bytes()[d.log_start :]
    finally:
        assert d.stop() == 0
    assert (cold / object_key(sha(clip))).read_bytes() == clip.read_bytes()
