"""The derive job: an access copy and a poster frame per captured recording, each a
stored object linked to its original by a signed `derive` entry (the exact ffmpeg
arguments, the FFmpeg version, the method). Runs on the low-priority media worker.

Each derivative is made in one pass (`make_object`): ffmpeg writes it to a pipe, and the
bytes are hashed and written to the store's temp file as they arrive, fsynced and stored
by their SHA-256. A failure (ffmpeg refuses the file, warns) is a `derive` entry with the
error; it is not retried by itself. Time, space and system failures leave no entry and
no file: the job is tried again at the next start. Transcodes the settings leave for later are not
recorded: `pending` lists them, and `status` says they wait for a request or for the
next day's transcode budget. `custody derive SHA256` makes one now, whatever the budget.
"""

from __future__ import annotations

import logging
import mmap
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ingest.derive import (
    STDOUT,
    FfmpegFailed,
    MediaSettings,
    Written,
    access_copy_command,
    ffmpeg_version,
    find_ffmpeg,
    plan,
    poster_command,
    public_args,
    run_ffmpeg_into,
    salvage_command,
)
from ingest.fingerprinter import OnNewObject, probe_summary
from ingest.objects import LocalObjects
from ingest.probe import ProbeFailed, probe
from ingest.salvage import Codec, SalvageError, layout, reference_codec, salvage
from ledger.errors import Withdrawn
from ledger.log import Ledger

log = logging.getLogger("custody.ingest")

SCHEMA = """
CREATE TABLE IF NOT EXISTS ingest_derivatives (
    original TEXT NOT NULL,
    kind TEXT NOT NULL,
    entry INTEGER NOT NULL,
    output TEXT,
    PRIMARY KEY (original, kind)
);
CREATE TABLE IF NOT EXISTS media_budget (
    day TEXT PRIMARY KEY,          -- local date at the dock
    transcoded_s INTEGER NOT NULL  -- seconds of footage transcoded (or started) that day
);
"""


def make_object(
    objects: LocalObjects, cmd: list[str], settings: MediaSettings, timeout_s: int, name: str
) -> Written:
    """Run ffmpeg (its output on ``pipe:1``) into the store's temp file ``name``, hashed
    as it is written and fsynced (`run_ffmpeg_into`), and store it by its SHA-256. On any
    failure the temp file is removed and nothing is stored."""
    temp = objects.tmp / name
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(temp, flags, 0o600)
    try:
        try:
            made = run_ffmpeg_into(cmd, settings, fd, timeout_s)
        finally:
            os.close(fd)
        if objects.exists(made.sha256):
            temp.unlink()
        else:
            objects.commit(temp, made.sha256)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return made


class Deriver:
    def __init__(
        self,
        ledger: Ledger,
        objects: LocalObjects,
        db: sqlite3.Connection,
        db_lock: threading.Lock,
        settings: MediaSettings,
        on_new_object: OnNewObject | None = None,
        min_free_mb: int = 1024,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ledger, self.objects, self.db, self.db_lock = ledger, objects, db, db_lock
        self.settings = settings
        self.clock = clock
        self.on_new_object = on_new_object
        self.min_free = min_free_mb << 20
        with db_lock:
            db.executescript(SCHEMA)
            db.commit()

    def pending(self) -> list[str]:
        """Recordings still owed a poster or an access copy under the current settings (a
        transcode left for later, entry -1, is owed only with ``access_copies = "all"``)."""
        mode, posters = self.settings.access_copies, self.settings.posters
        with self.db_lock:
            rows = self.db.execute(
                "SELECT o.sha256 FROM ingest_objects o WHERE o.media_type LIKE 'video/%' AND ("
                "(? AND NOT EXISTS (SELECT 1 FROM ingest_derivatives d WHERE d.original = "
                "o.sha256 AND d.kind = 'poster')) OR "
                "(? AND NOT EXISTS (SELECT 1 FROM ingest_derivatives d WHERE d.original = "
                "o.sha256 AND d.kind = 'access_copy' AND (d.entry >= 0 OR ?))))",
                (posters, mode != "off", mode != "all"),
            ).fetchall()
        return [sha for (sha,) in rows]

    def _done(self, sha: str, kind: str, force: bool = False) -> bool:
        """Made (or failed) already; a deferred transcode counts as done unless mode is all
        (or a copy is asked for now)."""
        with self.db_lock:
            row = self.db.execute(
                "SELECT entry FROM ingest_derivatives WHERE original=? AND kind=?", (sha, kind)
            ).fetchone()
        if row is None:
            return False
        return bool(row[0] >= 0 or (self.settings.access_copies != "all" and not force))

    def _today(self) -> str:
        return time.strftime("%Y-%m-%d", time.localtime(self.clock()))

    def budget_used_s(self) -> int:
        with self.db_lock:
            row = self.db.execute(
                "SELECT transcoded_s FROM media_budget WHERE day=?", (self._today(),)
            ).fetchone()
        return int(row[0]) if row else 0

    def _take_budget(self, seconds: int) -> bool:
        """Count ``seconds`` of footage against today's transcode budget; False (nothing
        counted) when it does not fit. The first transcode of a day always fits, so a
        recording longer than the whole budget is not left waiting for ever."""
        cap = self.settings.transcode_budget_min * 60
        day = self._today()
        with self.db_lock:
            row = self.db.execute(
                "SELECT transcoded_s FROM media_budget WHERE day=?", (day,)
            ).fetchone()
            used = int(row[0]) if row else 0
            if cap and used and used + seconds > cap:
                return False
            self.db.execute(
                "INSERT INTO media_budget (day, transcoded_s) VALUES (?, ?) ON CONFLICT (day) "
                "DO UPDATE SET transcoded_s = transcoded_s + excluded.transcoded_s",
                (day, seconds),
            )
            self.db.execute("DELETE FROM media_budget WHERE day < date(?, '-30 days')", (day,))
            self.db.commit()
        return True

    def _probe_summary(self, sha: str) -> dict[str, Any] | None:
        return probe_summary(self.ledger, self.db, self.db_lock, sha)

    def _defer(self, sha: str) -> None:
        with self.db_lock:
            self.db.execute(
                "INSERT OR IGNORE INTO ingest_derivatives (original, kind, entry, output) "
                "VALUES (?, 'access_copy', -1, NULL)",
                (sha,),
            )
            self.db.commit()

    def run(self, sha: str, force: bool = False) -> list[int]:
        """Make what the settings ask for of one stored recording; returns new entries.
        ``force`` makes the access copy now, transcode or not, outside the budget (a
        request: `custody derive`, an export)."""
        src = self.objects.path(sha)
        summary = self._probe_summary(sha)
        if summary is None:
            try:
                summary = probe(src)
            except ProbeFailed:
                # Not media, or unreadable (the probe entry says so); an MP4/MOV whose
                # index was never written may still give up its video.
                return self._salvage(sha, src, force)
        p = plan(summary)
        if p is None or not p.has_video:
            return []
        duration_s = int(summary.get("duration_ms", 0)) / 1000
        # A transcode runs at about a quarter of real time here, slower at low priority.
        timeout_s = max(self.settings.timeout_s, int(duration_s * 8))
        poster_at = min(1.0, duration_s / 2) if duration_s else 0.0
        made: list[int] = []
        mode = self.settings.access_copies
        if (mode != "off" or force) and not self._done(sha, "access_copy", force):
            if (
                p.method == "remux"
                or force
                or (mode == "all" and self._take_budget(max(1, int(duration_s))))
            ):
                e = self._make(
                    sha,
                    "access_copy",
                    p.method,
                    src,
                    ".mp4",
                    "video/mp4",
                    lambda exe: access_copy_command(exe, src, p, self.settings),
                    timeout_s,
                )
                if e is not None:
                    made.append(e)
            else:
                self._defer(sha)
        if self.settings.posters and not self._done(sha, "poster"):
            e = self._make(
                sha,
                "poster",
                "frame",
                src,
                ".jpg",
                "image/jpeg",
                lambda exe: poster_command(exe, src, poster_at),
                timeout_s,
            )
            if e is not None:
                made.append(e)
        if self.settings.access_copies != "off":
            # A healthy recording may be the reference a cut one of its recorder waited for.
            for other in self._waiting_for_reference(sha):
                made += self._salvage(other, self.objects.path(other), False)
        return made

    def _same_slot_videos(self, sha: str, condition: str = "", order: str = "") -> list[str]:
        """Other videos docked in the same recorder slot as ``sha`` that were probed,
        narrowed by an SQL ``condition`` on ``o`` (ingest_objects) and ordered."""
        with self.db_lock:
            rows = self.db.execute(
                "SELECT DISTINCT o.sha256 FROM ingest_files f "
                "JOIN ingest_files g ON g.dock = f.dock AND g.recorder = f.recorder "
                "JOIN ingest_objects o ON o.sha256 = g.sha256 "
                "WHERE f.sha256 = ? AND o.sha256 != ? AND o.media_type LIKE 'video/%' "
                f"AND o.probe_entry IS NOT NULL {condition} {order}",
                (sha, sha),
            ).fetchall()
        return [o for (o,) in rows]

    def _waiting_for_reference(self, sha: str) -> list[str]:
        """Recordings of the same recorder slot that ffmpeg could not read and that have
        no access copy yet (each is looked at by `_salvage`, which keeps the rest)."""
        waiting = self._same_slot_videos(
            sha,
            "AND NOT EXISTS (SELECT 1 FROM ingest_derivatives d WHERE d.original = o.sha256 "
            "AND d.kind = 'access_copy')",
        )
        return [o for o in waiting if self._probe_summary(o) is None]

    def _reference(self, sha: str) -> tuple[str, Codec, str] | None:
        """A healthy recording from the same recorder slot to take the codec set-up from
        (the newest first): its SHA-256, the codec and its frame rate."""
        for ref in self._same_slot_videos(sha, order="ORDER BY o.first_entry DESC LIMIT 10"):
            summary = self._probe_summary(ref)
            if summary is None or not self.objects.exists(ref):
                continue
            try:
                codec, rate = reference_codec(self.objects.path(ref))
            except SalvageError:
                continue
            return ref, codec, rate
        return None

    def _salvage(self, sha: str, src: Path, force: bool) -> list[int]:
        """An access copy of the video of an MP4/MOV cut off before its index (see
        `ingest.salvage`); [] when the file is not one, or no reference exists yet."""
        mode = self.settings.access_copies
        if (mode == "off" and not force) or self._done(sha, "access_copy", force):
            return []
        try:
            with open(src, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
                lay = layout(m)
        except (SalvageError, OSError, ValueError):
            return []  # not an MP4/MOV: nothing to salvage
        if lay.has_moov:
            return []  # its index is there: damaged elsewhere, not salvageable this way
        ref = self._reference(sha)
        if ref is None:
            log.info(
                "cannot salvage %s yet: no healthy recording of the same recorder to take "
                "the codec set-up from (tried again at the next start)",
                sha[:16],
            )
            return []
        ref_sha, codec, rate = ref
        transcode = codec.name != "h264"
        if (
            transcode
            and not force
            and (
                mode != "all"
                or not self._take_budget(max(1, (lay.mdat_end - lay.mdat_start) >> 20))
            )
        ):
            self._defer(sha)
            return []
        raw = self.objects.tmp / f"salvage-{os.getpid()}-{sha[:16]}.{codec.name}"
        info: dict[str, Any] = {"reference": ref_sha, "codec": codec.name, "frame_rate": rate}

        def build(exe: str) -> list[str]:
            try:
                res = salvage(src, raw, codec)
            except SalvageError as e:
                raise FfmpegFailed(f"salvage: {e}") from None
            info.update(
                pictures=res.pictures,
                video_bytes=res.video_bytes,
                skipped_bytes=res.skipped_bytes,
                audio="not recovered",
            )
            return salvage_command(exe, raw, codec.name, rate, self.settings)

        try:
            e = self._make(
                sha,
                "access_copy",
                "salvage",
                raw,
                ".mp4",
                "video/mp4",
                build,
                self.settings.timeout_s,
                {"salvage": info},
            )
        finally:
            raw.unlink(missing_ok=True)
        return [] if e is None else [e]

    def _make(
        self,
        sha: str,
        kind: str,
        method: str,
        src: Path,
        suffix: str,
        media_type: str,
        build: Any,
        timeout_s: int,
        extra: dict[str, Any] | None = None,
    ) -> int | None:
        exe = find_ffmpeg(self.settings.ffmpeg)
        try:
            cmd: list[str] = build(exe)
        except FfmpegFailed as e:
            cmd = []
            extra = dict(extra or {}, error=str(e)[:1000])
        payload: dict[str, Any] = {
            "sha256": sha,
            "kind": kind,
            "method": method,
            "args": public_args(cmd, src, STDOUT) if cmd else [],
            "tool": ffmpeg_version(exe),
        }
        payload.update(extra or {})
        if not cmd:
            return self._record(sha, kind, method, payload, None, 0)
        out_sha: str | None = None
        size = 0
        free = os.statvfs(self.objects.root)
        if free.f_bavail * free.f_frsize < src.stat().st_size + self.min_free:
            # The space kept free for capture is not ours to fill: try again later.
            log.info("not making the %s of %s now: too little free space", kind, sha[:16])
            return None
        name = f"derive-{os.getpid()}-{sha[:16]}-{kind}{suffix}"
        try:
            made = make_object(self.objects, cmd, self.settings, timeout_s, name)
            out_sha, size = made.sha256, made.size
            payload["output"] = {"sha256": out_sha, "size": size, "media_type": media_type}
        except (FfmpegFailed, OSError) as e:
            if isinstance(e, OSError) or e.transient:
                # Time, space or the system, not the file: no entry; tried at the next start.
                log.warning("%s of %s not made now (tried again later): %s", kind, sha[:16], e)
                return None
            payload["error"] = str(e)[:1000]
            out_sha = None

        return self._record(sha, kind, method, payload, out_sha, size)

    def _record(
        self,
        sha: str,
        kind: str,
        method: str,
        payload: dict[str, Any],
        out_sha: str | None,
        size: int,
    ) -> int | None:
        def mark(conn: sqlite3.Connection, idx: list[int]) -> None:
            cur = conn.execute(
                "INSERT INTO ingest_derivatives (original, kind, entry, output) VALUES (?,?,?,?) "
                "ON CONFLICT (original, kind) DO UPDATE SET entry = excluded.entry, "
                "output = excluded.output WHERE ingest_derivatives.entry < 0",
                (sha, kind, idx[0], out_sha),
            )
            if cur.rowcount != 1:
                raise Withdrawn()
            if out_sha and self.on_new_object is not None:
                self.on_new_object(conn, out_sha, size, "derivative")

        try:
            index = self.ledger.append("derive", payload, mark)
        except Withdrawn:
            return None
        if out_sha is None:
            log.warning("no %s of %s (entry %d): %s", kind, sha[:16], index, payload["error"])
        else:
            log.info("%s of %s by %s: %s (entry %d)", kind, sha[:16], method, out_sha[:16], index)
        return index
