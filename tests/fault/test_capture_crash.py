"""Crash campaign for capture: SIGKILL the daemon at random moments while it copies.

Each round docks a few new files (one of them large enough to be mid-copy
often) and kills the daemon after a random delay: during start-up recovery,
during copies, while entries are appended, during integration. Afterwards,
one clean run finishes the work. Then every file must be captured exactly
once, byte-identical, with exactly one ingest entry, no copy left half-made,
and `custody ledger verify` must pass.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import time
from collections import Counter
from pathlib import Path

import pytest

from ..conftest import run_cli
from ..integration.daemon import Daemon, entries, make_station, wait_for

KILLS = int(os.environ.get("CUSTODY_CAPTURE_KILLS", "30"))


def copying(tmp: Path, at_least: int = 1 << 20) -> bool:
    """A capture copy is in progress (a temp file of at least ``at_least`` bytes)."""
    try:
        return any(p.stat().st_size >= at_least for p in tmp.iterdir())
    except OSError:  # the folder does not exist yet, or a temp file just moved away
        return False


@pytest.mark.slow
def test_sigkill_while_capturing(tmp_path: Path, clip: Path) -> None:
    rng = random.Random(int(os.environ.get("CUSTODY_CRASH_SEED", "4711")))
    dock = tmp_path / "dock"
    conf = make_station(tmp_path, dock, settle_ms=200)
    expected: dict[str, str] = {}
    n = 0

    def dock_file(size: int) -> None:
        nonlocal n
        slot = f"slot{rng.randint(1, 6):02d}"
        rel = f"{slot}/DCIM/REC_{n:04d}.bin"
        n += 1
        p = dock / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        data = rng.randbytes(size)
        p.write_bytes(data)
        expected[rel] = hashlib.sha256(data).hexdigest()

    (dock / "slot01").mkdir(parents=True)
    shutil.copy(clip, dock / "slot01" / "clip.mp4")
    expected["slot01/clip.mp4"] = hashlib.sha256(clip.read_bytes()).hexdigest()
    killed_with_work = 0
    mid_copy = 0
    tmp = conf.parent / "store" / "tmp"
    for _ in range(KILLS):
        for _ in range(rng.randint(2, 5)):
            dock_file(rng.choice([0, 1000, 200_000, 1_500_000]))
        dock_file(rng.choice([8, 24, 40]) << 20)
        d = Daemon(conf)
        r = rng.random()
        if r < 0.2:
            time.sleep(rng.uniform(0.3, 2.5))  # anywhere: start-up, copies, appends
        elif r < 0.4:
            # Anywhere once capture runs: how long start-up takes depends on the load on
            # the machine, and kills must land in work, not only in start-up.
            end = time.monotonic() + 20
            while (
                time.monotonic() < end
                and b"custody running" not in d.log.read_bytes()[d.log_start :]
            ):
                time.sleep(0.01)
            time.sleep(rng.uniform(0, 1.5))
        else:
            # Aim for the middle of a copy: wait until a temp copy has grown past 1 MB
            # (the large file of this round is being written), then kill.
            end = time.monotonic() + 5
            while time.monotonic() < end and not copying(tmp):
                time.sleep(0.001)
            time.sleep(rng.uniform(0, 0.005))
        mid_copy += copying(tmp, 0)
        log = d.log.read_bytes()[d.log_start :]
        d.kill()
        if b"custody running" in log:
            killed_with_work += 1
    assert killed_with_work >= KILLS // 2
    assert mid_copy >= KILLS // 5, f"only {mid_copy} kills landed during a copy"
    print(f"{mid_copy} of {KILLS} kills landed during a copy")

    d = Daemon(conf)
    try:

        def all_captured() -> bool:
            got = Counter(
                e["source"]["path"] for e in entries(conf) if e["type"] in ("ingest", "sighting")
            )
            return all(got[k] >= 1 for k in expected)

        wait_for(all_captured, 180, d.log)
        time.sleep(2.5)  # longer than the scan interval: a duplicate would show up now
    finally:
        assert d.stop() == 0

    es = entries(conf)
    per_file = Counter(e["source"]["path"] for e in es if e["type"] in ("ingest", "sighting"))
    dupes = {k: v for k, v in per_file.items() if v != 1}
    assert not dupes, f"files recorded more than once: {dupes}"
    assert set(per_file) == set(expected)
    shas = Counter(expected.values())
    ingest = Counter(e["sha256"] for e in es if e["type"] == "ingest")
    assert all(ingest[s] == 1 for s in shas), "each content must have exactly one ingest entry"
    for e in es:
        if e["type"] in ("ingest", "sighting"):
            assert e["sha256"] == expected[e["source"]["path"]]
    objects = [p for p in (conf.parent / "store" / "objects").rglob("*") if p.is_file()]
    made = {e["sidecar"]["sha256"] for e in es if e["type"] == "fingerprint" and "sidecar" in e}
    made |= {e["output"]["sha256"] for e in es if e["type"] == "derive" and "output" in e}
    assert sorted(p.name for p in objects) == sorted(set(shas) | made)
    for p in objects:
        assert hashlib.sha256(p.read_bytes()).hexdigest() == p.name, f"{p} is not byte-identical"
    assert not list((conf.parent / "store" / "tmp").iterdir()), "half-made copies left behind"
    probes = Counter(e["sha256"] for e in es if e["type"] == "probe")
    assert probes == Counter({expected["slot01/clip.mp4"]: 1})
    assert "OK" in run_cli("ledger", "verify", config=conf).stdout


@pytest.mark.slow
def test_sigkill_with_release_never_wipes_an_unsafe_source(tmp_path: Path) -> None:
    """With release after capture on, kill the daemon at random moments; after every
    kill, each source that is gone from the recorder must have its ingest (or sighting)
    entry in the ledger and a stored copy with the right hash."""
    rng = random.Random(int(os.environ.get("CUSTODY_CRASH_SEED", "99")))
    dock = tmp_path / "dock"
    conf = make_station(tmp_path, dock, settle_ms=100, release="after_capture")
    store = conf.parent / "store" / "objects" / "sha256"
    expected: dict[str, str] = {}
    for k in range(max(10, KILLS // 2)):
        for i in range(rng.randint(2, 6)):
            rel = f"slot{rng.randint(1, 4):02d}/R{k:03d}_{i}.bin"
            data = rng.randbytes(rng.choice([0, 5000, 300_000, 3_000_000]))
            (dock / rel).parent.mkdir(parents=True, exist_ok=True)
            (dock / rel).write_bytes(data)
            expected[rel] = hashlib.sha256(data).hexdigest()
        d = Daemon(conf)
        time.sleep(rng.uniform(0.4, 1.6))
        d.kill()
        recorded = {
            e["source"]["path"]: e["sha256"]
            for e in entries(conf)
            if e["type"] in ("ingest", "sighting")
        }
        for rel, digest in expected.items():
            if not (dock / rel).exists():
                assert recorded.get(rel) == digest, f"{rel} wiped without a recorded capture"
                obj = store / digest[:2] / digest[2:4] / digest
                assert hashlib.sha256(obj.read_bytes()).hexdigest() == digest
    d = Daemon(conf)
    try:
        d.wait_ready()
        wait_for(lambda: not any(p.is_file() for p in dock.rglob("*")), 120, d.log)
    finally:
        assert d.stop() == 0
    es = entries(conf)
    wipes = Counter(e["source"]["path"] for e in es if e["type"] == "wipe")
    assert set(wipes) == set(expected) and all(n == 1 for n in wipes.values())
    assert "OK" in run_cli("ledger", "verify", config=conf).stdout
