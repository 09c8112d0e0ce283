"""Export packages for courts and reviewing offices: a BagIt (RFC 8493) bag that
verifies offline with standard tools and with `python -m verify bag`.

Layout::

    bagit.txt  bag-info.txt  manifest-sha256.txt  tagmanifest-sha256.txt  VERIFY.txt
    data/originals/<sha256>.<ext>        the docked files, byte for byte
    data/access/<sha256>.mp4             access copies, when they exist
    custody/files.tsv                    what each data file is, and its entries
    custody/checkpoint                   the signed checkpoint every proof is against
    custody/station.vkey                 the station's verifier key (check it against
                                         the one you were given separately)
    custody/entries/<index>.entry        each ledger entry naming an exported file
    custody/entries/<index>.tlog-proof   its C2SP inclusion proof in that checkpoint
    custody/sidecars/<sha256>.<kind>     fingerprint sidecars (packets, frames)

Files come from the dock's store, else the cold store, each verified against its
SHA-256 on the way (nothing unverified enters the bag). The bag is written to
``DIR.partial`` and renamed when complete. The export itself is an `export` entry,
recorded after the checkpoint the bag carries.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from archive.retrieve import Retriever
from custody import __version__
from custody.errors import CustodyError
from ledger.entry import decode_entry
from ledger.log import Ledger
from verify.bag import file_digest

EXT = {"video/mp4": "mp4", "video/quicktime": "mov", "video/x-msvideo": "avi", "audio/wav": "wav"}

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
checkpoint of the ledger (custody/checkpoint, size {size}).

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
   inclusion proof against the signed checkpoint, and that each file's
   SHA-256 is the one its ingest entry names. It lists every failure it
   finds and exits 0 only when everything holds.

3. To check the unit's ledger has not been rewritten since, compare this
   checkpoint with a later one from the unit (or its published ledger):
   python -m verify ledger <ledger folder> --vkey ... --known custody/checkpoint

The export itself is recorded in the ledger as entry {export_entry}.
Files: {files} ({bytes} bytes). Case: {case}.
"""


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
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fetch(fetch: Retriever, sha: str, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fetch.fetch(sha, dest)


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
    unit: str = "",
    sm3: bool = False,
) -> ExportResult:
    if out.exists():
        raise CustodyError(f"{out} already exists; choose a new folder for the export")
    if not shas:
        why = f": no footage is linked to case {case}" if case else ""
        raise CustodyError("nothing to export" + why)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "data").mkdir(parents=True)
    res = ExportResult(out)
    # One checkpoint for every proof: integrate what is pending, then pin its size.
    ledger.integrate()
    latest = ledger.latest()
    if latest is None:
        raise CustodyError("the ledger has no checkpoint yet")
    size = latest.size
    res.checkpoint_size = size
    manifest: list[tuple[str, str]] = []  # (sha256, bag path)
    rows: list[str] = [
        "path\tsha256\tsize\trole\toriginal\tingest_entry\tentries\trecorder\tofficer\tunit"
        "\tcaptured\tsource_name"
    ]
    entry_ids: set[int] = set()
    for sha in shas:
        it = db.execute(
            "SELECT ingest_entry, size, media_type, recorder, officer, unit, captured, "
            "deleted_entry FROM retention_items WHERE sha256=?",
            (sha,),
        ).fetchone()
        if it is None:
            raise CustodyError(f"{sha}: no captured original has this SHA-256")
        ingest_entry, nbytes, media_type, recorder, officer, unit_code, captured, deleted = it
        if deleted is not None:
            res.skipped.append(f"{sha}: deleted by retention (entry {deleted}); its entries only")
        refs = [
            (int(e), t)
            for e, t in db.execute(
                "SELECT entry, type FROM entry_refs WHERE sha256=? ORDER BY entry", (sha,)
            ).fetchall()
            if int(e) < size
        ]
        entry_ids.update(e for e, _ in refs)
        fields = decode_entry(ledger.entry(int(ingest_entry))).fields
        source = fields.get("source", {})
        name = str(source.get("path", source.get("path_b64", ""))).rsplit("/", 1)[-1]
        when = datetime.fromtimestamp(captured, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        ids = ",".join(str(e) for e, _ in refs)
        if deleted is None:
            rel = f"data/originals/{sha}.{EXT.get(media_type, 'bin')}"
            _fetch(fetch, sha, tmp / rel)
            manifest.append((sha, rel))
            res.files += 1
            res.bytes += int(nbytes)
            rows.append(
                f"{rel}\t{sha}\t{nbytes}\toriginal\t{sha}\t{ingest_entry}\t{ids}\t{recorder}\t"
                f"{officer}\t{unit_code}\t{when}\t{name}"
            )
        # Access copies and sidecars named by this original's entries.
        for e, t in refs:
            f = decode_entry(ledger.entry(e)).fields
            if t == "derive" and f.get("kind") == "access_copy" and f.get("output"):
                osha = f["output"]["sha256"]
                rel = f"data/access/{osha}.mp4"
                if deleted is None and (tmp / rel).exists() is False:
                    _fetch(fetch, osha, tmp / rel)
                    manifest.append((osha, rel))
                    res.files += 1
                    res.bytes += int(f["output"]["size"])
                    rows.append(
                        f"{rel}\t{osha}\t{f['output']['size']}\taccess_copy\t{sha}\t"
                        f"{ingest_entry}\t{e}\t{recorder}\t{officer}\t{unit_code}\t{when}\t"
                    )
            if t == "fingerprint" and isinstance(f.get("sidecar"), dict):
                ssha = f["sidecar"]["sha256"]
                kind = str(f.get("kind", "packets"))
                dest = tmp / "custody" / "sidecars" / f"{ssha}.{kind}"
                if not dest.exists():
                    _fetch(fetch, ssha, dest)
    for e in sorted(entry_ids):
        _write(tmp / "custody" / "entries" / f"{e}.entry", ledger.entry(e))
        _write(
            tmp / "custody" / "entries" / f"{e}.tlog-proof",
            ledger.proof(e, size).format().encode(),
        )
    res.entries = len(entry_ids)
    _write(tmp / "custody" / "checkpoint", latest.note.encode())
    _write(tmp / "custody" / "station.vkey", (vkey + "\n").encode())
    _write(tmp / "custody" / "files.tsv", ("\n".join(rows) + "\n").encode())
    _write(
        tmp / "manifest-sha256.txt",
        "".join(f"{s}  {p}\n" for s, p in sorted(manifest, key=lambda x: x[1])).encode(),
    )
    if sm3:  # the national standard hash, beside SHA-256, where the site configured it
        _write(
            tmp / "manifest-sm3.txt",
            "".join(
                f"{file_digest(tmp / p, 'sm3')}  {p}\n"
                for _, p in sorted(manifest, key=lambda x: x[1])
            ).encode(),
        )
    _write(tmp / "bagit.txt", b"BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n")
    now = datetime.now(UTC)
    info = [
        ("Source-Organization", unit or station),
        ("Bagging-Date", now.strftime("%Y-%m-%d")),
        ("Bag-Software-Agent", f"custody {__version__}"),
        ("Payload-Oxum", f"{res.bytes}.{res.files}"),
        ("External-Identifier", case or "selection"),
        ("Internal-Sender-Description", purpose),
        ("Contact-Name", operator),
        ("Custody-Station", station),
        ("Custody-Export-Time", now.strftime("%Y-%m-%dT%H:%M:%SZ")),
        ("Custody-Checkpoint-Size", str(size)),
        ("Custody-Verifier-Key", vkey),
    ]
    _write(tmp / "bag-info.txt", "".join(f"{k}: {v}\n" for k, v in info).encode())
    # The export entry comes after the checkpoint; VERIFY.txt names it.
    payload: dict[str, Any] = {
        "purpose": purpose,
        "operator": operator,
        "files": [s for s, _ in manifest],
        "bytes": res.bytes,
        "checkpoint_size": size,
        "manifest_sha256": file_digest(tmp / "manifest-sha256.txt"),
        "out": str(out),
    }
    if case:
        payload["case"] = case
    res.export_entry = ledger.append("export", payload)
    _write(
        tmp / "VERIFY.txt",
        VERIFY_TXT.format(
            station=station,
            when=now.strftime("%Y-%m-%d %H:%M UTC"),
            purpose=purpose,
            size=size,
            export_entry=res.export_entry,
            files=res.files,
            bytes=res.bytes,
            case=case or "(a selection of files)",
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
    os.replace(tmp, out)
    ledger.integrate()
    return res
