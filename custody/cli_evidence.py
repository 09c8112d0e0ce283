"""`custody export | audit | verify`: evidence for courts, and checking it."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from custody.cli_common import Progress, load, parse_vkey, with_config
from custody.errors import CustodyError

if TYPE_CHECKING:
    from custody import config as cfg
    from ledger.log import CheckpointRecord


def cmd_export(args: argparse.Namespace, conf: cfg.Config) -> int:
    from archive.retrieve import Retriever
    from custody.cold import open_store
    from custody.daemon import make_witness_client
    from custody.export import export_bag, read_policy
    from custody.retain import index_db
    from custody.station import open_ledger, operator, station_verifier
    from ingest.objects import LocalObjects
    from retention.index import refresh

    if bool(args.case) == bool(args.sha256):
        raise CustodyError("give --case NUMBER or SHA-256s, not both")
    who = args.operator or operator()
    # The station's witness policy goes into the bag (carried, not trusted by itself).
    policy = read_policy(getattr(conf, "witness_policy", None))
    store = open_store(conf)
    show = Progress("exporting", "original(s) copied and verified")
    fetch = Retriever(LocalObjects(conf.store_dir).path, store)
    quorum: dict[str, Any] = {}
    with open_ledger(conf) as ledger:
        db = index_db(ledger)
        witnesses = make_witness_client(conf, ledger) if policy is not None else None

        def cosign() -> CheckpointRecord | None:
            # The bag's checkpoint is new: the witnesses have not seen it. Ask them now,
            # a few seconds at most, so a verifier with --policy can accept the package.
            assert witnesses is not None
            rec = witnesses.cosign_now(conf.witness.timeout_s + 1)
            st = witnesses.status()
            quorum.update(met=bool(st.get("quorum_met")), cosigned_by=st.get("cosigned_by"))
            quorum.update(quorum=st.get("quorum"))
            return rec

        try:
            refresh(ledger, db)
            if args.case:
                shas = [
                    r[0]
                    for r in db.execute(
                        "SELECT sha256 FROM retention_cases WHERE case_no=? ORDER BY sha256",
                        (args.case,),
                    ).fetchall()
                ]
            else:
                shas = [s.lower() for s in args.sha256]
            res = export_bag(
                ledger,
                db,
                fetch,
                Path(args.out),
                shas,
                args.case,
                args.purpose,
                who,
                conf.origin,
                station_verifier(conf).vkey(),
                sm3=conf.capture.sm3,
                progress=show.update,
                policy=policy,
                cosign=cosign if witnesses is not None else None,
            )
        finally:
            db.close()
            show.end()
            if witnesses is not None:
                witnesses.close()
    for s in res.skipped:
        print(f"note: {s}", file=sys.stderr)
    if quorum and not quorum.get("met"):
        by = ", ".join(quorum.get("cosigned_by") or []) or "none"
        print(
            f"note: the package's checkpoint {res.checkpoint_size} lacks the witness quorum "
            f"({quorum.get('quorum')}; cosigned by {by}): it verifies with the station key, "
            "not with --policy; see `custody status`, and export again once the witnesses "
            "answer",
            file=sys.stderr,
        )
    if args.json:
        out = {
            "out": str(res.out),
            "files": res.files,
            "bytes": res.bytes,
            "entries": res.entries,
            "checkpoint_size": res.checkpoint_size,
            "export_entry": res.export_entry,
            "witness_policy": "policy.txt" if policy is not None else None,
            "witness_quorum_met": quorum.get("met") if quorum else None,
            "skipped": list(res.skipped),
        }
        print(json.dumps(out, ensure_ascii=False))
        return 0
    print(
        f"exported {res.files} file(s), {res.bytes} bytes, {res.entries} entries with proofs "
        f"against checkpoint {res.checkpoint_size} to {res.out} (export entry "
        f"{res.export_entry}); see {res.out}/VERIFY.txt"
    )
    return 0


def cmd_verify_path(args: argparse.Namespace) -> int:
    """A bag, a ledger folder, or one file: what it is decides the check."""
    if args.path.startswith("s3://"):
        from custody.cli_ledger import cmd_verify

        if not args.vkey:
            raise CustodyError("a bucket is checked against --vkey (the key you trust)")
        ns = argparse.Namespace(
            policy=args.policy,
            config=args.config,
            s3=args.path,
            store=False,
            dir=None,
            vkey=args.vkey,
            known=args.known,
            json=args.json,
            endpoint_url=args.endpoint_url,
            region=args.region,
            no_verify_tls=False,
        )
        rc: int = cmd_verify(ns)
        return rc
    from custody.station import station_verifier

    path = Path(args.path)
    if path.is_dir() and all(os.path.lexists(path / n) for n in ("MANIFEST", "disclose.entry")):
        return _verify_disclosure(path, args)
    conf = None
    if args.vkey:
        vkey = parse_vkey(args.vkey)
    else:
        conf = load(args)
        vkey = station_verifier(conf)
    # The verdict says where the key it trusted came from.
    source = ["--key-source", f"the station's own key (config {conf.path})"] if conf else []
    policy = ["--policy", args.policy] if args.policy else []
    if path.is_dir() and (path / "bagit.txt").exists():
        from verify.__main__ import main as verify_main

        argv = ["bag", str(path), "--vkey", vkey.vkey(), *source, *policy]
        for k in args.known or []:
            argv += ["--known", k]
        if args.report:
            argv += ["--report", args.report]
        return verify_main(argv + (["--json"] if args.json else []))
    if path.is_dir():
        from verify.__main__ import main as verify_main

        argv = ["ledger", str(path), "--vkey", vkey.vkey(), *source, *policy]
        for k in args.known or []:
            argv += ["--known", k]
        return verify_main(argv + (["--json"] if args.json else []))
    if args.policy:
        raise CustodyError(f"{path}: --policy is checked on a bag or a ledger folder")
    if path.is_file():
        return _verify_file(path, conf or load(args), args)
    if os.path.lexists(path):
        raise CustodyError(f"{path}: not a bag, a ledger folder or a regular file")
    raise CustodyError(f"{path}: not found")


def _publisher_of(path: Path) -> str | None:
    """The ``station`` (the publisher's log) the publication's entry names, if readable."""
    import json

    try:
        with (path / "disclose.entry").open("rb") as f:
            doc = json.loads(f.read(1 << 16))
    except (OSError, ValueError):
        return None
    station = doc.get("station") if isinstance(doc, dict) else None
    return station if isinstance(station, str) else None


def _verify_disclosure(path: Path, args: argparse.Namespace) -> int:
    """A disclosure publication (公示): checked against --vkey, else this station's own
    key when its config loads, else the publication's own publisher.vkey (a reader
    with no station); the verdict says which key it trusted and where it came from."""
    from custody import config as cfg
    from custody.station import station_verifier
    from verify.__main__ import main as verify_main

    if args.known or args.report:
        raise CustodyError(f"{path}: --known and --report are for bags and ledger folders")
    argv = ["disclosure", str(path)]
    if args.vkey:
        argv += ["--vkey", parse_vkey(args.vkey).vkey()]
    else:
        where = cfg.config_path(args.config)
        explicit = bool(args.config or os.environ.get(cfg.ENV_VAR))
        try:
            conf = cfg.load(where)
            key = station_verifier(conf)
        except (CustodyError, OSError):
            # A config named on purpose must work; the default one may simply not be
            # there (a court's or a citizen's machine): then the publication's own key.
            if explicit:
                raise
        else:
            # This station's key judges only this station's publications: the county's
            # or another station's is checked against the key it carries, said so.
            if _publisher_of(path) == conf.origin:
                source = f"the station's own key (config {where})"
                argv += ["--vkey", key.vkey(), "--key-source", source]
    if args.policy:
        argv += ["--policy", args.policy]
    return verify_main(argv + (["--json"] if args.json else []))


def _verify_file(path: Path, conf: cfg.Config, args: argparse.Namespace) -> int:
    """Is this exact file in the station's ledger? If not and it is media, which original
    was it cut from (verify-clip)?"""

    from custody.retain import index_db
    from custody.station import open_ledger
    from ledger.entry import decode_entry
    from retention.index import refresh
    from verify.bag import file_digest

    sha = file_digest(path)
    with open_ledger(conf) as ledger:
        db = index_db(ledger)
        try:
            refresh(ledger, db)
            refs = db.execute(
                "SELECT entry, type FROM entry_refs WHERE sha256=? ORDER BY entry", (sha,)
            ).fetchall()
            latest = ledger.latest()
            named = [
                {"entry": int(e), "type": t, "time": decode_entry(ledger.entry(int(e))).time}
                for e, t in refs
            ]
        finally:
            db.close()
    size = latest.size if latest else 0
    if refs:
        if args.json:
            out = {"ok": True, "file": str(path), "sha256": sha, "entries": named, "size": size}
            print(json.dumps(out, ensure_ascii=False))
            return 0
        print(f"OK: {path} (SHA-256 {sha}) is in the ledger of {conf.origin}:")
        for n in named:
            print(f"  entry {n['entry']}: {n['type']} of {n['time']}")
        print(f"  proofs: custody ledger proof --index N --size {size}")
        return 0
    from ingest.media import is_media, sniff

    with open(path, "rb") as fh:
        head = fh.read(64)
    if is_media(sniff(head, path.name)):
        print(f"{path} (SHA-256 {sha}) is not itself in the ledger; tracing it as a clip:")
        from custody.cli_media import cmd_verify_clip

        ns = argparse.Namespace(config=args.config, clip=str(path), json=args.json, no_frames=False)
        rc: int = cmd_verify_clip(ns)
        return rc
    if args.json:
        out = {"ok": False, "file": str(path), "sha256": sha, "entries": [], "size": size}
        print(json.dumps(out, ensure_ascii=False))
        return 1
    print(f"FAILED: {path} (SHA-256 {sha}) is not in the ledger of {conf.origin}")
    return 1


def cmd_audit(args: argparse.Namespace, conf: cfg.Config) -> int:
    from archive.tiles import StoreTileSource
    from custody.audit import run_audit
    from custody.cold import open_store
    from custody.retain import index_db
    from custody.station import open_ledger, station_verifier
    from ingest.objects import LocalObjects
    from retention.index import refresh

    if args.full and args.sample is not None:
        raise CustodyError("--full or --sample N, not both")
    store = open_store(conf)
    verifier = station_verifier(conf)
    show = Progress("auditing:", "object(s) re-hashed")
    seen: set[str] = set()

    def saw(name: str) -> None:
        if name not in seen:
            seen.add(name)
            show.step()

    class ShownObjects(LocalObjects):
        def path(self, sha256: str) -> Path:
            saw(sha256)
            return super().path(sha256)

    class ShownStore:  # the audit reads each object's head first
        def __init__(self, inner: Any) -> None:
            self._inner = inner

        def head(self, key: str) -> Any:
            saw(key.rsplit("/", 1)[-1])
            return self._inner.head(key)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._inner, name)

    if show.on:
        sys.stderr.write("auditing: recomputing the ledger\n")
        sys.stderr.flush()
    with open_ledger(conf) as ledger:
        ledger.integrate()
        history: list[str] = []
        after = -1
        while batch := ledger.checkpoints(after, 10000):
            history.extend(r.note for r in batch)
            after = batch[-1].size
        db = index_db(ledger)
        try:
            refresh(ledger, db)
            res = run_audit(
                ledger,
                db,
                ShownObjects(conf.store_dir),
                ShownStore(store) if store is not None and show.on else store,
                verifier,
                conf.ledger_dir,
                Path(args.out) if args.out else conf.state_dir / "audits",
                full=args.full,
                sample=args.sample if args.sample is not None else (None if args.full else 100),
                max_duration=args.max_duration,
                cold_ledger_source=StoreTileSource(store, conf.origin) if store else None,
                history=history,
            )
            ledger.integrate()
        finally:
            db.close()
            show.end()
    s = res.summary()
    if args.json:
        s["report"] = str(res.out)
        s["fixity_entry"] = res.fixity_entry
        print(json.dumps(s, ensure_ascii=False))
    else:
        for p in res.problems:
            print(f"PROBLEM {p}")
        print(
            f"{'OK' if res.ok else 'PROBLEMS FOUND'}: ledger of size {s['ledger_size']} "
            f"recomputed; {s['objects_checked']} of {res.covered} objects re-hashed "
            f"({res.bytes_hashed} bytes"
            + (f", {s['hash_mib_s']} MiB/s" if s["hash_mib_s"] else "")
            + f"); fixity entry {res.fixity_entry}"
            + (
                "; stopped at --max-duration (the next audit continues)"
                if res.stopped_early
                else ""
            )
        )
        print(f"report: {res.out}/report.md, per object: {res.out}/objects.parquet")
    return 0 if res.ok else 1


def add_parsers(sub: Any) -> None:
    run = with_config
    s = sub.add_parser(
        "export",
        help="a BagIt package of a case's or the named originals (with access copies), every "
        "entry naming them with its inclusion proof, and a signed export entry listing it",
    )
    s.add_argument("sha256", nargs="*")
    s.add_argument("--case")
    s.add_argument("--out", required=True, help="a new folder")
    s.add_argument("--purpose", required=True, help="why, and for whom (recorded)")
    s.add_argument("--operator", help="who exports it (default: the login user)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=run(cmd_export))
    s = sub.add_parser(
        "audit",
        help="recompute the ledger (and its cold-store copy), re-hash stored objects on the "
        "dock and in the store, check completeness; a signed fixity entry and a report; "
        "exit 1 when a problem is found",
    )
    s.add_argument("--full", action="store_true", help="every object (default: a sample)")
    s.add_argument(
        "--sample", type=int, help="this many objects, continuing the last audit (default 100)"
    )
    s.add_argument("--max-duration", type=float, metavar="S", help="stop after S seconds")
    s.add_argument("--out", help="where reports go (default: DATA/state/audits)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=run(cmd_audit))
    s = sub.add_parser(
        "verify",
        help="check a bag, a disclosure publication, a ledger folder or bucket (s3://), or a "
        "file (in the ledger? cut from?); exit 1 when it does not verify",
    )
    s.add_argument("path")
    s.add_argument("--vkey", help="the verifier key you trust (default: this station's)")
    s.add_argument(
        "--policy",
        help="a witness policy you trust (C2SP tlog-policy): its quorum must have cosigned "
        "the checkpoint (bags, ledger folders; each log of a disclosure publication)",
    )
    s.add_argument("--known", action="append", help="a checkpoint kept from elsewhere")
    s.add_argument(
        "--report", help="where to write a misbehaviour report, if any (it is printed too)"
    )
    s.add_argument("--endpoint-url", help="S3 endpoint, for PATH = s3://BUCKET[/PREFIX]")
    s.add_argument("--region", default="us-east-1")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_verify_path)
