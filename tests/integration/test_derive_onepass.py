"""The access copy made in one pass: ffmpeg writes a fragmented MP4 to a pipe, and the
bytes are hashed and written to the store as they arrive (real ffmpeg, real files)."""

from __future__ import annotations

import errno
import hashlib
import struct
import subprocess
import time
from pathlib import Path
from typing import Any

import av
import pytest

from ingest.derive import (
    FRAGMENTED,
    STDOUT,
    FfmpegFailed,
    MediaSettings,
    access_copy_command,
    plan,
)
from ingest.deriver import make_object
from ingest.objects import LocalObjects
from ingest.probe import probe

from ..conftest import needs_root, run_cli
from .daemon import entries, make_station
from .test_derive import derives, stored
from .test_fingerprints import ff, sha, source


def boxes(data: bytes) -> list[tuple[str, bytes]]:
    """The top-level ISO BMFF boxes (type, body), checked to cover the file exactly."""
    out: list[tuple[str, bytes]] = []
    at = 0
    while at < len(data):
        size, kind = struct.unpack(">I4s", data[at : at + 8])
        head = 8
        if size == 1:
            (size,) = struct.unpack(">Q", data[at + 8 : at + 16])
            head = 16
        assert size >= head and at + size <= len(data), (kind, at, size)
        out.append((kind.decode("ascii"), data[at + head : at + size]))
        at += size
    return out


def packets(path: Path) -> dict[str, list[tuple[bytes, bool]]]:
    """Each stream's packets (payload, keyframe) in order, as PyAV demuxes them."""
    out: dict[str, list[tuple[bytes, bool]]] = {}
    with av.open(str(path)) as c:
        for p in c.demux():
            if p.size:
                out.setdefault(str(p.stream.type), []).append((bytes(p), p.is_keyframe))
    return out


def duration_s(path: Path) -> float:
    with av.open(str(path)) as c:
        return float(c.duration or 0) / 1e6


def test_stored_copy_is_the_fragmented_mp4_ffmpeg_wrote(tmp_path: Path, ffmpeg: str) -> None:
    dock = tmp_path / "dock"
    conf = make_station(tmp_path, dock)
    original = source(ffmpeg, dock / "slot01" / "A.mp4", "libx264", seconds=6)
    run_cli("ingest", str(dock), "--settle-ms", "0", config=conf)
    e = derives(conf)[(sha(original), "access_copy")]
    assert e["method"] == "remux"
    copy = stored(conf, e["output"]["sha256"])
    data = copy.read_bytes()
    # The SHA-256 in the entry is the hash of the bytes the store holds.
    assert hashlib.sha256(data).hexdigest() == e["output"]["sha256"]
    assert len(data) == e["output"]["size"]

    # A fragmented MP4: an index with no samples (moov + mvex), then moof + mdat pairs,
    # then the mfra seek index; nothing ffmpeg had to seek back to write.
    kinds = [k for k, _ in boxes(data)]
    assert kinds[:2] == ["ftyp", "moov"] and kinds[-1] == "mfra", kinds
    assert kinds[2:-1] == ["moof", "mdat"] * ((len(kinds) - 3) // 2), kinds
    assert len(kinds) >= 3 + 2 * 6, "a fragment per keyframe (one a second)"
    assert b"mvex" in dict(boxes(data))["moov"]

    # Stream copy: every packet of every stream is the original's, in order.
    ours, theirs = packets(copy), packets(original)
    assert set(ours) == {"video", "audio"}
    assert ours == theirs
    assert abs(duration_s(copy) - duration_s(original)) < 0.1

    # The recorded command is honest: run with {output} as a file, it writes the same bytes.
    again = tmp_path / "again.mp4"
    files = {"{input}": str(original), "{output}": str(again)}
    args = [files.get(a, a) for a in e["args"]]
    assert args[0] == "ffmpeg" and "pipe:1" not in args and FRAGMENTED in args
    subprocess.run([ffmpeg, *args[1:]], check=True, timeout=60)
    assert again.read_bytes() == data
    # Nothing is left half-made in the store's temp folder.
    assert not list((conf.parent / "store" / "tmp").iterdir())
    poster = derives(conf)[(sha(original), "poster")]
    assert stored(conf, poster["output"]["sha256"]).read_bytes()[:3] == b"\xff\xd8\xff"
    assert [x for x in entries(conf) if x["type"] == "derive" and "error" in x] == []


def store_and_command(tmp_path: Path, ffmpeg: str, src: Path) -> tuple[LocalObjects, list[str]]:
    p = plan(probe(src))
    assert p is not None and p.method == "remux"
    return LocalObjects(tmp_path / "store"), access_copy_command(ffmpeg, src, p, MediaSettings())


def objects_in(objects: LocalObjects) -> list[Path]:
    return [p for p in objects.objects.rglob("*") if p.is_file()]


def test_input_damaged_midway_leaves_no_temp_file_and_no_object(
    tmp_path: Path, ffmpeg: str
) -> None:
    whole = source(ffmpeg, tmp_path / "whole.mp4", "libx264", seconds=10)  # index first
    cut = tmp_path / "cut.mp4"
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) * 6 // 10])  # the samples stop at 60 %
    objects, cmd = store_and_command(tmp_path, ffmpeg, cut)
    # ffmpeg gets well into the copy before it meets the damage.
    run = subprocess.run(cmd, capture_output=True, timeout=60)
    assert run.returncode != 0 and len(run.stdout) > 100_000 and run.stderr
    with pytest.raises(FfmpegFailed) as failed:
        make_object(objects, cmd, MediaSettings(), 60, "derive-cut-access_copy.mp4")
    assert not failed.value.transient, "the file's fault: recorded, not retried"
    assert "exited" in str(failed.value)
    assert list(objects.tmp.iterdir()) == [] and objects_in(objects) == []


def test_timeout_stops_ffmpeg_and_leaves_nothing(tmp_path: Path, ffmpeg: str) -> None:
    objects = LocalObjects(tmp_path / "store")
    # A source that never ends, at real time: only the timeout stops it.
    endless = [
        ffmpeg,
        "-nostdin",
        "-v",
        "error",
        "-re",
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=160x120:rate=25",
        "-c:v",
        "mpeg4",
        "-g",
        "5",
        "-f",
        "mp4",
        "-movflags",
        FRAGMENTED,
        STDOUT,
    ]
    t = time.monotonic()
    with pytest.raises(FfmpegFailed) as failed:
        make_object(objects, endless, MediaSettings(), 2, "derive-endless.mp4")
    assert failed.value.transient and "within 2 s" in str(failed.value)
    assert time.monotonic() - t < 20
    assert list(objects.tmp.iterdir()) == [] and objects_in(objects) == []


def test_full_disk_stops_ffmpeg_and_leaves_nothing(tmp_path: Path, ffmpeg: str) -> None:
    needs_root("mounts a 256 KiB tmpfs to fill")
    big = source(ffmpeg, tmp_path / "big.mp4", "libx264", seconds=20)
    assert big.stat().st_size > 512 << 10
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], check=True)
    try:
        objects, cmd = store_and_command(mnt, ffmpeg, big)
        with pytest.raises(OSError) as failed:
            make_object(objects, cmd, MediaSettings(), 60, "derive-big.mp4")
        assert failed.value.errno == errno.ENOSPC
        assert list(objects.tmp.iterdir()) == [] and objects_in(objects) == []
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_derivative_matches_what_ffmpeg_writes_to_a_file(tmp_path: Path, ffmpeg: str) -> None:
    """The one-pass object equals the bytes of the same command writing a file, for a
    remux with audio re-encoded (G.711 to AAC) too."""
    src = tmp_path / "g711.mov"
    ff(
        ffmpeg,
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=320x240:rate=25:duration=3",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=300:duration=3:sample_rate=8000",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-c:a",
        "pcm_mulaw",
        "-shortest",
        str(src),
    )
    objects, cmd = store_and_command(tmp_path, ffmpeg, src)
    made = make_object(objects, cmd, MediaSettings(), 60, "derive-g711.mp4")
    data = objects.path(made.sha256).read_bytes()
    assert hashlib.sha256(data).hexdigest() == made.sha256 and len(data) == made.size
    p = plan(probe(src))
    assert p is not None
    out = tmp_path / "file.mp4"
    subprocess.run(
        access_copy_command(ffmpeg, src, p, MediaSettings(), str(out)), check=True, timeout=60
    )
    assert out.read_bytes() == data
    got: dict[str, Any] = packets(objects.path(made.sha256))
    assert got["video"] == packets(src)["video"] and len(got["audio"]) > 10
    assert list(objects.tmp.iterdir()) == []
