"""Shared fixtures: the Merkle test vectors and a fresh station."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
# Merkle-tree vectors made by an independent implementation, kept as they came.
VECTORS = REPO / "tests" / "vectors" / "data"


@pytest.fixture(scope="session")
def vectors() -> dict[str, Any]:
    path = VECTORS / "tlog-vectors.json"
    data: dict[str, Any] = json.loads(path.read_text())
    return data


@pytest.fixture(scope="session", autouse=True)
def bytecode_cache() -> None:
    """Let the subprocesses (the CLI, the daemon, the hub) cache compiled modules.

    With PYTHONDONTWRITEBYTECODE set (some machines set it for every process) each run
    of the CLI compiled every module of ours it imports from source: 0.1 to 0.2 s of CPU
    a run, and the suite runs it thousands of times. Python checks each cached module
    against its source file (the caches are ignored by git), so a test always runs the
    code as it is."""
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)


def needs_root(why: str) -> None:
    """Skip, saying so in one line, when not root (CI runs as root: nothing is skipped)."""
    if os.geteuid() != 0:
        pytest.skip(f"needs root: {why}")


def run_cli(
    *args: str,
    config: Path | None = None,
    check: bool = True,
    input: str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the real `custody` command in a subprocess (``env`` adds to the environment)."""
    cmd = [sys.executable, "-m", "custody"]
    if config is not None:
        cmd += ["-c", str(config)]
    cmd += list(args)
    env = dict(os.environ, **(env or {}))
    env.pop("CUSTODY_CONFIG", None)
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, input=input, timeout=120)
    if check and p.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}"
        )
    return p


@pytest.fixture
def station(tmp_path: Path) -> Path:
    """A freshly initialised station; returns its config path."""
    run_cli("init", "--data", str(tmp_path / "station"), "--origin", "custody.test/unit/dock-01")
    return tmp_path / "station" / "custody.toml"


@pytest.fixture(scope="session")
def ffmpeg() -> str:
    """The ffmpeg binary: the system's, else the one in the imageio-ffmpeg wheel."""
    import shutil

    exe = shutil.which("ffmpeg")
    if exe:
        return exe
    import imageio_ffmpeg

    return str(imageio_ffmpeg.get_ffmpeg_exe())


def make_clip(
    ffmpeg: str, out: Path, seconds: int = 2, tone: int = 440, size: str = "320x240"
) -> Path:
    """A short H.264 + AAC MP4 from ffmpeg's lavfi test sources."""
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            ffmpeg,
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"testsrc=size={size}:rate=25:duration={seconds}",
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency={tone}:duration={seconds}",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-c:a",
            "aac",
            "-shortest",
            str(out),
        ],
        check=True,
        timeout=120,
    )
    return out


@pytest.fixture(scope="session")
def clip(ffmpeg: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(ffmpeg, tmp_path_factory.mktemp("media") / "clip.mp4")


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One SeaweedFS S3 server for the session (tests make their own buckets)."""
    from tests.s3server import SeaweedFS

    server = SeaweedFS(tmp_path_factory.mktemp("seaweedfs")).start()
    yield server
    server.kill()  # nothing reads its folder after the session
