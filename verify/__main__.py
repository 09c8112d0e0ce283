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
    python -m verify bag DIR [--vkey VKEY] [--policy FILE] [--known CHECKPOINT]
        [--report FILE]
        check an export package: every file against its manifest, every entry's
        signature and inclusion proof against the bag's signed checkpoint, the
        payload against the signed export entry, and each label against the
        signed entries. Without --vkey the key inside the bag is used, and the
        verdict says so (intact, but not proven to come from the station).
    python -m verify disclosure DIR [--vkey VKEY] [--policy FILE]
        check a disclosure publication (公示): every file against its MANIFEST,
        the signed `disclose` entry naming that MANIFEST and its inclusion proof
        in the publisher's signed checkpoint, each log's checkpoint and its
        witnesses' cosignatures. Without --vkey the publisher.vkey inside the
        publication is used, and the verdict says so.

VKEY is the station's verifier key (``name+keyid+key``) or a file holding it;
get it from the unit through a channel you trust, not from the package you
are checking. Any key the station has had will do: the ``key`` entries of the
log hand it on from one key to the next. ``--policy FILE`` (a C2SP
tlog-policy: log keys, witnesses, quorum) on `ledger` and `bag` also requires
the policy's quorum of witnesses to have cosigned the checkpoint; its log
lines are trusted station keys too. Every verdict lists the keys it trusted
and where each came from. Every command takes --json. Exit status: 0 all
good, 1 something failed (each problem is listed), 2 the inputs could not be
read or used.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import stat
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ledger.entry import EntryError, decode_entry
from ledger.note import NoteError, Verifier
from ledger.policy import Policy, PolicyError, parse_policy
from ledger.proof import ProofError, TlogProof
from verify.folder import FolderSource
from verify.parallel import verify_log
from verify.quiet import finish_stdout, guard_stdout
from verify.readfile import Unreadable, read_regular, read_text
from verify.witnesses import FROM_VKEY, policy_keys, trusted_key, trusted_line, witnessing

MAX_KEY_FILE = 1 << 16  # a verifier key is ~100 bytes
MAX_POLICY_FILE = 1 << 20  # a policy of 256 witnesses is ~40 KiB
MAX_NOTE_FILE = 1 << 16  # a checkpoint or tlog-proof (a 63-hash proof is ~3 KiB)
MAX_ENTRY_FILE = 65536  # one entry (C2SP tlog-tiles caps an entry at 65535) and a newline


class InputError(Exception):
    pass


def _text(path: str, what: str, limit: int = MAX_NOTE_FILE) -> str:
    try:
        return read_text(path, limit)
    except FileNotFoundError:
        raise InputError(f"{what} {path} does not exist") from None
    except Unreadable as e:
        raise InputError(f"cannot read {what} {path}: {e}") from None


def _bytes(path: str, what: str, limit: int) -> bytes:
    try:
        return read_regular(path, limit)
    except FileNotFoundError:
        raise InputError(f"{what} {path} does not exist") from None
    except Unreadable as e:
        raise InputError(f"cannot read {what} {path}: {e}") from None


def _vkey(value: str) -> Verifier:
    # Anything at that path is read as a key file (and refused if it is not a regular
    # file); otherwise the value is the key itself.
    text = _text(value, "verifier key file", MAX_KEY_FILE) if os.path.lexists(value) else value
    try:
        return Verifier.parse(text.strip())
    except NoteError as e:
        raise InputError(f"--vkey: {e}") from None


def _policy(value: str | None) -> Policy | None:
    if not value:
        return None
    try:
        return parse_policy(_bytes(value, "policy file", MAX_POLICY_FILE))
    except PolicyError as e:
        raise InputError(f"--policy {value}: {e}") from None


def _key_json(v: Verifier, source: str) -> dict[str, str]:
    return trusted_key("log", v.name, v.key_id, v.vkey(), source)


def _folder(value: str, what: str) -> Path:
    folder = Path(value)
    if not folder.is_dir():
        why = "does not exist" if not os.path.lexists(folder) else "is not a folder"
        raise InputError(f"{what} {folder} {why}")
    return folder


def _digest(path: str) -> str:
    """SHA-256 of a regular file, opened without blocking (a FIFO is refused, not waited on)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        if stat.S_ISDIR(mode):
            raise InputError(f"{path} is a folder, not a file")
        raise InputError(f"{path} is not a regular file (a pipe, socket or device)")
    with os.fdopen(fd, "rb") as f:
        try:
            return hashlib.file_digest(f, "sha256").hexdigest()
        except OSError as e:
            raise InputError(f"cannot read {path}: {e.strerror}") from None


def _progress() -> Callable[[int, int], None] | None:
    """A line on stderr while a ledger is recomputed, only when a person is watching."""
    if not sys.stderr.isatty():
        return None
    import time

    last = [0.0]

    def show(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] > 0.5 or done == total:
            last[0] = now
            sys.stderr.write(f"\rverifying {done}/{total} entries")
            sys.stderr.flush()

    return show


def _end_progress(show: object) -> None:
    if show is not None:
        sys.stderr.write("\n")
        sys.stderr.flush()


def _print_json(out: dict[str, Any]) -> None:
    print(json.dumps(out, ensure_ascii=False))


def cmd_proof(args: argparse.Namespace) -> int:
    vkey = _vkey(args.vkey)
    leaf = _bytes(args.entry, "entry", MAX_ENTRY_FILE)
    # `custody ledger entry` prints the leaf followed by one newline.
    if leaf.endswith(b"\n"):
        leaf = leaf[:-1]
    proof_text = _text(args.proof, "proof")
    problems: list[str] = []
    ok_lines: list[str] = []
    out: dict[str, Any] = {}
    try:
        proof = TlogProof.parse(proof_text)
        sc = proof.verify(leaf, [vkey])
        out.update(index=proof.index, size=sc.checkpoint.size, origin=sc.checkpoint.origin)
        ok_lines.append(
            f"OK: the entry is number {proof.index} of {sc.checkpoint.size} in the log "
            f"{sc.checkpoint.origin}, whose checkpoint is signed by {vkey.vkey()}"
        )
    except ProofError as e:
        problems.append(f"proof: {e}")
    try:
        entry = decode_entry(leaf)
        out.update(type=entry.type, time=entry.time)
        if not entry.verify(vkey):
            problems.append("entry: its signature does not verify with this verifier key")
        elif not problems:
            ok_lines.append(
                f"OK: the entry is a {entry.type!r} entry of {entry.time}, signed by the station"
            )
    except EntryError as err:
        problems.append(f"entry: not a custody entry ({err})")
    trusted = [_key_json(vkey, FROM_VKEY)]
    if args.json:
        _print_json(
            {
                "ok": not problems,
                "vkey": vkey.vkey(),
                "trusted_keys": trusted,
                **out,
                "problems": problems,
            }
        )
    else:
        print(trusted_line(trusted[0]))
        for line in ok_lines:
            print(line)
        for p in problems:
            print(f"FAILED {p}")
    return 1 if problems else 0


def cmd_ledger(args: argparse.Namespace) -> int:
    policy = _policy(args.policy)
    pinned = [_vkey(args.vkey)] if args.vkey else []
    trusted = [_key_json(v, args.key_source or FROM_VKEY) for v in pinned]
    if policy is not None:
        trusted += [k for k in policy_keys(policy) if k["vkey"] not in {v.vkey() for v in pinned}]
        pinned += [lg.key for lg in policy.logs if lg.key not in pinned]
    if not pinned:
        raise InputError(
            "give --vkey (the station's key, from a channel you trust) or a "
            "--policy whose log lines name it"
        )
    folder = _folder(args.dir, "ledger folder")
    known = [_text(k, "checkpoint file") for k in args.known or []]
    src = FolderSource(folder)
    try:
        checkpoint = src.read_checkpoint()
    except ValueError as e:
        raise InputError(str(e)) from None
    show = _progress()
    rep = verify_log(src, checkpoint, pinned, None, known, progress=show)
    _end_progress(show)
    # Witnesses are judged on a checkpoint the station's key chain vouches for.
    w = None
    if checkpoint is not None and rep.checkpoint_signed_by:
        w = witnessing(checkpoint, policy, rep.checkpoint_signed_by)
    witness_problems = w.problems if w is not None else []
    ok = rep.ok and not witness_problems
    if args.json:
        out = rep.to_json()
        out.update(
            ok=ok,
            trusted_keys=trusted,
            cosignatures=w.cosignatures if w is not None else [],
            quorum=w.quorum if w is not None else None,
            witness_problems=witness_problems,
        )
        _print_json(out)
    else:
        for k in trusted:
            print(trusted_line(k))
        for v in rep.checkpoint_signed_by:
            print(f"checkpoint: size {rep.size}, signed by {v.vkey()}")
        for line in rep.lines():
            print(line)
        for line in w.lines() if w is not None else []:
            print(line)
        for p in witness_problems:
            print(f"FAILED {p}")
        print(
            f"{'OK' if ok else 'FAILED'}: {folder}, size {rep.size}, "
            f"{rep.entries_checked} entries and {rep.signatures_checked} signatures checked"
        )
    return 0 if ok else 1


def _write_report(path: str, text: str) -> str:
    """Write the misbehaviour report; "" when written, else why not (one line)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NONBLOCK, 0o644)
    except OSError as e:
        return e.strerror or str(e)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return "not a regular file"
        data = text.encode("utf-8")
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
        return ""
    except OSError as e:
        return e.strerror or str(e)
    finally:
        os.close(fd)


def cmd_bag(args: argparse.Namespace) -> int:
    from verify.bag import verify_bag

    policy = _policy(args.policy)
    if not args.vkey and not args.trust_bag_key and not (policy is not None and policy.logs):
        raise InputError(
            "give --vkey (the station's verifier key, from a channel you trust) to prove "
            "where the bag came from, or a --policy whose log lines name it, or "
            "--trust-bag-key to check it is intact only"
        )
    vkey = _vkey(args.vkey) if args.vkey else None
    root = _folder(args.dir, "bag")
    known = [_text(k, "checkpoint file").encode() for k in args.known or []]
    rep = verify_bag(root, vkey, known, key_source=args.key_source or FROM_VKEY, policy=policy)
    # The fork evidence goes to stdout first: a report path that cannot be written
    # must not lose the proof that the station's key signed two histories.
    if args.json:
        out = rep.to_json()
        if rep.conflict:
            out["conflict"] = rep.conflict
        _print_json(out)
    else:
        for line in rep.lines():
            print(line)
        print(
            f"{'OK' if rep.ok else 'FAILED'}: bag {root}: {rep.files} file(s), {rep.entries} "
            f"entries with proofs against checkpoint {rep.checkpoint_size}"
        )
        if rep.conflict:
            print("misbehaviour report (keep it: it proves the key signed conflicting states):")
            print(rep.conflict)
    sys.stdout.flush()
    if rep.conflict and args.report:
        why = _write_report(args.report, rep.conflict)
        if why:
            print(
                f"verify: error: the misbehaviour report could not be written to "
                f"{args.report} ({why}); it is printed above",
                file=sys.stderr,
            )
        else:
            print(f"misbehaviour report written to {args.report}", file=sys.stderr)
    return 0 if rep.ok else 1


def cmd_disclosure(args: argparse.Namespace) -> int:
    from verify.disclosure import verify_disclosure

    policy = _policy(args.policy)
    vkey = _vkey(args.vkey) if args.vkey else None
    root = _folder(args.dir, "publication")
    rep = verify_disclosure(root, vkey, key_source=args.key_source or FROM_VKEY, policy=policy)
    if args.json:
        _print_json(rep.to_json())
    else:
        for line in rep.lines():
            print(line)
        print(
            f"{'OK' if rep.ok else 'FAILED'}: publication {root}: period {rep.period or '?'}, "
            f"{rep.files} of {rep.listed} listed file(s) intact, {len(rep.logs)} log(s)"
        )
    return 0 if rep.ok else 1


def cmd_file(args: argparse.Namespace) -> int:
    """Is this exact file in the ledger? Which entries name it? (The whole ledger is
    verified on the way: an entry in a log that does not verify proves nothing.)"""

    vkey = _vkey(args.vkey)
    sha = _digest(args.file)
    folder = _folder(args.ledger, "ledger folder")
    src = FolderSource(folder)
    try:
        checkpoint = src.read_checkpoint()
    except ValueError as e:
        raise InputError(str(e)) from None
    found: list[dict[str, Any]] = []
    needle = sha.encode()

    def look(index: int, leaf: bytes) -> None:
        if needle in leaf:
            try:
                e = decode_entry(leaf)
            except EntryError:
                return
            found.append({"entry": index, "type": e.type, "time": e.time})

    show = _progress()
    rep = verify_log(src, checkpoint, [vkey], None, [], on_leaf=look, progress=show)
    _end_progress(show)
    ok = rep.ok and bool(found)
    if args.json:
        out: dict[str, Any] = {"ok": ok, "file": args.file, "sha256": sha, "size": rep.size}
        out["ledger"] = rep.to_json()
        out["entries"] = found if rep.ok else []
        _print_json(out)
        return 0 if ok else 1
    for line in rep.lines():
        print(line)
    if not rep.ok:
        print(f"FAILED: the ledger in {folder} does not verify; it proves nothing about the file")
        return 1
    if not found:
        print(f"FAILED: {args.file} (SHA-256 {sha}) is named by no entry (ledger size {rep.size})")
        return 1
    print(f"OK: {args.file} (SHA-256 {sha}) is in the ledger, size {rep.size}:")
    for f in found:
        print(f"  entry {f['entry']}: {f['type']} of {f['time']}")
    return 0


POLICY_HELP = (
    "a witness policy (C2SP tlog-policy) you trust: its quorum of witnesses must have "
    "cosigned the checkpoint; its log lines are trusted station keys"
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m verify",
        description="Check custody inclusion proofs, ledgers, files, export bags and "
        "disclosure publications offline. "
        "Exit status: 0 all good, 1 something failed (each problem is listed), "
        "2 the inputs could not be read or used.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("proof", help="is this entry in the signed log?")
    s.add_argument("entry", help="file with the entry's exact bytes")
    s.add_argument("proof", help="the .tlog-proof file")
    s.add_argument("--vkey", required=True, help="verifier key, or a file holding it")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_proof)
    s = sub.add_parser("ledger", help="recompute a whole ledger tile folder")
    s.add_argument("dir")
    s.add_argument("--vkey", help="verifier key, or a file holding it")
    s.add_argument("--policy", help=POLICY_HELP)
    s.add_argument("--key-source", help=argparse.SUPPRESS)  # what `custody verify` says
    s.add_argument("--known", action="append", help="a checkpoint kept earlier (repeatable)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_ledger)
    s = sub.add_parser(
        "file", help="is this exact file named by an entry of the ledger (verified whole)?"
    )
    s.add_argument("file")
    s.add_argument("--ledger", required=True, help="the ledger tile folder (or a mirror of it)")
    s.add_argument("--vkey", required=True, help="verifier key, or a file holding it")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_file)
    s = sub.add_parser(
        "bag",
        help="check an export bag: files, signed entries and proofs, the export list, labels",
    )
    s.add_argument("dir")
    s.add_argument("--vkey", help="verifier key you trust, or a file holding it")
    s.add_argument(
        "--trust-bag-key",
        action="store_true",
        help="no key of your own: use the one in the bag (proves the bag intact and "
        "self-consistent, not where it came from; the verdict says so)",
    )
    s.add_argument("--policy", help=POLICY_HELP)
    s.add_argument("--key-source", help=argparse.SUPPRESS)  # what `custody verify` says
    s.add_argument("--known", action="append", help="a checkpoint from elsewhere (repeatable)")
    s.add_argument(
        "--report",
        help="write a misbehaviour report here if checkpoints conflict (it is printed too)",
    )
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_bag)
    s = sub.add_parser(
        "disclosure",
        help="check a disclosure publication (公示): its files, signed entry and proof, logs",
    )
    s.add_argument("dir")
    s.add_argument(
        "--vkey",
        help="the publisher's verifier key you trust, or a file holding it (default: the "
        "publication's own publisher.vkey; the verdict says so)",
    )
    s.add_argument(
        "--policy",
        help="a witness policy (C2SP tlog-policy) you trust: its quorum of witnesses must "
        "have cosigned each log's checkpoint",
    )
    s.add_argument("--key-source", help=argparse.SUPPRESS)  # what `custody verify` says
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_disclosure)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    guard_stdout()
    args = build_parser().parse_args(argv)
    try:
        rc: int = args.func(args)
        finish_stdout()
        return rc
    except InputError as e:
        print(f"verify: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a file that vanished or failed mid-read
        where = f" {e.filename}:" if e.filename else ""
        print(f"verify: error:{where} {e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("verify: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug or an input nobody foresaw: one line, never exit 1
        print(
            f"verify: error: unexpected {type(e).__name__}: {e} (a bug in the verifier; "
            "the input was not judged)",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
