"""`custody verify-clip | derive | fingerprint`: the media of captured videos."""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from custody.cli_common import Reporter, cold_store, load, sha_arg
from custody.errors import CustodyError

if TYPE_CHECKING:
    from custody import config as cfg


def _upload_hook(conf: cfg.Config) -> Any:
    """The cold-store queue for objects a command makes (a no-op without a store)."""
    from archive.replicate import enqueue
    from custody.cold import open_store

    store = open_store(conf)

    def hook(conn: sqlite3.Connection, obj: str, size: int, role: str) -> None:
        if store is not None:
            enqueue(conn, store.id, obj, size, role)

    return hook


def _not_a_video_here(db: sqlite3.Connection, objects: Any, sha: str) -> str:
    """Why ``sha`` cannot be worked on here ("" when it is a captured video on this dock)."""
    row = db.execute("SELECT media_type FROM ingest_objects WHERE sha256=?", (sha,)).fetchone()
    if row is None or not str(row[0]).startswith("video/"):
        return "not a captured video"
    if not objects.exists(sha):
        return "not on this dock's disk (fetch it back first: custody store fetch)"
    return ""


def cmd_fingerprint(args: argparse.Namespace) -> int:
    """Decoded-frame hashes (and the MPEG-7 signature) of stored videos, on request."""
    import threading
    from dataclasses import replace

    from custody.retain import index_db
    from custody.station import open_ledger
    from ingest.fingerprinter import Fingerprinter
    from ingest.objects import LocalObjects
    from ledger.entry import decode_entry

    conf = load(args)
    shas = [sha_arg(v) for v in args.sha256]
    objects = LocalObjects(conf.store_dir)
    media = replace(conf.media, signature=args.signature or conf.media.signature)
    failed = 0
    results: list[dict[str, Any]] = []
    with open_ledger(conf) as ledger:
        db = index_db(ledger)
        try:
            fp = Fingerprinter(ledger, objects, db, threading.Lock(), _upload_hook(conf), media)
            for sha in shas:
                why = _not_a_video_here(db, objects, sha)
                if why:
                    print(f"{sha}: {why}", file=sys.stderr)
                    results.append({"sha256": sha, "ok": False, "error": why})
                    failed += 1
                    continue
                done = db.execute(
                    "SELECT entry FROM ingest_frames WHERE sha256=?", (sha,)
                ).fetchone()
                idx = done[0] if done else fp.run_frames(sha, media.signature)
                if idx is None:
                    print(f"{sha}: not hashed now (see the log line above)", file=sys.stderr)
                    results.append({"sha256": sha, "ok": False, "error": "not hashed now"})
                    failed += 1
                    continue
                fields = decode_entry(ledger.entry(int(idx))).fields
                results.append(
                    {
                        "sha256": sha,
                        "ok": "error" not in fields,
                        "entry": int(idx),
                        "already": done is not None,
                        "frames": fields.get("frames"),
                        "complete": fields.get("complete"),
                        "signature": "signature" in fields,
                        "error": fields.get("error"),
                    }
                )
                if args.json:
                    failed += "error" in fields
                elif "error" in fields:
                    print(f"{sha}: no frame hashes (entry {idx}): {fields['error']}")
                    failed += 1
                else:
                    print(
                        f"{sha}: {fields['frames']} frames hashed"
                        + ("" if fields.get("complete") else " (the readable part only)")
                        + (", with MPEG-7 signature" if "signature" in fields else "")
                        + f" ({'entry' if done is None else 'already in entry'} {idx})"
                    )
            ledger.integrate()
        finally:
            db.close()
    if args.json:
        print(json.dumps({"results": results}, ensure_ascii=False))
    return 2 if failed else 0


def cmd_derive(args: argparse.Namespace) -> int:
    """Make the access copy (and poster) of captured videos now: a transcode too, whatever
    the settings and the day's budget."""
    import threading

    from custody.retain import index_db
    from custody.station import open_ledger
    from ingest.deriver import Deriver
    from ingest.objects import LocalObjects
    from ledger.entry import decode_entry

    conf = load(args)
    shas = [sha_arg(v) for v in args.sha256]
    objects = LocalObjects(conf.store_dir)
    failed = 0
    results: list[dict[str, Any]] = []
    say = Reporter(args.json)
    with open_ledger(conf) as ledger:
        db = index_db(ledger)
        try:
            deriver = Deriver(
                ledger,
                objects,
                db,
                threading.Lock(),
                conf.media,
                _upload_hook(conf),
                min_free_mb=conf.capture.min_free_mb,
            )
            for sha in shas:
                why = _not_a_video_here(db, objects, sha)
                if why:
                    print(f"{sha}: {why}", file=sys.stderr)
                    results.append({"sha256": sha, "ok": False, "error": why, "made": []})
                    failed += 1
                    continue
                deriver.run(sha, force=True)
                made = db.execute(
                    "SELECT kind, entry, output FROM ingest_derivatives WHERE original=? "
                    "ORDER BY kind",
                    (sha,),
                ).fetchall()
                copy = [m for m in made if m[0] == "access_copy" and m[1] >= 0]
                result: dict[str, Any] = {"sha256": sha, "ok": bool(copy), "made": []}
                results.append(result)
                if not copy:
                    say.line(f"{sha}: no access copy made (see the log line above)")
                    failed += 1
                for kind, entry, output in made:
                    if entry < 0:
                        continue
                    fields = decode_entry(ledger.entry(int(entry))).fields
                    result["made"].append(
                        {
                            "kind": kind,
                            "entry": int(entry),
                            "output": output,
                            "method": fields.get("method"),
                            "error": fields.get("error"),
                        }
                    )
                    if output:
                        say.line(
                            f"{sha}: {kind} {output} by {fields.get('method')} (entry {entry})"
                        )
                    else:
                        say.line(f"{sha}: no {kind} (entry {entry}): {fields.get('error')}")
                        failed += kind == "access_copy"
                        result["ok"] = result["ok"] and kind != "access_copy"
            ledger.integrate()
        finally:
            db.close()
    say.fields["results"] = results
    say.finish()
    return 2 if failed else 0


def cmd_verify_clip(args: argparse.Namespace) -> int:
    import tempfile

    from archive.retrieve import Retriever
    from ingest.fingerprint import (
        FingerprintError,
        keyframe_hashes,
        match_clip,
        parse_sidecar,
        read_packets,
    )
    from ingest.fingerprinter import candidates
    from ingest.objects import LocalObjects

    conf = load(args)
    clip = Path(args.clip)
    if not clip.is_file():
        raise CustodyError(f"{clip}: not found")
    try:
        fp = read_packets(clip)
    except FingerprintError as e:
        raise CustodyError(f"{clip}: ffmpeg cannot read it as media ({e})") from None
    from archive.errors import StoreError
    from custody.station import open_ledger
    from ledger.entry import decode_entry

    store = None if conf.store is None else cold_store(conf)
    fetch = Retriever(LocalObjects(conf.store_dir).path, store)
    db = sqlite3.connect(f"file:{conf.state_dir / 'ledger.sqlite'}?mode=ro", uri=True)
    best: tuple[str, Any, int, int] | None = None
    frames: tuple[str, Any, int] | None = None
    skipped: list[str] = []
    try:
        try:
            found = candidates(db, keyframe_hashes(fp, 50))[:10]
        except sqlite3.OperationalError as e:
            if "no such table" not in str(e):
                raise CustodyError(f"cannot read the fingerprint index: {e}") from None
            found = []  # nothing fingerprinted yet
        with open_ledger(conf, writable=False) as ledger:
            for sha in found:
                row = db.execute(
                    "SELECT f.sidecar, f.entry, o.first_entry FROM ingest_fingerprints f "
                    "JOIN ingest_objects o ON o.sha256 = f.sha256 WHERE f.sha256=?",
                    (sha,),
                ).fetchone()
                if row is None or row[0] is None:
                    continue
                # The sidecar named by the signed entry, not only by the index.
                signed = decode_entry(ledger.entry(int(row[1]))).fields
                side = signed.get("sidecar", {}).get("sha256")
                if signed.get("sha256") != sha or side != row[0]:
                    skipped.append(
                        f"{sha[:16]}: the index disagrees with fingerprint entry {row[1]}"
                    )
                    continue
                try:
                    with tempfile.TemporaryDirectory() as tmp:
                        dest = Path(tmp) / "sidecar"
                        fetch.fetch(side, dest)
                        original = parse_sidecar(dest.read_bytes())
                except (StoreError, FingerprintError) as e:
                    skipped.append(f"{sha[:16]}: its fingerprint cannot be read ({e})")
                    continue
                m = match_clip(fp, original)
                if best is None or m.matched > best[1].matched:
                    best = (sha, m, int(row[1]), int(row[2]))
            has_video = any(st.type == "video" for st in fp.streams)
            if has_video and not args.no_frames and not (best is not None and best[1].exact):
                frames = _frame_match(conf, clip, db, ledger, fetch, skipped)
    finally:
        db.close()
    for line in skipped:
        print(f"custody: warning: candidate {line}", file=sys.stderr)
    exact = best is not None and best[1].exact
    if args.json:
        out: dict[str, Any] = {"clip": str(clip), "exact": exact, "packets": len(fp.packets)}
        if skipped:
            out["skipped"] = skipped
        if frames is not None:
            fsha, fm, fentry = frames
            out["frames"] = {
                "original": fsha,
                "fingerprint_entry": fentry,
                "matched": fm.matched,
                "total": fm.total,
                "range_ms": [int(fm.start_s * 1000), int(fm.end_s * 1000)]
                if fm.start_s is not None and fm.end_s is not None
                else None,
            }
        if best is not None:
            sha, m, fp_entry, ingest_entry = best
            rng = m.range_ms()
            out.update(
                aligned=m.aligned,
                timing_ok=all(x.timing_ok for x in m.streams),
                original=sha,
                ingest_entry=ingest_entry,
                fingerprint_entry=fp_entry,
                matched=m.matched,
                total=m.total,
                range_ms=list(rng) if rng else None,
                streams=[
                    {
                        "clip_stream": x.clip_stream,
                        "original_stream": x.original_stream,
                        "matched": x.matched,
                        "total": x.total,
                    }
                    for x in m.streams
                ],
            )
        print(json.dumps(out))
        return 0 if exact else 1
    if frames is not None:
        _print_frames(clip, frames)
    if (best is None or best[1].matched == 0) and frames is not None:
        print(
            f"{clip}: its packets match no docked original's ({len(fp.packets)} packets; a "
            "re-mux rewrites them): NOT an exact cut"
        )
        return 1
    if best is None or best[1].matched == 0:
        print(
            f"{clip}: no docked original shares its packets "
            f"({len(fp.packets)} packets; a re-encoded clip matches nothing exactly)"
        )
        return 1
    sha, m, fp_entry, ingest_entry = best
    print(f"{clip}: {'cut from' if exact else 'closest'} original {sha}")
    print(f"  ingest entry {ingest_entry}, fingerprint entry {fp_entry}")
    rng = m.range_ms()
    if rng:
        print(f"  time range in the original: {rng[0] / 1000:.3f} s to {rng[1] / 1000:.3f} s")
    for x in m.streams:
        print(
            f"  clip stream {x.clip_stream} -> original stream {x.original_stream}: "
            f"{x.matched} of {x.total} packets match, in order"
        )
    if exact:
        print("result: every packet of the clip is in the original, in order (a stream copy)")
        return 0
    if m.matched == m.total:
        why = (
            "its streams come from different moments of the original"
            if not m.aligned
            else "its timing differs from the original's (retimed)"
        )
        print(f"result: NOT an exact cut: every packet is there, but {why}")
    else:
        print(f"result: NOT an exact cut: {m.matched} of {m.total} packets match")
    return 1


def _frame_match(
    conf: cfg.Config,
    clip: Path,
    db: sqlite3.Connection,
    ledger: Any,
    fetch: Any,
    skipped: list[str],
) -> tuple[str, Any, int] | None:
    """The docked original whose decoded frames best match the clip's (for a clip whose
    packets differ: re-muxed into another container). None when nothing shares a frame."""
    import tempfile

    from archive.errors import StoreError
    from ingest.derive import FfmpegFailed, find_ffmpeg, run_ffmpeg_tolerant
    from ingest.fingerprint import FingerprintError
    from ingest.fingerprinter import candidates
    from ingest.frames import frames_command, match_frames, parse_frames, read_framehash, sampled
    from ledger.entry import decode_entry

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "frames.txt"
        try:
            exe = find_ffmpeg(conf.media.ffmpeg)
            run_ffmpeg_tolerant(frames_command(exe, clip, out), conf.media)
            with open(out, encoding="ascii", errors="replace") as f:
                clip_frames = read_framehash(f)
        except (FfmpegFailed, FingerprintError, OSError) as e:
            skipped.append(f"(frames) the clip's frames cannot be decoded: {e}")
            return None
        try:
            found = candidates(db, sampled(clip_frames.hashes), "frame_keys")[:10]
        except sqlite3.OperationalError:
            return None  # no frame hashes made yet
        best: tuple[str, Any, int] | None = None
        for sha in found:
            row = db.execute(
                "SELECT sidecar, entry FROM ingest_frames WHERE sha256=?", (sha,)
            ).fetchone()
            if row is None or row[0] is None:
                continue
            signed = decode_entry(ledger.entry(int(row[1]))).fields
            side = signed.get("sidecar", {}).get("sha256")
            if signed.get("sha256") != sha or signed.get("kind") != "frames" or side != row[0]:
                skipped.append(f"{sha[:16]}: the index disagrees with frames entry {row[1]}")
                continue
            try:
                dest = Path(tmp) / f"{sha}.frames"
                fetch.fetch(side, dest)
                original = parse_frames(dest.read_bytes())
            except (StoreError, FingerprintError) as e:
                skipped.append(f"{sha[:16]}: its frame hashes cannot be read ({e})")
                continue
            m = match_frames(clip_frames, original)
            if m.matched and (best is None or m.matched > best[1].matched):
                best = (sha, m, int(row[1]))
        return best


def _print_frames(clip: Path, frames: tuple[str, Any, int]) -> None:
    sha, m, entry = frames
    print(f"{clip}: decoded pictures match original {sha} (frames entry {entry})")
    if m.start_s is not None:
        print(f"  time range in the original: {float(m.start_s):.3f} s to {float(m.end_s):.3f} s")
    print(f"  {m.matched} of {m.total} decoded video frames match, in order")
    if m.exact:
        print(
            "  every picture is the original's: a re-mux into another container "
            "(the packets and the audio are not proven by this)"
        )


def add_parsers(sub: Any) -> None:
    s = sub.add_parser(
        "verify-clip",
        help="trace a clip back to the docked original it was cut from (packet hashes; "
        "decoded frames for a re-mux); exit 1 unless it is an exact cut",
    )
    s.add_argument("clip")
    s.add_argument("--json", action="store_true")
    s.add_argument(
        "--no-frames",
        action="store_true",
        help="do not fall back to decoded-frame hashes when the packets differ (a re-mux)",
    )
    s.set_defaults(func=cmd_verify_clip)

    s = sub.add_parser(
        "derive",
        help="make the access copy and poster of captured videos now (transcodes too, "
        "whatever the daily budget); exit 2 if one could not be made",
    )
    s.add_argument("sha256", nargs="+", help="SHA-256 of a captured video")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_derive)

    s = sub.add_parser(
        "fingerprint",
        help="hash the decoded frames of captured videos now (survives a re-mux; slow); "
        "exit 2 if one could not be hashed",
    )
    s.add_argument("sha256", nargs="+", help="SHA-256 of a captured video")
    s.add_argument(
        "--frames",
        action="store_true",
        required=True,
        help="decoded-frame hashes (packet hashes are made for every file already)",
    )
    s.add_argument("--signature", action="store_true", help="also the MPEG-7 video signature")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_fingerprint)
