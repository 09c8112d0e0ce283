"""The configured cold store, built from ``[store]``."""

from __future__ import annotations

from archive.local import LocalFolderStore
from archive.replicate import ReplicationSettings
from archive.s3 import S3Settings, S3Store
from archive.store import ColdStore
from custody import config as cfg


def s3_settings(sc: cfg.StoreConfig) -> S3Settings:
    return S3Settings(
        bucket=sc.bucket,
        prefix=sc.prefix,
        endpoint_url=sc.endpoint_url,
        region=sc.region,
        path_style=sc.path_style,
        verify_tls=sc.verify_tls,
        checksums=sc.checksums,
        conditional_writes=sc.conditional_writes,
        profile=sc.profile,
        access_key_id=sc.access_key_id,
        secret_access_key=sc.secret_access_key,
        multipart_threshold_mb=sc.multipart_threshold_mb,
        part_size_mb=sc.part_size_mb,
        concurrency=sc.concurrency,
        storage_class=sc.storage_class,
    )


def open_store(conf: cfg.Config) -> ColdStore | None:
    sc = conf.store
    if sc is None:
        return None
    if sc.kind == "local":
        assert sc.path is not None
        return LocalFolderStore(sc.path)
    return S3Store(s3_settings(sc))


def replication_settings(conf: cfg.Config) -> ReplicationSettings:
    sc = conf.store
    assert sc is not None
    return ReplicationSettings(
        lock_mode=sc.lock_mode,
        retain_days=sc.retain_days,
        ledger_retain_days=sc.ledger_retain_days,
        retry_max_s=float(sc.retry_max_s),
        stale_upload_hours=sc.stale_upload_hours,
    )
