"""`python -m verify`: check custody's proofs and ledgers without the station.

Needs only the standard library, PyNaCl and the pure ledger core:

    python -m verify proof ENTRY_FILE PROOF_FILE --vkey VKEY
        is this entry (the exact leaf bytes, e.g. from `custody ledger entry`)
        in the log whose signed checkpoint the C2SP tlog-proof carries?
    python -m verify ledger DIR --vkey VKEY [--known CHECKPOINT]...
        recompute a whole tile folder: every entry signature, leaf hash, tile
        and root, and consistency with checkpoints kept from earlier.
    python -m verify file FILE --ledger DIR --vkey VKEY
        is this exact file named by an entry of the ledger (verified whole)?
    python -m verify bag DIR --vkey VKEY [--known CHECKPOINT] [--report FILE]
        check an export package: every file against its manifest, every entry's
        signature and inclusion proof against the bag's signed checkpoint, and
        that each file is the one its entries name.

VKEY is the station's verifier key (``name+keyid+key``) or a file holding it;
get it from the unit through a channel you trust, not from the package you
are checking. Exit status: 0 all good, 1 something failed (each problem is
listed), 2 the inputs could not be read.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from ledger.audit import verify_log
from ledger.entry import EntryError, decode_entry
from ledger.note import NoteError, Verifier
from ledger.proof import ProofError, TlogProof
from verify.folder import FolderSource


class InputError(Exception):
    pass


def _text(path: str, what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise InputError(f"cannot read {what} {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise InputError(f"{what} {path} is not UTF-8 text") from None


def _vkey(value: str) -> Verifier:
    text = _text(value, "verifier key file") if Path(value).is_file() else value
    try:
        return Verifier.parse(text.strip())
    except NoteError as e:
        raise InputError(f"--vkey: {e}") from None


def cmd_proof(args: argparse.Namespace) -> int:
    vkey = _vkey(args.vkey)
    try:
        leaf = Path(args.entry).read_bytes()
    except OSError as e:
        raise InputError(f"cannot read entry {args.entry}: {e.strerror}") from None
    # `custody ledger entry` prints the leaf followed by one newline.
    if leaf.endswith(b"\n"):
        leaf = leaf[:-1]
    problems: list[str] = []
    try:
        proof = TlogProof.parse(_text(args.proof, "proof"))
        sc = proof.verify(leaf, [vkey])
        print(
            f"OK: the entry is number {proof.index} of {sc.checkpoint.size} in the log "
            f"{sc.checkpoint.origin}, whose checkpoint is signed by {vkey.vkey()}"
        )
    except ProofError as e:
        problems.append(f"proof: {e}")
    try:
        entry = decode_entry(leaf)
        if not entry.verify(vkey):
            problems.append("entry: its signature does not verify with this verifier key")
        elif not problems:
            print(f"OK: the entry is a {entry.type!r} entry of {entry.time}, signed by the station")
    except EntryError as err:
        problems.append(f"entry: not a custody entry ({err})")
    for p in problems:
        print(f"FAILED {p}")
    return 1 if problems else 0


def cmd_ledger(args: argparse.Namespace) -> int:
    vkey = _vkey(args.vkey)
    folder = Path(args.dir)
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder")
    known = [_text(k, "checkpoint file") for k in args.known or []]
    src = FolderSource(folder)
    try:
        checkpoint = src.read_checkpoint()
    except ValueError as e:
        raise InputError(str(e)) from None
    rep = verify_log(src, checkpoint, [vkey], None, known)
    if args.json:
        print(json.dumps(rep.to_json(), ensure_ascii=False))
    else:
        for line in rep.lines():
            print(line)
        print(
            f"{'OK' if rep.ok else 'FAILED'}: {folder}, size {rep.size}, "
            f"{rep.entries_checked} entries and {rep.signatures_checked} signatures checked"
        )
    return 0 if rep.ok else 1


def cmd_bag(args: argparse.Namespace) -> int:
    from verify.bag import verify_bag

    vkey = _vkey(args.vkey)
    root = Path(args.dir)
    if not root.is_dir():
        raise InputError(f"{root} is not a folder")
    known = [_text(k, "checkpoint file").encode() for k in args.known or []]
    rep = verify_bag(root, vkey, known)
    if rep.conflict and args.report:
        Path(args.report).write_text(rep.conflict, encoding="utf-8")
    if args.json:
        print(
            json.dumps(
                {
                    "ok": rep.ok,
                    "problems": rep.problems,
                    "notes": rep.notes,
                    "files": rep.files,
                    "entries": rep.entries,
                    "checkpoint_size": rep.checkpoint_size,
                },
                ensure_ascii=False,
            )
        )
    else:
        for n in rep.notes:
            print(f"note: {n}")
        for p in rep.problems:
            print(f"FAILED {p}")
        print(
            f"{'OK' if rep.ok else 'FAILED'}: bag {root}: {rep.files} file(s), {rep.entries} "
            f"entries with proofs against checkpoint {rep.checkpoint_size}"
        )
    return 0 if rep.ok else 1


def cmd_file(args: argparse.Namespace) -> int:
    """Is this exact file in the ledger? Which entries name it? (The whole ledger is
    verified on the way: an entry in a log that does not verify proves nothing.)"""

    vkey = _vkey(args.vkey)
    from verify.bag import file_digest

    try:
        sha = file_digest(Path(args.file))
    except OSError as e:
        raise InputError(f"cannot read {args.file}: {e.strerror}") from None
    folder = Path(args.ledger)
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder")
    src = FolderSource(folder)
    try:
        checkpoint = src.read_checkpoint()
    except ValueError as e:
        raise InputError(str(e)) from None
    found: list[str] = []
    needle = sha.encode()

    def look(index: int, leaf: bytes) -> None:
        if needle in leaf:
            try:
                e = decode_entry(leaf)
            except EntryError:
                return
            if needle in leaf:
                found.append(f"entry {index}: {e.type} of {e.time}")

    rep = verify_log(src, checkpoint, [vkey], None, [], on_leaf=look)
    for line in rep.lines():
        print(line)
    if not rep.ok:
        print(f"FAILED: the ledger in {folder} does not verify; it proves nothing about the file")
        return 1
    if not found:
        print(f"FAILED: {args.file} (SHA-256 {sha}) is named by no entry (ledger size {rep.size})")
        return 1
    print(f"OK: {args.file} (SHA-256 {sha}) is in the ledger, size {rep.size}:")
    for line in found:
        print(f"  {line}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m verify",
        description="Check custody inclusion proofs and ledgers offline.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("proof", help="is this entry in the signed log?")
    s.add_argument("entry", help="file with the entry's exact bytes")
    s.add_argument("proof", help="the .tlog-proof file")
    s.add_argument("--vkey", required=True, help="verifier key, or a file holding it")
    s.set_defaults(func=cmd_proof)
    s = sub.add_parser("ledger", help="recompute a whole ledger tile folder")
    s.add_argument("dir")
    s.add_argument("--vkey", required=True)
    s.add_argument("--known", action="append", help="a checkpoint kept earlier (repeatable)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_ledger)
    s = sub.add_parser("file", help="is this exact file named by an entry of the ledger?")
    s.add_argument("file")
    s.add_argument("--ledger", required=True, help="the ledger tile folder (or a mirror of it)")
    s.add_argument("--vkey", required=True)
    s.set_defaults(func=cmd_file)
    s = sub.add_parser("bag", help="check an export bag: files, entries, proofs, checkpoint")
    s.add_argument("dir")
    s.add_argument("--vkey", required=True)
    s.add_argument("--known", action="append", help="a checkpoint from elsewhere (repeatable)")
    s.add_argument("--report", help="write a misbehaviour report here if checkpoints conflict")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_bag)
    args = p.parse_args(argv)
    try:
        rc: int = args.func(args)
        return rc
    except InputError as e:
        print(f"verify: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
