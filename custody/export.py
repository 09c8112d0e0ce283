"""Export packages for courts and reviewing offices: a BagIt (RFC 8493) bag that
verifies offline with standard tools and with `python -m verify bag`.

Layout::

    bagit.txt  bag-info.txt  manifest-sha256.txt  tagmanifest-sha256.txt  VERIFY.txt
    data/originals/<sha256>.<ext>        the docked files, byte for byte
    data/access/<sha256>.mp4             access copies, when they exist
    custody/files.tsv                    what each data file is, and its entries; every
                                         label in it is one the signed entries carry
    custody/checkpoint                   the signed checkpoint every proof is against
    custody/station.vkey                 the station's verifier key (check it against
                                         the one you were given separately)
    custody/entries/<index>.entry        each ledger entry naming an exported file
    custody/entries/<index>.tlog-proof   its C2SP inclusion proof in that checkpoint
    custody/sidecars/<sha256>.<kind>     fingerprint sidecars (packets, frames)
    policy.txt                           the station's witness policy, when it has one
                                         (carried, not trusted: see VERIFY.txt)

Every ``key`` entry of the ledger below the checkpoint is in the bag too, with its
proof, so a verifier pinned to any earlier station key follows the chain to the key
that signed the checkpoint. The checkpoint carries whatever witness cosignatures the
ledger holds for it.

Files come from the dock's store, else the cold store, each verified against its
SHA-256 on the way (nothing unverified enters the bag). The bag is written to
``DIR.partial`` and renamed when complete; a failed export removes it. The export
itself is an `export` entry that names the SHA-256 of ``manifest-sha256.txt`` (the exact
list of exported files); it is signed before the checkpoint the bag carries, so it is in
the bag with its own inclusion proof and the verifier checks the payload against it.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from archive.retrieve import Retriever
from custody import __version__
from custody.errors import CustodyError
from ledger.durable import fsync_dir, write_atomic
from ledger.entry import decode_entry
from ledger.log import CheckpointRecord, Ledger
from ledger.policy import PolicyError, parse_policy
from ledger.tiles import TILE_WIDTH, bundle_for_size, decode_bundle
from verify.bag import (
    FILES_TSV_HEAD,
    LINE_BREAKS,
    POLICY_TXT,
    complete_of,
    entries_digest,
    file_digest,
    tsv_cell,
    verify_txt,
)

EXT = {"video/mp4": "mp4", "video/quicktime": "mov", "video/x-msvideo": "avi", "audio/wav": "wav"}

# An export entry lists its files' hashes while that keeps it well inside the 64 KiB
# entry limit; beyond, the manifest's hash alone (always present) says what was exported.
MAX_LISTED = 512


@dataclass
class ExportResult:
    out: Path
    files: int = 0
    bytes: int = 0
    entries: int = 0
    checkpoint_size: int = 0
    export_entry: int = -1
    skipped: list[str] = field(default_factory=list)


def _write(p: Path, data: bytes) -> None:
    write_atomic(p, data, sync_dir=False)  # folders are synced once, before the rename


def _fetch(fetch: Retriever, sha: str, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fetch.fetch(sha, dest)


@contextmanager
def _partial(out: Path) -> Iterator[Path]:
    """``OUT.partial`` while the bag is made; gone again if anything fails."""
    tmp = out.with_name(out.name + ".partial")
    tmp.mkdir()  # never an existing folder: only what this export made is removed
    try:
        (tmp / "data").mkdir()
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _labels(fields: dict[str, Any]) -> list[str]:
    """recorder, officer, unit, recorded, captured, source_name: as the ingest entry says."""
    ident: dict[str, Any] = fields.get("recorder") or {}
    source: dict[str, Any] = fields.get("source") or {}
    name = str(source.get("path", "")).rsplit("/", 1)[-1] if source.get("path") else ""
    return [
        tsv_cell(str(ident.get("serial", ""))),
        tsv_cell(str(ident.get("officer", ""))),
        tsv_cell(str(ident.get("unit", ""))),
        tsv_cell(str(ident.get("claimed_start", ""))),
        tsv_cell(str(fields.get("time", ""))),
        tsv_cell(name),
    ]


# Key entries start like this in canonical JSON: the scan decodes only those.
KEY_MARK = b'"type":"key"'
KEY_SCAN_SCHEMA = """
CREATE TABLE IF NOT EXISTS export_key_entries (idx INTEGER PRIMARY KEY);
CREATE TABLE IF NOT EXISTS export_key_scan (id INTEGER PRIMARY KEY CHECK (id = 0),
    next INTEGER NOT NULL);
"""


def key_entries(ledger: Ledger, db: sqlite3.Connection, size: int) -> list[int]:
    """Indices of every ``key`` entry below ``size``. Entries never change once signed,
    so the scan goes on from where the last export stopped (kept in ``db``)."""
    db.executescript(KEY_SCAN_SCHEMA)
    row = db.execute("SELECT next FROM export_key_scan WHERE id = 0").fetchone()
    start = int(row[0]) if row else 0
    found: list[int] = []
    for n in range(start // TILE_WIDTH, (size + TILE_WIDTH - 1) // TILE_WIDTH):
        leaves = decode_bundle(ledger.tiles.read_tile(bundle_for_size(n, size)))
        for i, leaf in enumerate(leaves):
            idx = n * TILE_WIDTH + i
            if idx >= start and KEY_MARK in leaf and decode_entry(leaf).type == "key":
                found.append(idx)
    with db:
        db.executemany("INSERT OR IGNORE INTO export_key_entries VALUES (?)", [(i,) for i in found])
        if size > start:
            db.execute(
                "INSERT INTO export_key_scan VALUES (0, ?) ON CONFLICT (id) DO UPDATE SET "
                "next = excluded.next WHERE excluded.next > next",
                (size,),
            )
    return [
        int(r[0])
        for r in db.execute(
            "SELECT idx FROM export_key_entries WHERE idx < ? ORDER BY idx", (size,)
        )
    ]


def read_policy(path: Path | None) -> bytes | None:
    """The station's witness policy file, checked to parse (None: the station has none)."""
    if path is None:
        return None
    try:
        data = path.read_bytes()
        parse_policy(data)
    except OSError as e:
        raise CustodyError(f"cannot read the witness policy {path}: {e.strerror}") from None
    except PolicyError as e:
        raise CustodyError(f"the witness policy {path} does not parse: {e}") from None
    return data


def export_bag(
    ledger: Ledger,
    db: sqlite3.Connection,
    fetch: Retriever,
    out: Path,
    shas: list[str],
    case: str | None,
    purpose: str,
    operator: str,
    station: str,
    vkey: str,
    sm3: bool = False,
    progress: Callable[[int, int], None] | None = None,
    policy: bytes | None = None,
    cosign: Callable[[], CheckpointRecord | None] | None = None,
) -> ExportResult:
    """Write the bag for ``shas`` to ``out``; ``progress(done, total)`` after each
    original (with the files made from it) is in the bag."""
    if out.exists():
        raise CustodyError(f"{out} already exists; choose a new folder for the export")
    shas = list(dict.fromkeys(s.lower() for s in shas))  # each original once, in order
    if not shas:
        why = f": no footage is linked to case {case}" if case else ""
        raise CustodyError("nothing to export" + why)
    for what, text in (("--purpose", purpose), ("--case", case or ""), ("operator", operator)):
        if any(ch in LINE_BREAKS or ch == "\t" or ord(ch) < 0x20 for ch in text):
            raise CustodyError(
                f"{what} holds a line break or control character; write it on one line"
            )
    if out.with_name(out.name + ".partial").exists():
        raise CustodyError(
            f"{out}.partial exists (an export interrupted by a crash, or another folder): "
            "look at it and remove it, then export again"
        )
    with _partial(out) as tmp:
        res = _make(
            ledger,
            db,
            fetch,
            tmp,
            out,
            shas,
            case,
            purpose,
            operator,
            station,
            vkey,
            sm3,
            progress,
            policy,
            cosign,
        )
        for d, _, _ in os.walk(tmp):
            fsync_dir(Path(d))
        os.replace(tmp, out)
        fsync_dir(out.parent)
    return res


def _make(
    ledger: Ledger,
    db: sqlite3.Connection,
    fetch: Retriever,
    tmp: Path,
    out: Path,
    shas: list[str],
    case: str | None,
    purpose: str,
    operator: str,
    station: str,
    vkey: str,
    sm3: bool,
    progress: Callable[[int, int], None] | None,
    policy: bytes | None,
    cosign: Callable[[], CheckpointRecord | None] | None = None,
) -> ExportResult:
    res = ExportResult(out)
    manifest: list[tuple[str, str]] = []  # (sha256, bag path)
    rows: list[str] = ["\t".join(FILES_TSV_HEAD)]
    entry_ids: set[int] = set()
    units: set[str] = set()
    for done, sha in enumerate(shas):
        if progress is not None:
            progress(done, len(shas))
        it = db.execute(
            "SELECT ingest_entry, size, media_type, deleted_entry FROM retention_items "
            "WHERE sha256=?",
            (sha,),
        ).fetchone()
        if it is None:
            raise CustodyError(f"{sha}: no captured original has this SHA-256")
        ingest_entry, nbytes, media_type, deleted = it
        if deleted is not None:
            res.skipped.append(f"{sha}: deleted by retention (entry {deleted}); its entries only")
        refs = [
            (int(e), t)
            for e, t in db.execute(
                "SELECT entry, type FROM entry_refs WHERE sha256=? ORDER BY entry", (sha,)
            ).fetchall()
        ]
        entry_ids.update(e for e, _ in refs)
        entry_ids.add(int(ingest_entry))
        # Each entry about this original read and decoded once.
        about = {e: dict(decode_entry(ledger.entry(e)).fields) for e, _ in refs}
        whole = complete_of(sha, about)
        fields = dict(decode_entry(ledger.entry(int(ingest_entry))).fields)
        labels = _labels(fields)
        if labels[2] and deleted is None:
            units.add(str(fields["recorder"]["unit"]))
        ids = ",".join(str(e) for e, _ in refs)
        if deleted is None:
            rel = f"data/originals/{sha}.{EXT.get(media_type, 'bin')}"
            _fetch(fetch, sha, tmp / rel)
            manifest.append((sha, rel))
            res.files += 1
            res.bytes += int(nbytes)
            rows.append(
                "\t".join(
                    [rel, sha, str(nbytes), "original", sha, str(ingest_entry), ids, *labels, whole]
                )
            )
        # Access copies and sidecars named by this original's entries.
        for e, t in refs:
            f = about[e]
            if t == "derive" and f.get("kind") == "access_copy" and f.get("output"):
                osha = f["output"]["sha256"]
                rel = f"data/access/{osha}.mp4"
                if deleted is None and (tmp / rel).exists() is False:
                    _fetch(fetch, osha, tmp / rel)
                    manifest.append((osha, rel))
                    res.files += 1
                    res.bytes += int(f["output"]["size"])
                    rows.append(
                        "\t".join(
                            [
                                rel,
                                osha,
                                str(f["output"]["size"]),
                                "access_copy",
                                sha,
                                str(e),
                                str(e),
                                *labels,
                                "",  # whether footage is whole is said of the original
                            ]
                        )
                    )
            if t == "fingerprint" and isinstance(f.get("sidecar"), dict):
                ssha = f["sidecar"]["sha256"]
                kind = str(f.get("kind", "packets"))
                dest = tmp / "custody" / "sidecars" / f"{ssha}.{kind}"
                if not dest.exists():
                    _fetch(fetch, ssha, dest)
    if progress is not None:
        progress(len(shas), len(shas))
    manifest.sort(key=lambda x: x[1])
    _write(tmp / "manifest-sha256.txt", "".join(f"{s}  {p}\n" for s, p in manifest).encode())
    _write(tmp / "custody" / "files.tsv", ("\n".join(rows) + "\n").encode())
    # The export entry names exactly what is in the payload, before the checkpoint
    # every proof is made against: the bag then carries it with its own proof.
    payload: dict[str, Any] = {
        "purpose": purpose,
        "operator": operator,
        "bytes": res.bytes,
        "file_count": res.files,
        "manifest_sha256": file_digest(tmp / "manifest-sha256.txt"),
        # files.tsv and (below) the exact set of entries the bag carries: no label can
        # be changed and no entry (a probe saying a recording was cut short, a wipe, a
        # key change) dropped unseen.
        "files_tsv_sha256": file_digest(tmp / "custody" / "files.tsv"),
        "out": str(out),
    }
    if len(manifest) <= MAX_LISTED:
        payload["files"] = [s for s, _ in manifest]
    if sm3:  # the national standard hash, beside SHA-256, where the site configured it
        _write(
            tmp / "manifest-sm3.txt",
            "".join(f"{file_digest(tmp / p, 'sm3')}  {p}\n" for _, p in manifest).encode(),
        )
        payload["manifest_sm3_sha256"] = file_digest(tmp / "manifest-sm3.txt")
    if policy is not None:
        _write(tmp / POLICY_TXT, policy)
        payload["witness_policy_sha256"] = file_digest(tmp / POLICY_TXT)
    # Every key entry so far: a verifier pinned to an earlier station key follows the
    # chain to the key that signs the checkpoint.
    ledger.integrate()
    before = ledger.latest()
    keys = key_entries(ledger, db, before.size if before is not None else 0)
    entry_ids.update(keys)
    if case:
        payload["case"] = case
    payload["entries_sha256"] = entries_digest(entry_ids)
    payload["entry_count"] = len(entry_ids)
    res.export_entry = ledger.append("export", payload)
    entry_ids.add(res.export_entry)
    ledger.integrate()
    latest = ledger.latest()
    if cosign is not None:
        # The witnesses get their chance before any proof is written: the proofs lead to
        # the checkpoint returned, with whatever cosignatures came in time.
        latest = cosign() or latest
    if latest is None or latest.size <= res.export_entry:
        raise CustodyError("the ledger did not sign a checkpoint holding the export entry")
    size = latest.size
    res.checkpoint_size = size
    if key_entries(ledger, db, size) != keys:
        raise CustodyError(
            "the station key changed (custody key rotate) while the export was made",
            "export again",
        )
    for e in sorted(entry_ids):
        _write(tmp / "custody" / "entries" / f"{e}.entry", ledger.entry(e))
        _write(
            tmp / "custody" / "entries" / f"{e}.tlog-proof",
            ledger.proof(e, size).format().encode(),
        )
    res.entries = len(entry_ids)
    export_time = str(decode_entry(ledger.entry(res.export_entry)).fields["time"])
    _write(tmp / "custody" / "checkpoint", latest.note.encode())
    _write(tmp / "custody" / "station.vkey", (vkey + "\n").encode())
    _write(tmp / "bagit.txt", b"BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n")
    # Every value here is one a signed entry carries; the verifier compares them.
    info = [
        ("Source-Organization", tsv_cell(",".join(sorted(units)) or station)),
        ("Bagging-Date", export_time[:10]),
        ("Bag-Software-Agent", f"custody {__version__}"),
        ("Payload-Oxum", f"{res.bytes}.{res.files}"),
        ("External-Identifier", case or "selection"),
        ("Internal-Sender-Description", purpose),
        ("Contact-Name", operator),
        ("Custody-Station", station),
        ("Custody-Export-Time", export_time),
        ("Custody-Export-Entry", str(res.export_entry)),
        ("Custody-Checkpoint-Size", str(size)),
        ("Custody-Verifier-Key", vkey),
    ]
    if policy is not None:
        info.append(("Witness-Policy", POLICY_TXT))
    _write(tmp / "bag-info.txt", "".join(f"{k}: {v}\n" for k, v in info).encode())
    _write(
        tmp / "VERIFY.txt",
        verify_txt(
            station,
            export_time,
            purpose,
            size,
            res.export_entry,
            res.files,
            res.bytes,
            case,
            policy=policy is not None,
        ).encode(),
    )
    tags = sorted(
        p.relative_to(tmp).as_posix()
        for p in tmp.rglob("*")
        if p.is_file()
        and not p.relative_to(tmp).as_posix().startswith("data/")
        and not p.name.startswith("tagmanifest-")
    )
    _write(
        tmp / "tagmanifest-sha256.txt",
        "".join(f"{file_digest(tmp / t)}  {t}\n" for t in tags).encode(),
    )
    return res
