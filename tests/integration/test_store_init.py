"""`custody store init`: the object-locked bucket (SeaweedFS) or the folder, idempotent."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from ..conftest import run_cli
from .daemon import s3_store_conf


def _station(tmp: Path, store: str) -> Path:
    data = tmp / "station"
    run_cli("init", "--data", str(data), "--origin", "custody.test/unit/dock-01")
    conf = data / "custody.toml"
    conf.write_text(conf.read_text() + store)
    return conf


def test_store_init_creates_the_locked_bucket_once(tmp_path: Path, seaweed: Any) -> None:
    bucket = f"init-{uuid.uuid4().hex[:12]}"
    conf = _station(tmp_path, s3_store_conf(seaweed.endpoint, bucket))
    p = run_cli("store", "init", config=conf)
    assert "bucket created, with object lock and versioning enabled" in p.stdout, p.stdout
    raw = seaweed.client()
    lock = raw.get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"]
    assert lock["ObjectLockEnabled"] == "Enabled"
    assert "DefaultRetention" not in lock.get("Rule", {})  # each object carries its own
    assert raw.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    # Again: nothing to do, the same answer in JSON.
    again = json.loads(run_cli("store", "init", "--json", config=conf).stdout)
    assert again["created"] is False and again["object_lock"] is True
    assert again["versioning"] == "Enabled" and again["bucket"] == bucket
    check = json.loads(run_cli("store", "check", "--json", config=conf).stdout)
    assert check["object_lock"] is True and check["lock_required"] is True


def test_store_init_refuses_a_bucket_without_object_lock(tmp_path: Path, seaweed: Any) -> None:
    bucket = seaweed.bucket(f"plain-{uuid.uuid4().hex[:12]}", lock=False)
    conf = _station(tmp_path, s3_store_conf(seaweed.endpoint, bucket))
    p = run_cli("store", "init", config=conf, check=False)
    assert p.returncode == 2 and "exists without object lock" in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr
    # Where the site accepts unlocked evidence, the same bucket is fine (and versioned).
    conf.write_text(conf.read_text().replace('lock_mode = "COMPLIANCE"', 'lock_mode = "none"'))
    out = json.loads(run_cli("store", "init", "--json", config=conf).stdout)
    assert out["object_lock"] is False and out["versioning"] == "Enabled"


def test_store_init_makes_the_local_folder(tmp_path: Path) -> None:
    cold = tmp_path / "cold"
    conf = _station(tmp_path, f'\n[store]\nkind = "local"\npath = "{cold}"\n')
    assert "folder created" in run_cli("store", "init", config=conf).stdout
    assert cold.is_dir()
    assert "folder ready" in run_cli("store", "init", config=conf).stdout
