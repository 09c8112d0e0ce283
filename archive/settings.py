"""Settings of the cold store and of replication: plain values, no boto3.

The appliance builds these from its config file; keeping them apart from the
S3 client means reading a config does not import boto3.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class S3Settings:
    bucket: str
    prefix: str = ""
    endpoint_url: str = ""
    region: str = "us-east-1"
    path_style: bool = True
    verify_tls: bool | str = True  # False, True, or a CA bundle path
    checksums: str = "when_required"  # botocore's own: when_required | when_supported
    conditional_writes: bool = True
    profile: str = ""
    access_key_id: str = ""
    secret_access_key: str = ""
    multipart_threshold_mb: int = 32
    part_size_mb: int = 16
    concurrency: int = 4
    storage_class: str = ""
    connect_timeout_s: int = 5
    read_timeout_s: int = 60

    @property
    def store_id(self) -> str:
        where = self.endpoint_url.split("://", 1)[-1].rstrip("/") if self.endpoint_url else "aws"
        return f"s3:{where}/{self.bucket}" + (f"/{self.prefix.rstrip('/')}" if self.prefix else "")


@dataclass(frozen=True)
class ReplicationSettings:
    lock_mode: str = "COMPLIANCE"  # or GOVERNANCE, or none
    retain_days: int = 180  # default keep period until retention rules set it per object
    ledger_retain_days: int = 3650
    retry_base_s: float = 2.0
    retry_max_s: float = 600.0
    ledger_interval_s: float = 5.0
    stale_upload_hours: int = 24

    @property
    def locking(self) -> bool:
        return self.lock_mode != "none"
