"""The unit files in systemd/: they verify, the service's exposure is OK (<= 1.5), and
the sysusers and tmpfiles snippets make the user and folders the service expects."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from ..conftest import REPO, needs_root

UNITS = REPO / "systemd"


def installed_copy(tmp: Path, name: str = "custody.service") -> Path:
    """A unit as installed, its ExecStart pointing at this checkout's custody."""
    custody = Path(sys.executable).parent / "custody"
    assert custody.exists(), "pip install -e . makes the custody command"
    text = (UNITS / name).read_text()
    assert "ExecStart=/opt/custody/venv/bin/custody " in text
    unit = tmp / name
    unit.write_text(text.replace("/opt/custody/venv/bin/custody", str(custody)))
    return unit


def exposure(unit: Path) -> re.Match[str]:
    """`systemd-analyze security --offline`'s overall line: (level, verdict) groups."""
    p = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(unit)],
        capture_output=True,
        text=True,
        cwd=unit.parent,
    )
    m = re.search(rf"Overall exposure level for {re.escape(unit.name)}: ([0-9.]+) (\w+)", p.stdout)
    assert m, p.stdout + p.stderr
    return m


def test_units_verify(tmp_path: Path) -> None:
    unit = installed_copy(tmp_path)
    shutil.copy(UNITS / "srv-dock-slot01.mount", tmp_path)
    for name in (unit.name, "srv-dock-slot01.mount"):
        p = subprocess.run(
            ["systemd-analyze", "verify", str(tmp_path / name)],
            capture_output=True,
            text=True,
            cwd=tmp_path,
        )
        assert p.returncode == 0, p.stdout + p.stderr
        assert name not in p.stderr, p.stderr


def test_service_exposure_is_ok(tmp_path: Path) -> None:
    unit = installed_copy(tmp_path)
    m = exposure(unit)
    assert float(m.group(1)) <= 1.5 and m.group(2) == "OK", m.group(0)
    text = unit.read_text()
    for must in (
        "Type=notify",
        "WatchdogSec=",
        "User=custody",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/custody /srv/dock",
        # The one capability: leases tell release whether a writer holds a file.
        "CapabilityBoundingSet=CAP_LEASE\n",
        "AmbientCapabilities=CAP_LEASE\n",
        "SystemCallFilter=@system-service",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ):
        assert must in text, must


def test_sysusers_and_tmpfiles_make_the_user_and_folders(tmp_path: Path) -> None:
    needs_root("systemd-tmpfiles gives the folders to the custody user")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    subprocess.run(
        ["systemd-sysusers", f"--root={root}", str(UNITS / "custody.sysusers")],
        check=True,
        capture_output=True,
    )
    passwd = (root / "etc" / "passwd").read_text()
    assert re.search(r"^custody:x:\d+:\d+:.*:/var/lib/custody:/usr/sbin/nologin$", passwd, re.M)
    subprocess.run(
        ["systemd-tmpfiles", f"--root={root}", "--create", str(UNITS / "custody.tmpfiles")],
        check=True,
        capture_output=True,
    )
    for d in ("var/lib/custody", "srv/dock", "etc/custody"):
        assert (root / d).is_dir() and oct((root / d).stat().st_mode & 0o777) == "0o750", d
    rules = (UNITS / "70-custody-dock.rules").read_text()
    assert "systemd-mount" in rules and "/srv/dock/" in rules and "noexec" in rules
