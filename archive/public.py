"""A bucket prefix meant for public reading (the disclosure's ``[disclose.store]``).

Not the cold store: objects here carry a Content-Type (a browser opens ``index.html``
from the bucket), no object lock, and a wrong object is an operational problem to
report, not an integrity alarm (nothing here is evidence; the publication proves
itself with its MANIFEST and signed entry). It implements `disclose.target.PublicStore`
over the same boto3 client settings as `archive.s3.S3Store`.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from typing import Any

import botocore.exceptions as bx

from archive.errors import StoreError
from archive.s3 import S3Store
from archive.settings import S3Settings


class PublicBucket:
    def __init__(self, settings: S3Settings) -> None:
        self.s3 = S3Store(settings)
        self.settings = settings
        self.where = f"s3://{settings.bucket}/{settings.prefix}"

    def _fail(self, e: Exception, key: str, doing: str) -> StoreError:
        """One line naming the public bucket and what to do (the cold store's own
        messages speak of [store] and object lock, which do not apply here)."""
        endpoint = self.settings.endpoint_url or "AWS"
        if isinstance(e, bx.ClientError):
            code = _code(e)
            if code == "NoSuchBucket":
                return StoreError(
                    f"the public bucket {self.s3.bucket!r} does not exist at {endpoint}",
                    "create it (no object lock needed) or fix [disclose.store] bucket",
                )
            if code in _REFUSED:
                return StoreError(
                    f"the public bucket {self.s3.bucket!r} at {endpoint} refused the {doing} "
                    f"of {self.where}{key} ({code})",
                    "check [disclose.store]'s credentials and that they may read, list and "
                    "write that prefix",
                )
            return StoreError(f"{self.where}{key}: the {doing} failed: {code}: {e}")
        return StoreError(
            f"cannot reach the public bucket {self.s3.bucket!r} at {endpoint} for the {doing} "
            f"of {self.where}{key}: {e}",
            "check the network and [disclose.store] endpoint_url",
        )

    def sha256(self, key: str) -> str | None:
        try:
            h = self.s3.client.head_object(
                Bucket=self.s3.bucket, Key=self.s3.prefix + key, ChecksumMode="ENABLED"
            )
        except bx.ClientError as e:
            if _code(e) in _ABSENT:
                return None
            raise self._fail(e, key, "lookup") from e
        except bx.BotoCoreError as e:
            raise self._fail(e, key, "lookup") from e
        # The store's own checksum first: our metadata alone could be anyone's claim.
        checksum = str(h.get("ChecksumSHA256", "") or "")
        if checksum and "-" not in checksum:
            return base64.b64decode(checksum).hex()
        meta = h.get("Metadata", {}).get("sha256")
        if meta:
            return str(meta)
        data = self.read(key)
        return None if data is None else hashlib.sha256(data).hexdigest()

    def read(self, key: str) -> bytes | None:
        try:
            r = self.s3.client.get_object(Bucket=self.s3.bucket, Key=self.s3.prefix + key)
            data: bytes = r["Body"].read()
        except bx.ClientError as e:
            if _code(e) in _ABSENT:
                return None
            raise self._fail(e, key, "download") from e
        except bx.BotoCoreError as e:
            raise self._fail(e, key, "download") from e
        return data

    def put(
        self, key: str, data: bytes, sha256: str, content_type: str, *, replace: bool = False
    ) -> None:
        digest = hashlib.sha256(data).digest()
        if digest.hex() != sha256:
            raise ValueError(f"{key}: the bytes are not SHA-256 {sha256[:16]}")
        extra: dict[str, Any] = {}
        if self.settings.conditional_writes and not replace:
            extra["IfNoneMatch"] = "*"
        try:
            self.s3.client.put_object(
                Bucket=self.s3.bucket,
                Key=self.s3.prefix + key,
                Body=data,
                ContentType=content_type,
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=base64.b64encode(digest).decode(),
                Metadata={"sha256": sha256},
                **extra,
            )
        except bx.ClientError as e:
            if _code(e) != "PreconditionFailed":
                raise self._fail(e, key, "upload") from e
            # Written by someone else between the caller's look and this write: the
            # check below says whether it holds these bytes.
        except bx.BotoCoreError as e:
            raise self._fail(e, key, "upload") from e
        have = self.sha256(key)
        if have != sha256:
            raise StoreError(
                f"{self.where}{key}: read back as SHA-256 {(have or 'nothing')[:16]}, not "
                f"{sha256[:16]}",
                "the public bucket did not keep what it acknowledged; check the store",
            )

    def list(self, prefix: str) -> Iterator[str]:
        pager = self.s3.client.get_paginator("list_objects_v2")
        try:
            for page in pager.paginate(Bucket=self.s3.bucket, Prefix=self.s3.prefix + prefix):
                for o in page.get("Contents", []):
                    yield o["Key"][len(self.s3.prefix) :]
        except (bx.ClientError, bx.BotoCoreError) as e:
            raise self._fail(e, prefix, "listing") from e


_ABSENT = ("NoSuchKey", "404", "NotFound")
_REFUSED = ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "Forbidden")


def _code(e: bx.ClientError) -> str:
    code = str(e.response.get("Error", {}).get("Code", ""))
    status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code or str(status or "")
