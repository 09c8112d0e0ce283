"""Media work against the bare ffmpeg commands, same file, same run: packet-hash
fingerprinting, and access copies by remux and by transcode.

Workload: one generated 1080p30 H.264 + AAC recording (default 60 s, about
8 Mbit/s, keyframe every second, like a body-worn recorder). Ours:
`ingest.fingerprint.read_packets` + `format_sidecar` (PyAV demux, SHA-256 of
every packet, the sidecar text). Baseline: `ffmpeg -i F -map 0 -c copy -f
framehash -hash sha256 -` (the same packets hashed by ffmpeg itself, no
decoding). Each runs in a fresh process, interleaved; medians and the
realtime factor (seconds of footage per second of work) are reported, and
what that means for a shift of 20 recorders with 8 hours each.

Run: .venv/bin/python benchmarks/media_bench.py [--seconds 60] [--reps 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def ffmpeg_exe() -> str:
    found = shutil.which("ffmpeg")
    if found:
        return found
    import imageio_ffmpeg

    return str(imageio_ffmpeg.get_ffmpeg_exe())


def make_recording(ffmpeg: str, out: Path, seconds: int) -> None:
    subprocess.run(
        [
            ffmpeg,
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"testsrc2=size=1920x1080:rate=30:duration={seconds}",
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency=440:duration={seconds}",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-b:v",
            "8M",
            "-g",
            "30",
            "-c:a",
            "aac",
            "-shortest",
            str(out),
        ],
        check=True,
    )


def timed(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of a child process."""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, env=dict(os.environ, PYTHONPATH=str(REPO)))
    _, status, ru = os.wait4(p.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{cmd[:3]} failed")
    return time.perf_counter() - t, ru.ru_maxrss / 1024


def child(path: str) -> None:
    from ingest.fingerprint import format_sidecar, read_packets

    fp = read_packets(Path(path))
    data = format_sidecar(fp)
    print(len(fp.packets), len(data))


def derive_child(path: str, out: str, mode: str) -> None:
    """What the derive job does for one file: plan from the recorded probe summary, run
    ffmpeg at low priority with limits, hash the result."""
    import hashlib

    from ingest.derive import MediaSettings, access_copy_command, find_ffmpeg, plan, run_ffmpeg

    settings = MediaSettings(access_copies="all", preset="veryfast")
    p = plan(json.loads(Path(path + ".probe.json").read_text()))
    assert p is not None and p.method == mode, p
    cmd = access_copy_command(find_ffmpeg(), Path(path), Path(out), p, settings)
    run_ffmpeg(cmd, settings)
    h = hashlib.sha256()
    with open(out, "rb") as f:
        while b := f.read(8 << 20):
            h.update(b)
    print(h.hexdigest())


def frames_child(path: str, out: str, signature: str) -> None:
    """What the frame-hash job does: ffmpeg's framehash at low priority with limits, the
    hash values parsed into the custody-frames/v1 sidecar, hashed."""
    import hashlib

    from ingest.derive import MediaSettings, find_ffmpeg, run_ffmpeg_tolerant
    from ingest.frames import format_frames, frames_command, read_framehash

    sig = Path(out + ".sig") if signature == "yes" else None
    code, err = run_ffmpeg_tolerant(
        frames_command(find_ffmpeg(), Path(path), Path(out), sig), MediaSettings()
    )
    assert code == 0 and not err, err
    with open(out, encoding="ascii") as f:
        data = format_frames(read_framehash(f))
    print(len(data), hashlib.sha256(data).hexdigest())


def raw_command(path: Path, out: Path, mode: str) -> list[str]:
    """The bare ffmpeg command the derive job runs (same arguments)."""
    from ingest.derive import MediaSettings, access_copy_command, plan
    from ingest.probe import probe

    summary = probe(path)
    Path(str(path) + ".probe.json").write_text(json.dumps(summary))  # the probe entry's part
    p = plan(summary)
    assert p is not None
    return access_copy_command(ffmpeg_exe(), path, out, p, MediaSettings(preset="veryfast"))


def interleave(
    name: str, ours_cmd: list[str], base_cmd: list[str], reps: int, after: Path | None = None
) -> tuple[float, float]:
    ours, base = [], []
    for r in range(reps):
        runs = [("ours", ours_cmd), ("base", base_cmd)]
        for who, cmd in runs if r % 2 == 0 else runs[::-1]:
            secs, _ = timed(cmd)
            (ours if who == "ours" else base).append(secs)
            if after is not None:
                after.unlink(missing_ok=True)
        print(f"  {name} rep {r}: ours {ours[-1]:.2f} s, ffmpeg {base[-1]:.2f} s", flush=True)
    return statistics.median(ours), statistics.median(base)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--transcode-seconds", type=int, default=20)
    ap.add_argument("--frames-seconds", type=int, default=30)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "RESULTS-media.md"))
    args = ap.parse_args()
    ffmpeg = ffmpeg_exe()
    work = REPO / "benchmarks" / "work" / "media"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    rec = work / "rec.mp4"
    print(f"making a {args.seconds} s 1080p recording", flush=True)
    make_recording(ffmpeg, rec, args.seconds)
    ours_cmd = [sys.executable, __file__, "--child", str(rec)]
    base_cmd = [
        ffmpeg,
        "-v",
        "error",
        "-i",
        str(rec),
        "-map",
        "0",
        "-c",
        "copy",
        "-f",
        "framehash",
        "-hash",
        "sha256",
        "-",
    ]
    # The Python start-up (and PyAV import) is part of ours, as it is for a job.
    py_start = [sys.executable, "-c", "import av, ingest.fingerprint"]
    ours, base, start = [], [], []
    rss = 0.0
    for r in range(args.reps):
        pair = [("ours", ours_cmd), ("base", base_cmd)]
        for name, cmd in pair if r % 2 == 0 else pair[::-1]:
            secs, mib = timed(cmd)
            (ours if name == "ours" else base).append(secs)
            if name == "ours":
                rss = max(rss, mib)
        start.append(timed(py_start)[0])
    mo, mb, ms = statistics.median(ours), statistics.median(base), statistics.median(start)
    out = work / "copy.mp4"
    remux = interleave(
        "remux",
        [sys.executable, __file__, "--derive", str(rec), str(out), "remux"],
        raw_command(rec, out, "remux"),
        args.reps,
        out,
    )
    hevc = work / "hevc.mp4"
    subprocess.run(
        [
            ffmpeg,
            "-v",
            "error",
            "-y",
            "-i",
            str(rec),
            "-t",
            str(args.transcode_seconds),
            "-c:v",
            "libx265",
            "-preset",
            "ultrafast",
            "-x265-params",
            "log-level=error",
            "-c:a",
            "copy",
            str(hevc),
        ],
        check=True,
    )
    trans = interleave(
        "transcode",
        [sys.executable, __file__, "--derive", str(hevc), str(out), "transcode"],
        raw_command(hevc, out, "transcode"),
        max(3, args.reps // 2),
        out,
    )
    # Decoded-frame hashes of the first --frames-seconds of the recording.
    part = work / "part.mp4"
    subprocess.run(
        [
            ffmpeg,
            "-v",
            "error",
            "-y",
            "-i",
            str(rec),
            "-t",
            str(args.frames_seconds),
            "-c",
            "copy",
            str(part),
        ],
        check=True,
    )
    from ingest.frames import frames_command

    fout = work / "frames.txt"
    fr = interleave(
        "frames",
        [sys.executable, __file__, "--frames", str(part), str(fout), "no"],
        frames_command(ffmpeg, part, fout),
        max(3, args.reps // 2),
        fout,
    )
    sig = interleave(
        "frames+signature",
        [sys.executable, __file__, "--frames", str(part), str(fout), "yes"],
        frames_command(ffmpeg, part, fout),
        max(3, args.reps // 2),
        fout,
    )
    sums = []
    for _ in range(args.reps):
        subprocess.run(raw_command(rec, out, "remux"), check=True)
        sums.append(timed(["sha256sum", str(out)])[0])
        out.unlink()
    sha_s = statistics.median(sums)
    fs = args.frames_seconds
    ts = args.transcode_seconds
    size_mb = rec.stat().st_size / 1e6
    shift_h = 20 * 8 * 3600 / (args.seconds / mo) / 3600
    lines = [
        "# Media work (benchmarks/media_bench.py)",
        "",
        f"{platform.node()} · {os.cpu_count()} cores · Python {platform.python_version()} · "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} · ffmpeg {ffmpeg}",
        "",
        f"One {args.seconds} s 1080p30 H.264 + AAC recording ({size_mb:.0f} MB, keyframe "
        f"every second), {args.reps} interleaved runs each in a fresh process, medians.",
        "",
        "| workload | ours | bare ffmpeg | overhead | realtime factor (ours) |",
        "|---|---|---|---|---|",
        f"| packet-hash fingerprint | {mo:.2f} s | {mb:.2f} s (`-c copy -f framehash "
        f"-hash sha256`) | {100 * (mo / mb - 1):+.0f}% | {args.seconds / mo:.0f}x |",
        f"| same, without Python start-up ({ms:.2f} s) | {mo - ms:.2f} s | {mb:.2f} s | "
        f"{100 * ((mo - ms) / mb - 1):+.0f}% | {args.seconds / (mo - ms):.0f}x |",
        f"| access copy by remux (H.264 kept, AAC kept) | {remux[0]:.2f} s | {remux[1]:.2f} s "
        f"(same arguments) | {100 * (remux[0] / remux[1] - 1):+.0f}% | "
        f"{args.seconds / remux[0]:.0f}x |",
        f"| same remux against ffmpeg + `sha256sum` of its output ({remux[1] + sha_s:.2f} s) | "
        f"{remux[0]:.2f} s | {remux[1] + sha_s:.2f} s | "
        f"{100 * (remux[0] / (remux[1] + sha_s) - 1):+.0f}% | {args.seconds / remux[0]:.0f}x |",
        f"| decoded-frame hashes ({fs} s of the recording) | {fr[0]:.2f} s | {fr[1]:.2f} s "
        f"(`-f framehash -hash sha256 -fps_mode passthrough`) | "
        f"{100 * (fr[0] / fr[1] - 1):+.0f}% | {fs / fr[0]:.1f}x |",
        f"| same with the MPEG-7 signature in the pass | {sig[0]:.2f} s | {sig[1]:.2f} s "
        f"(frame hashes alone) | {100 * (sig[0] / sig[1] - 1):+.0f}% | {fs / sig[0]:.1f}x |",
        f"| access copy by transcode ({ts} s of 1080p H.265 -> H.264, veryfast) | "
        f"{trans[0]:.2f} s | {trans[1]:.2f} s (same arguments) | "
        f"{100 * (trans[0] / trans[1] - 1):+.0f}% | {ts / trans[0]:.2f}x |",
        "",
        "Ours = a fresh Python process doing what the derive job does (plan from the recorded "
        f"probe summary, run ffmpeg with nice 10 and limits, SHA-256 of the result; about "
        f"{ms:.2f} s of it is Python start-up, which the daemon does not pay); ffmpeg = the "
        "bare command with the same arguments. The remux job hashes its output (the copy is "
        "stored by its SHA-256), which the bare command does not: the row against ffmpeg + "
        "`sha256sum` compares like with like.",
        "",
        f"Peak RSS of ours: {rss:.0f} MiB. A shift of 20 recorders with 8 hours each "
        f"(160 hours of footage) takes about {shift_h:.1f} hours of one worker to fingerprint, "
        f"about {160 / (args.seconds / remux[0]):.1f} hours to remux, and about "
        f"{160 / (ts / trans[0]):.0f} hours to transcode on this machine: transcodes wait for "
        "a request by default.",
        "",
        "Raw seconds: `" + json.dumps({"ours": ours, "ffmpeg": base, "python_start": start}) + "`",
        "",
    ]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(sys.argv[2])
    elif len(sys.argv) > 4 and sys.argv[1] == "--frames":
        frames_child(sys.argv[2], sys.argv[3], sys.argv[4])
    elif len(sys.argv) > 4 and sys.argv[1] == "--derive":
        derive_child(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        main()
