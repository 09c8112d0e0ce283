"""Checking an export bag offline: standard library, PyNaCl and the pure ledger core.

Every check runs and every failure is listed with what it means; nothing in the bag is
trusted, the verifier key comes from the person checking. What is checked:

- the BagIt structure: ``bagit.txt``, every line of ``manifest-sha256.txt`` (the file
  is there and hashes to its line), no file in ``data/`` that the manifest does not
  list, ``Payload-Oxum``, and every line of ``tagmanifest-sha256.txt`` (and no tag file
  it does not list);
- the signed checkpoint (``custody/checkpoint``) verifies with the given key;
- every entry (``custody/entries/N.entry``): its own signature, and its inclusion proof
  (``N.tlog-proof``) against that same checkpoint;
- every data file is accounted for in ``custody/files.tsv``, and the entries it names
  are in the bag and say this file's SHA-256 (an original's `ingest` entry, an access
  copy's `derive` entry);
- with a checkpoint known from elsewhere of the same size, the two roots agree; if
  they do not, both signed notes are written to a misbehaviour report.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from ledger.checkpoint import CheckpointError, SignedCheckpoint, open_checkpoint
from ledger.entry import EntryError, decode_entry
from ledger.note import Verifier
from ledger.proof import ProofError, TlogProof


@dataclass
class BagReport:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    files: int = 0
    entries: int = 0
    checkpoint_size: int = 0
    conflict: str = ""  # a misbehaviour report's text, when two checkpoints conflict

    @property
    def ok(self) -> bool:
        return not self.problems


def file_digest(p: Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes (SHA-256, or SM3 where OpenSSL has it)."""
    with open(p, "rb") as f:
        return hashlib.file_digest(f, algorithm).hexdigest()


def _manifest(path: Path, rep: BagReport, what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        rep.problems.append(f"{path.name} is missing: the bag cannot show its {what} are intact")
        return out
    except (OSError, UnicodeDecodeError) as e:
        rep.problems.append(f"{path.name} cannot be read: {e}")
        return out
    for n, line in enumerate(text.splitlines(), start=1):
        digest, sep, rel = line.partition("  ")
        if not sep or len(digest) != 64 or rel in out:
            rep.problems.append(f"{path.name} line {n}: malformed or repeated ({line[:80]!r})")
            continue
        out[rel] = digest.lower()
    return out


def _safe(root: Path, rel: str) -> Path | None:
    p = (root / rel).resolve()
    return p if p.is_relative_to(root.resolve()) else None


def verify_bag(root: Path, vkey: Verifier, known: list[bytes] | None = None) -> BagReport:
    rep = BagReport()
    try:
        bagit = (root / "bagit.txt").read_text(encoding="utf-8")
        if not bagit.startswith("BagIt-Version: "):
            rep.problems.append("bagit.txt does not declare a BagIt version")
    except (OSError, UnicodeDecodeError):
        rep.problems.append("bagit.txt is missing: this folder is not a BagIt bag")
    # -- payload ------------------------------------------------------------------
    man = _manifest(root / "manifest-sha256.txt", rep, "files")
    for rel, digest in sorted(man.items()):
        p = _safe(root, rel)
        if p is None or not rel.startswith("data/"):
            rep.problems.append(f"manifest names {rel!r}, outside the payload folder data/")
            continue
        if not p.is_file():
            rep.problems.append(f"{rel}: listed in the manifest but missing (removed)")
            continue
        got = file_digest(p)
        if got != digest:
            rep.problems.append(
                f"{rel}: its SHA-256 is {got}, not {digest} as the manifest says "
                "(the file was altered after the export)"
            )
    sm3_path = root / "manifest-sm3.txt"
    if sm3_path.exists():
        if "sm3" not in hashlib.algorithms_available:
            rep.notes.append("manifest-sm3.txt not checked: this system's OpenSSL has no SM3")
        else:
            for rel, digest in sorted(_manifest(sm3_path, rep, "files (SM3)").items()):
                p = _safe(root, rel)
                if p is None or not p.is_file():
                    rep.problems.append(f"{rel}: listed in manifest-sm3.txt but missing")
                elif file_digest(p, "sm3") != digest:
                    rep.problems.append(f"{rel}: its SM3 does not match manifest-sm3.txt (altered)")
    data = root / "data"
    present = (
        {p.relative_to(root).as_posix() for p in data.rglob("*") if p.is_file()}
        if data.is_dir()
        else set()
    )
    for rel in sorted(present - set(man)):
        rep.problems.append(f"{rel}: in data/ but not in the manifest (added after the export)")
    rep.files = len(man)
    info = _bag_info(root, rep)
    oxum = info.get("Payload-Oxum")
    if oxum:
        total = sum((root / r).stat().st_size for r in man if (root / r).is_file())
        if oxum != f"{total}.{len(present)}":
            rep.problems.append(
                f"Payload-Oxum says {oxum}, the payload is {total} bytes in {len(present)} files"
            )
    # -- tag files -----------------------------------------------------------------
    tman = _manifest(root / "tagmanifest-sha256.txt", rep, "tag files")
    tags_present = {
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file()
        and not p.relative_to(root).as_posix().startswith("data/")
        and not p.name.startswith("tagmanifest-")
    }
    for rel, digest in sorted(tman.items()):
        p = _safe(root, rel)
        if p is None or not p.is_file():
            rep.problems.append(f"{rel}: listed in the tag manifest but missing")
        elif file_digest(p) != digest:
            rep.problems.append(f"{rel}: altered after the export (tag manifest mismatch)")
    for rel in sorted(tags_present - set(tman)):
        rep.problems.append(f"{rel}: a tag file not in the tag manifest (added after the export)")
    # -- the checkpoint ------------------------------------------------------------
    cp_path = root / "custody" / "checkpoint"
    try:
        cp_text = cp_path.read_bytes()
    except OSError:
        rep.problems.append("custody/checkpoint is missing: no proof can be checked")
        return rep
    try:
        signed = open_checkpoint(cp_text, [vkey])
        rep.checkpoint_size = signed.checkpoint.size
    except CheckpointError as e:
        rep.problems.append(
            f"custody/checkpoint does not verify with the key {vkey.vkey()}: "
            f"{e} (signed by another key, or altered)"
        )
        return rep
    vk = root / "custody" / "station.vkey"
    claimed = vk.read_text(encoding="utf-8").strip() if vk.is_file() else ""
    if claimed and claimed != vkey.vkey():
        rep.notes.append(
            f"custody/station.vkey names {claimed}, not the key given; the checkpoint "
            "verified with the key given, which is what counts"
        )
    for other in known or []:
        _compare_known(cp_text, signed, other, vkey, rep)
    # -- entries and proofs ----------------------------------------------------------
    entries: dict[int, dict[str, object]] = {}
    edir = root / "custody" / "entries"
    for p in sorted(edir.glob("*.entry")) if edir.is_dir() else []:
        try:
            idx = int(p.stem)
        except ValueError:
            rep.problems.append(f"{p.name}: not named by an entry number")
            continue
        leaf = p.read_bytes()
        try:
            ent = decode_entry(leaf)
        except EntryError as err:
            rep.problems.append(f"entry {idx}: not a custody entry ({err}); altered")
            continue
        if not ent.verify(vkey):
            rep.problems.append(f"entry {idx}: its signature does not verify (altered)")
        proof_path = p.with_suffix(".tlog-proof")
        try:
            proof = TlogProof.parse(proof_path.read_bytes())
        except OSError:
            rep.problems.append(f"entry {idx}: no inclusion proof ({proof_path.name} missing)")
            continue
        except ProofError as err:
            rep.problems.append(f"entry {idx}: its proof is malformed ({err})")
            continue
        if proof.index != idx:
            rep.problems.append(f"entry {idx}: its proof is for entry {proof.index}")
        if proof.checkpoint.encode() != cp_text:
            rep.problems.append(
                f"entry {idx}: its proof is against another checkpoint than custody/checkpoint "
                "(swapped checkpoint)"
            )
        try:
            proof.verify(leaf, [vkey])
        except ProofError as err:
            rep.problems.append(
                f"entry {idx}: not in the signed log at that position ({err}); the entry or "
                "its proof was altered"
            )
            continue
        entries[idx] = dict(ent.fields)
    rep.entries = len(entries)
    _check_files(root, man, entries, rep)
    return rep


def _bag_info(root: Path, rep: BagReport) -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        for line in (root / "bag-info.txt").read_text(encoding="utf-8").splitlines():
            k, sep, v = line.partition(": ")
            if sep:
                out[k] = v
    except (OSError, UnicodeDecodeError):
        rep.problems.append("bag-info.txt is missing or unreadable")
    return out


def _compare_known(
    cp_text: bytes, signed: SignedCheckpoint, other: bytes, vkey: Verifier, rep: BagReport
) -> None:
    try:
        o = open_checkpoint(other, [vkey])
    except CheckpointError as e:
        rep.problems.append(f"a known checkpoint does not verify with this key: {e}")
        return
    mine = signed.checkpoint
    if o.checkpoint.size == mine.size and o.checkpoint.root != mine.root:
        rep.problems.append(
            f"the station signed two different logs of size {mine.size}: this bag's checkpoint "
            "and the known one conflict (a fork or a rewritten ledger)"
        )
        rep.conflict = (
            "MISBEHAVIOUR REPORT\n\n"
            f"Two checkpoints signed by {vkey.vkey()} for the same log size {mine.size} with "
            "different roots. Both verify with the key; a log that only grows cannot have "
            "both. Keep this file: it proves the station's key signed conflicting states.\n\n"
            "--- checkpoint in the bag ---\n"
            + cp_text.decode()
            + "\n--- the known checkpoint ---\n"
            + other.decode()
        )
    elif o.checkpoint.size > mine.size:
        rep.notes.append(
            f"a later checkpoint (size {o.checkpoint.size}) is known; its consistency with this "
            "bag's needs the ledger: python -m verify ledger DIR --known custody/checkpoint"
        )


def _output(e: dict[str, object]) -> object:
    out = e.get("output")
    return out.get("sha256") if isinstance(out, dict) else None


def _check_files(
    root: Path, man: dict[str, str], entries: dict[int, dict[str, object]], rep: BagReport
) -> None:
    try:
        lines = (root / "custody" / "files.tsv").read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        rep.problems.append("custody/files.tsv is missing: the files cannot be tied to entries")
        return
    head = lines[0].split("\t") if lines else []
    seen: set[str] = set()
    for n, line in enumerate(lines[1:], start=2):
        row = dict(zip(head, line.split("\t"), strict=False))
        rel, sha = row.get("path", ""), row.get("sha256", "")
        seen.add(rel)
        if man.get(rel) != sha:
            rep.problems.append(f"files.tsv line {n}: {rel} is not in the manifest with {sha[:16]}")
        ids = [int(x) for x in row.get("entries", "").split(",") if x.isdigit()]
        missing = [i for i in ids if i not in entries]
        if missing:
            rep.problems.append(
                f"{rel}: entries {', '.join(map(str, missing))} are named but missing or do not "
                "verify (removed or altered)"
            )
        if row.get("role") == "original":
            ing = entries.get(int(row.get("ingest_entry", "-1") or -1))
            if ing is None or ing.get("type") != "ingest" or ing.get("sha256") != sha:
                rep.problems.append(
                    f"{rel}: no verified ingest entry in the bag names SHA-256 {sha[:16]}…"
                )
        elif row.get("role") == "access_copy":
            made = [e for e in entries.values() if e.get("type") == "derive" and _output(e) == sha]
            if not made:
                rep.problems.append(f"{rel}: no verified derive entry made this access copy")
    for rel in sorted(set(man) - seen):
        rep.problems.append(f"{rel}: in the manifest but not accounted for in custody/files.tsv")
