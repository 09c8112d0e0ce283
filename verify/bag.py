"""Checking an export bag offline: standard library, PyNaCl and the pure ledger core.

Every check runs and every failure is listed with what it means. Nothing unsigned
decides what is checked: the verifier key comes from the person checking (or, said
plainly in the verdict, from the bag itself), and the payload is checked against the
station's signed `export` entry, not against the bag's own lists. What is checked:

- the BagIt structure: ``bagit.txt``, every line of ``manifest-sha256.txt`` (the file
  is there, is a regular file and hashes to its line), no file in ``data/`` that the
  manifest does not list, ``Payload-Oxum``, and every line of
  ``tagmanifest-sha256.txt`` (and no tag file it does not list);
- the signed checkpoint (``custody/checkpoint``) verifies with the trusted key;
- every entry (``custody/entries/N.entry``): its own signature, and its inclusion proof
  (``N.tlog-proof``) against that same checkpoint;
- the bag's `export` entry is among them and commits to ``manifest-sha256.txt`` (and
  ``manifest-sm3.txt``) by hash: no exported file missing, none added, none swapped;
- every payload file is named by a verified entry with its SHA-256 (an original's
  `ingest` entry, an access copy's `derive` entry);
- every human-readable label (``custody/files.tsv``, ``bag-info.txt``,
  ``VERIFY.txt``) says what the signed entries say; labels no entry signs are listed
  as unsigned in the verdict;
- with a checkpoint known from elsewhere of the same size, the two roots agree; if
  they do not, both signed notes are written to a misbehaviour report.

Reads are bounded (no tag file over its limit is read whole) and only regular files
are opened, so a hostile bag cannot make the verifier hang or exhaust memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ledger.audit import chain_json, checkpoint_keys
from ledger.checkpoint import Checkpoint, CheckpointError, SignedCheckpoint, open_checkpoint
from ledger.entry import Entry, EntryError, decode_entry
from ledger.keys import KEY_TYPE, KeyChain, KeyChainError, follow
from ledger.note import NoteError, Verifier, parse_note
from ledger.policy import Policy
from ledger.proof import ProofError, TlogProof
from ledger.tree import leaf_hash, verify_inclusion
from verify.readfile import Unreadable, open_regular, read_regular
from verify.witnesses import (
    FROM_PACKAGE,
    FROM_POLICY,
    PACKAGE_ONLY,
    policy_keys,
    trusted_key,
    trusted_line,
    witnessing,
)

# Bounds on what the verifier reads whole; a genuine bag is far below each.
MAX_MANIFEST = 64 << 20  # manifest-*.txt, files.tsv: ~300,000 lines
MAX_TAG = 1 << 20  # bag-info.txt, bagit.txt, VERIFY.txt, station.vkey
MAX_NOTE = 1 << 16  # checkpoint, one tlog-proof (a 63-hash proof is ~3 KiB)
MAX_LEAF = 65535  # an entry (C2SP tlog-tiles bundles cap an entry at this)

# Where the trusted key came from, as the verdict says it (a caller in code pins it;
# `python -m verify` says "on the command line (--vkey)").
PINNED = "pinned by the user"
FROM_BAG = FROM_PACKAGE
POLICY_TXT = "policy.txt"  # the station's witness policy, carried (not trusted) in the bag

FILES_TSV_HEAD = (
    "path",
    "sha256",
    "size",
    "role",
    "original",
    "entry",
    "entries",
    "recorder",
    "officer",
    "unit",
    "recorded",
    "captured",
    "source_name",
    "complete",
)

# Bag-info keys that say something the signed entries also say (checked), and those
# that nobody signs (listed as unsigned in the verdict).
SIGNED_INFO = (
    "Source-Organization",
    "Bagging-Date",
    "Payload-Oxum",
    "External-Identifier",
    "Internal-Sender-Description",
    "Contact-Name",
    "Custody-Station",
    "Custody-Export-Time",
    "Custody-Export-Entry",
    "Custody-Checkpoint-Size",
    "Custody-Verifier-Key",
    "Witness-Policy",
)

VERIFY_TXT = """\
HOW TO CHECK THIS EVIDENCE PACKAGE
==================================

This folder is a BagIt bag (RFC 8493) exported by custody, the evidence dock
of {station}, on {when} for: {purpose}

It holds the docked recordings (data/originals/), access copies made from
them (data/access/, when present), and the proof that each recording is the
one the dock recorded when it was docked: the dock's signed ledger entries
for each file (custody/entries/*.entry), an inclusion proof for each entry
(custody/entries/*.tlog-proof, C2SP tlog-proof format) against one signed
checkpoint of the ledger (custody/checkpoint, size {size}). Among them is the
signed export entry {export_entry}: it names the hash of manifest-sha256.txt,
so the list of exported files is the station's, not this folder's.

1. Check nothing was changed or added, with standard tools only:

       cd <this folder>
       sha256sum -c manifest-sha256.txt
       sha256sum -c tagmanifest-sha256.txt

   Every line must say OK. (Or: bagit.py --validate <this folder>, from the
   Library of Congress "bagit" package.) A file in data/ that is not listed
   in manifest-sha256.txt was added after the export.

2. Check the recordings are the ones the dock signed for, with custody's
   verifier (it needs Python 3, PyNaCl, and custody's verify and ledger
   packages; it trusts nothing in this folder):

       python -m verify bag <this folder> --vkey '<the station's verifier key>'

   Get the verifier key from the unit through a channel you trust (a letter,
   a phone call, the unit's published key), NOT from custody/station.vkey:
   the copy in this folder only tells you which key the package claims. The
   verifier checks every manifest line, every entry's signature, every
   inclusion proof against the signed checkpoint, that the export entry
   lists exactly the files in data/, that each file's SHA-256 is the one its
   ingest or derive entry names, and that every label in files.tsv and
   bag-info.txt is what the entries say. It lists every failure it finds and
   exits 0 only when everything holds.

3. To check the unit's ledger has not been rewritten since, compare this
   checkpoint with a later one from the unit (or its published ledger):
   python -m verify ledger <ledger folder> --vkey ... --known custody/checkpoint

{witnesses}Files: {files} ({bytes} bytes). Case: {case}.
"""

WITNESS_TXT = """\
4. Witnesses. The unit's witness policy is in policy.txt (C2SP tlog-policy:
   the witnesses, their keys, and how many of them must cosign). A witness
   is an independent office that cosigns a checkpoint only after checking
   it is consistent with everything it saw from this unit before; its
   cosignatures are the extra signature lines in custody/checkpoint. To
   require the policy's witnesses:

       python -m verify bag <this folder> --vkey '<key>' --policy <policy file>

   The policy.txt in this folder is carried inside the package: by itself
   it makes no witness trusted. Check each witness key in it with the
   witness's office (or take the policy your own office publishes), then
   pass that file with --policy; it may be this same file once checked.
   Without --policy the verifier lists the cosignatures as not checked.

"""


def tsv_cell(text: str) -> str:
    """A label as one files.tsv cell: tab, line breaks and other separators (and ``%``
    itself) percent-encoded, so any file name survives the round trip."""
    out = []
    for ch in text:
        if ch == "%" or ch == "\t" or ch in LINE_BREAKS or ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append("".join(f"%{b:02X}" for b in ch.encode("utf-8")))
        else:
            out.append(ch)
    return "".join(out)


# What str.splitlines() also splits on: never inside a label the bag carries.
LINE_BREAKS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"


def entry_number(text: str) -> int | None:
    """An entry index written in a bag, or None (ASCII digits only, at most 15)."""
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 15 else None


def entries_digest(indices: Iterable[int]) -> str:
    """SHA-256 of the sorted entry indices a bag carries, one per line: the export entry
    signs it, so no entry (a probe saying a recording was cut short, a wipe, a hold)
    can be dropped from the bag unseen."""
    return hashlib.sha256("".join(f"{i}\n" for i in sorted(indices)).encode()).hexdigest()


def verify_txt(
    station: str,
    export_time: str,
    purpose: str,
    size: int,
    export_entry: int,
    files: int,
    nbytes: int,
    case: str | None,
    policy: bool = False,
) -> str:
    """VERIFY.txt exactly as the export writes it: every value in it is a signed one
    (``policy``: the export entry names a policy.txt)."""
    when = export_time[:10] + " " + export_time[11:16] + " UTC"
    return VERIFY_TXT.format(
        station=station,
        when=when,
        purpose=purpose,
        size=size,
        export_entry=export_entry,
        files=files,
        bytes=nbytes,
        case=case or "(a selection of files)",
        witnesses=WITNESS_TXT if policy else "",
    )


@dataclass
class BagReport:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    unsigned: list[str] = field(default_factory=list)  # labels no signed entry vouches for
    trusted: str = ""  # the key the verdict rests on, and where it came from
    files: int = 0
    entries: int = 0
    checkpoint_size: int = 0
    export_entry: int = -1
    conflict: str = ""  # a misbehaviour report's text, when two checkpoints conflict
    trusted_keys: list[dict[str, str]] = field(default_factory=list)
    checkpoint_signed_by: list[str] = field(default_factory=list)  # vkeys that verified
    chain: KeyChain | None = None
    cosignatures: list[dict[str, object]] = field(default_factory=list)
    quorum: dict[str, object] | None = None
    witness_lines: list[str] = field(default_factory=list)
    policy_in_package: str | None = None  # "policy.txt" when the bag carries one

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "trusted": self.trusted,
            "trusted_keys": self.trusted_keys,
            "problems": self.problems,
            "notes": self.notes,
            "unsigned": self.unsigned,
            "files": self.files,
            "entries": self.entries,
            "checkpoint_size": self.checkpoint_size,
            "checkpoint_signed_by": self.checkpoint_signed_by,
            "key_chain": chain_json(self.chain) if self.chain is not None else [],
            "cosignatures": self.cosignatures,
            "quorum": self.quorum,
            "witness_policy_in_package": self.policy_in_package,
            "export_entry": self.export_entry,
        }

    def lines(self) -> list[str]:
        """The verdict for a person: the trusted keys first, then the checkpoint's
        signers and witnesses, then notes and problems."""
        out = [trusted_line(k) for k in self.trusted_keys]
        if any(k["source"] == FROM_PACKAGE for k in self.trusted_keys):
            out.append(f"note: {PACKAGE_ONLY}")
        for v in self.checkpoint_signed_by:
            out.append(f"checkpoint: size {self.checkpoint_size}, signed by {v}")
        if self.chain is not None:
            for c in self.chain.changes:
                out.append(
                    f"key change: entry {c.index} ({c.action}) hands the station key on from "
                    f"{c.old.key_id.hex()} to {c.new.vkey()}"
                )
        out += self.witness_lines
        out += [f"note: {n}" for n in self.notes]
        out += [f"unsigned: {u}" for u in self.unsigned]
        out += [f"FAILED {p}" for p in self.problems]
        return out


def file_digest(p: Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes (SHA-256, or SM3 where OpenSSL has it)."""
    with open(p, "rb") as f:
        return hashlib.file_digest(f, algorithm).hexdigest()


def read_bounded(p: Path, limit: int) -> bytes:
    """The whole of a regular file in the bag of at most ``limit`` bytes (no links)."""
    return read_regular(p, limit, follow=False)


def _digest_regular(p: Path, algorithm: str = "sha256") -> str:
    fd = open_regular(p, follow=False)
    with os.fdopen(fd, "rb") as f:
        return hashlib.file_digest(f, algorithm).hexdigest()


def _walk(root: Path, top: Path) -> Iterator[tuple[str, os.stat_result]]:
    """Every non-directory below ``top`` (relative to ``root``), symlinks not followed."""
    for d, dirs, names in os.walk(top, followlinks=False):
        for n in sorted(names + [x for x in dirs if os.path.islink(os.path.join(d, x))]):
            full = Path(d) / n
            yield full.relative_to(root).as_posix(), full.lstat()


def _read_text(root: Path, rel: str, limit: int, rep: BagReport, what: str) -> str | None:
    try:
        return read_bounded(root / rel, limit).decode("utf-8")
    except FileNotFoundError:
        rep.problems.append(f"{rel} is missing: {what}")
    except Unreadable as e:
        rep.problems.append(f"{rel} cannot be read: {e}")
    except UnicodeDecodeError:
        rep.problems.append(f"{rel} is not UTF-8 text")
    return None


def _manifest(root: Path, rel: str, rep: BagReport, what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    text = _read_text(root, rel, MAX_MANIFEST, rep, f"the bag cannot show its {what} are intact")
    for n, line in enumerate((text or "").splitlines(), start=1):
        digest, sep, path = line.partition("  ")
        if path.startswith("*"):  # sha256sum's binary marker
            path = path[1:]
        if not sep or len(digest) != 64 or path in out:
            rep.problems.append(f"{rel} line {n}: malformed or repeated ({line[:80]!r})")
            continue
        out[path] = digest.lower()
    return out


def _inside(rel: str) -> bool:
    parts = rel.split("/")
    return bool(rel) and not rel.startswith("/") and ".." not in parts and "" not in parts


def _claimed_key(root: Path) -> str:
    with contextlib.suppress(OSError, Unreadable, UnicodeDecodeError):
        return read_bounded(root / "custody" / "station.vkey", MAX_TAG).decode().strip()
    return ""


def _trust(
    vkey: Verifier | None,
    source: str,
    policy: Policy | None,
    policy_source: str,
    root: Path,
    rep: BagReport,
) -> list[Verifier]:
    """The station keys the verdict may rest on (pinned, from the policy's log lines, or
    else the package's own), each listed with where it came from."""
    keys: list[Verifier] = []
    if vkey is not None:
        keys.append(vkey)
        rep.trusted_keys.append(trusted_key("log", vkey.name, vkey.key_id, vkey.vkey(), source))
    if policy is not None:
        for k in policy_keys(policy, policy_source):
            if k["role"] == "log" and k["vkey"] in {v.vkey() for v in keys}:
                continue
            rep.trusted_keys.append(k)
        keys += [lg.key for lg in policy.logs if lg.key not in keys]
    if not keys:
        try:
            vkey = Verifier.parse(_claimed_key(root))
        except NoteError as e:
            rep.problems.append(f"no key given and custody/station.vkey is not a key ({e})")
            return []
        keys.append(vkey)
        rep.trusted_keys.insert(
            0, trusted_key("log", vkey.name, vkey.key_id, vkey.vkey(), FROM_BAG)
        )
        rep.notes.append(
            "the key came from the package itself: this proves the package is intact and "
            "self-consistent, not that the station made it; pin the station's key (--vkey) "
            "from a channel you trust to prove origin"
        )
    first = next(k for k in rep.trusted_keys if k["role"] == "log")
    rep.trusted = f"{first['name']} (key id {first['key_id']}), {first['source']}"
    return keys


def verify_bag(
    root: Path,
    vkey: Verifier | None,
    known: list[bytes] | None = None,
    key_source: str = PINNED,
    policy: Policy | None = None,
    policy_source: str = FROM_POLICY,
) -> BagReport:
    """Check the bag at ``root``. ``vkey`` None (and no ``policy`` naming a log) trusts
    the key the bag carries, and the verdict says so; ``key_source`` says where a given
    key came from. With ``policy`` the checkpoint must also carry its witnesses' quorum."""
    rep = BagReport()
    text = _read_text(root, "bagit.txt", MAX_TAG, rep, "this folder is not a BagIt bag")
    if text is not None and not text.startswith("BagIt-Version: "):
        rep.problems.append("bagit.txt does not declare a BagIt version")
    pinned = _trust(vkey, key_source, policy, policy_source, root, rep)
    man, present, planted = _payload(root, rep)
    info = _bag_info(root, rep)
    _check_oxum(info.get("Payload-Oxum"), present, planted, rep)
    _tags(root, rep)
    if (root / POLICY_TXT).exists():
        rep.policy_in_package = POLICY_TXT
    if not pinned:
        return rep
    # -- the checkpoint, the key chain up to it, and its witnesses -----------------------
    try:
        cp_text = read_bounded(root / "custody" / "checkpoint", MAX_NOTE)
        body = Checkpoint.parse_body(parse_note(cp_text).text)
    except (OSError, Unreadable) as e:
        rep.problems.append(f"custody/checkpoint cannot be read ({e}): no proof can be checked")
        return rep
    except (NoteError, CheckpointError) as e:
        rep.problems.append(f"custody/checkpoint is not a checkpoint ({e}): altered")
        return rep
    rep.checkpoint_size = body.size
    found = _entries(root, cp_text, body, rep)
    chain = _chain(pinned, found, rep)
    if chain is None:
        return rep
    rep.chain = chain
    keys = checkpoint_keys(chain, pinned, body.size)
    try:
        signed = open_checkpoint(cp_text, keys)
    except CheckpointError as e:
        rep.problems.append(_unreachable(cp_text, chain, pinned, keys, e))
        return rep
    rep.checkpoint_signed_by = [v.vkey() for v in signed.verified_by]
    claimed = _claimed_key(root)
    if claimed and claimed not in {k.vkey() for k in chain.all_keys()}:
        rep.notes.append(
            f"custody/station.vkey names {claimed}, which is not a key of the station's chain; "
            "the trusted key is what counts"
        )
    w = witnessing(cp_text, policy, signed.verified_by, policy_source)
    rep.cosignatures, rep.quorum = w.cosignatures, w.quorum
    rep.witness_lines = w.lines()
    rep.problems += w.problems
    if policy is None and rep.policy_in_package:
        rep.notes.append(
            "the package carries the station's witness policy (policy.txt), carried inside "
            "the package: it makes no witness trusted by itself; check its witness keys with "
            "their offices, then pass it (or your own policy) with --policy"
        )
    for other in known or []:
        _compare_known(cp_text, signed, other, chain, rep)
    entries = _signed_entries(found, chain, rep)
    rep.entries = len(entries)
    export = _export_entry(root, entries, info, rep)
    try:
        sm3_digest = _digest_regular(root / "manifest-sm3.txt")
    except (OSError, Unreadable):
        sm3_digest = ""
    _check_payload(man, present, entries, export, sm3_digest, rep)
    originals = _check_files_tsv(root, man, entries, rep)
    _check_sidecars(root, entries, rep)
    if export is not None:
        station_key = chain.key_for_entry(rep.export_entry)
        _check_signed_lists(root, entries, export, rep)
        _check_policy_file(root, export, rep)
        _check_info(info, entries, export, signed, station_key, originals, rep)
        _check_verify_txt(root, export, signed, man, rep)
    return rep


def _chain(pinned: list[Verifier], found: dict[int, Entry], rep: BagReport) -> KeyChain | None:
    """The station key chain from a trusted key through the bag's ``key`` entries."""
    key_entries = [(i, e) for i, e in sorted(found.items()) if e.type == KEY_TYPE]
    errors: list[str] = []
    for k in pinned:
        try:
            return follow(k, key_entries)
        except KeyChainError as e:
            errors.append(str(e))
    rep.problems.append(
        f"the package's key entries do not lead from the trusted key: {errors[0]} (a key "
        "entry was forged or altered, or the package is another station's)"
    )
    return None


def _unreachable(
    cp_text: bytes,
    chain: KeyChain,
    pinned: list[Verifier],
    keys: list[Verifier],
    err: CheckpointError,
) -> str:
    """Why the checkpoint is not trusted, in words a person can act on."""
    try:
        signers = ", ".join(f"{s.name}+{s.key_id.hex()}" for s in parse_note(cp_text).signatures)
    except NoteError:
        signers = "nobody"
    if not keys:
        return f"custody/checkpoint: the trusted key is not in the station's key chain ({err})"
    size = Checkpoint.parse_body(parse_note(cp_text).text).size
    return (
        f"custody/checkpoint does not verify with the keys trusted at size {size} "
        f"({', '.join(k.key_id.hex() for k in keys)}): it is signed by {signers}; a key "
        f"entry that hands the station key on from {pinned[0].key_id.hex()} is missing "
        f"from the package, the checkpoint was altered, or it is another station's ({err})"
    )


def _payload(root: Path, rep: BagReport) -> tuple[dict[str, str], dict[str, int], int]:
    """The manifest, every line checked; what data/ holds (path -> size of each regular
    file), and how many other things (links, devices) it holds."""
    man = _manifest(root, "manifest-sha256.txt", rep, "files")
    present: dict[str, int] = {}
    planted = 0
    data = root / "data"
    if data.is_dir() and not data.is_symlink():
        for rel, st in _walk(root, data):
            if not stat.S_ISREG(st.st_mode):
                rep.problems.append(f"{rel}: not a regular file (a link or device planted)")
                planted += 1
                continue
            present[rel] = st.st_size
    elif data.exists():
        rep.problems.append("data is not a folder")
    for rel, digest in sorted(man.items()):
        if not _inside(rel) or not rel.startswith("data/"):
            rep.problems.append(f"manifest names {rel!r}, outside the payload folder data/")
            continue
        if rel not in present:
            rep.problems.append(f"{rel}: listed in the manifest but missing (removed)")
            continue
        try:
            got = _digest_regular(root / rel)
        except (OSError, Unreadable) as e:
            rep.problems.append(f"{rel}: cannot be read ({e})")
            continue
        if got != digest:
            rep.problems.append(
                f"{rel}: its SHA-256 is {got}, not {digest} as the manifest says "
                "(the file was altered after the export)"
            )
    if (root / "manifest-sm3.txt").exists():
        if "sm3" not in hashlib.algorithms_available:
            rep.notes.append("manifest-sm3.txt not checked: this system's OpenSSL has no SM3")
        else:
            sm3 = _manifest(root, "manifest-sm3.txt", rep, "files (SM3)")
            for rel, digest in sorted(sm3.items()):
                if rel not in present or not _inside(rel):
                    rep.problems.append(f"{rel}: listed in manifest-sm3.txt but missing")
                elif _digest_regular(root / rel, "sm3") != digest:
                    rep.problems.append(f"{rel}: its SM3 does not match manifest-sm3.txt (altered)")
            for rel in sorted(set(man) - set(sm3)):
                rep.problems.append(f"{rel}: in manifest-sha256.txt but not in manifest-sm3.txt")
    for rel in sorted(set(present) - set(man)):
        rep.problems.append(f"{rel}: in data/ but not in the manifest (added after the export)")
    rep.files = len(man)
    return man, present, planted


def _tags(root: Path, rep: BagReport) -> None:
    tman = _manifest(root, "tagmanifest-sha256.txt", rep, "tag files")
    tags_present: set[str] = set()
    for rel, st in _walk(root, root):
        if rel.startswith("data/"):
            continue
        if "/" not in rel and rel.startswith("tagmanifest-") and rel.endswith(".txt"):
            if rel != "tagmanifest-sha256.txt":
                rep.notes.append(f"{rel} not checked (this verifier checks SHA-256 manifests)")
            continue
        if not stat.S_ISREG(st.st_mode):
            rep.problems.append(f"{rel}: not a regular file (a link or device planted)")
            continue
        tags_present.add(rel)
    for rel, digest in sorted(tman.items()):
        if not _inside(rel) or rel not in tags_present:
            rep.problems.append(f"{rel}: listed in the tag manifest but missing")
            continue
        try:
            if _digest_regular(root / rel) != digest:
                rep.problems.append(f"{rel}: altered after the export (tag manifest mismatch)")
        except (OSError, Unreadable) as e:
            rep.problems.append(f"{rel}: cannot be read ({e})")
    for rel in sorted(tags_present - set(tman)):
        rep.problems.append(f"{rel}: a tag file not in the tag manifest (added after the export)")


def _entries(root: Path, cp_text: bytes, body: Checkpoint, rep: BagReport) -> dict[int, Entry]:
    """Every entry whose inclusion proof holds under the checkpoint's root, by index
    (signatures are checked once the key chain is known: `_signed_entries`)."""
    entries: dict[int, Entry] = {}
    edir = root / "custody" / "entries"
    names = sorted(os.listdir(edir)) if edir.is_dir() and not edir.is_symlink() else []
    for name in names:
        if not name.endswith(".entry"):
            continue
        stem = name[: -len(".entry")]
        number = entry_number(stem)
        if number is None:
            rep.problems.append(f"custody/entries/{name}: not named by an entry number")
            continue
        idx = number
        try:
            leaf = read_bounded(edir / name, MAX_LEAF)
        except (OSError, Unreadable) as e:
            rep.problems.append(f"entry {idx}: cannot be read ({e})")
            continue
        try:
            ent = decode_entry(leaf)
        except EntryError as err:
            rep.problems.append(f"entry {idx}: not a custody entry ({err}); altered")
            continue
        try:
            proof = TlogProof.parse(read_bounded(edir / f"{stem}.tlog-proof", MAX_NOTE))
        except (OSError, Unreadable) as e:
            rep.problems.append(f"entry {idx}: no readable inclusion proof ({e})")
            continue
        except ProofError as err:
            rep.problems.append(f"entry {idx}: its proof is malformed ({err})")
            continue
        if proof.index != idx:
            rep.problems.append(f"entry {idx}: its proof is for entry {proof.index}")
            continue
        if proof.checkpoint.encode() != cp_text:
            rep.problems.append(
                f"entry {idx}: its proof is against another checkpoint than custody/checkpoint "
                "(swapped checkpoint)"
            )
            continue
        if not verify_inclusion(idx, body.size, leaf_hash(leaf), proof.hashes, body.root):
            rep.problems.append(
                f"entry {idx}: not in the signed log at that position (inclusion proof does "
                "not verify); the entry or its proof was altered"
            )
            continue
        entries[idx] = ent
    return entries


def _signed_entries(
    found: dict[int, Entry], chain: KeyChain, rep: BagReport
) -> dict[int, dict[str, object]]:
    """The entries signed by the station key current at their index, and not by a key
    revoked before them."""
    out: dict[int, dict[str, object]] = {}
    for idx, ent in sorted(found.items()):
        key = chain.key_for_entry(idx)
        if not ent.verify(key):
            rep.problems.append(
                f"entry {idx}: its signature does not verify with the station key of that "
                f"index ({key.key_id.hex()}) (altered)"
            )
            continue
        revoked = chain.suspect(idx)
        if revoked is not None:
            rep.problems.append(
                f"entry {idx}: signed by the revoked key {revoked.old.key_id.hex()} after "
                f"index {revoked.last_index}, the last one that key vouches for (revoked by "
                f"key entry {revoked.index}): it proves nothing, and neither does what "
                "rests on it alone"
            )
            continue
        out[idx] = dict(ent.fields)
    return out


def _export_entry(
    root: Path, entries: dict[int, dict[str, object]], info: dict[str, str], rep: BagReport
) -> dict[str, object] | None:
    """The signed `export` entry that commits to this bag's manifest, if there is one."""
    try:
        mdigest = _digest_regular(root / "manifest-sha256.txt")
    except (OSError, Unreadable):
        mdigest = ""
    exports = {i: e for i, e in entries.items() if e.get("type") == "export"}
    mine = [i for i, e in exports.items() if mdigest and e.get("manifest_sha256") == mdigest]
    if not mine:
        why = (
            "the export entries in the bag commit to another manifest"
            if exports
            else "the bag carries no verified export entry"
        )
        rep.problems.append(
            "no signed export entry names this manifest-sha256.txt "
            f"({why}): files may have been added, dropped or swapped after the export"
        )
        return None
    idx = mine[-1]
    rep.export_entry = idx
    named = info.get("Custody-Export-Entry")
    if named is not None and named != str(idx):
        rep.problems.append(
            f"bag-info.txt names export entry {named}, the signed one is entry {idx}"
        )
    return exports[idx]


def _names(e: dict[str, object]) -> tuple[str, str] | None:
    """(SHA-256, role) of the file an entry signs for, if it names one."""
    if e.get("type") in ("ingest", "sighting") and isinstance(e.get("sha256"), str):
        return str(e["sha256"]), "original"
    out = e.get("output")
    if e.get("type") == "derive" and isinstance(out, dict) and isinstance(out.get("sha256"), str):
        return str(out["sha256"]), str(e.get("kind", "derivative"))
    return None


def _check_payload(
    man: dict[str, str],
    present: dict[str, int],
    entries: dict[int, dict[str, object]],
    export: dict[str, object] | None,
    sm3_digest: str,
    rep: BagReport,
) -> None:
    signed: dict[str, list[int]] = {}
    for i, e in entries.items():
        n = _names(e)
        if n is not None:
            signed.setdefault(n[0], []).append(i)
    for rel, sha in sorted(man.items()):
        if sha not in signed:
            rep.problems.append(
                f"{rel}: no verified entry in the bag names SHA-256 {sha[:16]}… "
                "(a file the station never recorded)"
            )
    if export is None:
        return
    listed = export.get("files")
    if isinstance(listed, list) and sorted(map(str, listed)) != sorted(man.values()):
        rep.problems.append("the signed export entry lists other files than the manifest holds")
    if export.get("bytes") is not None and export.get("bytes") != sum(
        present.get(r, 0) for r in man
    ):
        rep.problems.append(
            f"the payload is not the {export.get('bytes')} bytes the export entry signed for"
        )
    want_sm3 = export.get("manifest_sm3_sha256")
    if want_sm3 is not None and sm3_digest != want_sm3:
        rep.problems.append(
            "manifest-sm3.txt is not the one the signed export entry names (altered or removed)"
        )
    elif want_sm3 is None and sm3_digest:
        rep.problems.append(
            "manifest-sm3.txt was added after the export (no signed entry names it)"
        )


def _row_problems(
    row: dict[str, str],
    size: int | None,
    entries: dict[int, dict[str, object]],
    ingest_of: dict[str, int],
) -> list[str]:
    """What in one files.tsv row differs from the signed entries."""
    out: list[str] = []
    sha = row.get("sha256", "")
    listed = [x for x in row.get("entries", "").split(",") if x]
    missing = [x for x in listed if entry_number(x) not in entries]
    if missing:
        out.append(
            f"entries {', '.join(missing)} are named but missing or do not verify "
            "(removed or altered)"
        )
    if size is not None and row.get("size") != str(size):
        out.append(f"size says {row.get('size')}, the file has {size} bytes")
    eid = entry_number(row.get("entry", ""))
    if eid is None:
        return [*out, f"entry {row.get('entry')!r} is not an entry number"]
    e = entries.get(eid)
    named = _names(e) if e else None
    if e is None or named is None or named[0] != sha:
        return [*out, f"entry {eid} is not a verified entry in the bag naming this file"]
    if named[1] == "original" and e.get("type") != "ingest":
        # A sighting names the same bytes seen again elsewhere; the labels of an
        # original are those of its capture.
        return [*out, f"entry {eid} is a {e.get('type')} entry, not the original's ingest entry"]
    role = "original" if named[1] == "original" else named[1]
    if row.get("role") != role:
        out.append(f"role says {row.get('role')!r}, entry {eid} makes it {role!r}")
    ingest = e
    if named[1] != "original":
        src = e.get("sha256")  # a derive entry names the original it was made from
        if row.get("original") != src:
            out.append(f"original says {row.get('original')}, entry {eid} derived it from {src}")
        ingest = entries.get(ingest_of.get(str(src), -1), {})
    elif row.get("original") != sha:
        out.append(f"original says {row.get('original')}, it is itself the original")
    if not ingest:
        return [*out, "the ingest entry of its original is not in the bag"]
    ident = ingest.get("recorder")
    ident = ident if isinstance(ident, dict) else {}
    source = ingest.get("source")
    source = source if isinstance(source, dict) else {}
    signed_name = str(source.get("path", "")).rsplit("/", 1)[-1] if source.get("path") else ""
    expect = {
        "recorder": tsv_cell(str(ident.get("serial", ""))),
        "officer": tsv_cell(str(ident.get("officer", ""))),
        "unit": tsv_cell(str(ident.get("unit", ""))),
        "recorded": tsv_cell(str(ident.get("claimed_start", ""))),
        "captured": tsv_cell(str(ingest.get("time", ""))),
        "source_name": tsv_cell(signed_name),
    }
    for k, v in expect.items():
        if row.get(k, "") != v:
            out.append(f"{k} says {row.get(k, '')!r}, the signed ingest entry says {v!r}")
    if named[1] == "original":
        whole = complete_of(sha, entries)
        if row.get("complete", "") != whole:
            out.append(
                f"complete says {row.get('complete', '')!r}, the signed probe entry says {whole!r}"
            )
    return out


def _newest_probe(sha: str, entries: dict[int, dict[str, object]]) -> dict[str, object] | None:
    """The summary of the newest `probe` entry of ``sha`` among ``entries``."""
    for i in sorted(entries, reverse=True):
        e = entries[i]
        summary = e.get("summary")
        if e.get("type") == "probe" and e.get("sha256") == sha and isinstance(summary, dict):
            return summary
    return None


def complete_of(sha: str, entries: dict[int, dict[str, object]]) -> str:
    """ "true"/"false" as the newest probe entry of ``sha`` says, "" without one."""
    summary = _newest_probe(sha, entries)
    c = summary.get("complete") if summary is not None else None
    return "" if c is None else ("true" if c else "false")


def damage_of(sha: str, entries: dict[int, dict[str, object]]) -> str:
    """What the newest probe entry of ``sha`` says is missing, for a recording cut short."""
    summary = _newest_probe(sha, entries)
    if summary is None:
        return ""
    d = summary.get("damage") or summary.get("problems") or []
    return "; ".join(map(str, d)) if isinstance(d, list) else str(d)


def _check_files_tsv(
    root: Path, man: dict[str, str], entries: dict[int, dict[str, object]], rep: BagReport
) -> list[int]:
    """Check every row; returns the ingest entries of the exported originals."""
    text = _read_text(
        root, "custody/files.tsv", MAX_MANIFEST, rep, "the files cannot be tied to entries"
    )
    if text is None:
        return []
    # Split on newlines only: a label's other separators are percent-encoded (tsv_cell).
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    head = lines[0].split("\t") if lines else []
    if tuple(head) != FILES_TSV_HEAD:
        rep.problems.append(
            "custody/files.tsv has columns the verifier does not know "
            "(made by another version, or altered)"
        )
        return []
    rows: list[dict[str, str]] = []
    for n, line in enumerate(lines[1:], start=2):
        cells = line.split("\t")
        if len(cells) != len(head):
            rep.problems.append(f"files.tsv line {n}: {len(cells)} cells, not {len(head)}")
            cells = [*cells[: len(head)], *[""] * (len(head) - len(cells))]
        rows.append(dict(zip(head, cells, strict=True)))
    # An access copy's labels are its original's: the ingest entry its original row names.
    ingest_of: dict[str, int] = {}
    for r in rows:
        number = entry_number(r.get("entry", ""))
        if r.get("role") == "original" and number is not None:
            ingest_of[r.get("sha256", "")] = number
    seen: set[str] = set()
    for n, row in enumerate(rows, start=2):
        rel, sha = row.get("path", ""), row.get("sha256", "")
        if rel in seen:
            rep.problems.append(f"files.tsv line {n}: {rel} is listed twice")
            continue
        seen.add(rel)
        if man.get(rel) != sha:
            rep.problems.append(f"files.tsv line {n}: {rel} is not in the manifest with {sha[:16]}")
            continue
        size = (root / rel).stat().st_size if (root / rel).is_file() else None
        for p in _row_problems(row, size, entries, ingest_of):
            rep.problems.append(f"files.tsv line {n} ({rel}): {p}")
        if row.get("role") == "original" and complete_of(sha, entries) == "false":
            what = damage_of(sha, entries)
            rep.notes.append(
                f"{rel}: the station recorded this recording as cut short"
                + (f" ({what})" if what else "")
                + "; it is the file as docked"
            )
    for rel in sorted(set(man) - seen):
        rep.problems.append(f"{rel}: in the manifest but not described in custody/files.tsv")
    return sorted(set(ingest_of.values()))


def _check_signed_lists(
    root: Path, entries: dict[int, dict[str, object]], export: dict[str, object], rep: BagReport
) -> None:
    """files.tsv and the set of entries in the bag are the ones the export entry signed."""
    try:
        got = _digest_regular(root / "custody" / "files.tsv")
    except (OSError, Unreadable):
        got = ""
    if got != export.get("files_tsv_sha256"):
        rep.problems.append(
            "custody/files.tsv is not the one the signed export entry names (its labels or "
            "rows were changed after the export)"
        )
    carried = [i for i in entries if i != rep.export_entry]
    if entries_digest(carried) != export.get("entries_sha256"):
        rep.problems.append(
            f"the bag carries {len(carried)} verified entries, not the "
            f"{export.get('entry_count')} the export entry signed for: an entry was removed "
            "(a probe saying a recording was cut short, a wipe, a hold, ...) or added"
        )


def _check_sidecars(root: Path, entries: dict[int, dict[str, object]], rep: BagReport) -> None:
    """Each fingerprint sidecar hashes to its name, and a verified entry names that hash."""
    named: set[str] = set()
    for e in entries.values():
        side = e.get("sidecar")
        if e.get("type") == "fingerprint" and isinstance(side, dict):
            named.add(str(side.get("sha256", "")))
    folder = root / "custody" / "sidecars"
    if not folder.is_dir() or folder.is_symlink():
        return
    for name in sorted(os.listdir(folder)):
        sha = name.split(".", 1)[0]
        rel = f"custody/sidecars/{name}"
        try:
            got = _digest_regular(folder / name)
        except (OSError, Unreadable) as e:
            rep.problems.append(f"{rel}: cannot be read ({e})")
            continue
        if got != sha:
            rep.problems.append(f"{rel}: its SHA-256 is {got[:16]}…, not its name (altered)")
        elif sha not in named:
            rep.problems.append(f"{rel}: no verified fingerprint entry in the bag names it")


def _check_policy_file(root: Path, export: dict[str, object], rep: BagReport) -> None:
    """policy.txt is the witness policy the export entry names by hash (or absent)."""
    want = export.get("witness_policy_sha256")
    try:
        got = _digest_regular(root / POLICY_TXT)
    except FileNotFoundError:
        got = ""
    except (OSError, Unreadable) as e:
        rep.problems.append(f"{POLICY_TXT}: cannot be read ({e})")
        return
    if want is None and got:
        rep.problems.append(f"{POLICY_TXT} was added after the export (no signed entry names it)")
    elif want is not None and got != want:
        rep.problems.append(
            f"{POLICY_TXT} is not the witness policy the signed export entry names "
            "(altered or removed)"
        )


def _bag_info(root: Path, rep: BagReport) -> dict[str, str]:
    out: dict[str, str] = {}
    text = _read_text(root, "bag-info.txt", MAX_TAG, rep, "the bag has no metadata")
    for line in (text or "").split("\n"):
        k, sep, v = line.partition(": ")
        if sep and k not in out:
            out[k] = v
        elif sep:
            rep.problems.append(f"bag-info.txt names {k} twice")
        elif line.strip():
            rep.problems.append(f"bag-info.txt: a line that is not 'Key: value' ({line[:60]!r})")
    return out


def _check_oxum(oxum: str | None, present: dict[str, int], planted: int, rep: BagReport) -> None:
    """Payload-Oxum against the walk of data/ that `_payload` made (not a second walk)."""
    if not oxum:
        return
    total, count = sum(present.values()), len(present) + planted
    if oxum != f"{total}.{count}":
        rep.problems.append(
            f"Payload-Oxum says {oxum}, the payload is {total} bytes in {count} files"
        )


def _check_info(
    info: dict[str, str],
    entries: dict[int, dict[str, object]],
    export: dict[str, object],
    signed: SignedCheckpoint,
    vkey: Verifier,
    originals: Iterable[int],
    rep: BagReport,
) -> None:
    t = str(export.get("time", ""))
    units: set[str] = set()
    for i in originals:  # the ingest entries of the exported originals
        ident = entries.get(i, {}).get("recorder")
        if isinstance(ident, dict) and ident.get("unit"):
            units.add(str(ident["unit"]))
    expect = {
        "Source-Organization": tsv_cell(",".join(sorted(units)) or signed.checkpoint.origin),
        "Bagging-Date": t[:10],
        "External-Identifier": str(export.get("case") or "selection"),
        "Internal-Sender-Description": str(export.get("purpose", "")),
        "Contact-Name": str(export.get("operator", "")),
        "Custody-Station": signed.checkpoint.origin,
        "Custody-Export-Time": t,
        "Custody-Checkpoint-Size": str(signed.checkpoint.size),
        "Custody-Verifier-Key": vkey.vkey(),
    }
    if export.get("witness_policy_sha256") is not None:
        expect["Witness-Policy"] = POLICY_TXT
    elif "Witness-Policy" in info:
        rep.problems.append(
            "bag-info.txt names a Witness-Policy, but the signed export entry names none"
        )
    for k, v in expect.items():
        if k in info and info[k] != v:
            rep.problems.append(f"bag-info.txt {k} says {info[k]!r}; the signed entries say {v!r}")
    for k in ("External-Identifier", "Contact-Name", "Internal-Sender-Description"):
        if k not in info:
            rep.notes.append(f"bag-info.txt has no {k}; the export entry says {expect[k]!r}")
    for k, v in info.items():
        if k not in SIGNED_INFO:
            rep.unsigned.append(f"bag-info.txt {k}: {v!r} (no signed entry says this)")


def _check_verify_txt(
    root: Path,
    export: dict[str, object],
    signed: SignedCheckpoint,
    man: dict[str, str],
    rep: BagReport,
) -> None:
    text = _read_text(root, "VERIFY.txt", MAX_TAG, rep, "the instructions are gone")
    if text is None:
        return
    b = export.get("bytes")
    want = verify_txt(
        signed.checkpoint.origin,
        str(export.get("time", "")),
        str(export.get("purpose", "")),
        signed.checkpoint.size,
        rep.export_entry,
        len(man),
        int(b) if isinstance(b, int) else 0,
        str(export["case"]) if export.get("case") else None,
        policy=export.get("witness_policy_sha256") is not None,
    )
    if text != want:
        rep.problems.append(
            "VERIFY.txt does not say what the signed export entry says (its text was altered)"
        )


def _compare_known(
    cp_text: bytes, signed: SignedCheckpoint, other: bytes, chain: KeyChain, rep: BagReport
) -> None:
    try:
        o = open_checkpoint(other, chain.all_keys())
    except CheckpointError as e:
        rep.problems.append(f"a known checkpoint does not verify with this key: {e}")
        return
    vkey = o.verified_by[0]
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
