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


def test_a_write_that_fills_the_disk_leaves_no_temporary(tmp_path: Path) -> None:
    import errno
    import os

    from ledger.durable import write_atomic, write_many_atomic

    if os.geteuid() != 0:
        pytest.skip("needs root: mounts a 1 MiB tmpfs to fill")
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], check=True)
    try:
        (mnt / "kept").write_bytes(b"old")
        with pytest.raises(OSError) as e:
            write_atomic(mnt / "kept", b"x" * (2 << 20))
        assert e.value.errno == errno.ENOSPC
        with pytest.raises(OSError):
            write_many_atomic(
                {mnt / "a": (b"y" * 1000, 0o644), mnt / "b": (b"z" * (2 << 20), 0o644)}, mnt
            )
        assert sorted(p.name for p in mnt.iterdir()) == ["kept"]
        assert (mnt / "kept").read_bytes() == b"old"
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
