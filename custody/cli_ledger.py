"""`custody ledger ...`: read, prove and verify the ledger."""

from __future__ import annotations

import argparse
import base64
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from custody.cli_common import Progress, index_arg, load, parse_vkey, read_text
from custody.errors import CustodyError

if TYPE_CHECKING:
    from custody import config as cfg
    from ledger.policy import Policy


def cmd_checkpoint(args: argparse.Namespace) -> int:
    conf = load(args)
    try:
        data = (conf.ledger_dir / "checkpoint").read_bytes()
    except FileNotFoundError:
        raise CustodyError(f"{conf.ledger_dir}/checkpoint does not exist yet") from None
    if args.json:
        print(json.dumps(_checkpoint_json(conf, data), ensure_ascii=False))
    else:
        sys.stdout.buffer.write(data)  # with the cosignature lines witnesses added
    return 0


def _checkpoint_json(conf: cfg.Config, data: bytes) -> dict[str, Any]:
    """The published checkpoint and who cosigned it. With a [witness] policy the
    cosignatures are those that verify with its witness keys, and ``quorum_met`` says
    whether they meet its quorum; without one they are listed as read, unverified."""
    import struct

    from custody.station import station_verifier
    from ledger.checkpoint import Checkpoint, CheckpointError
    from ledger.note import NoteError, parse_note

    try:
        text = data.decode("utf-8")
        note = parse_note(text)
        cp = Checkpoint.parse_body(note.text)
    except (UnicodeDecodeError, NoteError, CheckpointError) as e:
        raise CustodyError(
            f"{conf.ledger_dir}/checkpoint is not a signed checkpoint: {e}"
        ) from None
    out: dict[str, Any] = {
        "origin": cp.origin,
        "size": cp.size,
        "root": base64.b64encode(cp.root).decode(),
        "note": text,
    }
    station = station_verifier(conf)
    own = (station.name, station.key_id)
    if conf.witness_policy is None:
        out["cosignatures"] = [
            {
                "witness": sig.name,
                "key_id": sig.key_id.hex(),
                "time": struct.unpack(">Q", sig.signature[:8])[0],
                "verified": False,
            }
            for sig in note.signatures
            if len(sig.signature) == 8 + 64 and (sig.name, sig.key_id) != own
        ]
        return out
    from ledger.policy import PolicyError, check_checkpoint
    from witness.client import load_policy

    policy = load_policy(conf.witness_policy)
    try:
        check = check_checkpoint(text, policy, [station])
    except PolicyError as e:
        raise CustodyError(
            f"{conf.ledger_dir}/checkpoint does not pass the witness policy: {e}"
        ) from None
    out["cosignatures"] = [
        {"witness": name, "key_id": c.key_id.hex(), "time": c.timestamp, "verified": True}
        for name, c in sorted(check.cosigned.items())
    ]
    out["quorum"] = policy.describe_quorum()
    out["quorum_met"] = check.satisfied
    return out


def cmd_vkey(args: argparse.Namespace) -> int:
    from custody.station import station_verifier

    print(station_verifier(load(args)).vkey())
    return 0


def cmd_entry(args: argparse.Namespace) -> int:
    from custody.station import open_ledger

    with open_ledger(load(args), writable=False) as ledger:
        leaf = ledger.entry(args.index)
    sys.stdout.buffer.write(leaf + b"\n")
    return 0


def cmd_proof(args: argparse.Namespace) -> int:
    from custody.station import open_ledger

    with open_ledger(load(args), writable=False) as ledger:
        proof = ledger.proof(args.index, args.size)
    sys.stdout.write(proof.format())
    return 0


def cmd_consistency(args: argparse.Namespace) -> int:
    from custody.station import open_ledger

    with open_ledger(load(args), writable=False) as ledger:
        c = ledger.consistency(args.old_size, args.new_size)
    b = base64.b64encode
    out = {
        "old_size": c["old_size"],
        "new_size": c["new_size"],
        "old_root": b(c["old_root"]).decode(),
        "new_root": b(c["new_root"]).decode(),
        "proof": [b(h).decode() for h in c["proof"]],
    }
    if args.json:
        print(json.dumps(out))
    else:
        print(f"old size {out['old_size']} root {out['old_root']}")
        print(f"new size {out['new_size']} root {out['new_root']}")
        for h in out["proof"]:
            print(h)
    return 0


def _bucket_source(args: argparse.Namespace, conf: cfg.Config | None, origin: str) -> Any:
    """The ledger mirrored in a bucket: from --s3 (no station needed) or the configured store."""
    from archive.s3 import S3Store
    from archive.settings import S3Settings
    from archive.tiles import StoreTileSource
    from custody.cold import open_store

    if args.s3:
        url = args.s3
        if not url.startswith("s3://") or len(url) <= 5:
            raise CustodyError(f"--s3 {url!r}: give s3://BUCKET or s3://BUCKET/PREFIX")
        bucket, _, prefix = url[5:].partition("/")
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        store: Any = S3Store(
            S3Settings(
                bucket=bucket,
                prefix=prefix,
                endpoint_url=args.endpoint_url or "",
                region=args.region,
                verify_tls=not args.no_verify_tls,
            )
        )
        where = url
    else:
        assert conf is not None
        store = open_store(conf)
        if store is None:
            raise CustodyError(f"--store: {conf.path} has no [store]")
        where = store.id
    return StoreTileSource(store, origin), where


def cmd_verify(args: argparse.Namespace) -> int:
    from custody.station import open_ledger, station_verifier
    from ledger.errors import LedgerError
    from verify.folder import FolderSource
    from verify.parallel import verify_log
    from verify.witnesses import witnessing

    remote = bool(args.s3) or args.store
    needs_conf = (not args.dir and not args.s3) or bool(args.config)
    conf = load(args) if needs_conf else None
    history: list[str | bytes] = []
    if (args.dir or args.s3) and not args.vkey and conf is None:
        raise CustodyError("--dir and --s3 need --vkey (the verifier key you trust)")
    verifier = parse_vkey(args.vkey) if args.vkey else station_verifier(conf)  # type: ignore[arg-type]
    src: Any
    if remote:
        src, where = _bucket_source(args, conf, verifier.name)
        try:
            history.extend(src.checkpoints())
            checkpoint = src.read_checkpoint()
        except LedgerError as e:
            raise CustodyError(f"cannot read the ledger in {where}: {e}") from None
    else:
        folder = Path(args.dir) if args.dir else conf.ledger_dir  # type: ignore[union-attr]
        where = str(folder)
        if conf is not None and not args.dir:
            with open_ledger(conf, writable=False) as ledger:
                after = -1
                while batch := ledger.checkpoints(after, 10000):
                    history.extend(r.note for r in batch)
                    after = batch[-1].size
        if not folder.is_dir():
            raise CustodyError(f"ledger folder {folder} does not exist")
        kept = folder / "checkpoints"  # a copy of a cold-store mirror keeps every checkpoint
        if args.dir and kept.is_dir():
            for p in sorted(kept.iterdir()):
                if p.name.isdigit():
                    history.append(read_text(str(p), "recorded checkpoint", 1 << 16))
        src = FolderSource(folder)
        try:
            checkpoint = src.read_checkpoint()
        except ValueError as e:
            raise CustodyError(str(e)) from None
    for extra in args.known or []:
        history.append(read_text(extra, "checkpoint file"))
    policy = _read_policy(args.policy) if getattr(args, "policy", None) else None
    started = time.monotonic()
    show = Progress("verifying", "entries")
    rep = verify_log(src, checkpoint, [verifier], None, history, progress=show.update)
    show.end()
    elapsed = time.monotonic() - started
    # With a policy, the checkpoint the log verified against must also carry its quorum.
    w = witnessing(checkpoint, policy, rep.checkpoint_signed_by) if policy else None
    witness_problems = w.problems if w is not None else []
    ok = rep.ok and not witness_problems
    if args.json:
        out: dict[str, Any] = rep.to_json()
        out["seconds"] = round(elapsed, 3)
        out["source"] = where
        if w is not None:
            out.update(ok=ok, cosignatures=w.cosignatures, quorum=w.quorum)
            out["witness_problems"] = witness_problems
        print(json.dumps(out, ensure_ascii=False))
    else:
        for line in rep.lines():
            print(line)
        if w is not None:
            for line in w.lines():
                print(line)
            for p in witness_problems:
                print(f"FAILED {p}")
        state = (
            "OK" if ok else f"FAILED ({sum(rep.counts.values()) + len(witness_problems)} problems)"
        )
        print(
            f"ledger {where}: {state}; size {rep.size}, {rep.entries_checked} entries, "
            f"{rep.signatures_checked} signatures, {rep.checkpoints_checked} recorded "
            f"checkpoints checked in {elapsed:.1f} s"
        )
    return 0 if ok else 1


def _read_policy(path: str) -> Policy:
    from ledger.policy import PolicyError, parse_policy

    try:
        return parse_policy(read_text(path, "witness policy", 1 << 20))
    except PolicyError as e:
        raise CustodyError(f"--policy {path}: {e}") from None


def add_parsers(sub: Any) -> None:
    lg = sub.add_parser("ledger", help="read, prove and verify the ledger")
    lsub = lg.add_subparsers(dest="ledger_command", required=True, metavar="SUBCOMMAND")
    s = lsub.add_parser(
        "checkpoint",
        help="print the latest signed checkpoint, verbatim, with the witnesses' cosignatures",
    )
    s.add_argument(
        "--json",
        action="store_true",
        help="origin, size, root, the note, its cosignatures and (with a [witness] policy) "
        "whether they meet its quorum",
    )
    s.set_defaults(func=cmd_checkpoint)
    s = lsub.add_parser("vkey", help="print the station's verifier key")
    s.set_defaults(func=cmd_vkey)
    s = lsub.add_parser("entry", help="print the entry (leaf bytes) at an index")
    s.add_argument("--index", type=index_arg, required=True)
    s.set_defaults(func=cmd_entry)
    s = lsub.add_parser("proof", help="print an offline inclusion proof (C2SP tlog-proof)")
    s.add_argument("--index", type=index_arg, required=True)
    s.add_argument("--size", type=index_arg, help="size of a signed checkpoint (default: latest)")
    s.set_defaults(func=cmd_proof)
    s = lsub.add_parser("consistency", help="consistency proof between two tree sizes")
    s.add_argument("--old-size", type=index_arg, required=True)
    s.add_argument("--new-size", type=index_arg, help="default: the latest checkpoint size")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_consistency)
    s = lsub.add_parser(
        "verify",
        help="recompute every leaf, tile, root and signature, and check the checkpoints "
        "recorded and --known are consistent; list every failure; exit 1 on any",
    )
    s.add_argument("--vkey", help="verifier key, or a file holding it (default: the station's)")
    s.add_argument("--dir", help="verify this tile folder instead of the station's ledger")
    s.add_argument(
        "--known",
        action="append",
        metavar="CHECKPOINT",
        help="a checkpoint file seen earlier; it must be consistent (repeatable)",
    )
    s.add_argument(
        "--s3",
        metavar="s3://BUCKET[/PREFIX]",
        help="verify the copy in a bucket alone (ledger/<origin>/ named by --vkey); "
        "credentials from the standard AWS chain",
    )
    s.add_argument("--endpoint-url", help="S3 endpoint for --s3 (default: AWS)")
    s.add_argument("--region", default="us-east-1", help="region for --s3")
    s.add_argument("--no-verify-tls", action="store_true", help="for --s3 with a test endpoint")
    s.add_argument(
        "--store", action="store_true", help="verify the copy in the configured cold store"
    )
    s.add_argument(
        "--policy",
        metavar="FILE",
        help="a witness policy (C2SP tlog-policy): the checkpoint must carry its quorum of "
        "witness cosignatures",
    )
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_verify)
