"""The fingerprint job: packet hashes of each captured media object, as a sidecar object
and a signed `fingerprint` entry. Runs after capture on the low-priority media worker.

The sidecar is stored content-addressed in the dock's store and queued for the cold
store (role ``sidecar``) in the same transaction as its entry, which also fills a
small index of video keyframe hashes (first 16 bytes) so `custody verify-clip` finds
the candidate originals of a clip without reading every sidecar (every packet is
indexed for a recording without video, e.g. audio only).

Decoded-frame hashes (`ingest.frames`) are a second, costlier job with its own
`fingerprint` entry (kind ``frames``), run on request (`custody fingerprint --frames`)
or for every video when ``[media] frame_hashes`` is set; a content-chosen sample of
them is indexed the same way. With ``signature`` the same ffmpeg pass writes the MPEG-7
video signature as a further sidecar.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ingest.derive import (
    FfmpegFailed,
    MediaSettings,
    find_ffmpeg,
    public_args,
    run_ffmpeg_tolerant,
)
from ingest.derive import (
    ffmpeg_version as ffmpeg_cli_version,
)
from ingest.fingerprint import FingerprintError, write_sidecar
from ingest.frames import (
    FORMAT as FRAMES_FORMAT,
)
from ingest.frames import (
    SIGNATURE_FORMAT,
    frames_command,
    write_frames,
)
from ingest.objects import LocalObjects
from ingest.probe import examine_file, ffmpeg_version
from ledger.entry import decode_entry
from ledger.errors import Withdrawn
from ledger.log import Ledger

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

log = logging.getLogger("custody.ingest")

SCHEMA = """
CREATE TABLE IF NOT EXISTS ingest_fingerprints (
    sha256 TEXT PRIMARY KEY,
    entry INTEGER NOT NULL,
    sidecar TEXT
);
CREATE TABLE IF NOT EXISTS ingest_packets_v2 (
    sha256 TEXT PRIMARY KEY,
    entry INTEGER NOT NULL,
    sidecar TEXT
);
CREATE TABLE IF NOT EXISTS fingerprint_keys (
    hash BLOB NOT NULL,
    sha256 TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS fingerprint_keys_hash ON fingerprint_keys (hash);
CREATE TABLE IF NOT EXISTS ingest_frames (
    sha256 TEXT PRIMARY KEY,
    entry INTEGER NOT NULL,
    sidecar TEXT,
    signature TEXT
);
CREATE TABLE IF NOT EXISTS frame_keys (
    hash BLOB NOT NULL,
    sha256 TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS frame_keys_hash ON frame_keys (hash);
"""

KEY_PREFIX = 16  # bytes of a keyframe hash kept in the index (candidates are checked in full)

OnNewObject = Callable[[sqlite3.Connection, str, int, str], None]


IOPRIO_CLASS_IDLE = 3
_IOPRIO_SYSCALLS = {"x86_64": (251, 252), "aarch64": (30, 31), "i686": (289, 290)}


def _ioprio(op: int, value: int = 0) -> int:
    """ioprio_set/ioprio_get for the calling thread (no wrapper in Python or glibc)."""
    import ctypes

    nums = _IOPRIO_SYSCALLS.get(os.uname().machine)
    if nums is None:
        return -1
    libc = ctypes.CDLL(None, use_errno=True)
    tid = threading.get_native_id()
    if op == 0:
        return int(libc.syscall(nums[0], 1, tid, value))  # IOPRIO_WHO_PROCESS: a thread id
    return int(libc.syscall(nums[1], 1, tid))


def io_priority() -> int:
    """The calling thread's I/O priority (class << 13 | level), or -1 where unknown."""
    return _ioprio(1)


MEDIA_NICE = 10  # the media worker: below capture
BACKFILL_NICE = 19  # the v2 backfill: below the media worker too (the lowest there is)


def lower_priority(nice: int = MEDIA_NICE) -> None:
    """Thread initializer: media work yields the CPU and the disk to capture. Linux nice
    and I/O priority are per thread, and the ffmpeg processes it starts inherit both;
    the idle I/O class gets the disk only when nothing else wants it (honoured by the
    BFQ scheduler; others ignore it). Without privilege a thread's nice value only
    rises, so each priority gets a thread of its own rather than changing one."""
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    if _ioprio(0, IOPRIO_CLASS_IDLE << 13) != 0:
        log.debug("could not lower the media worker's I/O priority")


def thread_priority() -> tuple[int, int]:
    """The calling thread's nice value and I/O priority (class << 13 | level; -1 where
    unknown), as the kernel holds them."""
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id()), io_priority()


@dataclass(frozen=True)
class BackfillPending:
    """Originals whose only packet fingerprint is custody-packets/v1: ``owed`` are on the
    dock and get a v2 one; ``evicted`` are in the cold store only and are left for now
    (reading them back costs a retrieval)."""

    owed: tuple[str, ...]
    evicted: tuple[str, ...]
    last: str  # the SHA-256 of the last one listed: the next batch starts after it


# Originals owed a v2 backfill (`ingest.status` counts the same rows).
V1_ONLY = (
    "ingest_objects o JOIN ingest_fingerprints f ON f.sha256 = o.sha256 "
    "WHERE f.sidecar IS NOT NULL "
    "AND (o.media_type LIKE 'video/%' OR o.media_type LIKE 'audio/%') "
    "AND NOT EXISTS (SELECT 1 FROM ingest_packets_v2 v WHERE v.sha256 = o.sha256)"
)


class _Stopped(Exception):
    """The sidecar being written was abandoned: the daemon is stopping."""


class _StoppableWriter(io.BufferedWriter):
    """The sidecar's temp file, asking ``stop`` before each write (write_sidecar writes
    every few thousand packets, so a stop is heard within a second or so)."""

    def __init__(self, raw: io.FileIO, stop: Callable[[], bool] | None) -> None:
        super().__init__(raw, buffer_size=1 << 20)
        self._stop = stop

    def write(self, data: ReadableBuffer, /) -> int:
        if self._stop is not None and self._stop():
            raise _Stopped()
        return super().write(data)


class Fingerprinter:
    def __init__(
        self,
        ledger: Ledger,
        objects: LocalObjects,
        db: sqlite3.Connection,
        db_lock: threading.Lock,
        on_new_object: OnNewObject | None = None,
        media: MediaSettings | None = None,
    ) -> None:
        self.ledger, self.objects, self.db, self.db_lock = ledger, objects, db, db_lock
        self.on_new_object = on_new_object
        self.media = media or MediaSettings()
        with db_lock:
            db.executescript(SCHEMA)
            db.commit()

    def pending(self) -> list[str]:
        """Media objects with no packet fingerprint yet (in either format)."""
        with self.db_lock:
            rows = self.db.execute(
                "SELECT o.sha256, o.media_type FROM ingest_objects o WHERE NOT EXISTS "
                "(SELECT 1 FROM ingest_fingerprints f WHERE f.sha256 = o.sha256) AND NOT EXISTS "
                "(SELECT 1 FROM ingest_packets_v2 v WHERE v.sha256 = o.sha256)"
            ).fetchall()
        return [sha for sha, mt in rows if mt.split("/")[0] in ("video", "audio")]

    def run(self, sha: str) -> int | None:
        """Fingerprint one stored object (custody-packets/v2); returns its entry (None if
        done before). The sidecar is written to a temp file as the packets are read and
        stored by its hash, so memory stays flat with the recording's length."""
        return self._packets_v2(sha, {})

    def backfill_pending(self, after: str = "", limit: int = 1000) -> BackfillPending:
        """Media originals with a v1 sidecar and no v2 fingerprint, by SHA-256 from after
        ``after``, at most ``limit`` (a station of millions is walked in batches, along
        the table's key). One whose v1 job found no packets (no sidecar) is not owed one:
        v2 reads it no better."""
        with self.db_lock:
            rows = self.db.execute(
                f"SELECT f.sha256 FROM {V1_ONLY} AND f.sha256 > ? ORDER BY f.sha256 LIMIT ?",
                (after, limit),
            ).fetchall()
        on_dock = {str(sha): self.objects.exists(sha) for (sha,) in rows}
        return BackfillPending(
            tuple(s for s in on_dock if on_dock[s]),
            tuple(s for s in on_dock if not on_dock[s]),
            str(rows[-1][0]) if rows else after,
        )

    def backfill_count(self) -> int:
        """How many originals have a v1 packet fingerprint only (on the dock or not)."""
        with self.db_lock:
            return int(self.db.execute(f"SELECT COUNT(*) FROM {V1_ONLY}").fetchone()[0])

    def backfill(self, sha: str, stop: Callable[[], bool] = lambda: False) -> int | None:
        """A custody-packets/v2 fingerprint for an original that has only a v1 one: a second
        `fingerprint` entry marked ``backfill`` (the v1 entry stands). Returns the entry;
        None if the object has a v2 one already, has no v1 one, is not on the dock (or
        was evicted while it was read), or not now: ``stop()`` true while the sidecar is
        being written abandons it (a long recording does not hold up the daemon's stop)."""
        with self.db_lock:
            v1 = self.db.execute(
                "SELECT 1 FROM ingest_fingerprints WHERE sha256=? AND sidecar IS NOT NULL",
                (sha,),
            ).fetchone()
        if v1 is None or not self.objects.exists(sha):
            return None
        return self._packets_v2(sha, {"backfill": True}, evictable=True, stop=stop)

    def _packets_v2(
        self,
        sha: str,
        extra: dict[str, Any],
        evictable: bool = False,
        stop: Callable[[], bool] | None = None,
    ) -> int | None:
        """The v2 packet fingerprint of one stored object and its entry (``extra`` fields
        added); None if it has one already, or the dock's disk failed (tried again).
        ``evictable``: an object retention evicted while it was read is left alone, not
        recorded as unreadable (a new capture is never evicted that soon). ``stop``:
        asked at each write of the sidecar; true abandons it, nothing recorded."""
        with self.db_lock:
            done = self.db.execute(
                "SELECT 1 FROM ingest_packets_v2 WHERE sha256=?", (sha,)
            ).fetchone()
        if done:
            return None
        payload: dict[str, Any] = {"sha256": sha, "kind": "packets", "tool": ffmpeg_version()}
        sidecar_sha: str | None = None
        keys: tuple[bytes, ...] = ()
        size = 0
        temp, fd = self.objects.new_temp()
        try:
            with _StoppableWriter(io.FileIO(fd, "wb"), stop) as f:
                s = write_sidecar(self.objects.path(sha), f)
                f.flush()
                os.fsync(f.fileno())
            payload.update(s.entry_fields())
            self.objects.commit(temp, s.sha256)
            sidecar_sha, keys, size = s.sha256, s.keyframes, s.size
        except FingerprintError as e:
            if evictable and not self.objects.exists(sha):
                log.info("%s left the dock while it was fingerprinted: left for now", sha[:16])
                return None
            payload["error"] = str(e)[:1000]
        except OSError as e:  # the dock's disk, not the file: tried again later
            if not self.objects.exists(sha):
                log.info(
                    "%s is not on the dock (in the cold store): fingerprint left for now", sha[:16]
                )
                return None
            log.warning("packet fingerprint of %s not made now: %s", sha[:16], e)
            return None
        except _Stopped:
            log.debug("packet fingerprint of %s abandoned: stopping", sha[:16])
            return None
        finally:
            temp.unlink(missing_ok=True)
        payload.update(extra)

        def mark(conn: sqlite3.Connection, idx: list[int]) -> None:
            cur = conn.execute(
                "INSERT OR IGNORE INTO ingest_packets_v2 (sha256, entry, sidecar) VALUES (?,?,?)",
                (sha, idx[0], sidecar_sha),
            )
            if cur.rowcount != 1:
                raise Withdrawn()
            conn.executemany(
                "INSERT INTO fingerprint_keys (hash, sha256) VALUES (?,?)",
                [(k[:KEY_PREFIX], sha) for k in dict.fromkeys(keys)],
            )
            if sidecar_sha and self.on_new_object is not None:
                self.on_new_object(conn, sidecar_sha, size, "sidecar")

        try:
            index = self.ledger.append("fingerprint", payload, mark)
        except Withdrawn:
            return None
        if "error" in payload:
            log.warning(
                "no packet fingerprint for %s (entry %d): %s", sha[:16], index, payload["error"]
            )
        elif not payload["complete"]:
            log.warning(
                "packet fingerprint of %s covers the readable part only (entry %d): %s",
                sha[:16],
                index,
                payload.get("damage", ""),
            )
        return index

    def frames_pending(self) -> list[str]:
        """Videos with no frame-hash entry yet (owed only when ``frame_hashes`` is set)."""
        if not self.media.frame_hashes:
            return []
        with self.db_lock:
            rows = self.db.execute(
                "SELECT o.sha256 FROM ingest_objects o WHERE o.media_type LIKE 'video/%' "
                "AND NOT EXISTS (SELECT 1 FROM ingest_frames f WHERE f.sha256 = o.sha256)"
            ).fetchall()
        return [sha for (sha,) in rows]

    def run_frames(self, sha: str, signature: bool | None = None) -> int | None:
        """Hash the decoded frames of one stored video (and its MPEG-7 signature when
        asked or configured); returns the entry, None if done before or not now.

        A damaged file keeps the frames decoded before the damage (``complete`` false);
        a file with no decodable video gets an entry with the error."""
        with self.db_lock:
            done = self.db.execute("SELECT 1 FROM ingest_frames WHERE sha256=?", (sha,)).fetchone()
        if done:
            return None
        want_sig = self.media.signature if signature is None else signature
        exe = find_ffmpeg(self.media.ffmpeg)
        src = self.objects.path(sha)
        stem = self.objects.tmp / f"frames-{os.getpid()}-{threading.get_native_id()}-{sha[:16]}"
        out, sig = stem.with_suffix(".txt"), stem.with_suffix(".sig")
        # The signature filter takes a file name inside a filter argument: a plain name,
        # relative to ffmpeg's working folder, needs no escaping.
        cmd = frames_command(exe, src, out, Path(sig.name) if want_sig else None)
        args = [a.replace(sig.name, "{signature}") for a in public_args(cmd, src, out)]
        payload: dict[str, Any] = {
            "sha256": sha,
            "kind": "frames",
            "format": FRAMES_FORMAT,
            "args": args,
            "tool": ffmpeg_cli_version(exe),
        }
        new: list[tuple[str, int]] = []
        keys: list[bytes] = []
        sidecar_sha: str | None = None
        sig_sha: str | None = None
        # A decode runs at about five times real time here, slower at low priority.
        duration_s = self._duration_s(sha)
        timeout_s = max(self.media.timeout_s, int(duration_s * 2))
        try:
            code, err = run_ffmpeg_tolerant(cmd, self.media, timeout_s, cwd=self.objects.tmp)
            if not out.exists():
                last = err.splitlines()[-1] if err else "no message"
                raise FingerprintError(f"ffmpeg exited {code} and decoded nothing: {last}")
            # Line by line into the sidecar: a 12-hour recording has 1.3 million frames.
            side, fd = self.objects.new_temp()
            try:
                with (
                    os.fdopen(fd, "wb", buffering=1 << 20) as w,
                    open(out, encoding="ascii", errors="replace") as f,
                ):
                    fs = write_frames(f, w)
                    w.flush()
                    os.fsync(w.fileno())
                if not fs.frames:
                    last = err.splitlines()[-1] if err else ""
                    raise FingerprintError(f"ffmpeg decoded no frame (exit {code}): {last}")
                self.objects.commit(side, fs.sha256)
            finally:
                side.unlink(missing_ok=True)
            sidecar_sha = fs.sha256
            new.append((sidecar_sha, fs.size))
            keys = list(fs.keys)
            # ffmpeg decodes a cut fragmented MP4 or Matroska to a quiet early end: the
            # container's headers say what is missing.
            cut = examine_file(src).damage
            payload.update(
                sidecar={"sha256": sidecar_sha, "size": fs.size},
                frames=fs.frames,
                time_base=fs.time_base,
                size=fs.picture,
                complete=code == 0 and not err and not cut,
            )
            if code != 0 or err:
                payload["damage"] = " | ".join(err.splitlines()[-3:])[:500] or f"exit {code}"
            elif cut:
                payload["damage"] = "; ".join(cut)[:500]
            if want_sig and sig.exists() and sig.stat().st_size:
                # ffmpeg wrote it in the store's temp folder: hashed in chunks, kept as is.
                sig_sha, sig_size = _hash_file(sig)
                self.objects.commit(sig, sig_sha)
                new.append((sig_sha, sig_size))
                payload["signature"] = {
                    "sha256": sig_sha,
                    "size": sig_size,
                    "format": SIGNATURE_FORMAT,
                }
        except FfmpegFailed as e:
            log.warning("frame hashes of %s not made now (tried again later): %s", sha[:16], e)
            return None
        except OSError as e:  # the dock's disk, not the file: tried again later
            log.warning("frame hashes of %s not made now: %s", sha[:16], e)
            return None
        except FingerprintError as e:
            payload["error"] = str(e)[:1000]
        finally:
            out.unlink(missing_ok=True)
            sig.unlink(missing_ok=True)

        def mark(conn: sqlite3.Connection, idx: list[int]) -> None:
            cur = conn.execute(
                "INSERT OR IGNORE INTO ingest_frames (sha256, entry, sidecar, signature) "
                "VALUES (?,?,?,?)",
                (sha, idx[0], sidecar_sha, sig_sha),
            )
            if cur.rowcount != 1:
                raise Withdrawn()
            conn.executemany(
                "INSERT INTO frame_keys (hash, sha256) VALUES (?,?)",
                [(k[:KEY_PREFIX], sha) for k in keys],
            )
            if self.on_new_object is not None:
                for obj, size in new:
                    self.on_new_object(conn, obj, size, "sidecar")

        try:
            index = self.ledger.append("fingerprint", payload, mark)
        except Withdrawn:
            return None
        if "error" in payload:
            log.warning("no frame hashes for %s (entry %d): %s", sha[:16], index, payload["error"])
        else:
            log.info(
                "frame hashes of %s: %d frames%s (entry %d)",
                sha[:16],
                payload["frames"],
                "" if payload["complete"] else ", the readable part only",
                index,
            )
        return index

    def _duration_s(self, sha: str) -> float:
        summary = probe_summary(self.ledger, self.db, self.db_lock, sha) or {}
        return int(summary.get("duration_ms", 0)) / 1000


def _hash_file(path: Path) -> tuple[str, int]:
    """SHA-256 and size of a file made here, fsynced so it can be committed to the store."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
        os.fsync(f.fileno())
    return h.hexdigest(), size


def probe_summary(
    ledger: Ledger, db: sqlite3.Connection, db_lock: threading.Lock, sha: str
) -> dict[str, Any] | None:
    """The summary in an object's signed `probe` entry (no second pass over the file);
    None when there is none yet, or when the probe failed."""
    with db_lock:
        row = db.execute("SELECT probe_entry FROM ingest_objects WHERE sha256=?", (sha,)).fetchone()
    if row is None or row[0] is None:
        return None
    try:
        fields = decode_entry(ledger.entry(int(row[0]))).fields
    except Exception:
        return None
    summary = fields.get("summary")
    return summary if isinstance(summary, dict) else None


def candidates(
    db: sqlite3.Connection, hashes: list[bytes], table: str = "fingerprint_keys"
) -> list[str]:
    """Originals whose fingerprints share an indexed hash with ``hashes`` (keyframe packets
    in ``fingerprint_keys``, sampled decoded frames in ``frame_keys``), most shared first."""
    if table not in ("fingerprint_keys", "frame_keys"):
        raise ValueError(table)
    counts: dict[str, int] = {}
    for h in dict.fromkeys(hashes):
        for (sha,) in db.execute(
            f"SELECT DISTINCT sha256 FROM {table} WHERE hash=?", (h[:KEY_PREFIX],)
        ):
            counts[sha] = counts.get(sha, 0) + 1
    return sorted(counts, key=lambda s: -counts[s])
