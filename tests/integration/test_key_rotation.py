"""Station key changes through the real CLI: rotate, revoke, and crashes in between.

What must hold: entries before and after a rotation verify with the key
supervisors pinned at `custody init`; the checkpoint after a rotation
carries the previous key's signature during the overlap (so witnesses and
pinned verifiers keep accepting), and only the new key's after a revoke; a
rotation killed at any point leaves either the old key or the new one in
charge, never a mix, and the station keeps working.
"""

from __future__ import annotations

import base64
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from custody.daemon import InstanceLock
from ledger.checkpoint import open_checkpoint
from ledger.note import Verifier
from tests.conftest import run_cli


def vkeys(conf: Path) -> tuple[str, list[str]]:
    doc = json.loads(run_cli("key", "list", "--json", config=conf).stdout)
    return doc["current"], doc["history"]


def entry_sig(fields: dict[str, object]) -> tuple[bytes, bytes]:
    """The signed message and signature of an entry (DESIGN: custody-entry/v1 prefix)."""
    unsigned = {k: v for k, v in fields.items() if k != "sig"}
    msg = (
        b"custody-entry/v1\n"
        + json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    )
    return msg, base64.b64decode(str(fields["sig"]))


def verify_with(conf: Path, vkey: str) -> subprocess.CompletedProcess[str]:
    return run_cli("ledger", "verify", "--vkey", vkey, "--json", config=conf, check=False)


def test_rotate_then_revoke_verify_with_the_first_key(station: Path) -> None:
    data = station.parent
    v0 = (data / "keys" / "station.vkey").read_text().strip()
    run_cli("note", "before the rotation", config=station)
    rot = json.loads(
        run_cli("key", "rotate", "--reason", "yearly", "--json", config=station).stdout
    )
    assert rot["old_vkey"] == v0 and rot["action"] == "rotate"
    v1 = rot["new_vkey"]
    assert (data / "keys" / "station.vkey").read_text().strip() == v1
    assert oct((data / "keys" / "station.key").stat().st_mode & 0o777) == "0o600"
    assert oct((data / "keys" / "previous.key").stat().st_mode & 0o777) == "0o600"
    run_cli("note", "after the rotation", config=station)
    # The new checkpoint is signed by both keys while the overlap lasts.
    note = (data / "ledger" / "checkpoint").read_text()
    sc = open_checkpoint(note, [Verifier.parse(v0), Verifier.parse(v1)])
    assert {v.vkey() for v in sc.verified_by} == {v0, v1}
    # Entries after the key entry are signed by the new key.
    last = json.loads(run_cli("ledger", "entry", "--index", "3", config=station).stdout)
    assert last["type"] == "note"
    assert Verifier.parse(v1).verify(*entry_sig(last))
    assert not Verifier.parse(v0).verify(*entry_sig(last))
    for vk in (v0, v1):
        r = verify_with(station, vk)
        assert r.returncode == 0, r.stdout + r.stderr
        assert json.loads(r.stdout)["ok"] is True
    assert vkeys(station) == (v1, [v0, v1])
    key = json.loads(run_cli("status", "--json", config=station).stdout)["key"]
    assert key["vkey"] == v1 and key["history"] == [v0, v1]
    assert key["previous_cosigns_until"] == rot["overlap_until"]

    rev = json.loads(run_cli("key", "revoke", "--last-index", "3", "--json", config=station).stdout)
    v2 = rev["new_vkey"]
    assert rev["action"] == "revoke" and rev["last_index"] == 3
    assert not (data / "keys" / "previous.key").exists()  # a revoke ends the overlap
    run_cli("note", "after the revoke", config=station)
    note = (data / "ledger" / "checkpoint").read_text()
    sc = open_checkpoint(note, [Verifier.parse(v) for v in (v0, v1, v2)])
    assert [v.vkey() for v in sc.verified_by] == [v2]
    r = verify_with(station, v0)
    assert r.returncode == 0, r.stdout + r.stderr
    chain = [k["vkey"] for k in json.loads(r.stdout)["key_chain"]]
    assert chain == [v0, v1, v2]
    # A key unrelated to this station is not accepted.
    other = Verifier(v0.split("+")[0], bytes(32)).vkey()
    assert verify_with(station, other).returncode == 1


def test_the_overlap_ends_and_the_previous_key_is_deleted(station: Path) -> None:
    data = station.parent
    run_cli("key", "rotate", "--overlap-days", "0", config=station)
    run_cli("note", "x", config=station)
    assert not (data / "keys" / "previous.key").exists()
    note = (data / "ledger" / "checkpoint").read_text()
    assert note.count("\u2014 ") == 1


def test_rotation_refuses_while_the_daemon_holds_the_station(station: Path) -> None:
    lock = InstanceLock(station.parent / "state" / "daemon.lock")
    try:
        r = run_cli("key", "rotate", config=station, check=False)
    finally:
        lock.release()
    assert r.returncode == 2
    assert "cannot start custody key rotate" in r.stderr
    assert not (station.parent / "keys" / "station.key.next").exists()


def test_a_stale_process_cannot_sign_after_a_rotation(station: Path) -> None:
    # A process that loaded the old key before the rotation is refused afterwards.
    code = (
        "import sys, time\n"
        "from custody import config as cfg\n"
        "from custody.station import open_ledger\n"
        "led = open_ledger(cfg.load(cfg.config_path(sys.argv[1])))\n"
        "print('ready', flush=True)\n"
        "sys.stdin.readline()\n"
        "try:\n"
        "    led.append('note', {'text': 'stale'})\n"
        "except Exception as e:\n"
        "    print('refused:', e, flush=True)\n"
        "else:\n"
        "    print('appended', flush=True)\n"
    )
    p = subprocess.Popen(
        [sys.executable, "-c", code, str(station)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert p.stdout is not None and p.stdin is not None
    assert p.stdout.readline().strip() == "ready"
    run_cli("key", "rotate", config=station)
    p.stdin.write("\n")
    p.stdin.flush()
    out = p.stdout.readline()
    p.wait(timeout=30)
    assert out.startswith("refused:") and "station key changed" in out
    v0 = vkeys(station)[1][0]
    assert verify_with(station, v0).returncode == 0


def rotate_proc(conf: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.pop("CUSTODY_CONFIG", None)
    return subprocess.Popen(
        [sys.executable, "-m", "custody", "-c", str(conf), "key", "rotate"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )


def rotation_seconds(tmp: Path) -> float:
    """How long one whole `custody key rotate` (interpreter start included) takes on
    this machine, now: measured on a spare station."""
    data = tmp / "spare"
    run_cli("init", "--data", str(data), "--origin", "custody.test/unit/spare")
    started = time.monotonic()
    p = rotate_proc(data / "custody.toml")
    _, err = p.communicate(timeout=120)
    assert p.returncode == 0, err.decode()
    return time.monotonic() - started


@pytest.mark.slow
def test_rotation_killed_at_random_points(station: Path) -> None:
    """SIGKILL `custody key rotate` at random moments; afterwards exactly one key is in
    charge, the log verifies with the first key, and the station appends and rotates."""
    data = station.parent
    v0 = (data / "keys" / "station.vkey").read_text().strip()
    rng = random.Random(1414)
    # The kills land anywhere from the interpreter's start to half a rotation past its
    # end, scaled to this machine: a fixed span (once 0.3-2.5 s) would miss the
    # rotations on a fast machine and wait for nothing after them.
    span = 1.5 * rotation_seconds(data.parent)
    rotated = killed = 0
    for _ in range(16):
        p = rotate_proc(station)
        time.sleep(rng.uniform(0.0, span))
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            killed += 1
        p.wait()
        # The next command finishes or undoes what the kill interrupted.
        run_cli("note", "after a kill", config=station)
        assert not (data / "keys" / "station.key.next").exists()
        assert not (data / "keys" / "rotation.json").exists()
        hist = data / "keys" / "history"
        history = hist.read_text().split() if hist.exists() else [v0]
        cur = (data / "keys" / "station.vkey").read_text().strip()
        assert history[0] == v0 and history[-1] == cur
        r = verify_with(station, v0)
        assert r.returncode == 0, r.stdout + r.stderr
        rotated = len(history) - 1
    print(f"{killed} of 16 rotations killed, {rotated} done, kills over {span:.2f} s")
    assert killed >= 4, "the kills must land inside rotations to mean something"
    assert rotated >= 1
    chain = [k["vkey"] for k in json.loads(verify_with(station, v0).stdout)["key_chain"]]
    assert chain == vkeys(station)[1]
