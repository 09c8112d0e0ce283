"""Crash campaign for retention sweeps: SIGKILL a sweeping process at random moments
while it evicts, tiers and deletes, then check what must always hold.

After every kill: nothing held or case-linked is gone from the cold store; no original
has two `delete` entries; everything a `delete` entry names is gone; a dock copy is
gone only with an `evict_local` or `delete` entry, or while its deletion is under way
(cold copy gone too). After a clean final run: every ordinary unheld original has
exactly one `delete` entry and is gone from both stores, the rest are kept, and the
ledger verifies.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from ..conftest import REPO, run_cli
from ..integration.daemon import entries, make_station

KILLS = int(os.environ.get("CUSTODY_RETENTION_KILLS", "12"))

POLICY = """
[[rules]]
name = "case"
match = { case = true }
keep = "permanent"
local_days = 10
[[rules]]
name = "ordinary"
keep_days = 180
local_days = 10
tiers = [{ after_days = 30, class = "COLD" }]
"""


def child(conf: Path, t0: float, end_day: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.fault.retention_child", str(conf), str(t0), str(end_day)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        cwd=REPO,
    )


def where(root: Path, sha: str) -> Path:
    return root / "objects" / "sha256" / sha[:2] / sha[2:4] / sha


@pytest.mark.slow
def test_sigkill_while_sweeping(tmp_path: Path) -> None:
    rng = random.Random(int(os.environ.get("CUSTODY_CRASH_SEED", "2024")))
    dock = tmp_path / "dock"
    cold = tmp_path / "cold"
    conf = make_station(
        tmp_path, dock, extra=f'\n[store]\nkind = "local"\npath = "{cold}"\nretain_days = 1\n'
    )
    slot = dock / "slot01"
    slot.mkdir(parents=True)
    shas: list[str] = []
    for i in range(150):
        data = rng.randbytes(rng.randrange(1000, 100_000))
        (slot / f"file{i:03d}.bin").write_bytes(data)
        shas.append(hashlib.sha256(data).hexdigest())
    run_cli("ingest", str(dock), "--settle-ms", "0", config=conf)
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    run_cli("retention", "apply", "--policy", str(policy), config=conf)
    kept = set(shas[:6])
    for s in shas[:3]:
        run_cli("hold", s, "--reason", "campaign", config=conf)
    for s in shas[3:6]:
        run_cli("annotate", s, "--case", "K-1", config=conf)
    local = conf.parent / "store"
    t0 = time.time()

    def check(final: bool) -> None:
        es = entries(conf)
        deletes = Counter(e["sha256"] for e in es if e["type"] == "delete")
        evicted = {e["sha256"] for e in es if e["type"] == "tier" and e["action"] == "evict_local"}
        assert not [s for s, n in deletes.items() if n > 1], "an original deleted twice"
        for s in shas:
            in_cold, in_dock = where(cold, s).exists(), where(local, s).exists()
            if s in kept:
                assert in_cold, f"{s[:16]} is held or case-linked but gone from the cold store"
                assert s not in deletes
            if s in deletes:
                assert not in_cold and not in_dock, f"{s[:16]} has a delete entry but remains"
            if not in_dock:
                assert s in evicted or s in deletes or not in_cold, (
                    f"{s[:16]} gone from the dock with no entry"
                )
            if final and s not in kept:
                assert deletes[s] == 1 and not in_cold and not in_dock

    landed = 0
    for _ in range(KILLS):
        p = child(conf, t0, 400)
        time.sleep(rng.uniform(0.3, 1.0))
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            landed += 1
        p.wait(30)
        if p.returncode not in (0, -signal.SIGKILL):
            raise AssertionError(p.stderr.read().decode() if p.stderr else p.returncode)
        check(final=False)
    p = child(conf, t0, 400)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err.decode()
    check(final=True)
    assert landed >= KILLS // 2, f"only {landed} kills landed while sweeping"
    v = run_cli("ledger", "verify", config=conf)
    assert "OK" in v.stdout or v.returncode == 0
    # Every delete entry names its rule; none came before its due date.
    for e in entries(conf):
        if e["type"] == "delete":
            assert e["rule"] == "ordinary" and e["keep_days"] == 180
