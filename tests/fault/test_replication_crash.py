"""Crash campaign for replication: SIGKILL the daemon at random moments while it uploads.

Files are docked with release after replication and a real S3 server
(SeaweedFS); parts are small so big files go up in several parts and kills
land mid-upload. After every kill: a file gone from the recorder must have
its `store` entry and a matching object in the bucket. After a clean run:
every object stored exactly once (one version, one `store` entry), every
wipe after its `store` entry, and the ledger verifies locally and from the
bucket alone.
"""

from __future__ import annotations

import hashlib
import os
import random
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from archive.store import object_key

from ..conftest import run_cli
from ..integration.daemon import (
    Daemon,
    entries,
    make_station,
    s3_store_conf,
    status,
    verify_bucket,
    wait_for,
)

KILLS = int(os.environ.get("CUSTODY_REPLICATION_KILLS", "16"))


@pytest.mark.slow
def test_sigkill_while_replicating(tmp_path: Path, seaweed: Any) -> None:
    rng = random.Random(int(os.environ.get("CUSTODY_CRASH_SEED", "2024")))
    bucket = seaweed.bucket(f"crash-{uuid.uuid4().hex[:12]}")
    dock = tmp_path / "dock"
    extra = s3_store_conf(
        seaweed.endpoint,
        bucket,
        multipart_threshold_mb=5,
        part_size_mb=5,
        concurrency=2,
        retry_max_s=1,
    )
    conf = make_station(tmp_path, dock, extra=extra, settle_ms=100, release="after_replication")
    client = seaweed.client()
    expected: dict[str, str] = {}
    n = 0
    mid_upload = 0  # kills that left a multipart upload unfinished

    def open_uploads() -> int:
        return len(client.list_multipart_uploads(Bucket=bucket).get("Uploads", []))

    for _ in range(KILLS):
        # One file per round goes up in parts, so an aimed kill has an upload to land in.
        sizes = [13_000_000] + [
            rng.choice([0, 4000, 600_000, 7_000_000]) for _ in range(rng.randint(0, 3))
        ]
        for size in sizes:
            rel = f"slot{rng.randint(1, 3):02d}/R{n:04d}.bin"
            n += 1
            data = rng.randbytes(size)
            (dock / rel).parent.mkdir(parents=True, exist_ok=True)
            (dock / rel).write_bytes(data)
            expected[rel] = hashlib.sha256(data).hexdigest()
        d = Daemon(conf)
        if rng.random() < 0.5:
            time.sleep(rng.uniform(0.5, 3.0))  # anywhere: capture, upload, entries, mirror
        else:
            # Aim for the middle of a multipart upload: kill once one is open.
            end = time.monotonic() + 8
            while time.monotonic() < end and not open_uploads():
                time.sleep(0.01)
        d.kill()
        mid_upload += open_uploads() > 0
        for u in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
            # Left by the killed daemon (the daemon sweeps only day-old ones): clear them so
            # the next round's count means something.
            client.abort_multipart_upload(Bucket=bucket, Key=u["Key"], UploadId=u["UploadId"])
        stored = {e["sha256"] for e in entries(conf) if e["type"] == "store"}
        for rel, digest in expected.items():
            if not (dock / rel).exists():
                assert digest in stored, f"{rel} wiped without a store entry"
                body = client.get_object(Bucket=bucket, Key=object_key(digest))["Body"].read()
                assert hashlib.sha256(body).hexdigest() == digest
    print(f"{mid_upload} of {KILLS} kills left a multipart upload unfinished")
    assert mid_upload >= 2, "kills never landed during an upload"
    d = Daemon(conf)
    try:
        d.wait_ready()
        wait_for(lambda: not any(p.is_file() for p in dock.rglob("*")), 180, d.log)

        # The mirror runs every few seconds: wait until it has caught up with the log.
        def mirrored() -> bool:
            st = status(conf)
            return bool(st["cold_store"]["ledger_mirrored_size"] >= st["ledger"]["checkpoint_size"])

        wait_for(mirrored, 60, d.log)
    finally:
        assert d.stop() == 0
    es = entries(conf)
    index = {id(e): i for i, e in enumerate(es)}
    shas = set(expected.values())
    stores = Counter(e["sha256"] for e in es if e["type"] == "store")
    assert set(stores) == shas and all(v == 1 for v in stores.values()), stores
    store_at = {e["sha256"]: index[id(e)] for e in es if e["type"] == "store"}
    wipes = [e for e in es if e["type"] == "wipe"]
    assert {e["source"]["path"] for e in wipes} == set(expected)
    assert len(wipes) == len(expected), "a recorder file was wiped twice"
    for w in wipes:
        assert index[id(w)] > store_at[w["sha256"]]
    for h in shas:
        vs = client.list_object_versions(Bucket=bucket, Prefix=object_key(h)).get("Versions", [])
        assert len(vs) == 1, f"{h[:16]} has {len(vs)} versions"
    assert "OK" in run_cli("ledger", "verify", config=conf).stdout
    v = verify_bucket(seaweed.endpoint, bucket, conf.parent / "keys" / "station.vkey")
    assert ": OK;" in v.stdout, v.stdout
