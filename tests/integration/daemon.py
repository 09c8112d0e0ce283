"""Run `custody run` as a real subprocess and read its ledger."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ledger.entry import decode_entry
from ledger.log import Ledger

from ..conftest import REPO, run_cli

CAPTURE_CONF = """
[capture]
settle_ms = {settle_ms}
scan_interval_s = {scan_s}
max_parallel_recorders = 4
verify_copy = true
release = "{release}"
min_free_mb = {min_free_mb}

[[docks]]
path = "{dock}"
exclude = ["*.partial"]
[[docks.patterns]]
vendor = "gat947"
regex = '^(?P<serial>[A-Z0-9]{{7}})_(?P<officer>[0-9]{{6}})_(?P<start>[0-9]{{14}})'
[docks.recorders.slot01]
unit = "530822000000"
"""


def make_station(tmp: Path, dock: Path, extra: str = "", **opts: Any) -> Path:
    data = tmp / "station"
    run_cli("init", "--data", str(data), "--origin", "custody.test/capture/dock-01")
    conf = data / "custody.toml"
    text = conf.read_text()
    text = text[: text.index("[capture]")]  # replace the generated defaults
    values = {"settle_ms": 300, "scan_s": 2, "release": "never", "min_free_mb": 1, "dock": dock}
    values.update(opts)
    conf.write_text(text + CAPTURE_CONF.format(**values) + extra)
    dock.mkdir(parents=True, exist_ok=True)
    return conf


def _let_others_pass(*paths: Path) -> None:
    """Add search permission for others on every folder above ``paths`` lacking it."""
    for path in paths:
        for d in path.parents:
            st = d.stat()
            if not st.st_mode & stat.S_IXOTH:
                d.chmod(st.st_mode | stat.S_IXOTH)


class Daemon:
    def __init__(
        self,
        conf: Path,
        drop_dac: bool = False,
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
        user: str | None = None,
        log: Path | None = None,
    ) -> None:
        self.conf = conf
        cmd = [sys.executable, "-m", "custody", "-c", str(conf), "run", "--log-level", "INFO"]
        cmd += list(args)
        if user is not None:
            # As the unit's unprivileged user would run it: no capabilities, other users'
            # processes invisible in /proc, file permissions in force. The checkout and the
            # interpreter may sit below folders private to root (a mktemp clone, /root's
            # pyenv): let other users pass through them, as /opt/custody/venv would allow.
            _let_others_pass(REPO, Path(sys.executable).resolve(), Path(sys.prefix))
            cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *cmd]
        elif drop_dac and os.geteuid() == 0:
            # As root, file permissions do not apply; drop that power so an unreadable
            # file is unreadable to the daemon, as it is under its own systemd user.
            caps = "-dac_override,-dac_read_search"
            cmd = ["setpriv", f"--bounding-set={caps}", f"--inh-caps={caps}", *cmd]
        self.log = log or conf.parent / "daemon.log"
        self.logf = open(self.log, "ab")  # noqa: SIM115
        self.log_start = self.logf.tell()  # the log is shared by restarts: read only ours
        env = dict(os.environ, PYTHONPATH=str(REPO), **(env or {}))
        self.proc = subprocess.Popen(cmd, stdout=self.logf, stderr=subprocess.STDOUT, env=env)

    def wait_ready(self, timeout: float = 30) -> None:
        wait_for(
            lambda: b"custody running" in self.log.read_bytes()[self.log_start :], timeout, self.log
        )

    def stop(self, timeout: float = 30) -> int:
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout)
        self.logf.close()
        return rc

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self.logf.close()

    def alive(self) -> bool:
        return self.proc.poll() is None


def wait_for(pred: Callable[[], bool], timeout: float, log: Path | None = None) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    raise AssertionError(f"condition not met in {timeout} s\n{tail}")


def entries(conf: Path) -> list[dict[str, Any]]:
    """Every entry in the station's ledger (integrated or pending), decoded."""
    data = conf.parent
    with Ledger(data / "ledger", data / "state", "custody.test/capture/dock-01", None) as led:
        return [dict(decode_entry(led.entry(i)).fields) for i in range(led.next_index())]


def s3_store_conf(endpoint: str, bucket: str, **opts: Any) -> str:
    """A [store] table for an S3 server in a test (fast retries)."""
    values: dict[str, Any] = {"retry_max_s": 2, "retain_days": 1, "lock_mode": "COMPLIANCE"}
    values.update(opts)
    lines = ["", "[store]", 'kind = "s3"', f'bucket = "{bucket}"', f'endpoint_url = "{endpoint}"']
    for k, v in values.items():
        lines.append(f"{k} = {json.dumps(v)}")
    return "\n".join(lines) + "\n"


def verify_bucket(
    endpoint: str, bucket: str, vkey: Path, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """`custody ledger verify` of the ledger mirrored in a bucket, from the bucket alone."""
    return run_cli(
        "ledger",
        "verify",
        "--s3",
        f"s3://{bucket}",
        "--endpoint-url",
        endpoint,
        "--vkey",
        str(vkey),
        check=check,
    )


def status(conf: Path) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(run_cli("status", "--json", config=conf).stdout)
    return out
