"""The county hub's unit: it verifies, it is as hardened as the station's (exposure OK,
no capability), its command line is one `custody hub` accepts, readiness and stopping
reach systemd's notify socket, and its sysusers and tmpfiles snippets make the user and
the folder it expects."""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
from pathlib import Path

from custody.cli import build_parser

from ..conftest import REPO, run_cli
from .test_systemd import exposure, installed_copy
from .test_systemd_witness import assert_user_and_folder, directives
from .test_witness_server import free_port

UNITS = REPO / "systemd"
UNIT = "custody-hub.service"


def test_hub_unit_verifies(tmp_path: Path) -> None:
    unit = installed_copy(tmp_path, UNIT)
    p = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, cwd=tmp_path
    )
    assert p.returncode == 0, p.stdout + p.stderr
    assert UNIT not in p.stderr, p.stderr


def test_hub_unit_is_as_hardened_as_the_station(tmp_path: Path) -> None:
    m = exposure(installed_copy(tmp_path, UNIT))
    assert float(m.group(1)) <= 1.5 and m.group(2) == "OK", m.group(0)
    hub = directives((UNITS / UNIT).read_text())
    station = directives((UNITS / "custody.service").read_text())
    own = {
        "Description", "Documentation", "ExecStart", "ExecReload", "User", "Group",
        "StateDirectory", "StateDirectoryMode", "ConfigurationDirectory",
        "ConfigurationDirectoryMode", "ReadWritePaths", "CapabilityBoundingSet",
        "AmbientCapabilities", "TimeoutStartSec", "TimeoutStopSec", "WatchdogSec",
    }  # fmt: skip
    for key, values in station.items():
        if key not in own:
            assert hub.get(key) == values, (key, hub.get(key), values)
    assert hub["CapabilityBoundingSet"] == [""] and hub["AmbientCapabilities"] == [""]
    assert hub["User"] == ["custody-hub"] and hub["ReadWritePaths"] == ["/var/lib/custody-hub"]


def test_the_units_command_line_is_one_the_hub_accepts() -> None:
    (exec_start,) = directives((UNITS / UNIT).read_text())["ExecStart"]
    argv = shlex.split(exec_start)
    assert argv[0] == "/opt/custody/venv/bin/custody"
    args = build_parser().parse_args(argv[1:])
    assert args.hub_command == "run" and args.hub_config == "/etc/custody/hub.toml"


def test_run_tells_systemd_when_ready_and_when_stopping(tmp_path: Path) -> None:
    run_cli("hub", "init", "--data", str(tmp_path / "hub"), "--name", "witness.test/hub")
    conf = tmp_path / "hub" / "hub.toml"
    port = free_port()
    conf.write_text(
        conf.read_text().replace('listen = "127.0.0.1:8710"', f'listen = "127.0.0.1:{port}"')
    )
    notify_path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(notify_path))
        notify.settimeout(60)
        proc = subprocess.Popen(
            [sys.executable, "-m", "custody", "hub", "-c", str(conf), "run"],
            env={**os.environ, "NOTIFY_SOCKET": str(notify_path)},
            stderr=subprocess.DEVNULL,
        )
        try:
            first = notify.recv(4096)
            assert first.startswith(b"READY=1\n"), first
            while b"stations ok" not in notify.recv(4096):  # the first sync's status line
                pass
            socket.create_connection(("127.0.0.1", port), timeout=10).close()
            proc.send_signal(signal.SIGTERM)
            while not (msg := notify.recv(4096)).startswith(b"STOPPING=1"):
                assert msg.startswith(b"STATUS="), msg
            assert proc.wait(timeout=60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_hub_sysusers_and_tmpfiles_make_the_user_and_folder(tmp_path: Path) -> None:
    assert_user_and_folder(tmp_path, "custody-hub")
