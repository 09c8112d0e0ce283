"""The `custody` command line.

Output goes to stdout; errors are one line on stderr that says what to do.
Exit codes: 0 ok, 1 integrity/verification failure, 2 usage or operational
error.
"""

from __future__ import annotations

import argparse
import base64
import json
import sqlite3
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from custody import __version__
from custody import config as cfg
from custody.errors import CustodyError
from custody.station import init_station, load_signer, open_ledger, operator, station_verifier
from ledger.audit import verify_log
from ledger.errors import LedgerError
from ledger.note import NoteError, Verifier
from verify.folder import FolderSource

MAX_NOTE_CHARS = 8000
MAX_INDEX = (1 << 63) - 1


def _index(text: str) -> int:
    """argparse type: a ledger index or size (0 .. 2^63-1)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 0 <= v <= MAX_INDEX:
        raise argparse.ArgumentTypeError(f"{v} is outside 0..{MAX_INDEX}")
    return v


def _read_text(path: str, what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise CustodyError(f"cannot read {what} {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise CustodyError(f"{what} {path} is not UTF-8 text") from None


def _load(args: argparse.Namespace) -> cfg.Config:
    return cfg.load(cfg.config_path(args.config))


def cmd_init(args: argparse.Namespace) -> int:
    res = init_station(Path(args.data), args.origin)
    print(f"station initialised: config {res.config_path}")
    print("verifier key (give it to your supervisors to pin):")
    print(res.vkey)
    return 0


def _note_lines(args: argparse.Namespace) -> list[str]:
    if args.file:
        try:
            text = Path(args.file).read_text(encoding="utf-8")
        except OSError as e:
            raise CustodyError(f"cannot read {args.file}: {e.strerror}") from None
        except UnicodeDecodeError:
            raise CustodyError(f"{args.file} is not UTF-8 text") from None
        lines = [ln.strip() for ln in text.splitlines()]
        lines = [ln for ln in lines if ln]
        if not lines:
            raise CustodyError(f"{args.file} holds no notes (one note per non-empty line)")
    else:
        lines = [" ".join(args.text).strip()]
        if not lines[0]:
            raise CustodyError("the note is empty")
    for ln in lines:
        if len(ln) > MAX_NOTE_CHARS:
            raise CustodyError(f"a note is {len(ln)} characters; the limit is {MAX_NOTE_CHARS}")
    return lines


def cmd_note(args: argparse.Namespace) -> int:
    conf = _load(args)
    lines = _note_lines(args)
    who = args.operator or operator()
    with open_ledger(conf) as ledger:
        idx = ledger.append_entries([("note", {"text": ln, "operator": who}) for ln in lines])
        for i in idx:
            print(f"recorded note as entry {i}", flush=True)
        try:
            rec = ledger.integrate()
        except LedgerError as e:
            raise type(e)(
                f"the notes are recorded (entries {idx[0]}..{idx[-1]}) but no checkpoint "
                f"covers them yet: {e.message}",
                "do not record them again; the next checkpoint will include them",
            ) from None
    if rec is not None:
        print(f"checkpoint size {rec.size}")
    return 0


def cmd_checkpoint(args: argparse.Namespace) -> int:
    conf = _load(args)
    try:
        data = (conf.ledger_dir / "checkpoint").read_bytes()
    except FileNotFoundError:
        raise CustodyError(f"{conf.ledger_dir}/checkpoint does not exist yet") from None
    sys.stdout.buffer.write(data)
    return 0


def cmd_vkey(args: argparse.Namespace) -> int:
    print(station_verifier(_load(args)).vkey())
    return 0


def cmd_entry(args: argparse.Namespace) -> int:
    with open_ledger(_load(args), writable=False) as ledger:
        leaf = ledger.entry(args.index)
    sys.stdout.buffer.write(leaf + b"\n")
    return 0


def cmd_proof(args: argparse.Namespace) -> int:
    with open_ledger(_load(args), writable=False) as ledger:
        proof = ledger.proof(args.index, args.size)
    sys.stdout.write(proof.format())
    return 0


def cmd_consistency(args: argparse.Namespace) -> int:
    with open_ledger(_load(args), writable=False) as ledger:
        c = ledger.consistency(args.old_size, args.new_size)
    b = base64.b64encode
    out = {
        "old_size": c["old_size"],
        "new_size": c["new_size"],
        "old_root": b(c["old_root"]).decode(),
        "new_root": b(c["new_root"]).decode(),
        "proof": [b(h).decode() for h in c["proof"]],
    }
    if args.json:
        print(json.dumps(out))
    else:
        print(f"old size {out['old_size']} root {out['old_root']}")
        print(f"new size {out['new_size']} root {out['new_root']}")
        for h in out["proof"]:
            print(h)
    return 0


def _parse_vkey(value: str) -> Verifier:
    p = Path(value)
    text = _read_text(value, "verifier key file").strip() if p.is_file() else value
    try:
        return Verifier.parse(text)
    except NoteError as e:
        raise CustodyError(f"--vkey: {e}") from None


def _bucket_source(args: argparse.Namespace, conf: cfg.Config | None, origin: str) -> Any:
    """The ledger mirrored in a bucket: from --s3 (no station needed) or the configured store."""
    from archive.s3 import S3Store
    from archive.settings import S3Settings
    from archive.tiles import StoreTileSource
    from custody.cold import open_store

    if args.s3:
        url = args.s3
        if not url.startswith("s3://") or len(url) <= 5:
            raise CustodyError(f"--s3 {url!r}: give s3://BUCKET or s3://BUCKET/PREFIX")
        bucket, _, prefix = url[5:].partition("/")
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        store: Any = S3Store(
            S3Settings(
                bucket=bucket,
                prefix=prefix,
                endpoint_url=args.endpoint_url or "",
                region=args.region,
                verify_tls=not args.no_verify_tls,
            )
        )
        where = url
    else:
        assert conf is not None
        store = open_store(conf)
        if store is None:
            raise CustodyError(f"--store: {conf.path} has no [store]")
        where = store.id
    return StoreTileSource(store, origin), where


def cmd_verify(args: argparse.Namespace) -> int:
    remote = bool(args.s3) or args.store
    needs_conf = (not args.dir and not args.s3) or bool(args.config)
    conf = _load(args) if needs_conf else None
    history: list[str | bytes] = []
    if (args.dir or args.s3) and not args.vkey and conf is None:
        raise CustodyError("--dir and --s3 need --vkey (the verifier key you trust)")
    verifier = _parse_vkey(args.vkey) if args.vkey else station_verifier(conf)  # type: ignore[arg-type]
    src: Any
    if remote:
        src, where = _bucket_source(args, conf, verifier.name)
        try:
            history.extend(src.checkpoints())
            checkpoint = src.read_checkpoint()
        except LedgerError as e:
            raise CustodyError(f"cannot read the ledger in {where}: {e}") from None
    else:
        folder = Path(args.dir) if args.dir else conf.ledger_dir  # type: ignore[union-attr]
        where = str(folder)
        if conf is not None and not args.dir:
            with open_ledger(conf, writable=False) as ledger:
                after = -1
                while batch := ledger.checkpoints(after, 10000):
                    history.extend(r.note for r in batch)
                    after = batch[-1].size
        if not folder.is_dir():
            raise CustodyError(f"ledger folder {folder} does not exist")
        kept = folder / "checkpoints"  # a copy of a cold-store mirror keeps every checkpoint
        if args.dir and kept.is_dir():
            history.extend(p.read_bytes() for p in sorted(kept.iterdir()) if p.name.isdigit())
        src = FolderSource(folder)
        try:
            checkpoint = src.read_checkpoint()
        except ValueError as e:
            raise CustodyError(str(e)) from None
    for extra in args.known or []:
        history.append(_read_text(extra, "checkpoint file"))
    started = time.monotonic()
    progress = _progress() if sys.stderr.isatty() else None
    rep = verify_log(src, checkpoint, [verifier], None, history, progress=progress)
    if progress:
        sys.stderr.write("\n")
    elapsed = time.monotonic() - started
    if args.json:
        out: dict[str, Any] = rep.to_json()
        out["seconds"] = round(elapsed, 3)
        out["source"] = where
        print(json.dumps(out, ensure_ascii=False))
    else:
        for line in rep.lines():
            print(line)
        state = "OK" if rep.ok else f"FAILED ({sum(rep.counts.values())} problems)"
        print(
            f"ledger {where}: {state}; size {rep.size}, {rep.entries_checked} entries, "
            f"{rep.signatures_checked} signatures, {rep.checkpoints_checked} recorded "
            f"checkpoints checked in {elapsed:.1f} s"
        )
    return 0 if rep.ok else 1


def _cold(conf: cfg.Config) -> Any:
    from custody.cold import open_store

    store = open_store(conf)
    if store is None:
        raise CustodyError(f"{conf.path} has no [store]", "add a [store] table (see README)")
    return store


def sha_arg(value: str) -> str:
    v = value.lower()
    if len(v) != 64 or any(c not in "0123456789abcdef" for c in v):
        raise CustodyError(f"{value!r} is not a SHA-256 (64 hex digits)")
    return v


def cmd_store_check(args: argparse.Namespace) -> int:
    from custody.cold import replication_settings

    conf = _load(args)
    store = _cold(conf)
    locking = replication_settings(conf).locking
    enabled = store.check_locking(locking)
    print(
        f"cold store {store.id}: reachable; object lock "
        f"{'enabled' if enabled else 'not enabled'}"
        f"{'' if locking else ' (lock_mode = none)'}"
    )
    return 0


def cmd_store_fetch(args: argparse.Namespace) -> int:
    from archive.retrieve import Retriever
    from ingest.objects import LocalObjects

    conf = _load(args)
    sha = sha_arg(args.sha256)
    store = None if conf.store is None else _cold(conf)
    local = None if args.cold else LocalObjects(conf.store_dir).path
    if args.cold and store is None:
        raise CustodyError("--cold: no [store] is configured")
    got = Retriever(local, store).fetch(sha, Path(args.out))
    print(f"{args.out}: {got.size} bytes, SHA-256 {got.sha256} verified (from {got.source})")
    return 0


def cmd_store_restore(args: argparse.Namespace) -> int:
    from archive.retrieve import Retriever

    conf = _load(args)
    status = Retriever(None, _cold(conf)).restore(sha_arg(args.sha256), args.days)
    print(f"{args.sha256}: {status}")
    return 0


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
    from ingest.fingerprinter import Fingerprinter
    from ingest.objects import LocalObjects
    from ledger.entry import decode_entry

    conf = _load(args)
    shas = [sha_arg(v) for v in args.sha256]
    objects = LocalObjects(conf.store_dir)
    media = replace(conf.media, signature=args.signature or conf.media.signature)
    failed = 0
    with open_ledger(conf) as ledger:
        db = index_db(ledger)
        try:
            fp = Fingerprinter(ledger, objects, db, threading.Lock(), _upload_hook(conf), media)
            for sha in shas:
                why = _not_a_video_here(db, objects, sha)
                if why:
                    print(f"{sha}: {why}", file=sys.stderr)
                    failed += 1
                    continue
                done = db.execute(
                    "SELECT entry FROM ingest_frames WHERE sha256=?", (sha,)
                ).fetchone()
                idx = done[0] if done else fp.run_frames(sha, media.signature)
                if idx is None:
                    print(f"{sha}: not hashed now (see the log line above)", file=sys.stderr)
                    failed += 1
                    continue
                fields = decode_entry(ledger.entry(int(idx))).fields
                if "error" in fields:
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
    return 1 if failed else 0


def cmd_derive(args: argparse.Namespace) -> int:
    """Make the access copy (and poster) of captured videos now: a transcode too, whatever
    the settings and the day's budget."""
    import threading

    from custody.retain import index_db
    from ingest.deriver import Deriver
    from ingest.objects import LocalObjects
    from ledger.entry import decode_entry

    conf = _load(args)
    shas = [sha_arg(v) for v in args.sha256]
    objects = LocalObjects(conf.store_dir)
    failed = 0
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
                    failed += 1
                    continue
                deriver.run(sha, force=True)
                made = db.execute(
                    "SELECT kind, entry, output FROM ingest_derivatives WHERE original=? "
                    "ORDER BY kind",
                    (sha,),
                ).fetchall()
                copy = [m for m in made if m[0] == "access_copy" and m[1] >= 0]
                if not copy:
                    print(f"{sha}: no access copy made (see the log line above)")
                    failed += 1
                for kind, entry, output in made:
                    if entry < 0:
                        continue
                    fields = decode_entry(ledger.entry(int(entry))).fields
                    if output:
                        print(f"{sha}: {kind} {output} by {fields.get('method')} (entry {entry})")
                    else:
                        print(f"{sha}: no {kind} (entry {entry}): {fields.get('error')}")
                        failed += kind == "access_copy"
            ledger.integrate()
        finally:
            db.close()
    return 1 if failed else 0


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

    conf = _load(args)
    clip = Path(args.clip)
    if not clip.is_file():
        raise CustodyError(f"{clip}: not found")
    try:
        fp = read_packets(clip)
    except FingerprintError as e:
        raise CustodyError(f"{clip}: ffmpeg cannot read it as media ({e})") from None
    from archive.errors import StoreError
    from ledger.entry import decode_entry

    store = None if conf.store is None else _cold(conf)
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


def _progress() -> Any:
    last = [0.0]

    def show(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] > 0.5 or done == total:
            last[0] = now
            sys.stderr.write(f"\rverifying {done}/{total} entries")
            sys.stderr.flush()

    return show


def cmd_run(args: argparse.Namespace) -> int:
    from custody.daemon import run, setup_logging

    conf = _load(args)
    setup_logging(args.log_level, args.log_format)
    return run(conf)


def cmd_ingest(args: argparse.Namespace) -> int:
    from custody.daemon import ingest_once, setup_logging

    conf = _load(args)
    setup_logging(args.log_level)
    res = ingest_once(conf, [Path(p) for p in args.paths], args.settle_ms, args.wait_s)
    if args.json:
        print(json.dumps(res))
    else:
        print(
            f"captured {res['captured']} file(s) ({res['bytes']} bytes), "
            f"{res['sightings']} already held, {res['failures']} failure(s)"
        )
        for e in res["errors"]:
            print(f"failed: {e}")
        if res["paused"]:
            print(f"paused: {res['paused']}")
        for f in res["still_changing"]:
            print(f"not taken: {f} (still being written or changing; run again later)")
        rep = res.get("replication")
        if rep:
            print(
                f"cold store {rep['store']}: {rep['replicated']} replicated, "
                f"{rep['backlog']} waiting"
                + (" (the daemon uploads them)" if rep["backlog"] else "")
                + (f"; last error: {rep['last_error']}" if rep["last_error"] else "")
            )
    return 0 if not res["failures"] and not res["paused"] and not res["still_queued"] else 2


def _ingest_status(conf: cfg.Config) -> dict[str, Any]:

    db_path = conf.state_dir / "ledger.sqlite"
    out: dict[str, Any] = {"docks": {}, "daemon": None}
    try:
        daemon = json.loads((conf.state_dir / "daemon.json").read_text())
        alive = _pid_alive(int(daemon.get("pid", 0)))
        out["daemon"] = daemon if alive else None
    except (OSError, ValueError):
        pass
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT dock, recorder, state, count(*), sum(size) FROM ingest_files "
            "GROUP BY dock, recorder, state"
        ).fetchall()
        errors = db.execute(
            "SELECT dock, recorder, last_error FROM ingest_files "
            "WHERE state='queued' AND last_error IS NOT NULL ORDER BY id DESC LIMIT 5"
        ).fetchall()
    except sqlite3.OperationalError:
        rows, errors = [], []
    finally:
        db.close()
    for dock, rec, state, n, size in rows:
        d = out["docks"].setdefault(dock, {})
        r = d.setdefault(rec or "(dock root)", {})
        r[state] = {"files": n, "bytes": size or 0}
    out["recent_errors"] = [f"{d}/{r}: {e}" for d, r, e in errors]
    return out


def _pid_alive(pid: int) -> bool:
    import os

    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cmd_status(args: argparse.Namespace) -> int:
    conf = _load(args)
    with open_ledger(conf, writable=False) as ledger:
        latest = ledger.latest()
        out: dict[str, Any] = {
            "origin": conf.origin,
            "data_dir": str(conf.data_dir),
            "ledger": {
                "entries": ledger.next_index(),
                "pending": ledger.pending_count(),
                "checkpoint_size": latest.size if latest else 0,
                "checkpoint_signed_at": latest.signed_at if latest else None,
            },
        }
    out["capture"] = _ingest_status(conf)
    out["cold_store"] = _cold_status(conf, out["capture"])
    out["media"] = _media_status(conf)
    out["retention"] = _retention_status(conf)
    out["disk"] = _disk_status(conf)
    out["audit"] = _audit_status(conf)
    if latest is not None:
        from ledger.entry import parse_time

        cp_age = time.time() - parse_time(latest.signed_at).timestamp()
        out["ledger"]["checkpoint_age_s"] = int(cp_age)
    if args.json:
        print(json.dumps(out))
    else:
        lg = out["ledger"]
        assert isinstance(lg, dict)
        print(f"station {out['origin']} ({out['data_dir']})")
        age = lg.get("checkpoint_age_s")
        print(
            f"ledger: {lg['entries']} entries, {lg['pending']} awaiting a checkpoint; "
            f"last checkpoint size {lg['checkpoint_size']} signed {lg['checkpoint_signed_at']}"
            + (f" ({age} s ago)" if age is not None else "")
        )
        dk = out["disk"]
        print(
            f"disk: {dk['free_bytes'] / (1 << 30):.1f} GiB free of "
            f"{dk['total_bytes'] / (1 << 30):.1f} GiB at {dk['path']}"
            + (" (BELOW the capture floor: capture pauses)" if dk["below_floor"] else "")
        )
        au = out["audit"]
        if au is None:
            print("audit: none yet (custody audit)")
        else:
            print(
                f"audit: {'everything held' if au['ok'] else 'PROBLEMS FOUND'} at {au['time']} "
                f"({au['mode']}, {au['objects_checked']} objects; fixity entry {au['entry']})"
            )
        capture = out["capture"]
        assert isinstance(capture, dict)
        daemon = capture["daemon"]
        if daemon:
            state = f"paused: {daemon['paused']}" if daemon["paused"] else "running"
            print(f"daemon: pid {daemon['pid']}, {state}, {daemon['waiting']} file(s) waiting")
            for c in daemon.get("copying", []):
                print(f"  copying {c['file']} ({c['size']} bytes) for {c['recorder']}")
        else:
            print("daemon: not running")
        for dock, recs in sorted(capture["docks"].items()):
            for rec, states in sorted(recs.items()):
                parts = ", ".join(
                    f"{s} {v['files']} ({v['bytes']} bytes)" for s, v in sorted(states.items())
                )
                print(f"  {dock} / {rec}: {parts}")
        for e in capture["recent_errors"]:
            print(f"  error: {e}")
        m = out["media"]
        print(
            f"media: {m['fingerprinted']} fingerprinted, {m['frames_hashed']} with frame "
            f"hashes, {m['access_copies']} access copies, {m['posters']} posters"
        )
        if m["mode"] == "remux":
            print(
                "  transcodes: on request (custody derive, export); "
                f"{m['transcodes_waiting']} recording(s) would need one"
            )
        elif m["mode"] == "all":
            cap = m["transcode_budget_min"]
            print(
                "  transcodes: on the dock at idle priority, "
                + (f"at most {cap} min of footage a day" if cap else "no daily cap")
                + f"; {m['transcoded_today_s'] / 60:.1f} min today, "
                f"{m['transcodes_waiting']} waiting"
            )
        else:
            print("  access copies: off (custody derive makes one on request)")
        cold = out["cold_store"]
        if isinstance(cold, dict):
            print(
                f"cold store {cold['store']}: {cold['replicated']} replicated, backlog "
                f"{cold['backlog']} ({cold['backlog_bytes']} bytes), oldest unreplicated "
                f"{cold['oldest_unreplicated'] or '-'}; ledger mirrored to size "
                f"{cold['ledger_mirrored_size']}"
            )
            if cold.get("last_error"):
                print(f"  last error: {cold['last_error']}")
        else:
            print("cold store: none configured (the dock's disk holds the only copy)")
        rt = out["retention"]
        if rt["policy"] is None:
            print(
                "retention: no policy applied, so nothing is ever deleted; review the policy "
                "file and run `custody retention apply`"
            )
        else:
            due = ", ".join(f"{k} {v}" for k, v in sorted(rt["due_now"].items())) or "nothing"
            print(
                f"retention: policy {rt['policy']} ({', '.join(rt['rules'])}); "
                f"{rt['items']} originals, {rt['deleted']} deleted, {rt['holds']} hold(s) in "
                f"force; due now: {due}"
            )
            last = rt.get("last_sweep")
            if last:
                print(
                    f"  last sweep {last['at_utc']}: {len(last['done'])} done, "
                    f"{len(last['refused'])} refused, {len(last['failed'])} failed"
                    + (f"; held back: {last['clock']}" if last.get("clock") else "")
                )
    return 0


def _disk_status(conf: cfg.Config) -> dict[str, Any]:
    import os

    st = os.statvfs(conf.data_dir)
    free = st.f_bavail * st.f_frsize
    return {
        "path": str(conf.data_dir),
        "free_bytes": free,
        "total_bytes": st.f_blocks * st.f_frsize,
        "below_floor": free < conf.capture.min_free_mb << 20,
    }


def _audit_status(conf: cfg.Config) -> dict[str, Any] | None:
    """The latest `fixity` entry, found through the index (read-only)."""
    from ledger.entry import decode_entry

    db = sqlite3.connect(f"file:{conf.state_dir / 'ledger.sqlite'}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT value FROM audit_state WHERE key='last_fixity'").fetchone()
    except sqlite3.OperationalError:
        row = None
    finally:
        db.close()
    if row is None:
        return None
    idx = int(row[0])
    with open_ledger(conf, writable=False) as ledger:
        f = decode_entry(ledger.entry(idx))
    return {
        "entry": idx,
        "time": f.time,
        "ok": bool(f.fields.get("ok")),
        "mode": f.fields.get("mode"),
        "objects_checked": f.fields.get("objects_checked"),
        "problems": f.fields.get("problems", []),
    }


def _retention_status(conf: cfg.Config) -> dict[str, Any]:
    """From the retention index as the last sweep or command left it (read-only)."""
    import hashlib

    from custody.retain import applied_policy
    from retention.index import states
    from retention.plan import plan

    policy, text = applied_policy(conf)
    out: dict[str, Any] = {
        "policy": hashlib.sha256(text.encode()).hexdigest()[:16] if policy else None,
        "rules": [f"{r.name}: {r.describe_keep()}" for r in policy.rules] if policy else [],
        "items": 0,
        "deleted": 0,
        "holds": 0,
        "due_now": {},
        "last_sweep": None,
    }
    db = sqlite3.connect(f"file:{conf.state_dir / 'ledger.sqlite'}?mode=ro", uri=True)
    try:
        out["items"], out["deleted"] = db.execute(
            "SELECT COUNT(*), COUNT(deleted_entry) FROM retention_items"
        ).fetchone()
        out["holds"] = db.execute(
            "SELECT COUNT(*) FROM retention_holds WHERE released_entry IS NULL"
        ).fetchone()[0]
        if policy is not None:
            for a in plan(policy, states(db), int(time.time())):
                if not a.blocked:
                    out["due_now"][a.kind] = out["due_now"].get(a.kind, 0) + 1
        row = db.execute("SELECT value FROM retention_meta WHERE key='last_result'").fetchone()
        if row:
            last = json.loads(row[0])
            last["at_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(last.get("at", 0)))
            out["last_sweep"] = last
    except sqlite3.OperationalError:
        pass  # no retention index yet
    finally:
        db.close()
    return out


def _media_status(conf: cfg.Config) -> dict[str, Any]:
    out: dict[str, Any] = {
        "mode": conf.media.access_copies,
        "fingerprinted": 0,
        "access_copies": 0,
        "posters": 0,
        "transcodes_waiting": 0,
        "transcode_budget_min": conf.media.transcode_budget_min,
        "transcoded_today_s": 0,
        "frame_hashes": conf.media.frame_hashes,
        "frames_hashed": 0,
    }
    db = sqlite3.connect(f"file:{conf.state_dir / 'ledger.sqlite'}?mode=ro", uri=True)
    try:
        out["fingerprinted"] = db.execute(
            "SELECT COUNT(*) FROM ingest_fingerprints WHERE sidecar IS NOT NULL"
        ).fetchone()[0]
        for kind, key in (("access_copy", "access_copies"), ("poster", "posters")):
            out[key] = db.execute(
                "SELECT COUNT(*) FROM ingest_derivatives WHERE kind=? AND output IS NOT NULL",
                (kind,),
            ).fetchone()[0]
        out["transcodes_waiting"] = db.execute(
            "SELECT COUNT(*) FROM ingest_derivatives WHERE entry < 0"
        ).fetchone()[0]
        today = time.strftime("%Y-%m-%d")
        row = db.execute("SELECT transcoded_s FROM media_budget WHERE day=?", (today,)).fetchone()
        out["transcoded_today_s"] = int(row[0]) if row else 0
        out["frames_hashed"] = db.execute(
            "SELECT COUNT(*) FROM ingest_frames WHERE sidecar IS NOT NULL"
        ).fetchone()[0]
    except sqlite3.OperationalError:
        pass  # nothing captured yet
    finally:
        db.close()
    return out


def _cold_status(conf: cfg.Config, capture: Any) -> dict[str, Any] | None:
    from archive.replicate import queue_status
    from custody.cold import open_store

    store = open_store(conf)
    if store is None:
        return None
    db = sqlite3.connect(f"file:{conf.state_dir / 'ledger.sqlite'}?mode=ro", uri=True)
    try:
        try:
            out = queue_status(db, store.id)
        except sqlite3.OperationalError:  # nothing captured yet: no queue table
            out = {
                "store": store.id,
                "backlog": 0,
                "backlog_bytes": 0,
                "replicated": 0,
                "oldest_unreplicated": None,
                "queue_error": None,
                "ledger_mirrored_size": 0,
            }
    finally:
        db.close()
    daemon = capture.get("daemon") if isinstance(capture, dict) else None
    live = (daemon or {}).get("replication") or {}
    out["last_error"] = live.get("last_error") or (
        out["queue_error"]["error"] if out["queue_error"] else ""
    )
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="custody",
        description="Evidence integrity and archive appliance for body-worn recorder docks: "
        "captures every docked file exactly once, signs every event into an append-only "
        "Merkle ledger (C2SP tlog-tiles), keeps the files in cold storage under retention "
        "rules, and exports them for courts with proof that verifies offline.",
    )
    p.add_argument(
        "-c",
        "--config",
        help=f"config file (default: ${cfg.ENV_VAR}, else {cfg.DEFAULT_PATH})",
    )
    p.add_argument("--version", action="version", version=f"custody {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser(
        "init", help="create a station: config, key, folders; print the verifier key"
    )
    s.add_argument("--data", required=True, help="data folder to create (custody.toml goes there)")
    s.add_argument("--origin", help="log origin and key name, e.g. custody.example/menghai/dock-01")
    s.set_defaults(func=cmd_init)

    s = sub.add_parser("note", help="record signed chain-of-custody remarks")
    s.add_argument("text", nargs="*", help="the remark")
    s.add_argument("--file", help="read remarks from a file, one per line")
    s.add_argument("--operator", help="who makes the remark (default: the login user)")
    s.set_defaults(func=cmd_note)

    s = sub.add_parser(
        "run",
        help="the daemon: watch the docks, capture, replicate, fingerprint, sweep "
        "(SIGTERM stops, SIGHUP reloads the docks)",
    )
    s.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    s.add_argument(
        "--log-format",
        default="plain",
        choices=["plain", "json"],
        help="json: one object per line (time, level, logger, message)",
    )
    s.set_defaults(func=cmd_run)

    s = sub.add_parser(
        "ingest", help="capture files or folders once (card reader, USB disk), no watching"
    )
    s.add_argument("paths", nargs="+", metavar="PATH")
    s.add_argument(
        "--settle-ms",
        type=int,
        default=1000,
        help="a file must be unchanged this long before it is taken (default 1000)",
    )
    s.add_argument(
        "--wait-s",
        type=float,
        default=300,
        help="give up on files still changing after this long (default 300)",
    )
    s.add_argument("--json", action="store_true")
    s.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    s.set_defaults(func=cmd_ingest)

    s = sub.add_parser(
        "status",
        help="daemon, queues per dock and recorder, ledger, disk, cold store, media, "
        "retention, last audit",
    )
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_status)

    lg = sub.add_parser("ledger", help="read, prove and verify the ledger")
    lsub = lg.add_subparsers(dest="ledger_command", required=True, metavar="SUBCOMMAND")
    s = lsub.add_parser("checkpoint", help="print the latest signed checkpoint, verbatim")
    s.set_defaults(func=cmd_checkpoint)
    s = lsub.add_parser("vkey", help="print the station's verifier key")
    s.set_defaults(func=cmd_vkey)
    s = lsub.add_parser("entry", help="print the entry (leaf bytes) at an index")
    s.add_argument("--index", type=_index, required=True)
    s.set_defaults(func=cmd_entry)
    s = lsub.add_parser("proof", help="print an offline inclusion proof (C2SP tlog-proof)")
    s.add_argument("--index", type=_index, required=True)
    s.add_argument("--size", type=_index, help="size of a signed checkpoint (default: latest)")
    s.set_defaults(func=cmd_proof)
    s = lsub.add_parser("consistency", help="consistency proof between two tree sizes")
    s.add_argument("--old-size", type=_index, required=True)
    s.add_argument("--new-size", type=_index, help="default: the latest checkpoint size")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_consistency)
    s = lsub.add_parser(
        "verify", help="recompute every leaf, tile, root and signature; list every failure"
    )
    s.add_argument("--vkey", help="verifier key, or a file holding it (default: the station's)")
    s.add_argument("--dir", help="verify this tile folder instead of the station's ledger")
    s.add_argument(
        "--known",
        action="append",
        metavar="CHECKPOINT",
        help="a checkpoint file seen earlier; it must be consistent (repeatable)",
    )
    s.add_argument(
        "--s3",
        metavar="s3://BUCKET[/PREFIX]",
        help="verify the copy in a bucket alone (ledger/<origin>/ named by --vkey); "
        "credentials from the standard AWS chain",
    )
    s.add_argument("--endpoint-url", help="S3 endpoint for --s3 (default: AWS)")
    s.add_argument("--region", default="us-east-1", help="region for --s3")
    s.add_argument("--no-verify-tls", action="store_true", help="for --s3 with a test endpoint")
    s.add_argument(
        "--store", action="store_true", help="verify the copy in the configured cold store"
    )
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_verify)

    s = sub.add_parser(
        "verify-clip",
        help="trace a clip back to the docked original it was cut from (packet hashes; "
        "decoded frames for a re-mux)",
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
        help="make the access copy and poster of captured videos now (transcodes too)",
    )
    s.add_argument("sha256", nargs="+", help="SHA-256 of a captured video")
    s.set_defaults(func=cmd_derive)

    s = sub.add_parser(
        "fingerprint",
        help="hash the decoded frames of captured videos now (survives a re-mux; slow)",
    )
    s.add_argument("sha256", nargs="+", help="SHA-256 of a captured video")
    s.add_argument(
        "--frames",
        action="store_true",
        required=True,
        help="decoded-frame hashes (packet hashes are made for every file already)",
    )
    s.add_argument("--signature", action="store_true", help="also the MPEG-7 video signature")
    s.set_defaults(func=cmd_fingerprint)

    from custody.cli_evidence import add_parsers as add_evidence
    from custody.cli_retention import add_parsers as add_retention

    add_retention(sub, _load)
    add_evidence(sub, _load)

    st = sub.add_parser("store", help="the cold store: check it, fetch or restore objects")
    ssub = st.add_subparsers(dest="store_command", required=True, metavar="SUBCOMMAND")
    s = ssub.add_parser(
        "check", help="reach the configured store and check it has object lock if required"
    )
    s.set_defaults(func=cmd_store_check)
    s = ssub.add_parser(
        "fetch", help="write an object to a file, verified by its SHA-256 (dock copy first)"
    )
    s.add_argument("sha256")
    s.add_argument("--out", required=True, help="file to write")
    s.add_argument("--cold", action="store_true", help="read from the cold store only")
    s.set_defaults(func=cmd_store_fetch)
    s = ssub.add_parser("restore", help="ask for a cold-class object to be made readable")
    s.add_argument("sha256")
    s.add_argument("--days", type=int, default=7)
    s.set_defaults(func=cmd_store_restore)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "note" and not args.text and not args.file:
        parser.error("note needs TEXT or --file F")
    try:
        rc: int = args.func(args)
        return rc
    except LedgerError as e:
        print(f"custody: error: {e}", file=sys.stderr)
        return e.exit_code
    except sqlite3.Error as e:
        print(f"custody: error: the state database failed: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        where = f" {e.filename}" if e.filename else ""
        print(f"custody: error:{where}: {e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("custody: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


__all__ = ["load_signer", "main"]
