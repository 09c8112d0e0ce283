"""The witness's unit beside the station's: it verifies, it is as hardened (exposure OK,
<= 1.5, the station's sandbox and no capability), its command line is one the witness
accepts, readiness and stopping reach systemd's notify socket, and the sysusers and
tmpfiles snippets make the user and the folder it expects."""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
from pathlib import Path

from custody.cli import build_parser

from ..conftest import REPO, needs_root, run_cli
from .test_systemd import exposure, installed_copy
from .test_witness_server import free_port

UNITS = REPO / "systemd"
UNIT = "custody-witness.service"


def directives(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def test_witness_unit_verifies(tmp_path: Path) -> None:
    unit = installed_copy(tmp_path, UNIT)
    p = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, cwd=tmp_path
    )
    assert p.returncode == 0, p.stdout + p.stderr
    assert UNIT not in p.stderr, p.stderr


def test_witness_unit_exposure_is_ok_and_as_hardened_as_the_station(tmp_path: Path) -> None:
    m = exposure(installed_copy(tmp_path, UNIT))
    assert float(m.group(1)) <= 1.5 and m.group(2) == "OK", m.group(0)
    witness = directives((UNITS / UNIT).read_text())
    station = directives((UNITS / "custody.service").read_text())
    # Every sandboxing setting of the station's unit is in the witness's, with the same value,
    # except what is the station's own: its paths, its user and its one capability (leases).
    own = {
        "Description", "Documentation", "ExecStart", "ExecReload", "User", "Group",
        "StateDirectory", "StateDirectoryMode", "ConfigurationDirectory",
        "ConfigurationDirectoryMode", "ReadWritePaths", "CapabilityBoundingSet",
        "AmbientCapabilities", "TimeoutStartSec", "TimeoutStopSec", "WatchdogSec",
    }  # fmt: skip
    for key, values in station.items():
        if key not in own:
            assert witness.get(key) == values, (key, witness.get(key), values)
    assert witness["CapabilityBoundingSet"] == [""] and witness["AmbientCapabilities"] == [""]
    assert witness["User"] == ["custody-witness"]
    assert witness["ReadWritePaths"] == ["/var/lib/custody-witness"]


def test_the_units_command_line_is_one_the_witness_accepts() -> None:
    (exec_start,) = directives((UNITS / UNIT).read_text())["ExecStart"]
    argv = shlex.split(exec_start)
    assert argv[0] == "/opt/custody/venv/bin/custody"
    args = build_parser().parse_args(argv[1:])
    assert args.witness_command == "serve" and args.data == "/var/lib/custody-witness"
    assert args.listen == ("127.0.0.1", 8700) and args.workers == 1  # loopback, one process


def test_serve_tells_systemd_when_ready_and_when_stopping(tmp_path: Path) -> None:
    from ..unit.witness.tlog import MemoryLog

    wdir = tmp_path / "w"
    run_cli("witness", "init", "--data", str(wdir), "--name", "witness.test/w1")
    run_cli("witness", "--data", str(wdir), "add-log", "--vkey", MemoryLog("o.test/x").vkey)
    notify_path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(notify_path))
        notify.settimeout(30)
        port = free_port()
        cmd = [sys.executable, "-m", "custody", "witness", "--data", str(wdir), "serve"]
        proc = subprocess.Popen(
            [*cmd, "--listen", f"127.0.0.1:{port}"],
            env={**os.environ, "NOTIFY_SOCKET": str(notify_path)},
            stderr=subprocess.DEVNULL,
        )
        try:
            assert notify.recv(4096) == b"READY=1"
            # Ready means listening: a connection is accepted at once.
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
            proc.send_signal(signal.SIGTERM)
            assert notify.recv(4096) == b"STOPPING=1"
            assert proc.wait(timeout=20) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_witness_sysusers_and_tmpfiles_make_the_user_and_folder(tmp_path: Path) -> None:
    assert_user_and_folder(tmp_path, "custody-witness")


def assert_user_and_folder(tmp_path: Path, name: str) -> None:
    """``systemd/NAME.sysusers`` and ``NAME.tmpfiles`` applied to a scratch root make the
    user NAME (no login, home /var/lib/NAME) and that folder, 0700."""
    needs_root(f"systemd-tmpfiles gives the folder to the {name} user")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    subprocess.run(
        ["systemd-sysusers", f"--root={root}", str(UNITS / f"{name}.sysusers")],
        check=True,
        capture_output=True,
    )
    passwd = (root / "etc" / "passwd").read_text()
    assert re.search(rf"^{name}:x:\d+:\d+:.*:/var/lib/{name}:/usr/sbin/nologin$", passwd, re.M)
    subprocess.run(
        ["systemd-tmpfiles", f"--root={root}", "--create", str(UNITS / f"{name}.tmpfiles")],
        check=True,
        capture_output=True,
    )
    folder = root / f"var/lib/{name}"
    assert folder.is_dir() and oct(folder.stat().st_mode & 0o777) == "0o700"
