"""Crash campaign: SIGKILL an appending process at random moments, then check the invariants.

After every kill, before anything reopens the ledger:
- no tile or bundle visible under its public name is half-written;
- the published checkpoint verifies and was recorded before it was published.
After reopening (recovery):
- every entry the child saw acknowledged is present at its index;
- the ledger integrates and signs, and (every few kills, and at the end)
  `verify_log` accepts the whole log against every checkpoint ever signed.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ledger.audit import verify_log
from ledger.checkpoint import open_checkpoint
from ledger.entry import decode_entry
from ledger.log import Ledger
from ledger.tiles import ENTRIES, TILE_WIDTH, bundle_for_size, decode_bundle, parse_tile_path
from verify.folder import FolderSource

from ..conftest import REPO
from .appender_child import SIGNER

KILLS = int(os.environ.get("CUSTODY_CRASH_KILLS", "60"))


def check_no_half_written_tiles(ledger_dir: Path, checked: set[tuple[object, ...]]) -> None:
    """``checked``: the files (path, inode, size, mtime) found whole by earlier calls. A
    file any write has touched since then differs in one of those and is read again;
    reading every tile after every kill made the campaign quadratic."""
    for p in (ledger_dir / "tile").rglob("*"):
        if not p.is_file() or p.name.startswith("."):
            continue  # hidden temporaries are never served
        st = p.stat()
        seen = (p, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        if seen in checked:
            continue
        tid = parse_tile_path(str(p.relative_to(ledger_dir)))
        data = p.read_bytes()
        if tid.level == ENTRIES:
            assert len(decode_bundle(data)) == tid.width, p
        else:
            assert len(data) == tid.width * 32, p
        checked.add(seen)


def verify_all(root: Path, led: Ledger) -> None:
    history = [r.note for r in led.checkpoints(-1, 10**9)]
    src = FolderSource(root / "ledger")
    rep = verify_log(src, src.read_checkpoint(), [SIGNER.verifier()], SIGNER.name, history)
    assert rep.ok, rep.lines()
    assert rep.checkpoints_checked == len(history)


@pytest.mark.slow
def test_sigkill_campaign(tmp_path: Path) -> None:
    rng = random.Random(int(os.environ.get("CUSTODY_CRASH_SEED", "20261125")))
    acked: dict[int, str] = {}
    env = dict(os.environ, PYTHONPATH=str(REPO))
    kills_during_work = 0
    whole: set[tuple[object, ...]] = set()
    for run in range(KILLS):
        child = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.fault.appender_child",
                str(tmp_path),
                str(run),
                str(rng.randrange(2**32)),
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        # Kill anywhere: during start-up recovery, appends, integration, or checkpointing.
        time.sleep(rng.choice([0.0, 0.05, 0.15]) + rng.random() * 0.4)
        child.send_signal(signal.SIGKILL)
        out, err = child.communicate(timeout=30)
        assert child.returncode == -signal.SIGKILL, err.decode()
        lines = out.decode().splitlines()
        new = [ln.split() for ln in lines if ln.startswith("ACK ")]
        if new:
            kills_during_work += 1
        for _, idx, digest in new:
            acked[int(idx)] = digest

        ledger_dir = tmp_path / "ledger"
        if ledger_dir.exists():
            check_no_half_written_tiles(ledger_dir, whole)

        with Ledger(ledger_dir, tmp_path / "state", SIGNER.name, SIGNER) as led:
            published = (
                (ledger_dir / "checkpoint").read_bytes()
                if (ledger_dir / "checkpoint").exists()
                else None
            )
            if published is not None:
                cp = open_checkpoint(published, [SIGNER.verifier()]).checkpoint
                rec = led.checkpoint_at(cp.size)
                assert rec is not None and rec.root == cp.root, "published but never recorded"
                # Opening finished the interrupted publication: nothing new needed.
                latest = led.latest()
                assert latest is not None and published.decode() == latest.note
            led.integrate()
            size = led.latest().size if led.latest() else 0  # type: ignore[union-attr]
            assert size >= (max(acked) + 1 if acked else 0), "acknowledged entries lost"
            # The entries the child hashed (the last of each append) through the
            # ledger's own reader; every other one from its bundle, decoded once per
            # bundle (Ledger.entry decodes the whole bundle for each entry).
            bundles: dict[int, list[bytes]] = {}
            for _, idx, digest in new:
                i = int(idx)
                if digest != "-":
                    leaf = led.entry(i)
                    assert hashlib.sha256(leaf).hexdigest() == digest
                else:
                    n = i // TILE_WIDTH
                    if n not in bundles:
                        data = led.tiles.read_tile(bundle_for_size(n, size))
                        bundles[n] = decode_bundle(data)
                    leaf = bundles[n][i % TILE_WIDTH]
                assert decode_entry(leaf).fields["run"] == run
            if run % 10 == 9 or run == KILLS - 1:
                verify_all(tmp_path, led)
    assert KILLS >= 50
    assert kills_during_work >= KILLS // 2, "too few kills landed while the child was working"
    # Leaves were spread over several tiles, so full tiles and partial collection were exercised.
    assert len(acked) > 2 * TILE_WIDTH
