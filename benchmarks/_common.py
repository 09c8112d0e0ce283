"""What several benchmarks share: percentiles and the description of the machine
that every RESULTS file starts with."""

from __future__ import annotations

import contextlib
import math
import os
import platform
import shlex
import subprocess
from collections.abc import Sequence
from pathlib import Path


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    k = max(0, math.ceil(p / 100 * len(sorted_values)) - 1)
    return sorted_values[k]


def shell(cmd: list[str]) -> str:
    """A command's output, or a note saying it failed (for the machine description)."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.rstrip()
    except (OSError, subprocess.CalledProcessError) as e:
        return f"({shlex.join(cmd)} failed: {e})"


def load_average() -> str:
    """1/5/15-minute load averages: other work on the machine skews every figure."""
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"
