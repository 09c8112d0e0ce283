"""The one lock helper: exclusive between processes, names its holder, freed by death."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ledger.durable import LockBusy, file_lock

HOLD = """
import sys, time
from pathlib import Path
from ledger.durable import file_lock
with file_lock(Path(sys.argv[1]), record_pid=True):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_held_lock_names_its_holder_and_dies_with_it(tmp_path: Path) -> None:
    lock = tmp_path / "state" / "run.lock"
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == "held"
        with pytest.raises(LockBusy) as e, file_lock(lock, wait=False):
            pass
        assert e.value.holder == p.pid and f"PID {p.pid}" in str(e.value)
    finally:
        p.kill()  # SIGKILL: the kernel releases the lock, no stale file blocks a restart
        p.wait()
    with file_lock(lock, wait=False, record_pid=True):
        assert lock.read_text().strip().isdigit()
