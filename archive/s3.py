"""The S3 cold store (boto3): AWS S3, Ceph RGW, MinIO, SeaweedFS and the like.

Every write carries a SHA-256 checksum the server checks (``ChecksumSHA256``
per request or per part), conditional create (``If-None-Match: *``) where
the store supports it, and the object-lock mode and retain-until of its
rule. After the write the object's checksum is read back (``HEAD`` with
``x-amz-checksum-mode: ENABLED``) and compared with what was computed here
before the upload counts: the SHA-256 itself for a single request, the
composite ``base64(SHA-256(part digests))-<parts>`` for a multipart upload,
plus the full-object SHA-256 kept in the ``x-amz-meta-sha256`` header.

Request checksum behaviour is switchable (``when_required`` by default):
newer botocore sends CRC headers and trailers by default, which some stores
reject; we always send our own SHA-256, so nothing is lost by switching
botocore's own off.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import itertools
import os
import re
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions as bx
from botocore.config import Config as BotoConfig

from archive.errors import (
    LocalCopyCorrupt,
    LockingNotEnabled,
    LockRefused,
    NotFound,
    ObjectConflict,
    ObjectCorrupt,
    RestoreRequired,
    StoreError,
    StoreUnavailable,
    TransferCorrupted,
)
from archive.settings import S3Settings
from archive.store import Lock, Stored

MiB = 1 << 20
COLD_CLASSES = ("GLACIER", "DEEP_ARCHIVE")
_CORRUPT = ("BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch", "InvalidChecksum")
_UNAVAILABLE = ("InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout", "503", "500")


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def _code(e: bx.ClientError) -> str:
    return str(e.response.get("Error", {}).get("Code", ""))


def _status(e: bx.ClientError) -> int:
    return int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


class S3Store:
    """`ObjectStore` and `LockControl` over one bucket (and optional key prefix)."""

    def __init__(self, settings: S3Settings) -> None:
        self.s = settings
        self.bucket = settings.bucket
        self.prefix = settings.prefix
        self.id = settings.store_id
        try:
            session = boto3.session.Session(
                profile_name=settings.profile or None,
                aws_access_key_id=settings.access_key_id or None,
                aws_secret_access_key=settings.secret_access_key or None,
            )
        except bx.ProfileNotFound:
            raise StoreError(
                f"[store] profile {settings.profile!r} is in no AWS config file "
                "(~/.aws/config, ~/.aws/credentials, or AWS_CONFIG_FILE): add it, or remove "
                "the key to use the standard credential chain"
            ) from None
        self.client: Any = session.client(
            "s3",
            endpoint_url=settings.endpoint_url or None,
            region_name=settings.region,
            verify=settings.verify_tls,
            config=BotoConfig(
                s3={
                    "addressing_style": "path" if settings.path_style else "auto",
                    # Bodies carry a signed x-amz-checksum-sha256 the server checks (what
                    # botocore does for S3 over HTTPS anyway); signing the payload as well
                    # costs one SHA-256 pass on the dock and one on the server per byte.
                    "payload_signing_enabled": False,
                },
                request_checksum_calculation=settings.checksums,
                response_checksum_validation=settings.checksums,
                # Without If-None-Match a blind retry could write a second version; the
                # upload queue retries after a HEAD instead.
                retries={
                    "total_max_attempts": 3 if settings.conditional_writes else 1,
                    "mode": "standard",
                },
                connect_timeout=settings.connect_timeout_s,
                read_timeout=settings.read_timeout_s,
                max_pool_connections=settings.concurrency + 4,
            ),
        )
        self.part_size = settings.part_size_mb * MiB
        self.stopping = threading.Event()  # set on shutdown: a multipart upload stops early
        self.threshold = settings.multipart_threshold_mb * MiB

    # -- errors ---------------------------------------------------------------------

    def _where(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}{key}"

    def _error(self, e: Exception, key: str, doing: str) -> Exception:
        where = self._where(key)
        if isinstance(e, bx.ClientError):
            code, status = _code(e), _status(e)
            if code in _CORRUPT:
                return TransferCorrupted(
                    f"{where}: the store rejected the {doing}: its bytes did not match the "
                    f"SHA-256 checksum ({code}); it will be sent again"
                )
            if code in ("NoSuchKey", "404", "NotFound"):
                return NotFound(f"{where}: not in the store")
            if code == "InvalidObjectState":
                return RestoreRequired(
                    f"{where}: in a cold storage class; request a restore and read it later"
                )
            if code == "NoSuchBucket":
                return StoreError(
                    f"bucket {self.bucket!r} does not exist at {self.s.endpoint_url or 'AWS'}",
                    "create it with object lock enabled, or fix [store] bucket",
                )
            if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch"):
                return StoreError(
                    f"the store refused our credentials ({code}) during the {doing}",
                    "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or [store] profile",
                )
            if status >= 500 or code in _UNAVAILABLE:
                return StoreUnavailable(f"{where}: store error during the {doing}: {code} {e}")
            return StoreError(f"{where}: the {doing} failed: {code}: {e}")
        if isinstance(e, bx.BotoCoreError):
            return StoreUnavailable(
                f"cannot reach the store at {self.s.endpoint_url or 'AWS'} for the {doing} "
                f"of {where}: {e}",
                "uploads stay queued and are retried; check the network and the store",
            )
        return e

    # -- ObjectStore ------------------------------------------------------------------

    def put(
        self,
        key: str,
        source: Path | bytes,
        sha256: str,
        lock: Lock | None = None,
        *,
        replace: bool = False,
    ) -> Stored:
        size = len(source) if isinstance(source, bytes) else os.stat(source).st_size
        if not replace:
            try:
                existing = self.head(key)
            except _Forbidden:
                # Without s3:ListBucket a missing key answers 403; If-None-Match still
                # keeps the write from replacing anything.
                existing = None
            if existing is not None:
                return self._accept_existing(key, existing, source, sha256, size)
        extra: dict[str, Any] = {"Metadata": {"sha256": sha256}}
        if lock is not None and not replace:
            extra["ObjectLockMode"] = lock.mode
            extra["ObjectLockRetainUntilDate"] = lock.retain_until
        if self.s.storage_class and key.startswith("objects/"):
            # Evidence only: the ledger's tiles and checkpoints must stay readable.
            extra["StorageClass"] = self.s.storage_class
        try:
            if size <= self.threshold:
                expected = self._put_single(key, source, sha256, extra, replace)
            else:
                assert isinstance(source, Path)
                expected = self._put_multipart(key, source, sha256, size, extra, replace)
        except bx.ClientError as e:
            if _code(e) == "PreconditionFailed":
                # Stored by someone else between our HEAD and our write: same rule as above.
                existing = self.head(key)
                if existing is not None:
                    return self._accept_existing(key, existing, source, sha256, size)
            raise self._error(e, key, "upload") from e
        except bx.BotoCoreError as e:
            raise self._error(e, key, "upload") from e
        st = self._confirm(key, sha256, size, expected)
        if replace:
            self._drop_older_versions(key, st.version_id)
        return st

    def _drop_older_versions(self, key: str, keep: str | None) -> None:
        """A key that moves on (the latest checkpoint) keeps one version in a versioned
        bucket, not one per update; versions a default retention locked stay."""
        if not keep or keep == "null":
            return
        k = self.prefix + key
        try:
            r = self.client.list_object_versions(Bucket=self.bucket, Prefix=k)
            for v in r.get("Versions", []):
                if v["Key"] == k and v["VersionId"] != keep:
                    with contextlib.suppress(bx.ClientError):
                        self.client.delete_object(
                            Bucket=self.bucket, Key=k, VersionId=v["VersionId"]
                        )
        except (bx.ClientError, bx.BotoCoreError):
            pass  # tidying only; the next update tries again

    def _confirm(self, key: str, sha256: str, size: int, expected: str) -> Stored:
        st = self.head(key)
        if st is None:
            raise StoreUnavailable(f"{self._where(key)}: written but not found on read-back")
        if not self._holds(key, st, sha256, size, expected):
            raise ObjectCorrupt(
                f"{self._where(key)}: read-back does not match what was sent (checksum "
                f"{st.checksum or 'none'} vs {expected}, size {st.size} vs {size})",
                "the store did not keep the bytes it acknowledged; audit the store",
            )
        return st

    def _holds(self, key: str, st: Stored, sha256: str, size: int, expected: str | None) -> bool:
        """Whether the stored object is the bytes named by ``sha256``: one rule for the
        read-back after an upload and for an object found already there.

        A checksum the store reports must match; so must our metadata where it is kept.
        Without a checksum to compare (a store that keeps none, a part layout we cannot
        recompute) the object is read back and hashed: metadata alone can be forged.
        """
        if st.size != size or st.sha256 not in (sha256, None):
            return False
        if st.checksum and expected is not None:
            return st.checksum == expected
        return self._hash_stored(key) == sha256

    def _accept_existing(
        self, key: str, existing: Stored, source: Path | bytes, sha256: str, size: int
    ) -> Stored:
        """An object already under ``key``: accepted only if it holds our bytes."""
        expected: str | None = None
        parts = existing.checksum.partition("-")[2]
        if not parts:
            expected = _b64(bytes.fromhex(sha256))
        elif isinstance(source, Path) and int(parts) == -(-size // self._part_size(size)):
            expected = composite_checksum(source, self._part_size(size))
        if not self._holds(key, existing, sha256, size, expected):
            raise ObjectConflict(
                f"{self._where(key)} already holds an object that is not SHA-256 "
                f"{sha256[:16]} (size {existing.size}, checksum {existing.checksum or 'none'})",
                "the bucket holds different bytes under a content address; audit the store",
            )
        return existing

    def _part_size(self, size: int) -> int:
        """The configured part size, grown in whole MiB to stay within 10,000 parts."""
        return max(self.part_size, -(-size // (10_000 * MiB)) * MiB)

    def _hash_stored(self, key: str) -> str:
        h = hashlib.sha256()
        for c in self.get(key):
            h.update(c)
        return h.hexdigest()

    def _put_single(
        self, key: str, source: Path | bytes, sha256: str, extra: dict[str, Any], replace: bool
    ) -> str:
        body = source if isinstance(source, bytes) else source.read_bytes()
        digest = hashlib.sha256(body).digest()
        if digest.hex() != sha256:
            raise LocalCopyCorrupt(
                f"{source if isinstance(source, Path) else key}: reads as SHA-256 "
                f"{digest.hex()[:16]}, not {sha256[:16]}; not uploaded",
                "the dock's copy is damaged: check the disk; the ledger keeps the original hash",
            )
        if self.s.conditional_writes and not replace:
            extra = {**extra, "IfNoneMatch": "*"}
        self.client.put_object(
            Bucket=self.bucket,
            Key=self.prefix + key,
            Body=body,
            ChecksumAlgorithm="SHA256",
            ChecksumSHA256=_b64(digest),
            **extra,
        )
        return _b64(digest)

    def _put_multipart(
        self, key: str, source: Path, sha256: str, size: int, extra: dict[str, Any], replace: bool
    ) -> str:
        k = self.prefix + key
        up = self.client.create_multipart_upload(
            Bucket=self.bucket, Key=k, ChecksumAlgorithm="SHA256", **extra
        )
        upload_id = up["UploadId"]
        done = False
        try:
            parts, digests = self._send_parts(k, upload_id, source, sha256, size)
            complete: dict[str, Any] = {}
            if self.s.conditional_writes and not replace:
                complete["IfNoneMatch"] = "*"
            self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=k,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
                **complete,
            )
            done = True
        finally:
            if not done:
                # If this fails too, the stale-upload sweep removes it later.
                with contextlib.suppress(bx.ClientError, bx.BotoCoreError):
                    self.client.abort_multipart_upload(
                        Bucket=self.bucket, Key=k, UploadId=upload_id
                    )
        return f"{_b64(hashlib.sha256(b''.join(digests)).digest())}-{len(digests)}"

    def _send_parts(
        self, k: str, upload_id: str, source: Path, sha256: str, size: int
    ) -> tuple[list[dict[str, Any]], list[bytes]]:
        """Read parts in order (hashing the whole file on the way), send them in parallel.

        At most ``concurrency`` + 1 parts are in memory at a time, whatever the file size.
        """
        full = hashlib.sha256()
        part_size = self._part_size(size)
        digests: list[bytes] = []
        futures: list[Future[dict[str, Any]]] = []
        slots = threading.BoundedSemaphore(self.s.concurrency + 1)

        def send(n: int, data: bytes, digest: bytes) -> dict[str, Any]:
            try:
                r = self.client.upload_part(
                    Bucket=self.bucket,
                    Key=k,
                    UploadId=upload_id,
                    PartNumber=n,
                    Body=data,
                    ChecksumSHA256=_b64(digest),
                )
            finally:
                slots.release()
            return {"PartNumber": n, "ETag": r["ETag"], "ChecksumSHA256": _b64(digest)}

        # The whole-file hash runs on its own thread, in part order, beside the part hashes.
        with (
            ThreadPoolExecutor(self.s.concurrency, thread_name_prefix="upload") as pool,
            ThreadPoolExecutor(1, thread_name_prefix="upload-hash") as hasher,
        ):
            try:
                with open(source, "rb", buffering=0) as f:
                    os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
                    n = 0
                    while True:
                        slots.acquire()
                        if self.stopping.is_set():
                            raise StoreUnavailable(
                                f"{self._where(k[len(self.prefix) :])}: upload interrupted by "
                                "shutdown; it starts again at the next run"
                            )
                        data = _read_full(f, part_size)
                        if not data:
                            slots.release()
                            break
                        n += 1
                        hasher.submit(full.update, data)
                        d = hashlib.sha256(data).digest()
                        digests.append(d)
                        futures.append(pool.submit(send, n, data, d))
                        failed = [x for x in futures if x.done() and x.exception()]
                        if failed:
                            failed[0].result()
                hasher.shutdown(wait=True)
                if full.hexdigest() != sha256:
                    raise LocalCopyCorrupt(
                        f"{source}: reads as SHA-256 {full.hexdigest()[:16]}, not "
                        f"{sha256[:16]}; upload abandoned",
                        "the dock's copy is damaged: check the disk",
                    )
                parts = [x.result() for x in futures]
            except BaseException:
                for x in futures:
                    x.cancel()
                raise
        return parts, digests

    def head(self, key: str) -> Stored | None:
        try:
            h = self.client.head_object(
                Bucket=self.bucket, Key=self.prefix + key, ChecksumMode="ENABLED"
            )
        except bx.ClientError as e:
            if _status(e) == 404 or _code(e) in ("404", "NoSuchKey", "NotFound"):
                return None
            if _status(e) == 403:
                raise _Forbidden(
                    f"{self._where(key)}: the store refused a HEAD (403)",
                    "check the credentials' permissions (s3:GetObject, s3:ListBucket)",
                ) from e
            raise self._error(e, key, "lookup") from e
        except bx.BotoCoreError as e:
            raise self._error(e, key, "lookup") from e
        lock = None
        if h.get("ObjectLockMode") and h.get("ObjectLockRetainUntilDate"):
            lock = Lock(h["ObjectLockMode"], h["ObjectLockRetainUntilDate"].astimezone(UTC))
        restore = None
        if "Restore" in h:
            r = h["Restore"]
            m = re.search(r'expiry-date="([^"]+)"', r)
            restore = (
                "ongoing"
                if 'ongoing-request="true"' in r
                else f"available until {m.group(1)}"
                if m
                else "available"
            )
        return Stored(
            key=key,
            size=int(h["ContentLength"]),
            sha256=h.get("Metadata", {}).get("sha256"),
            checksum=h.get("ChecksumSHA256", "") or "",
            version_id=h.get("VersionId"),
            storage_class=h.get("StorageClass") or "STANDARD",
            lock=lock,
            legal_hold=h.get("ObjectLockLegalHoldStatus") == "ON",
            restore=restore,
        )

    def get(self, key: str, chunk: int = 8 << 20) -> Iterator[bytes]:
        """Stream an object. Large ones come as parallel ranged GETs of one pinned version,
        yielded in order (at most ``concurrency`` parts in memory)."""
        st = self.head(key)
        if st is None:
            raise NotFound(f"{self._where(key)}: not in the store")
        if st.storage_class in COLD_CLASSES and not (st.restore or "").startswith("available"):
            raise RestoreRequired(
                f"{self._where(key)}: in {st.storage_class}; request a restore "
                "('custody store restore') and read it once it is available"
            )
        if st.size > self.threshold:
            return self._ranged(key, st.size, st.version_id)
        try:
            args: dict[str, Any] = {"Bucket": self.bucket, "Key": self.prefix + key}
            if st.version_id and st.version_id != "null":
                args["VersionId"] = st.version_id
            r = self.client.get_object(**args)
        except (bx.ClientError, bx.BotoCoreError) as e:
            raise self._error(e, key, "download") from e
        return self._stream(r["Body"], key, chunk)

    def _stream(self, body: Any, key: str, chunk: int) -> Iterator[bytes]:
        try:
            yield from body.iter_chunks(chunk)
        except (bx.ClientError, bx.BotoCoreError) as e:
            raise self._error(e, key, "download") from e
        finally:
            body.close()

    def _ranged(self, key: str, size: int, version_id: str | None) -> Iterator[bytes]:
        ps = self.part_size
        ranges = iter([(o, min(o + ps, size) - 1) for o in range(0, size, ps)])

        def fetch(r: tuple[int, int]) -> bytes:
            args: dict[str, Any] = {
                "Bucket": self.bucket,
                "Key": self.prefix + key,
                "Range": f"bytes={r[0]}-{r[1]}",
            }
            if version_id and version_id != "null":
                args["VersionId"] = version_id
            try:
                body = self.client.get_object(**args)["Body"]
                try:
                    data: bytes = body.read()
                finally:
                    body.close()
            except (bx.ClientError, bx.BotoCoreError) as e:
                raise self._error(e, key, "download") from e
            if len(data) != r[1] - r[0] + 1:
                raise StoreUnavailable(
                    f"{self._where(key)}: short read of bytes {r[0]}-{r[1]} ({len(data)} bytes)"
                )
            return data

        with ThreadPoolExecutor(self.s.concurrency, thread_name_prefix="download") as pool:
            pending: deque[Future[bytes]] = deque(
                pool.submit(fetch, r) for r in itertools.islice(ranges, self.s.concurrency)
            )
            try:
                while pending:
                    data = pending.popleft().result()
                    nxt = next(ranges, None)
                    if nxt is not None:
                        pending.append(pool.submit(fetch, nxt))
                    yield data
            finally:
                for f in pending:
                    f.cancel()

    def delete(self, key: str, version_id: str | None = None) -> None:
        st = self.head(key)
        if st is None:
            raise NotFound(f"{self._where(key)}: not in the store")
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": self.prefix + key}
        vid = version_id or st.version_id
        if vid and vid != "null":
            args["VersionId"] = vid  # the version itself, not a delete marker that hides it
        try:
            self.client.delete_object(**args)
        except bx.ClientError as e:
            if _code(e) == "AccessDenied" and (st.lock or st.legal_hold):
                why = (
                    "under legal hold"
                    if st.legal_hold
                    else (
                        f"locked ({st.lock.mode}) until {st.lock.retain_until:%Y-%m-%dT%H:%M:%SZ}"
                        if st.lock
                        else "locked"
                    )
                )
                raise LockRefused(f"{self._where(key)}: the store refused the delete: {why}") from e
            raise self._error(e, key, "delete") from e
        except bx.BotoCoreError as e:
            raise self._error(e, key, "delete") from e

    def get_range(self, key: str, start: int, end: int, chunk: int = 1 << 20) -> Iterator[bytes]:
        """Bytes ``start`` .. ``end`` (exclusive) of an object, streamed from one ranged GET
        (HTTP Range for the review site's players: memory stays at one chunk)."""
        if end <= start:
            return iter(())
        try:
            r = self.client.get_object(
                Bucket=self.bucket, Key=self.prefix + key, Range=f"bytes={start}-{end - 1}"
            )
        except (bx.ClientError, bx.BotoCoreError) as e:
            raise self._error(e, key, "download") from e
        return self._stream(r["Body"], key, chunk)

    def read_small(self, key: str) -> tuple[bytes, str]:
        """A small object's bytes and its ETag in one GET (no HEAD first): what a follower
        reading thousands of tiles wants. Its version is whatever the store serves now."""
        try:
            r = self.client.get_object(Bucket=self.bucket, Key=self.prefix + key)
            data = r["Body"].read()
        except (bx.ClientError, bx.BotoCoreError) as e:
            raise self._error(e, key, "download") from e
        return data, str(r.get("ETag", "")).strip('"')

    def list_tagged(self, prefix: str) -> Iterator[tuple[str, str]]:
        """Keys below ``prefix`` with their ETags, in lexical order (one LIST per 1,000)."""
        pager = self.client.get_paginator("list_objects_v2")
        try:
            for page in pager.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
                for o in page.get("Contents", []):
                    yield o["Key"][len(self.prefix) :], str(o.get("ETag", "")).strip('"')
        except (bx.ClientError, bx.BotoCoreError) as e:
            raise self._error(e, prefix, "listing") from e

    def list(self, prefix: str) -> Iterator[str]:
        pager = self.client.get_paginator("list_objects_v2")
        try:
            for page in pager.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
                for o in page.get("Contents", []):
                    yield o["Key"][len(self.prefix) :]
        except (bx.ClientError, bx.BotoCoreError) as e:
            raise self._error(e, prefix, "listing") from e

    # -- LockControl ----------------------------------------------------------------------

    def check_locking(self, required: bool) -> bool:
        try:
            r = self.client.get_object_lock_configuration(Bucket=self.bucket)
            enabled = bool(
                r.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled"
            )
        except bx.ClientError as e:
            if _code(e) != "ObjectLockConfigurationNotFoundError":
                raise self._error(e, "", "object-lock check") from e
            enabled = False
        except bx.BotoCoreError as e:
            raise self._error(e, "", "object-lock check") from e
        if required and not enabled:
            raise LockingNotEnabled(
                f"bucket {self.bucket!r} at {self.s.endpoint_url or 'AWS'} has no object lock, "
                "but [store] lock_mode requires it",
                "create the bucket with object lock enabled (most stores cannot add it later), "
                'or set lock_mode = "none" if the site accepts unlocked evidence',
            )
        return enabled

    def extend_retention(self, key: str, lock: Lock) -> Lock:
        k = self.prefix + key
        try:
            cur = self.client.get_object_retention(Bucket=self.bucket, Key=k).get("Retention")
        except bx.ClientError as e:
            if _code(e) not in ("NoSuchObjectLockConfiguration", "ObjectLockConfigurationNotFound"):
                raise self._error(e, key, "retention read") from e
            cur = None
        except bx.BotoCoreError as e:
            raise self._error(e, key, "retention read") from e
        if cur and cur.get("RetainUntilDate"):
            current = Lock(cur["Mode"], cur["RetainUntilDate"].astimezone(UTC))
            if current.retain_until >= lock.retain_until:
                return current
            if current.mode == "COMPLIANCE":
                lock = Lock("COMPLIANCE", lock.retain_until)
        try:
            self.client.put_object_retention(
                Bucket=self.bucket,
                Key=k,
                Retention={"Mode": lock.mode, "RetainUntilDate": lock.retain_until},
            )
        except (bx.ClientError, bx.BotoCoreError) as e:
            raise self._error(e, key, "retention update") from e
        return lock

    def set_legal_hold(self, key: str, on: bool) -> None:
        try:
            self.client.put_object_legal_hold(
                Bucket=self.bucket,
                Key=self.prefix + key,
                LegalHold={"Status": "ON" if on else "OFF"},
            )
        except (bx.ClientError, bx.BotoCoreError) as e:
            raise self._error(e, key, "legal hold") from e

    def set_storage_class(self, key: str, storage_class: str) -> Stored:
        """CopyObject in place with the new class, the same metadata, lock and SHA-256
        checksum: the store writes a new version, and the old one stays under its own lock
        until that ends. Objects over 5 GiB would need a multipart copy (not done)."""
        st = self.head(key)
        if st is None:
            raise NotFound(f"{self._where(key)}: not in the store")
        if st.storage_class == storage_class:
            return st
        if st.size > 5 << 30:
            raise StoreError(
                f"{self._where(key)}: over 5 GiB; a storage-class move needs a multipart copy",
                "move it with a bucket lifecycle rule instead",
            )
        src: dict[str, Any] = {"Bucket": self.bucket, "Key": self.prefix + key}
        if st.version_id and st.version_id != "null":
            src["VersionId"] = st.version_id
        args: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": self.prefix + key,
            "CopySource": src,
            "StorageClass": storage_class,
            "MetadataDirective": "COPY",
            "ChecksumAlgorithm": "SHA256",
        }
        if st.lock is not None:
            args["ObjectLockMode"] = st.lock.mode
            args["ObjectLockRetainUntilDate"] = st.lock.retain_until
        if st.legal_hold:
            args["ObjectLockLegalHoldStatus"] = "ON"
        try:
            self.client.copy_object(**args)
        except (bx.ClientError, bx.BotoCoreError) as e:
            raise self._error(e, key, "storage-class move") from e
        moved = self.head(key)
        if (
            moved is None
            or moved.size != st.size
            or (st.sha256 and moved.sha256 and moved.sha256 != st.sha256)
        ):
            raise StoreError(f"{self._where(key)}: the moved copy does not match the original")
        return moved

    def restore(self, key: str, days: int) -> str:
        st = self.head(key)
        if st is None:
            raise NotFound(f"{self._where(key)}: not in the store")
        if st.storage_class not in COLD_CLASSES:
            return "available"
        if st.restore:
            return st.restore
        try:
            self.client.restore_object(
                Bucket=self.bucket,
                Key=self.prefix + key,
                RestoreRequest={"Days": days, "GlacierJobParameters": {"Tier": "Standard"}},
            )
        except bx.ClientError as e:
            if _code(e) != "RestoreAlreadyInProgress":
                raise self._error(e, key, "restore request") from e
        except bx.BotoCoreError as e:
            raise self._error(e, key, "restore request") from e
        st = self.head(key)
        return (st.restore if st else None) or "ongoing"

    # -- housekeeping -------------------------------------------------------------------------

    def abort_stale_uploads(self, older_than: timedelta) -> int:
        """Abort multipart uploads under our prefix started more than ``older_than`` ago."""
        cutoff = datetime.now(UTC) - older_than
        n = 0
        pager = self.client.get_paginator("list_multipart_uploads")
        try:
            for page in pager.paginate(Bucket=self.bucket, Prefix=self.prefix):
                for u in page.get("Uploads", []):
                    if u["Initiated"].astimezone(UTC) <= cutoff:
                        self.client.abort_multipart_upload(
                            Bucket=self.bucket, Key=u["Key"], UploadId=u["UploadId"]
                        )
                        n += 1
        except (bx.ClientError, bx.BotoCoreError) as e:
            raise self._error(e, "", "stale-upload cleanup") from e
        return n


class _Forbidden(StoreError):
    pass


def _read_full(f: Any, n: int) -> bytes:
    parts = []
    left = n
    while left:
        b = f.read(left)
        if not b:
            break
        parts.append(b)
        left -= len(b)
    return b"".join(parts)


def composite_checksum(path: Path, part_size: int) -> str:
    """The S3 composite SHA-256 of ``path`` uploaded in parts of ``part_size``."""
    digests = []
    with open(path, "rb", buffering=0) as f:
        while data := _read_full(f, part_size):
            digests.append(hashlib.sha256(data).digest())
    return f"{_b64(hashlib.sha256(b''.join(digests)).digest())}-{len(digests)}"
