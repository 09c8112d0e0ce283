"""`custody verify-clip | derive | fingerprint`: the media of captured videos."""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from dataclasses import dataclass
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


# How people name what verify-clip compared (the JSON carries the exact forms).
_CODEC_NAMES = {"h264": "H.264", "hevc": "H.265", "aac": "AAC"}
_FORM_WORDS = {
    "annexb": "in start-code form",
    "avcc1": "length-prefixed",
    "avcc2": "length-prefixed",
    "avcc4": "length-prefixed",
    "adts": "with ADTS headers",
    "raw": "raw",
    "stored": "as stored",
}
_CONTAINERS = {
    "video/mp4": "MP4",
    "audio/mp4": "MP4",
    "video/quicktime": "MOV",
    "video/x-matroska": "Matroska",
    "video/mp2t": "MPEG-TS",
    "video/x-msvideo": "AVI",
    "audio/wav": "WAV",
}


def _container(media_type: str) -> str:
    """A container's everyday name ("" when the media type does not say)."""
    return _CONTAINERS.get(media_type, "")


def _side(who: str, name: str, form: str, box: str) -> str:
    return f"{who} {name}{' ' if name else ''}{_FORM_WORDS.get(form, form)}" + (
        f" ({box})" if box else ""
    )


# What packet hashes do not cover, said with every answer so it is not overstated: the
# original's own SHA-256 (its ingest entry) covers those bytes of the original.
NOT_COMPARED = (
    "SEI messages in the video (e.g. a recorder's time or GPS, display orientation) and "
    "the container's own metadata (e.g. rotation, titles)"
)


def normalisation(
    x: Any, codec: str, version: int, clip_box: str = "", original_box: str = ""
) -> str:
    """One line for people: how a clip stream and its original stream were framed, and
    what was compared (``x`` is a StreamMatch)."""
    from ingest import bitstream

    name = _CODEC_NAMES.get(codec, codec)
    if x.original_stream < 0:
        return f"{x.type}: the original has no {x.type} stream to compare with"
    if version == 1:
        return (
            f"{x.type}: {name} packets compared as the containers store them "
            "(custody-packets/v1: no normalisation; parameter sets not compared apart)"
        )
    sides = (
        f"{_side('clip', name, x.clip_form, clip_box)}, "
        f"{_side('original', '', x.original_form, original_box)}"
    )
    if codec in bitstream.NAL_CODECS and x.clip_form != bitstream.STORED:
        aside = (
            f"{x.set_aside} delimiters/parameter sets/SEI set aside"
            if x.set_aside
            else "nothing set aside"
        )
        how = f"compared coded slices, {aside}; " + (
            "parameter sets all among the original's"
            if x.params_ok
            else "parameter sets NOT all among the original's (the stream's SPS/PPS "
            "were edited, e.g. a crop or VUI change)"
        )
    elif codec == bitstream.AAC and x.clip_form in (bitstream.ADTS, bitstream.RAW):
        how = (
            "compared raw access units"
            + (f", {x.set_aside} ADTS headers removed" if x.set_aside else "")
            + (
                "; decoder configuration the original's"
                if x.params_ok
                else "; decoder configuration NOT the original's (sample rate, channels or "
                "profile relabelled)"
            )
        )
    else:
        how = "compared packets as stored"
    return f"{x.type}: {sides}; {how}"


@dataclass(frozen=True)
class _Found:
    """One candidate original, matched against the clip with its best fingerprint."""

    sha: str
    match: Any  # ClipMatch
    version: int  # of the fingerprints compared
    fingerprint_entry: int
    ingest_entry: int
    container: str  # the original's ("" unknown)
    awaits_v2: bool  # only a v1 fingerprint so far: the backfill will make its v2


def _rows(db: sqlite3.Connection, table: str, sha: str) -> tuple[Any, ...] | None:
    try:
        row = db.execute(
            f"SELECT f.sidecar, f.entry, o.first_entry, o.media_type FROM {table} f "
            "JOIN ingest_objects o ON o.sha256 = f.sha256 WHERE f.sha256=?",
            (sha,),
        ).fetchone()
    except sqlite3.OperationalError as e:
        if "no such table" not in str(e):
            raise CustodyError(f"cannot read the fingerprint index: {e}") from None
        return None  # a dock from before this table: nothing of that format yet
    return tuple(row) if row is not None else None


def _v1_only(db: sqlite3.Connection) -> int:
    """Originals with a v1 packet fingerprint and no v2 one yet (the backfill's work)."""
    for q in (
        "SELECT COUNT(*) FROM ingest_fingerprints f WHERE f.sidecar IS NOT NULL AND NOT "
        "EXISTS (SELECT 1 FROM ingest_packets_v2 v WHERE v.sha256 = f.sha256)",
        "SELECT COUNT(*) FROM ingest_fingerprints WHERE sidecar IS NOT NULL",
    ):
        try:
            return int(db.execute(q).fetchone()[0])
        except sqlite3.OperationalError:
            continue
    return 0


def cmd_verify_clip(args: argparse.Namespace) -> int:
    import tempfile

    from archive.retrieve import Retriever
    from ingest.fingerprint import (
        FORMAT,
        FORMAT_V1,
        FingerprintError,
        index_hashes,
        match_clip_file,
        read_packets,
    )
    from ingest.fingerprinter import candidates
    from ingest.media import sniff
    from ingest.objects import LocalObjects

    conf = load(args)
    clip = Path(args.clip)
    if not clip.is_file():
        raise CustodyError(f"{clip}: not found")
    try:
        # v2 for originals fingerprinted since custody-packets/v2; v1 (a second demux of a
        # short clip) for those the backfill has not reached yet.
        fps = {2: read_packets(clip), 1: read_packets(clip, version=1)}
    except OSError as e:
        raise CustodyError(f"{clip}: cannot be read ({e.strerror or e})") from None
    except FingerprintError as e:
        raise CustodyError(f"{clip}: ffmpeg cannot read it as media ({e})") from None
    fp = fps[2]
    with open(clip, "rb") as fh:
        clip_box = _container(sniff(fh.read(16), clip.name))
    from archive.errors import StoreError
    from custody.station import open_ledger
    from ledger.entry import decode_entry

    store = None if conf.store is None else cold_store(conf)
    fetch = Retriever(LocalObjects(conf.store_dir).path, store)
    db = sqlite3.connect(f"file:{conf.state_dir / 'ledger.sqlite'}?mode=ro", uri=True)
    best: _Found | None = None
    awaiting: list[_Found] = []
    frames: tuple[str, Any, int] | None = None
    skipped: list[str] = []
    v1_only = 0
    try:
        try:
            keys = index_hashes(fps[2]) + index_hashes(fps[1])
            found = candidates(db, keys)[:10]
        except sqlite3.OperationalError as e:
            if "no such table" not in str(e):
                raise CustodyError(f"cannot read the fingerprint index: {e}") from None
            found = []  # nothing fingerprinted yet
        with open_ledger(conf, writable=False) as ledger, tempfile.TemporaryDirectory() as tmp:
            for sha in found:
                v2_row = _rows(db, "ingest_packets_v2", sha)
                tries = [(2, v2_row), (1, _rows(db, "ingest_fingerprints", sha))]
                for version, row in tries:
                    if row is None or row[0] is None:
                        continue
                    # The sidecar named by the signed entry, not only by the index.
                    signed = decode_entry(ledger.entry(int(row[1]))).fields
                    side = signed.get("sidecar", {}).get("sha256")
                    fmt = FORMAT if version == 2 else FORMAT_V1
                    if signed.get("sha256") != sha or side != row[0] or signed.get("format") != fmt:
                        skipped.append(
                            f"{sha[:16]}: the index disagrees with fingerprint entry {row[1]}"
                        )
                        continue
                    dest = Path(tmp) / side
                    try:
                        fetch.fetch(side, dest)
                        with open(dest, "rb") as f:
                            m = match_clip_file(fps[version], f)
                    except (StoreError, FingerprintError) as e:
                        skipped.append(f"{sha[:16]}: its fingerprint cannot be read ({e})")
                        continue
                    finally:
                        dest.unlink(missing_ok=True)
                    box = _container(str(row[3]))
                    got = _Found(sha, m, version, int(row[1]), int(row[2]), box, v2_row is None)
                    if got.awaits_v2 and not m.exact and box != clip_box:
                        awaiting.append(got)
                    if best is None or (m.exact, m.matched) > (
                        best.match.exact,
                        best.match.matched,
                    ):
                        best = got
                    break  # the newest readable fingerprint of this original decides
            exact = best is not None and best.match.exact
            if not exact and not awaiting:
                v1_only = _v1_only(db)
            has_video = any(st.type == "video" for st in fp.streams)
            if has_video and not args.no_frames and not exact:
                frames = _frame_match(conf, clip, db, ledger, fetch, skipped)
    finally:
        db.close()
    for line in skipped:
        print(f"custody: warning: candidate {line}", file=sys.stderr)
    exact = best is not None and best.match.exact
    waits = not exact and (
        bool(awaiting) or ((best is None or best.match.matched == 0) and v1_only > 0)
    )
    if args.json:
        out: dict[str, Any] = {
            "clip": str(clip),
            "exact": exact,
            "packets": len(fp.packets),
            "clip_container": clip_box or None,
        }
        if skipped:
            out["skipped"] = skipped
        if waits:
            # No exact match yet, and originals wait for the v2 fingerprint that could give one.
            out["awaiting_v2"] = [a.sha for a in awaiting]
            if v1_only:
                out["v1_only_originals"] = v1_only
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
            m = best.match
            rng = m.range_ms()
            codecs = {s.index: s.codec for s in fps[best.version].streams}
            out.update(
                aligned=m.aligned,
                timing_ok=all(x.timing_ok for x in m.streams),
                params_ok=all(x.params_ok for x in m.streams),
                original=best.sha,
                original_container=best.container or None,
                ingest_entry=best.ingest_entry,
                fingerprint_entry=best.fingerprint_entry,
                format=FORMAT if best.version == 2 else FORMAT_V1,
                not_compared=NOT_COMPARED,
                synced=m.synced,
                matched=m.matched,
                total=m.total,
                range_ms=list(rng) if rng else None,
                streams=[
                    {
                        "clip_stream": x.clip_stream,
                        "original_stream": x.original_stream,
                        "type": x.type,
                        "codec": codecs.get(x.clip_stream, ""),
                        "matched": x.matched,
                        "total": x.total,
                        "format": FORMAT if best.version == 2 else FORMAT_V1,
                        "clip_form": x.clip_form,
                        "original_form": x.original_form,
                        "set_aside": x.set_aside,
                        "params_ok": x.params_ok,
                        "timing_ok": x.timing_ok,
                        "normalisation": normalisation(
                            x,
                            codecs.get(x.clip_stream, ""),
                            best.version,
                            clip_box,
                            best.container,
                        ),
                    }
                    for x in m.streams
                ],
            )
        print(json.dumps(out))
        return 0 if exact else 1
    if frames is not None:
        _print_frames(clip, frames)
    if awaiting and not exact:
        a = awaiting[0]
        print(
            f"{clip}: original {a.sha} has only a custody-packets/v1 fingerprint, which "
            f"hashes packets as its container ({a.container or 'unknown'}) stores them; "
            f"this clip is in {clip_box or 'another container'}"
        )
        print(
            "result: NOT proven yet: the original awaits its custody-packets/v2 fingerprint "
            "(the backfill makes it at idle priority); verify again once it has"
        )
        return 1
    nothing = best is None or best.match.matched == 0
    later = (
        f"; {v1_only} docked original(s) have only a custody-packets/v1 fingerprint and await "
        "their v2 one (backfill): a clip in another container matches them only then"
        if waits
        else ""
    )
    if nothing and frames is not None:
        print(
            f"{clip}: its packets match no docked original's ({len(fp.packets)} packets; a "
            f"re-encode rewrites them, even one that keeps every picture): NOT an exact "
            f"cut{later}"
        )
        return 1
    if best is None or nothing:
        print(
            f"{clip}: no docked original shares its packets "
            f"({len(fp.packets)} packets; a re-encoded clip matches nothing exactly){later}"
        )
        return 1
    m = best.match
    codecs = {s.index: s.codec for s in fps[best.version].streams}
    print(f"{clip}: {'cut from' if exact else 'closest'} original {best.sha}")
    print(f"  ingest entry {best.ingest_entry}, fingerprint entry {best.fingerprint_entry}")
    rng = m.range_ms()
    if rng:
        print(f"  time range in the original: {rng[0] / 1000:.3f} s to {rng[1] / 1000:.3f} s")
    print(f"  fingerprints compared: {FORMAT if best.version == 2 else FORMAT_V1}")
    print(f"  not compared: {NOT_COMPARED}")
    for x in m.streams:
        print(
            f"  clip stream {x.clip_stream} -> original stream {x.original_stream}: "
            f"{x.matched} of {x.total} packets match, in order"
        )
        line = normalisation(
            x, codecs.get(x.clip_stream, ""), best.version, clip_box, best.container
        )
        print(f"    {line}")
    if exact:
        print("result: every packet of the clip is in the original, in order (a stream copy)")
        return 0
    if m.matched == m.total:
        if not all(x.params_ok for x in m.streams):
            why = (
                "its parameter sets (SPS/PPS) or audio configuration are not the original's: "
                "the stream was edited"
            )
        elif not m.aligned or not m.synced:
            why = "its streams come from different moments of the original"
        else:
            why = "its timing differs from the original's (retimed)"
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
    packets differ: a re-encode that kept the pictures, or a re-mux of a codec hashed as
    stored). None when nothing shares a frame."""
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
            "  every picture is the original's, in other packets (a re-encode that kept "
            "them, or a re-mux of a codec hashed as stored): the packets and the audio are "
            "not proven by this"
        )


def add_parsers(sub: Any) -> None:
    s = sub.add_parser(
        "verify-clip",
        help="trace a clip back to the docked original it was cut from (packet hashes, "
        "whatever the container; decoded frames when the packets differ); exit 1 unless "
        "it is an exact cut",
    )
    s.add_argument("clip")
    s.add_argument("--json", action="store_true")
    s.add_argument(
        "--no-frames",
        action="store_true",
        help="do not fall back to decoded-frame hashes when the packets differ",
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
        help="hash the decoded frames of captured videos now (they match a clip whose "
        "packets differ but whose pictures are kept; slow); exit 2 if one could not be hashed",
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
