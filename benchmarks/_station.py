"""A fresh station for the benchmarks that drive a real one (audit, retention, soak)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(REPO))


def fresh_station(name: str) -> tuple[Path, Path]:
    """An empty work folder benchmarks/work/NAME with `custody init` run in NAME/st;
    returns the work folder and the station's config."""
    work = REPO / "benchmarks" / "work" / name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "custody",
            "init",
            "--data",
            str(work / "st"),
            "--origin",
            f"bench.example/{name}",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        env=ENV,
    )
    return work, work / "st" / "custody.toml"
