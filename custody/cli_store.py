"""`custody store ...`: the cold store."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from custody.cli_common import cold_store, load, sha_arg
from custody.errors import CustodyError


def _report(args: argparse.Namespace, out: dict[str, Any], line: str) -> None:
    print(json.dumps(out, ensure_ascii=False) if args.json else line)


def cmd_store_check(args: argparse.Namespace) -> int:
    from custody.cold import replication_settings

    conf = load(args)
    store = cold_store(conf)
    locking = replication_settings(conf).locking
    enabled = store.check_locking(locking)
    _report(
        args,
        {"store": store.id, "reachable": True, "object_lock": enabled, "lock_required": locking},
        f"cold store {store.id}: reachable; object lock "
        f"{'enabled' if enabled else 'not enabled'}"
        f"{'' if locking else ' (lock_mode = none)'}",
    )
    return 0


def _client_error(e: Exception, bucket: str, doing: str) -> CustodyError:
    import botocore.exceptions as bx

    if isinstance(e, bx.ClientError):
        code = str(e.response.get("Error", {}).get("Code", ""))
        if code in ("AccessDenied", "403", "Forbidden"):
            return CustodyError(
                f"the store refused to {doing} bucket {bucket!r} (access denied)",
                "the bucket may belong to another account, or the credentials lack "
                "s3:CreateBucket / s3:PutBucketVersioning / s3:GetBucketObjectLockConfiguration",
            )
        return CustodyError(f"cannot {doing} bucket {bucket!r}: {code}: {e}")
    return CustodyError(f"cannot reach the store to {doing} bucket {bucket!r}: {e}")


def _init_bucket(store: Any, locking: bool) -> dict[str, Any]:
    """Create the bucket (object lock and versioning on; no default retention, as every
    object carries its own retain-until), or check the one that is there. Idempotent."""
    import botocore.exceptions as bx

    c, bucket = store.client, store.bucket
    created = False
    try:
        c.head_bucket(Bucket=bucket)
        exists = True
    except bx.ClientError as e:
        code = str(e.response.get("Error", {}).get("Code", ""))
        if code not in ("404", "NoSuchBucket", "NotFound"):
            raise _client_error(e, bucket, "look up") from None
        exists = False
    except bx.BotoCoreError as e:
        raise _client_error(e, bucket, "look up") from None
    if not exists:
        kw: dict[str, Any] = {"Bucket": bucket}
        if locking:  # a store without object lock support is configured lock_mode = "none"
            kw["ObjectLockEnabledForBucket"] = True
        if store.s.region and store.s.region != "us-east-1":
            kw["CreateBucketConfiguration"] = {"LocationConstraint": store.s.region}
        try:
            c.create_bucket(**kw)
            created = True
        except bx.ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", ""))
            if code == "BucketAlreadyExists":
                raise CustodyError(
                    f"bucket name {bucket!r} is taken by another account",
                    "choose another name in [store] bucket",
                ) from None
            if code != "BucketAlreadyOwnedByYou":  # made meanwhile by us: check it below
                raise _client_error(e, bucket, "create") from None
        except bx.BotoCoreError as e:
            raise _client_error(e, bucket, "create") from None
    enabled = store.check_locking(False)
    if locking and not enabled:
        raise CustodyError(
            f"bucket {bucket!r} exists without object lock, which [store] lock_mode requires",
            "most stores cannot add object lock to an existing bucket: name a new bucket in "
            '[store] bucket and run custody store init again, or set lock_mode = "none" '
            "if the site accepts unlocked evidence",
        )
    try:
        status = c.get_bucket_versioning(Bucket=bucket).get("Status", "")
        if status != "Enabled":
            c.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
            status = "Enabled"
        default = None
        if enabled:
            rule = (
                c.get_object_lock_configuration(Bucket=bucket)
                .get("ObjectLockConfiguration", {})
                .get("Rule", {})
                .get("DefaultRetention")
            )
            default = dict(rule) if rule else None
    except (bx.ClientError, bx.BotoCoreError) as e:
        raise _client_error(e, bucket, "set versioning on") from None
    return {
        "store": store.id,
        "bucket": bucket,
        "created": created,
        "object_lock": enabled,
        "versioning": status,
        "default_retention": default,
    }


def cmd_store_init(args: argparse.Namespace) -> int:
    from archive.local import LocalFolderStore
    from archive.s3 import S3Store
    from custody.cold import replication_settings

    conf = load(args)
    sc = conf.store
    if sc is None:
        raise CustodyError(f"{conf.path} has no [store]", "add a [store] table (see README)")
    locking = replication_settings(conf).locking
    if sc.kind == "local":
        assert sc.path is not None
        existed = sc.path.is_dir()
        store = LocalFolderStore(sc.path)  # makes the folder and its bookkeeping
        out: dict[str, Any] = {
            "store": store.id,
            "created": not existed,
            "object_lock": True,  # the folder store refuses early deletes itself
            "versioning": None,
            "default_retention": None,
        }
        line = f"cold store {store.id}: folder {'created' if not existed else 'ready'}"
    else:
        assert sc.s3 is not None
        out = _init_bucket(S3Store(sc.s3), locking)
        lock = "object lock" if out["object_lock"] else "no object lock (lock_mode = none)"
        line = (
            f"cold store {out['store']}: bucket "
            f"{'created' if out['created'] else 'already there'}, with {lock} and versioning "
            f"{out['versioning'].lower() or 'off'}"
        )
        if out["default_retention"]:
            line += (
                f"; note: the bucket has a default retention {out['default_retention']} "
                "(the station sets each object's own)"
            )
    _report(args, out, line)
    return 0


def cmd_store_fetch(args: argparse.Namespace) -> int:
    from archive.retrieve import Retriever
    from ingest.objects import LocalObjects

    conf = load(args)
    sha = sha_arg(args.sha256)
    store = None if conf.store is None else cold_store(conf)
    local = None if args.cold else LocalObjects(conf.store_dir).path
    if args.cold and store is None:
        raise CustodyError("--cold: no [store] is configured")
    got = Retriever(local, store).fetch(sha, Path(args.out))
    _report(
        args,
        {"out": args.out, "sha256": got.sha256, "size": got.size, "source": got.source},
        f"{args.out}: {got.size} bytes, SHA-256 {got.sha256} verified (from {got.source})",
    )
    return 0


def cmd_store_restore(args: argparse.Namespace) -> int:
    from archive.retrieve import Retriever

    conf = load(args)
    sha = sha_arg(args.sha256)
    status = Retriever(None, cold_store(conf)).restore(sha, args.days)
    _report(args, {"sha256": sha, "days": args.days, "status": status}, f"{sha}: {status}")
    return 0


def add_parsers(sub: Any) -> None:
    st = sub.add_parser(
        "store", help="the cold store: create it, check it, fetch or restore objects"
    )
    ssub = st.add_subparsers(dest="store_command", required=True, metavar="SUBCOMMAND")
    s = ssub.add_parser(
        "init",
        help="create the configured store: an S3 bucket with object lock and versioning "
        "(no default retention: each object carries its own), or the local folder; "
        "safe to run again",
        description="Create the bucket named in [store] with object lock (unless lock_mode "
        '= "none") and versioning, or the local folder. Run again, it only checks. A bucket '
        "that exists without object lock is refused when lock_mode requires it: most stores "
        "cannot add object lock to an existing bucket.",
    )
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_store_init)
    s = ssub.add_parser(
        "check", help="reach the configured store and check it has object lock if required"
    )
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_store_check)
    s = ssub.add_parser(
        "fetch", help="write an object to a file, verified by its SHA-256 (dock copy first)"
    )
    s.add_argument("sha256")
    s.add_argument("--out", required=True, help="file to write")
    s.add_argument("--cold", action="store_true", help="read from the cold store only")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_store_fetch)
    s = ssub.add_parser(
        "restore", help="ask for a cold-class (e.g. GLACIER) object to be made readable"
    )
    s.add_argument("sha256")
    s.add_argument("--days", type=int, default=7, help="how long it stays readable (default 7)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_store_restore)
