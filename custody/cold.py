"""The configured cold store, built from ``[store]``."""

from __future__ import annotations

from archive.local import LocalFolderStore
from archive.s3 import S3Store
from archive.settings import ReplicationSettings
from archive.store import ColdStore
from custody import config as cfg


def open_store(conf: cfg.Config) -> ColdStore | None:
    sc = conf.store
    if sc is None:
        return None
    if sc.kind == "local":
        assert sc.path is not None
        return LocalFolderStore(sc.path)
    assert sc.s3 is not None
    return S3Store(sc.s3)


def replication_settings(conf: cfg.Config) -> ReplicationSettings:
    assert conf.store is not None
    return conf.store.replication
