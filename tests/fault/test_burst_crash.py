"""Crash campaign for a burst of small files: SIGKILL the daemon while it captures them
in groups.

A thousand files of a few KiB on several recorders (some contents twice, on one
recorder or on two) are captured by the real daemon (`custody run`), which is
killed at random moments at least 30 times: during start-up and recovery, while a
group's copies are written, fsynced and moved into the store, while its entries are
signed and committed, and while sources are released. After every kill, each source
gone from its recorder must have its entry and a sound stored copy. One clean run
then finishes the work, and every file must be in the ledger exactly once (one
ingest per content, a sighting naming it for every further copy), every object in
the store with the right hash, the job table in line with the ledger, and `custody
ledger verify` must pass.
"""

from __future__ import annotations

import hashlib
import os
import random
import sqlite3
import time
from collections import Counter
from pathlib import Path

import pytest

from ..conftest import run_cli
from ..integration.daemon import Daemon, entries, make_station, wait_for

KILLS = int(os.environ.get("CUSTODY_BURST_KILLS", "30"))
FILES = 1000
RECORDERS = 5


def busy(tmp: Path) -> bool:
    """Copies of a group are being made (temp files in the store)."""
    try:
        return any(True for _ in tmp.iterdir())
    except OSError:
        return False


@pytest.mark.slow
def test_sigkill_during_a_burst_of_small_files(tmp_path: Path) -> None:
    rng = random.Random(int(os.environ.get("CUSTODY_CRASH_SEED", "1818")))
    dock = tmp_path / "dock"
    conf = make_station(tmp_path, dock, settle_ms=100, release="after_capture")
    data_dir = conf.parent
    tmp = data_dir / "store" / "tmp"
    store = data_dir / "store" / "objects" / "sha256"
    expected: dict[str, str] = {}
    contents: list[bytes] = []

    def dock_files(n: int) -> None:
        for _ in range(n):
            k = len(expected)
            rel = f"slot{rng.randint(1, RECORDERS):02d}/DCIM/IMG_{k:04d}.JPG"
            if contents and rng.random() < 0.04:
                data = rng.choice(contents)  # a copy: on this recorder or another
            else:
                data = rng.randbytes(rng.randint(1, 8) * 1024 + rng.randint(0, 1023))
                contents.append(data)
            p = dock / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
            expected[rel] = hashlib.sha256(data).hexdigest()

    # Most of the burst is there before the first start; the rest arrives between kills.
    dock_files(600)
    per_round = -(-(FILES - 600) // (KILLS - 1))
    in_work = mid_group = 0
    for k in range(KILLS):
        if k:
            dock_files(min(per_round, FILES - len(expected)))
        d = Daemon(conf)
        r = rng.random()
        if r < 0.15:
            time.sleep(rng.uniform(0.2, 1.2))  # start-up, recovery, or the first groups
        else:
            end = time.monotonic() + 20
            while (
                time.monotonic() < end
                and b"custody running" not in d.log.read_bytes()[d.log_start :]
            ):
                time.sleep(0.005)
            if r < 0.55:
                # Aim inside a group: wait for its copies to appear, then kill while they
                # are made, fsynced and verified, or moved into the store and the
                # group's entries signed and committed.
                end = time.monotonic() + 2
                while time.monotonic() < end and not busy(tmp):
                    time.sleep(0.0005)
                time.sleep(rng.uniform(0, 0.01) if r < 0.35 else rng.uniform(0.01, 0.25))
            else:
                time.sleep(rng.uniform(0, 1.2))
        inside = busy(tmp)
        d.kill()
        mid_group += inside
        in_work += inside or b"captured" in d.log.read_bytes()[d.log_start :]
        # Nothing is released from a recorder before it is safe: a source that is gone
        # has its entry, and its stored copy is sound.
        recorded = {
            e["source"]["path"]: e["sha256"]
            for e in entries(conf)
            if e["type"] in ("ingest", "sighting")
        }
        for rel, digest in expected.items():
            if not (dock / rel).exists():
                assert recorded.get(rel) == digest, f"{rel} released without its entry"
                obj = store / digest[:2] / digest[2:4] / digest
                assert hashlib.sha256(obj.read_bytes()).hexdigest() == digest
    assert len(expected) == FILES
    print(f"{in_work} of {KILLS} kills after capture began, {mid_group} inside a group")
    assert in_work >= KILLS // 2, f"only {in_work} kills landed while capturing"
    assert mid_group >= KILLS // 10, f"only {mid_group} kills landed inside a group"

    d = Daemon(conf)
    try:
        wait_for(lambda: not any(p.is_file() for p in dock.rglob("*")), 90, d.log)
    finally:
        assert d.stop() == 0

    es = entries(conf)
    captured = [(i, e) for i, e in enumerate(es) if e["type"] in ("ingest", "sighting")]
    per_file = Counter(e["source"]["path"] for _, e in captured)
    assert {k: v for k, v in per_file.items() if v != 1} == {}, "files recorded twice"
    assert set(per_file) == set(expected)
    for _, e in captured:
        assert e["sha256"] == expected[e["source"]["path"]]
    ingest = {e["sha256"]: i for i, e in captured if e["type"] == "ingest"}
    assert Counter(e["sha256"] for _, e in captured if e["type"] == "ingest") == Counter(
        set(expected.values())
    ), "each content must have exactly one ingest entry"
    for i, e in captured:
        if e["type"] == "sighting":
            assert e["first_entry"] == ingest[e["sha256"]] < i
    # Captured in groups: the entries of a group are signed together (one time).
    together = Counter((e["time"], e["source"]["recorder"]) for _, e in captured)
    assert max(together.values()) >= 10, "no group of a recorder's files was recorded"
    wipes = Counter(e["source"]["path"] for e in es if e["type"] == "wipe")
    assert wipes == Counter(list(expected)), "each source released exactly once"

    # The store: every content once, byte-identical, nothing half-made left.
    objects = sorted(p.name for p in store.rglob("*") if p.is_file())
    assert objects == sorted(set(expected.values()))
    for p in store.rglob("*"):
        if p.is_file():
            assert hashlib.sha256(p.read_bytes()).hexdigest() == p.name
    assert not list(tmp.iterdir()), "half-made copies left behind"

    # The job table agrees with the ledger: one released job per file, naming its entry.
    db = sqlite3.connect(data_dir / "state" / "ledger.sqlite")
    try:
        jobs = db.execute("SELECT path, state, sha256, entry, kind FROM ingest_files").fetchall()
        objs = dict(db.execute("SELECT sha256, first_entry FROM ingest_objects").fetchall())
    finally:
        db.close()
    done = [j for j in jobs if j[1] not in ("gone", "superseded")]
    assert len(done) == FILES and {j[1] for j in done} == {"released"}
    for path, _, digest, entry, kind in done:
        rel = os.fsdecode(path)[len(str(dock)) + 1 :]
        assert digest == expected[rel]
        assert es[entry]["type"] == kind and es[entry]["source"]["path"] == rel
    assert objs == ingest
    assert "OK" in run_cli("ledger", "verify", config=conf).stdout
