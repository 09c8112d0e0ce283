"""Checking a disclosure publication (公示, public disclosure) offline.

A publication is a static folder a station or the county hub publishes for anyone
to read (docs/disclosure-format.md). Its ``MANIFEST`` lists the SHA-256 of every
published file; the publisher's signed `disclose` entry names the SHA-256 of that
MANIFEST; the folder carries the entry and its inclusion proof (C2SP tlog-proof)
in the publisher's signed checkpoint. So one trusted verifier key proves every
byte of the publication came from the publisher's log. What is checked:

1. every MANIFEST line's file exists, is a regular file and hashes right; nothing
   else is in the folder (no other file, folder or link) besides MANIFEST,
   ``disclose.entry`` and ``disclose.tlog-proof``; every path is a plain relative
   path (no ``..``, no absolute path, no backslash);
2. ``disclose.entry`` is a well-formed entry of type ``disclose``, signed by the
   trusted key, and its ``manifest_sha256`` is the SHA-256 of MANIFEST;
3. ``disclose.tlog-proof`` proves that entry in a checkpoint signed by the trusted
   key (whose origin is the key's name);
4. each ``logs/NN/checkpoint`` is signed by ``logs/NN/vkey``, its cosignatures are
   counted against ``witnesses.txt`` (and, with a policy the reader gives, its
   quorum judged), and ``data.json``'s ``logs[i]`` names that log at that size.

Standard library, PyNaCl and the pure ledger core only: a member of the public or
a court runs it. Every read is bounded and only regular files are opened (links
are refused), so a hostile folder cannot hang the checker or exhaust its memory.
Every failure is one line that names the file and what is wrong with it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ledger.checkpoint import CheckpointError, SignedCheckpoint, open_checkpoint
from ledger.cosignature import CosignatureVerifier
from ledger.entry import Entry, EntryError, decode_entry
from ledger.note import Note, NoteError, Verifier, parse_note
from ledger.policy import Policy
from ledger.proof import ProofError, TlogProof
from verify.readfile import Unreadable, open_regular, read_regular
from verify.witnesses import (
    FROM_POLICY,
    FROM_VKEY,
    policy_keys,
    trusted_key,
    trusted_line,
    witnessing,
)

FORMAT = "custody-disclosure/v1"
ENTRY_TYPE = "disclose"
MANIFEST = "MANIFEST"
ENTRY_FILE = "disclose.entry"
PROOF_FILE = "disclose.tlog-proof"
UNLISTED = (MANIFEST, ENTRY_FILE, PROOF_FILE)  # the only files the MANIFEST does not list
DATA_JSON = "data.json"
PUBLISHER_VKEY = "publisher.vkey"
WITNESSES_TXT = "witnesses.txt"
POLICY_TXT = "policy.txt"

# Bounds on what is read whole; a genuine publication is far below each.
MAX_MANIFEST = 1 << 20  # ~12 lines for a station, a few more per log for a county
MAX_DATA_JSON = 64 << 20  # a county's every unit x category x month
MAX_SMALL = 1 << 16  # a vkey, a checkpoint, a tlog-proof (a 63-hash proof is ~3 KiB)
MAX_WITNESSES = 1 << 20
MAX_LEAF = 65536  # C2SP tlog-tiles caps an entry at 65535 bytes; and one newline
MAX_FILE = 1 << 30  # no published file is hashed beyond this (a page, figures, CSV)
MAX_LOGS = 9999  # logs/01 .. logs/9999: a county of a few hundred stations is far below

# Where the trusted publisher key came from, as the verdict says it.
FROM_PUBLICATION = (
    "carried inside the publication (publisher.vkey): compare it with the key the "
    "agency publishes elsewhere"
)
PUBLICATION_ONLY = (
    "a key carried inside the publication proves the folder is intact and "
    "self-consistent, not who published it; pin the publisher's key (--vkey) from a "
    "channel you trust to prove that"
)
LOG_FROM_PUBLICATION = "carried inside the publication (logs/NN/vkey)"

_HEX64 = re.compile(r"[0-9a-f]{64}")
_LOG_DIR = re.compile(r"logs/([0-9]{2,})")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u0085\u2028\u2029]")


def shown(rel: str) -> str:
    """A path as one printable line: control characters and undecodable bytes escaped."""
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        rel = os.fsencode(rel).decode("utf-8", "backslashreplace")
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), rel)


def safe_path(rel: str) -> str:
    """Why ``rel`` is not a plain relative path inside the folder; "" when it is."""
    if not rel:
        return "an empty path"
    if rel.startswith("/"):
        return "an absolute path"
    if "\\" in rel:
        return "a backslash in the path"
    if _CONTROL.search(rel):
        return "a control character in the path"
    parts = rel.split("/")
    if ".." in parts:
        return "'..' in the path (outside the folder)"
    if "" in parts or "." in parts:
        return "an empty or '.' part in the path"
    return ""


def log_dir(i: int) -> str:
    """The folder of the i-th log (0-based) in data.json's "logs" order: logs/01, ..."""
    return f"logs/{i + 1:02d}"


@dataclass
class LogReport:
    """One of the publication's logs/NN: its checkpoint and the witnesses' cosignatures."""

    path: str  # "logs/01"
    origin: str = ""
    size: int | None = None
    vkey: str = ""
    key_source: str = LOG_FROM_PUBLICATION
    cosignatures: list[dict[str, object]] = field(default_factory=list)
    valid: int = 0  # cosignatures that verify with a key in witnesses.txt
    quorum: dict[str, object] | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "path": self.path,
            "origin": self.origin,
            "size": self.size,
            "vkey": self.vkey,
            "key_source": self.key_source,
            "cosignatures": self.cosignatures,
            "cosignatures_valid": self.valid,
            "cosignatures_total": len(self.cosignatures),
            "quorum": self.quorum,
        }

    def line(self, witnesses: int) -> str:
        if self.size is None:
            return f"{self.path}: not checked"
        q = ""
        if self.quorum is not None:
            met = "met" if self.quorum["met"] else "NOT met"
            q = f"; policy quorum {met} ({self.quorum['quorum']})"
        return (
            f"{self.path}: {self.origin}, checkpoint size {self.size}, signed by its vkey; "
            f"cosignatures {self.valid} valid of {len(self.cosignatures)} "
            f"(against {witnesses} witness key(s) in {WITNESSES_TXT}){q}"
        )


@dataclass
class DisclosureReport:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    trusted_keys: list[dict[str, str]] = field(default_factory=list)
    period: str = ""
    scope: str = ""
    publisher: str = ""
    origin: str = ""
    entry_index: int | None = None
    entry_time: str = ""
    checkpoint_size: int | None = None
    manifest_sha256: str = ""
    files: int = 0  # MANIFEST lines whose file hashed right
    listed: int = 0  # MANIFEST lines
    logs: list[LogReport] = field(default_factory=list)
    witnesses: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, object]:
        first = self.trusted_keys[0] if self.trusted_keys else None
        return {
            "ok": self.ok,
            "trusted": f"{first['vkey']}, {first['source']}" if first else "",
            "trusted_keys": self.trusted_keys,
            "period": self.period,
            "scope": self.scope,
            "publisher": self.publisher,
            "origin": self.origin,
            "entry_index": self.entry_index,
            "entry_time": self.entry_time,
            "checkpoint_size": self.checkpoint_size,
            "manifest_sha256": self.manifest_sha256,
            "files": self.files,
            "files_listed": self.listed,
            "logs": [lg.to_json() for lg in self.logs],
            "witnesses": self.witnesses,
            "problems": self.problems,
            "notes": self.notes,
        }

    def lines(self) -> list[str]:
        """The verdict for a person: whose key, what was published, each log."""
        out = [trusted_line(k) for k in self.trusted_keys]
        if any(k["source"] == FROM_PUBLICATION for k in self.trusted_keys):
            out.append(f"note: {PUBLICATION_ONLY}")
        if self.period or self.publisher:
            out.append(
                f"publication: period {self.period or '?'} ({self.scope or '?'}), "
                f"published by {self.publisher or '?'} ({self.origin or '?'})"
            )
        if self.entry_index is not None and self.checkpoint_size is not None:
            out.append(
                f"disclose entry: number {self.entry_index} of {self.entry_time}, in the "
                f"publisher's checkpoint of size {self.checkpoint_size}, names MANIFEST "
                f"{self.manifest_sha256[:16]}…"
            )
        out.append(f"files: {self.files} of {self.listed} in MANIFEST hash right")
        out += [lg.line(self.witnesses) for lg in self.logs]
        out += [f"note: {n}" for n in self.notes]
        out += [f"FAILED {p}" for p in self.problems]
        return out


# -- the folder and its MANIFEST ---------------------------------------------------------


def _walk(root: Path, rep: DisclosureReport) -> tuple[dict[str, int], set[str]]:
    """Every regular file below ``root`` (relative path -> size) and every folder; links,
    devices and pipes are failures, never followed or opened."""
    files: dict[str, int] = {}
    folders: set[str] = set()
    for d, dirs, names in os.walk(root, followlinks=False):
        here = Path(d)
        for n in sorted(dirs):
            rel = (here / n).relative_to(root).as_posix()
            if os.path.islink(here / n):
                rep.problems.append(f"{shown(rel)}: a symbolic link (refused)")
            else:
                folders.add(rel)
        for n in sorted(names):
            rel = (here / n).relative_to(root).as_posix()
            try:
                st = os.lstat(here / n)
            except OSError as e:
                rep.problems.append(f"{shown(rel)}: cannot be examined ({e.strerror})")
                continue
            if stat.S_ISLNK(st.st_mode):
                rep.problems.append(f"{shown(rel)}: a symbolic link (refused)")
            elif not stat.S_ISREG(st.st_mode):
                rep.problems.append(f"{shown(rel)}: not a regular file (a pipe, socket or device)")
            else:
                files[rel] = st.st_size
    # A folder os.walk could not enter (no permission) is found by the hashing below.
    return files, folders


def parse_manifest(data: bytes) -> tuple[dict[str, str], list[str]]:
    """MANIFEST's lines ("<64 lowercase hex>  <path>\\n", sorted by path) as path ->
    digest, and what is wrong with any line (each naming its line number)."""
    out: dict[str, str] = {}
    problems: list[str] = []
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return out, [f"{MANIFEST}: not UTF-8 text"]
    if not text:
        return out, [f"{MANIFEST}: empty (it lists no file)"]
    if not text.endswith("\n"):
        problems.append(f"{MANIFEST}: the last line does not end in a newline")
    last = ""
    for n, line in enumerate(text.removesuffix("\n").split("\n"), start=1):
        digest, sep, rel = line[:64], line[64:66], line[66:]
        if not _HEX64.fullmatch(digest) or sep != "  ":
            problems.append(
                f"{MANIFEST} line {n}: not '<64 lowercase hex>  <path>' ({shown(line[:80])!r})"
            )
            continue
        why = safe_path(rel)
        if why:
            problems.append(f"{MANIFEST} line {n}: {shown(rel)!r} is refused: {why}")
            continue
        if rel in UNLISTED:
            problems.append(f"{MANIFEST} line {n}: lists {rel}, which it must not")
            continue
        if rel in out:
            problems.append(f"{MANIFEST} line {n}: {shown(rel)} is listed twice")
            continue
        if rel < last:
            problems.append(f"{MANIFEST} line {n}: {shown(rel)} is out of path order")
        last = rel
        out[rel] = digest
    return out, problems


def _digest(root: Path, rel: str) -> str:
    """SHA-256 of a regular file in the folder (links refused), at most MAX_FILE bytes."""
    fd = open_regular(root / rel, follow=False)
    with os.fdopen(fd, "rb") as f:
        size = os.fstat(fd).st_size
        if size > MAX_FILE:
            raise Unreadable(f"it holds {size} bytes, more than a published file may ({MAX_FILE})")
        return hashlib.file_digest(f, "sha256").hexdigest()


def _linked_folder(root: Path, rel: str) -> str:
    """The first folder on the way to ``rel`` that is a symbolic link ("" when none):
    O_NOFOLLOW guards only the last part of a path, and nothing is read through a link."""
    parts = rel.split("/")[:-1]
    for i in range(1, len(parts) + 1):
        if os.path.islink(root.joinpath(*parts[:i])):
            return "/".join(parts[:i])
    return ""


def _read(root: Path, rel: str, limit: int, rep: DisclosureReport, what: str) -> bytes | None:
    """A file of the folder read whole (bounded, no links), or None with a failure line."""
    link = _linked_folder(root, rel)
    if link:
        rep.problems.append(f"{rel}: not read, {link} is a symbolic link")
        return None
    try:
        return read_regular(root / rel, limit, follow=False)
    except (FileNotFoundError, NotADirectoryError):
        rep.problems.append(f"{rel}: missing ({what})")
    except Unreadable as e:
        rep.problems.append(f"{rel}: cannot be read: {e}")
    except OSError as e:
        rep.problems.append(f"{rel}: cannot be read: {e.strerror or e}")
    return None


def _check_files(root: Path, rep: DisclosureReport) -> bytes | None:
    """Check 1: the MANIFEST against the folder. Returns MANIFEST's bytes."""
    present, folders = _walk(root, rep)
    raw = _read(root, MANIFEST, MAX_MANIFEST, rep, "the files cannot be checked")
    if raw is None:
        for rel in sorted(set(present) - set(UNLISTED)):
            rep.problems.append(f"{shown(rel)}: not listed (there is no usable {MANIFEST})")
        return None
    man, problems = parse_manifest(raw)
    rep.problems += problems
    rep.listed = len(man)
    for rel, want in man.items():
        if rel not in present:
            rep.problems.append(f"{shown(rel)}: listed in {MANIFEST} but missing (removed)")
            continue
        try:
            got = _digest(root, rel)
        except FileNotFoundError:
            rep.problems.append(f"{shown(rel)}: listed in {MANIFEST} but missing (removed)")
            continue
        except (OSError, Unreadable) as e:
            rep.problems.append(f"{shown(rel)}: cannot be read: {getattr(e, 'strerror', e) or e}")
            continue
        if got != want:
            rep.problems.append(
                f"{shown(rel)}: its SHA-256 is {got[:16]}…, not {want[:16]}… as {MANIFEST} "
                "says (altered after publication)"
            )
            continue
        rep.files += 1
    for rel in sorted(set(present) - set(man) - set(UNLISTED)):
        rep.problems.append(f"{shown(rel)}: not listed in {MANIFEST} (added after publication)")
    needed = {"/".join(rel.split("/")[:i]) for rel in man for i in range(1, rel.count("/") + 1)}
    for rel in sorted(folders - needed):
        rep.problems.append(f"{shown(rel)}/: a folder {MANIFEST} lists no file in (added)")
    return raw


# -- the disclose entry and its proof -----------------------------------------------------


def _publisher_key(
    root: Path, vkey: Verifier | None, key_source: str, rep: DisclosureReport
) -> Verifier | None:
    """The key the verdict rests on: pinned, else the publication's publisher.vkey."""
    carried = None
    raw = _read(root, PUBLISHER_VKEY, MAX_SMALL, rep, "the publication names no key")
    if raw is not None:
        try:
            carried = Verifier.parse(raw.decode("utf-8").strip())
        except (UnicodeDecodeError, NoteError) as e:
            rep.problems.append(f"{PUBLISHER_VKEY}: not a verifier key ({e})")
    if vkey is not None:
        rep.trusted_keys.append(trusted_key("log", vkey.name, vkey.key_id, vkey.vkey(), key_source))
        if carried is not None and carried != vkey:
            rep.notes.append(
                f"{PUBLISHER_VKEY} names {carried.vkey()}, not the key you trusted; the key "
                "you trusted is what counts"
            )
        return vkey
    if carried is None:
        return None
    rep.trusted_keys.append(
        trusted_key("log", carried.name, carried.key_id, carried.vkey(), FROM_PUBLICATION)
    )
    return carried


def _check_entry(
    root: Path, key: Verifier | None, manifest: bytes | None, rep: DisclosureReport
) -> tuple[bytes, Entry] | None:
    """Check 2: the signed `disclose` entry names this MANIFEST."""
    leaf = _read(root, ENTRY_FILE, MAX_LEAF, rep, "nothing ties the folder to the log")
    if leaf is None:
        return None
    # The file is the leaf exactly as logged; one trailing newline (as `custody ledger
    # entry` prints a leaf) is not part of it.
    leaf = leaf.removesuffix(b"\n")
    try:
        entry = decode_entry(leaf)
    except EntryError as e:
        rep.problems.append(f"{ENTRY_FILE}: not a custody entry ({e})")
        return None
    rep.entry_time = entry.time
    if entry.type != ENTRY_TYPE:
        rep.problems.append(f"{ENTRY_FILE}: a {entry.type!r} entry, not a {ENTRY_TYPE!r} entry")
        return None
    f = entry.fields
    rep.period = str(f.get("period", ""))
    rep.scope = str(f.get("scope", ""))
    rep.origin = entry.station
    if key is not None and not entry.verify(key):
        rep.problems.append(
            f"{ENTRY_FILE}: its signature does not verify with the trusted key "
            f"{key.name}+{key.key_id.hex()} (altered, or published by another key: give "
            "the publisher's key with --vkey)"
        )
    want = f.get("manifest_sha256")
    if manifest is not None:
        rep.manifest_sha256 = hashlib.sha256(manifest).hexdigest()
        if want != rep.manifest_sha256:
            rep.problems.append(
                f"{MANIFEST}: its SHA-256 is {rep.manifest_sha256[:16]}…, not the "
                f"{str(want)[:16]}… the signed {ENTRY_FILE} names (MANIFEST altered)"
            )
    if f.get("files") != rep.listed and manifest is not None:
        rep.problems.append(
            f"{MANIFEST}: lists {rep.listed} file(s), the signed {ENTRY_FILE} says {f.get('files')}"
        )
    return leaf, entry


def _check_proof(
    root: Path, key: Verifier | None, leaf: bytes | None, rep: DisclosureReport
) -> SignedCheckpoint | None:
    """Check 3: the entry is in the log, under a checkpoint the trusted key signed."""
    raw = _read(root, PROOF_FILE, MAX_SMALL, rep, "the entry cannot be shown to be in the log")
    if raw is None or key is None:
        return None
    try:
        proof = TlogProof.parse(raw)
    except ProofError as e:
        rep.problems.append(f"{PROOF_FILE}: not a C2SP tlog-proof ({e})")
        return None
    try:
        sc = open_checkpoint(proof.checkpoint, [key], key.name)
    except CheckpointError as e:
        rep.problems.append(
            f"{PROOF_FILE}: its checkpoint is not the trusted key's "
            f"{key.name}+{key.key_id.hex()} ({e})"
        )
        return None
    rep.checkpoint_size = sc.checkpoint.size
    rep.entry_index = proof.index
    if leaf is None:
        return sc
    try:
        proof.verify(leaf, [key], key.name)
    except ProofError as e:
        rep.problems.append(f"{PROOF_FILE}: does not prove {ENTRY_FILE}: {e}")
        return None
    return sc


# -- the logs and their witnesses --------------------------------------------------------


def _witness_keys(root: Path, rep: DisclosureReport) -> list[CosignatureVerifier]:
    raw = _read(root, WITNESSES_TXT, MAX_WITNESSES, rep, "the cosignatures cannot be counted")
    if raw is None:
        return []
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        rep.problems.append(f"{WITNESSES_TXT}: not UTF-8 text")
        return []
    out: list[CosignatureVerifier] = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append(CosignatureVerifier.parse(line.strip()))
        except NoteError as e:
            rep.problems.append(f"{WITNESSES_TXT} line {n}: not a witness key ({e})")
    rep.witnesses = len(out)
    return out


def _cosignatures(
    note: Note, log_key: Verifier, witnesses: list[CosignatureVerifier], lg: LogReport
) -> list[str]:
    """Each signature line other than the log's, verified against the witness keys the
    publication lists; what is wrong (a listed witness whose line does not verify)."""
    wrong: list[str] = []
    for sig in note.signatures:
        if (sig.name, sig.key_id) == (log_key.name, log_key.key_id):
            continue
        item: dict[str, object] = {"name": sig.name, "key_id": sig.key_id.hex()}
        match = [w for w in witnesses if w.matches(sig)]
        if not match:
            item.update(valid=False, status=f"not a witness in {WITNESSES_TXT}")
        else:
            try:
                c = match[0].verify(note.text, sig)
                item.update(valid=True, timestamp=c.timestamp, status="verified")
                lg.valid += 1
            except NoteError:
                item.update(valid=False, status="does NOT verify with its key")
                wrong.append(
                    f"the cosignature by witness {sig.name}+{sig.key_id.hex()} does not "
                    f"verify with its key in {WITNESSES_TXT}"
                )
        lg.cosignatures.append(item)
    return wrong


def _check_logs(
    root: Path, data: dict[str, Any] | None, policy: Policy | None, rep: DisclosureReport
) -> None:
    """Check 4: every logs/NN checkpoint is signed by its vkey, with its cosignatures,
    and data.json's "logs" names each at its size."""
    witnesses = _witness_keys(root, rep)
    listed = data.get("logs") if data is not None else None
    if data is not None and not isinstance(listed, list):
        rep.problems.append(f'{DATA_JSON}: "logs" is not a list')
        listed = None
    on_disk: set[str] = set()
    if (root / "logs").is_dir() and not (root / "logs").is_symlink():
        on_disk = {f"logs/{n}" for n in os.listdir(root / "logs")}
    count = named = len(listed) if listed is not None else len(on_disk)
    if count > MAX_LOGS:
        rep.problems.append(
            f"{DATA_JSON}: lists {count} logs, more than a publication carries ({MAX_LOGS}); "
            f"the first {MAX_LOGS} are checked"
        )
        count = MAX_LOGS
    policy_logs = {lg.key for lg in policy.logs} if policy is not None else set()
    for i in range(count):
        lg = LogReport(log_dir(i))
        rep.logs.append(lg)
        cp_raw = _read(root, f"{lg.path}/checkpoint", MAX_SMALL, rep, "log not shown")
        key_raw = _read(root, f"{lg.path}/vkey", MAX_SMALL, rep, "log not checkable")
        if cp_raw is None or key_raw is None:
            continue
        try:
            key = Verifier.parse(key_raw.decode("utf-8").strip())
        except (UnicodeDecodeError, NoteError) as e:
            rep.problems.append(f"{lg.path}/vkey: not a verifier key ({e})")
            continue
        lg.vkey = key.vkey()
        if key in policy_logs:
            lg.key_source = FROM_POLICY
        try:
            sc = open_checkpoint(cp_raw, [key])
            note = parse_note(cp_raw)
        except (CheckpointError, NoteError) as e:
            rep.problems.append(f"{lg.path}/checkpoint: not signed by {lg.path}/vkey ({e})")
            continue
        lg.origin, lg.size = sc.checkpoint.origin, sc.checkpoint.size
        for p in _cosignatures(note, key, witnesses, lg):
            rep.problems.append(f"{lg.path}/checkpoint: {p}")
        if policy is not None:
            w = witnessing(cp_raw, policy, [key])
            lg.quorum = w.quorum
            rep.problems += [f"{lg.path}/checkpoint: {p}" for p in w.problems]
        if listed is not None:
            _compare_log(listed[i], lg, rep)
    for d in sorted(on_disk):
        m = _LOG_DIR.fullmatch(d)
        if not (m and 1 <= int(m[1]) <= named and log_dir(int(m[1]) - 1) == d):
            rep.problems.append(
                f"{shown(d)}: a log folder {DATA_JSON} does not list (it lists {named})"
            )


def _compare_log(item: object, lg: LogReport, rep: DisclosureReport) -> None:
    i = int(lg.path.rsplit("/", 1)[1]) - 1
    where = f"{DATA_JSON} logs[{i}]"
    if not isinstance(item, dict):
        rep.problems.append(f"{where}: not an object")
        return
    size = item.get("size")
    if type(size) is not int or size != lg.size:
        rep.problems.append(
            f"{where}: size {size!r}, but {lg.path}/checkpoint is of size {lg.size}"
        )
    if item.get("origin") != lg.origin:
        rep.problems.append(
            f"{where}: origin {item.get('origin')!r}, but {lg.path}/checkpoint is of {lg.origin!r}"
        )
    for k, want in (("checkpoint", f"{lg.path}/checkpoint"), ("vkey", f"{lg.path}/vkey")):
        if item.get(k) != want:
            rep.problems.append(f"{where}: {k} {item.get(k)!r}, not {want!r}")
    claimed = item.get("cosignatures")
    if claimed != lg.valid:
        rep.notes.append(
            f"{where} says {claimed!r} cosignatures; {lg.valid} verify with {WITNESSES_TXT}"
        )


def _data_json(root: Path, rep: DisclosureReport) -> dict[str, Any] | None:
    raw = _read(root, DATA_JSON, MAX_DATA_JSON, rep, "the figures are gone")
    if raw is None:
        return None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        rep.problems.append(f"{DATA_JSON}: not JSON ({str(e)[:100]})")
        return None
    except RecursionError:
        rep.problems.append(f"{DATA_JSON}: nested too deeply to be the figures")
        return None
    if not isinstance(data, dict):
        rep.problems.append(f"{DATA_JSON}: not a JSON object")
        return None
    if data.get("format") != FORMAT:
        rep.problems.append(f"{DATA_JSON}: format {data.get('format')!r}, not {FORMAT!r}")
    return data


def _compare_data(data: dict[str, Any], entry: Entry | None, rep: DisclosureReport) -> None:
    """data.json says what the signed entry says (period, scope, publisher's log)."""
    publisher = data.get("publisher")
    rep.publisher = publisher if isinstance(publisher, str) else ""
    if entry is None:
        rep.period = rep.period or str(data.get("period", ""))
        return
    f = entry.fields
    for k, signed in (
        ("period", f.get("period")),
        ("scope", f.get("scope")),
        ("origin", entry.station),
        ("threshold", f.get("threshold")),
        ("timezone", f.get("timezone")),
    ):
        if k in data and data[k] != signed:
            rep.problems.append(
                f"{DATA_JSON}: {k} {data[k]!r}, but the signed {ENTRY_FILE} says {signed!r}"
            )
    logs = data.get("logs")
    if isinstance(logs, list) and f.get("logs") != len(logs):
        rep.problems.append(
            f"{DATA_JSON}: lists {len(logs)} log(s), the signed {ENTRY_FILE} says {f.get('logs')}"
        )


def verify_disclosure(
    root: Path,
    vkey: Verifier | None,
    key_source: str = FROM_VKEY,
    policy: Policy | None = None,
    policy_source: str = FROM_POLICY,
) -> DisclosureReport:
    """Check the publication at ``root``. ``vkey`` None trusts the publisher.vkey the
    folder carries, and the verdict says so; ``key_source`` says where a given key came
    from. With ``policy`` each log's checkpoint must also carry its witnesses' quorum."""
    rep = DisclosureReport()
    manifest = _check_files(root, rep)
    key = _publisher_key(root, vkey, key_source, rep)
    if policy is not None:
        rep.trusted_keys += [k for k in policy_keys(policy, policy_source) if k["role"] != "log"]
    found = _check_entry(root, key, manifest, rep)
    leaf, entry = found if found is not None else (None, None)
    sc = _check_proof(root, key, leaf, rep)
    if sc is not None and entry is not None and entry.station != sc.checkpoint.origin:
        rep.problems.append(
            f"{ENTRY_FILE}: made by station {entry.station!r}, but the proof's checkpoint is "
            f"of {sc.checkpoint.origin!r}"
        )
    data = _data_json(root, rep)
    if data is not None:
        _compare_data(data, entry, rep)
    _check_logs(root, data, policy, rep)
    if key is None and vkey is None:
        rep.problems.append(
            f"{PUBLISHER_VKEY}: no usable key in the publication and none given (--vkey): "
            "the entry's signature cannot be checked"
        )
    if (root / POLICY_TXT).is_file() and policy is None:
        rep.notes.append(
            f"the publication carries the publisher's witness policy ({POLICY_TXT}): it makes "
            "no witness trusted by itself; check its witness keys with their offices, then "
            "pass it (or your own policy) with --policy to judge the quorum"
        )
    return rep
