"""The review site's unit: it verifies, it is as hardened as the station's unit without
any capability, it runs as the station's user on the station's folder, and its command
line is one `custody` accepts."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

from custody.cli import build_parser

from ..conftest import REPO
from .test_systemd import exposure, installed_copy
from .test_systemd_witness import directives

UNITS = REPO / "systemd"
UNIT = "custody-web.service"


def test_web_unit_verifies(tmp_path: Path) -> None:
    unit = installed_copy(tmp_path, UNIT)
    p = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, cwd=tmp_path
    )
    assert p.returncode == 0, p.stdout + p.stderr
    assert UNIT not in p.stderr, p.stderr


def test_web_unit_is_as_hardened_as_the_station_without_capabilities(tmp_path: Path) -> None:
    m = exposure(installed_copy(tmp_path, UNIT))
    assert float(m.group(1)) <= 1.5 and m.group(2) == "OK", m.group(0)
    web = directives((UNITS / UNIT).read_text())
    station = directives((UNITS / "custody.service").read_text())
    own = {
        "Description", "Documentation", "ExecStart", "ExecReload", "Type", "NotifyAccess",
        "ReadWritePaths", "CapabilityBoundingSet", "AmbientCapabilities", "TimeoutStartSec",
        "TimeoutStopSec", "WatchdogSec", "After",
    }  # fmt: skip
    for key, values in station.items():
        if key not in own:
            assert web.get(key) == values, (key, web.get(key), values)
    assert web["CapabilityBoundingSet"] == [""] and web["AmbientCapabilities"] == [""]
    assert web["User"] == ["custody"] and web["ReadWritePaths"] == ["/var/lib/custody"]


def test_the_units_command_line_is_one_custody_accepts() -> None:
    (exec_start,) = directives((UNITS / UNIT).read_text())["ExecStart"]
    argv = shlex.split(exec_start)
    assert argv[0] == "/opt/custody/venv/bin/custody"
    args = build_parser().parse_args(argv[1:])
    assert args.command == "web" and args.config == "/etc/custody/custody.toml"
    assert args.listen is None  # [web] listen decides: loopback by default
