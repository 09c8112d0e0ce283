"""The configured cold store, built from ``[store]``."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from archive.settings import ReplicationSettings
    from archive.store import ColdStore
    from custody import config as cfg


def open_store(conf: cfg.Config) -> ColdStore | None:
    sc = conf.store
    if sc is None:
        return None
    # Each store's module only when configured: boto3 alone takes longer to import than
    # a whole `custody status` of a station without an S3 store.
    if sc.kind == "local":
        from archive.local import LocalFolderStore

        assert sc.path is not None
        return LocalFolderStore(sc.path)
    from archive.s3 import S3Store

    assert sc.s3 is not None
    return S3Store(sc.s3)


def replication_settings(conf: cfg.Config) -> ReplicationSettings:
    assert conf.store is not None
    return conf.store.replication
