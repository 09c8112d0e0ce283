"""The cold store against real servers: object lock, checksums, tampering, the ledger
mirror verified from the bucket alone, stale uploads, cold-class restore (moto)."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from archive.errors import LockingNotEnabled, ObjectConflict, ObjectCorrupt, RestoreRequired
from archive.replicate import Replicator, enqueue
from archive.retrieve import Retriever
from archive.s3 import S3Store
from archive.settings import ReplicationSettings, S3Settings
from archive.store import Lock, ledger_prefix, object_key
from custody import config as cfg
from custody.station import open_ledger
from ingest.objects import LocalObjects
from ledger.entry import decode_entry
from ledger.log import Ledger

from ..conftest import run_cli
from ..s3server import MotoServer
from .daemon import verify_bucket


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def new_bucket(seaweed: Any, lock: bool = True) -> str:
    name: str = seaweed.bucket(f"t-{uuid.uuid4().hex[:16]}", lock=lock)
    return name


def s3(seaweed: Any, bucket: str, **kw: Any) -> S3Store:
    return S3Store(S3Settings(bucket=bucket, endpoint_url=seaweed.endpoint, **kw))


def versions(seaweed: Any, bucket: str, key: str) -> list[dict[str, Any]]:
    r = seaweed.client().list_object_versions(Bucket=bucket, Prefix=key)
    return [v for v in r.get("Versions", []) if v["Key"] == key]


def all_entries(ledger: Ledger) -> list[dict[str, Any]]:
    return [dict(decode_entry(ledger.entry(i)).fields) for i in range(ledger.next_index())]


def put_local(objects: LocalObjects, data: bytes) -> str:
    h = sha(data)
    p = objects.path(h)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return h


def test_server_refuses_to_delete_or_replace_a_locked_object(seaweed: Any) -> None:
    bucket = new_bucket(seaweed)
    store = s3(seaweed, bucket)
    data = b"footage that must stay"
    key = object_key(sha(data))
    until = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    st = store.put(key, data, sha(data), Lock("COMPLIANCE", until))
    raw = seaweed.client()
    # A delete of the version itself, straight to the server: refused.
    with pytest.raises(ClientError) as e:
        raw.delete_object(Bucket=bucket, Key=st.key, VersionId=st.version_id)
    assert e.value.response["Error"]["Code"] == "AccessDenied"
    # Shortening the lock: refused by the server.
    with pytest.raises(ClientError):
        raw.put_object_retention(
            Bucket=bucket,
            Key=key,
            VersionId=st.version_id,
            Retention={"Mode": "COMPLIANCE", "RetainUntilDate": until - timedelta(hours=12)},
        )
    # Overwriting: our store refuses other bytes; a raw write only adds a version on top,
    # the locked original still reads back unchanged.
    with pytest.raises(ObjectConflict):
        store.put(key, b"other bytes", sha(b"other bytes"))
    with pytest.raises(ClientError) as e:
        raw.put_object(Bucket=bucket, Key=key, Body=b"x", IfNoneMatch="*")
    assert e.value.response["Error"]["Code"] == "PreconditionFailed"
    raw.put_object(Bucket=bucket, Key=key, Body=b"sneaky")
    old = raw.get_object(Bucket=bucket, Key=key, VersionId=st.version_id)["Body"].read()
    assert old == data
    # And reading by hash notices the current version is not what the key names.
    with pytest.raises(ObjectCorrupt):
        Retriever(None, store).fetch(sha(data), Path("/tmp") / f"never-{uuid.uuid4().hex}")


def test_legal_hold_blocks_deletion_on_the_server(seaweed: Any) -> None:
    bucket = new_bucket(seaweed)
    store = s3(seaweed, bucket)
    data = b"held for court"
    st = store.put(object_key(sha(data)), data, sha(data))
    store.set_legal_hold(st.key, True)
    with pytest.raises(ClientError) as e:
        seaweed.client().delete_object(Bucket=bucket, Key=st.key, VersionId=st.version_id)
    assert e.value.response["Error"]["Code"] == "AccessDenied"
    store.set_legal_hold(st.key, False)
    seaweed.client().delete_object(Bucket=bucket, Key=st.key, VersionId=st.version_id)


def test_tampered_object_in_bucket_is_detected_on_read(seaweed: Any, tmp_path: Path) -> None:
    bucket = new_bucket(seaweed, lock=False)
    store = s3(seaweed, bucket, conditional_writes=False)
    data = b"the original recording"
    key = object_key(sha(data))
    store.put(key, data, sha(data))
    # Someone with write access swaps the bytes (keeping our metadata).
    seaweed.client().put_object(
        Bucket=bucket, Key=key, Body=b"the altered recording!", Metadata={"sha256": sha(data)}
    )
    dest = tmp_path / "out.bin"
    with pytest.raises(ObjectCorrupt, match="not " + sha(data)[:16]):
        Retriever(None, store).fetch(sha(data), dest)
    assert not dest.exists() and not list(tmp_path.glob(".out.bin*"))
    with pytest.raises(ObjectConflict):
        store.put(key, data, sha(data))


def test_corrupted_upload_is_rejected_by_the_server_and_retried(
    seaweed: Any, station: Path
) -> None:
    bucket = new_bucket(seaweed)
    conf = cfg.load(station)
    store = s3(seaweed, bucket)
    hits = {"n": 0}

    def corrupt_first(request: Any, **_: Any) -> None:
        # A bit flipped on the wire: the body no longer matches its x-amz-checksum-sha256.
        if hits["n"] == 0:
            hits["n"] += 1
            body = request.body
            b = bytearray(body.read() if hasattr(body, "read") else body)
            b[len(b) // 2] ^= 0x01
            request.body = bytes(b)

    store.client.meta.events.register("before-send.s3.PutObject", corrupt_first)
    objects = LocalObjects(conf.store_dir)
    data = b"evidence " * 1000
    h = put_local(objects, data)
    with open_ledger(conf) as ledger:
        rep = Replicator(
            ledger, store, objects.path, ReplicationSettings(retain_days=1, retry_base_s=0.01)
        )
        with rep.db:
            enqueue(rep.db, store.id, h, len(data), "original")
        assert rep.run_due()[0] == 1
        row = rep.db.execute("SELECT state, attempts, last_error FROM archive_queue").fetchone()
        assert hits["n"] == 1
        assert row[0] == "queued" and row[1] == 1 and "checksum" in row[2], row
        assert rep.stored_entry(h) is None
        rep.db.execute("UPDATE archive_queue SET next_at=0")
        rep.db.commit()
        rep.run_due()
        idx = rep.stored_entry(h)
        assert idx is not None
        e = dict(decode_entry(ledger.entry(idx)).fields)
        rep.close()
    assert e["type"] == "store" and e["sha256"] == h and e["bucket"] == bucket
    assert e["lock_mode"] == "COMPLIANCE" and e["retain_until"].endswith("Z")
    assert len(versions(seaweed, bucket, object_key(h))) == 1


def test_ledger_verifies_from_the_bucket_alone(seaweed: Any, station: Path) -> None:
    bucket = new_bucket(seaweed)
    loose = new_bucket(seaweed, lock=False)
    conf = cfg.load(station)
    objects = LocalObjects(conf.store_dir)
    vkey = conf.vkey_path
    with open_ledger(conf) as ledger:
        locked = Replicator(ledger, s3(seaweed, bucket), objects.path, ReplicationSettings())
        unlocked = Replicator(
            ledger, s3(seaweed, loose), objects.path, ReplicationSettings(lock_mode="none")
        )
        sizes = []
        for batch in (5, 300, 7):  # crosses a full tile and bundle
            ledger.append_entries([("note", {"text": f"remark {i}"}) for i in range(batch)])
            sizes.append(ledger.integrate().size)  # type: ignore[union-attr]
            assert locked.sync_ledger() == sizes[-1]
            unlocked.sync_ledger()
        locked.close()
        unlocked.close()
    keys = set(s3(seaweed, bucket).list(ledger_prefix(conf.origin)))
    pre = ledger_prefix(conf.origin)
    assert {f"{pre}tile/0/000", f"{pre}tile/entries/000", f"{pre}checkpoint"} <= keys
    assert {f"{pre}checkpoints/{n}" for n in sizes} <= keys
    # Partials of tiles that are now full are gone; the moving checkpoint keeps one version.
    assert not [k for k in keys if k.startswith(f"{pre}tile/0/000.p/")], keys
    assert not [k for k in keys if k.startswith(f"{pre}tile/entries/000.p/")], keys
    assert f"{pre}tile/0/001.p/57" in keys  # the right edge at 313 entries
    assert len(versions(seaweed, bucket, f"{pre}checkpoint")) == 1
    # Full tiles are locked like evidence; the moving checkpoint is not.
    tile = s3(seaweed, bucket).head(f"{pre}tile/0/000")
    assert tile is not None and tile.lock is not None
    ep = seaweed.endpoint
    ok = verify_bucket(ep, bucket, vkey)
    assert f"size {sizes[-1]}" in ok.stdout and "OK" in ok.stdout, ok.stdout
    assert "4 recorded checkpoints" in ok.stdout, ok.stdout  # the key entry's, and three
    # One altered letter in an entry bundle of the unlocked copy is named: entry 1 is the
    # first note, "remark 0".
    raw = seaweed.client()
    k = f"{pre}tile/entries/000"
    b = raw.get_object(Bucket=loose, Key=k)["Body"].read()
    raw.put_object(Bucket=loose, Key=k, Body=b.replace(b'"remark 0"', b'"remarK 0"', 1))
    bad = verify_bucket(ep, loose, vkey, check=False)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    # The altered entry is named, and the tile whose leaf hash no longer matches it.
    assert "entry 1: signature does not verify" in bad.stdout, bad.stdout
    assert "tile/0/000: 1 leaf hash(es) differ" in bad.stdout, bad.stdout
    assert "FAILED" in bad.stdout


def test_stale_multipart_uploads_are_cleaned(seaweed: Any) -> None:
    bucket = new_bucket(seaweed)
    store = s3(seaweed, bucket)
    raw = seaweed.client()
    raw.create_multipart_upload(Bucket=bucket, Key="objects/abandoned", ChecksumAlgorithm="SHA256")
    assert raw.list_multipart_uploads(Bucket=bucket).get("Uploads")
    assert store.abort_stale_uploads(timedelta(hours=1)) == 0
    assert store.abort_stale_uploads(timedelta(0)) == 1
    assert not raw.list_multipart_uploads(Bucket=bucket).get("Uploads")


def test_bucket_without_object_lock_is_refused(seaweed: Any, station: Path) -> None:
    bucket = new_bucket(seaweed, lock=False)
    with pytest.raises(LockingNotEnabled):
        s3(seaweed, bucket).check_locking(required=True)
    text = station.read_text()
    table = f'\n[store]\nkind = "s3"\nbucket = "{bucket}"\nendpoint_url = "{seaweed.endpoint}"\n'
    station.write_text(text + table)
    p = run_cli("store", "check", config=station, check=False)
    assert p.returncode == 2 and "has no object lock" in p.stderr, p.stderr
    p = run_cli("run", config=station, check=False)
    assert p.returncode == 2 and "has no object lock" in p.stderr, p.stderr
    station.write_text(text + table + 'lock_mode = "none"\n')
    ok = run_cli("store", "check", config=station)
    assert "reachable" in ok.stdout


def test_cold_class_restore_with_moto(tmp_path: Path) -> None:
    server = MotoServer(tmp_path / "moto").start()
    try:
        import boto3

        boto3.client("s3", endpoint_url=server.endpoint, region_name="us-east-1").create_bucket(
            Bucket="cold-tier"
        )
        store = S3Store(
            S3Settings(bucket="cold-tier", endpoint_url=server.endpoint, storage_class="GLACIER")
        )
        data = b"archived years ago"
        st = store.put(object_key(sha(data)), data, sha(data))
        assert st.storage_class == "GLACIER"
        r = Retriever(None, store)
        with pytest.raises(RestoreRequired):
            r.fetch(sha(data), tmp_path / "x")
        status = r.restore(sha(data), days=2)
        assert status.startswith(("ongoing", "available")), status
        got = r.fetch(sha(data), tmp_path / "x")
        assert (tmp_path / "x").read_bytes() == data and got.source == store.id
    finally:
        server.stop()


def test_corrupted_part_is_rejected_and_the_upload_abandoned(seaweed: Any, tmp_path: Path) -> None:
    """A part whose bytes do not match its SHA-256 is refused by the server; the multipart
    upload is aborted (nothing half-made stays) and the next attempt stores the object."""
    from archive.errors import TransferCorrupted

    bucket = new_bucket(seaweed)
    store = s3(seaweed, bucket, multipart_threshold_mb=5, part_size_mb=5, concurrency=2)
    hits = {"n": 0}

    def corrupt_one_part(request: Any, **_: Any) -> None:
        if hits["n"] == 0:
            hits["n"] += 1
            body = request.body
            b = bytearray(body.read() if hasattr(body, "read") else body)
            b[7] ^= 0x80
            request.body = bytes(b)

    store.client.meta.events.register("before-send.s3.UploadPart", corrupt_one_part)
    f = tmp_path / "big"
    data = bytes(range(256)) * (12 * 4096)  # 12 MiB: three parts
    f.write_bytes(data)
    with pytest.raises(TransferCorrupted):
        store.put(object_key(sha(data)), f, sha(data))
    raw = seaweed.client()
    assert not raw.list_multipart_uploads(Bucket=bucket).get("Uploads")
    assert store.head(object_key(sha(data))) is None
    st = store.put(object_key(sha(data)), f, sha(data))
    assert st.checksum.endswith("-3") and hits["n"] == 1
    assert len(versions(seaweed, bucket, object_key(sha(data)))) == 1


def test_object_already_stored_under_a_shorter_lock_is_extended(
    seaweed: Any, station: Path
) -> None:
    """Another dock (or an earlier policy) stored the same bytes with a shorter lock: the
    store entry must not claim a lock the store does not hold, so it is extended first."""
    bucket = new_bucket(seaweed)
    conf = cfg.load(station)
    store = s3(seaweed, bucket)
    objects = LocalObjects(conf.store_dir)
    data = b"docked twice, at two stations"
    h = put_local(objects, data)
    short = Lock("COMPLIANCE", datetime.now(UTC).replace(microsecond=0) + timedelta(days=1))
    store.put(object_key(h), data, h, short)
    with open_ledger(conf) as ledger:
        rep = Replicator(ledger, store, objects.path, ReplicationSettings(retain_days=30))
        with rep.db:
            enqueue(rep.db, store.id, h, len(data), "original")
        rep.run_due()
        idx = rep.stored_entry(h)
        assert idx is not None
        e = dict(decode_entry(ledger.entry(idx)).fields)
        rep.close()
    st = store.head(object_key(h))
    assert st is not None and st.lock is not None
    assert st.lock.retain_until > short.retain_until + timedelta(days=28)
    assert e["retain_until"] == st.lock.retain_until.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    assert len(versions(seaweed, bucket, object_key(h))) == 1
