"""Key changes seen by verifiers: a station that rotated its key verifies with the
original pinned key and with the new one, whole-ledger and as an export; a key entry
not signed by the key it retires is refused by every verifier."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from custody import config as cfg
from ledger.entry import make_entry
from ledger.keys import key_entry_payload
from ledger.log import Ledger
from ledger.note import Signer, Verifier

from ..conftest import REPO, make_clip, run_cli
from .daemon import make_station


def verify(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "verify", *args], capture_output=True, text=True, cwd=REPO
    )


def vkey(conf: Path) -> str:
    return run_cli("ledger", "vkey", config=conf).stdout.strip()


def forge_key_entry(conf_path: Path) -> None:
    """Someone without the station key writes a key entry handing the station to theirs
    (appended with the station's own ledger, as an intruder on the dock could)."""
    from custody.station import open_ledger

    conf = cfg.load(conf_path)
    thief = Signer.generate(conf.origin)
    with open_ledger(conf) as led:
        assert isinstance(led, Ledger)
        current = Verifier.parse(vkey(conf_path))
        forged = key_entry_payload(current, thief.verifier(), "takeover")
        leaf = make_entry(thief, conf.origin, "key", forged, "2026-11-20T09:30:00Z")
        led.append_leaves([leaf])
        led.integrate()


def test_ledger_with_rotations_verifies_with_any_key_of_the_chain(station: Path) -> None:
    k0 = vkey(station)
    run_cli("key", "rotate", "--reason", "yearly", "--overlap-days", "0", config=station)
    k1 = vkey(station)
    run_cli("key", "rotate", "--reason", "again", "--overlap-days", "0", config=station)
    k2 = vkey(station)
    assert len({k0, k1, k2}) == 3
    ledger_dir = station.parent / "ledger"
    for k in (k0, k1, k2):
        p = verify("ledger", str(ledger_dir), "--vkey", k, "--json")
        assert p.returncode == 0, p.stdout + p.stderr
        out = json.loads(p.stdout)
        assert [c["vkey"] for c in out["key_chain"]] == [k0, k1, k2]
        assert out["checkpoint_signed_by"] == [k2]
        assert out["trusted_keys"][0]["source"] == "pinned by the user on the command line (--vkey)"
        assert out["revoked_signatures"] == []
        text = verify("ledger", str(ledger_dir), "--vkey", k).stdout
        assert "trusted: " in text and "(--vkey)" in text
        assert "key change: entry 1 (rotate)" in text and "key change: entry 2 (rotate)" in text
        assert text.rstrip().splitlines()[-1].startswith("OK: ")
    # The station's own command, pinned to the original key.
    p = run_cli("ledger", "verify", "--vkey", k0, config=station, check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    p = run_cli("verify", str(ledger_dir), "--vkey", k0, config=station, check=False)
    assert p.returncode == 0, p.stdout + p.stderr


def test_a_forged_key_entry_is_rejected_by_every_ledger_verifier(station: Path) -> None:
    k0 = vkey(station)
    forge_key_entry(station)
    want = "is not signed by the key it retires"
    p = run_cli("ledger", "verify", config=station, check=False)
    assert p.returncode == 1 and want in p.stdout, p.stdout + p.stderr
    p = run_cli("ledger", "verify", "--vkey", k0, config=station, check=False)
    assert p.returncode == 1 and want in p.stdout, p.stdout + p.stderr
    p = verify("ledger", str(station.parent / "ledger"), "--vkey", k0)
    assert p.returncode == 1 and want in p.stdout, p.stdout + p.stderr
    p = run_cli("verify", str(station.parent / "ledger"), "--vkey", k0, config=station, check=False)
    assert p.returncode == 1 and want in p.stdout, p.stdout + p.stderr


def _export(tmp: Path, ffmpeg: str, rotate: bool, forge: bool) -> tuple[Path, Path, str]:
    dock = tmp / "dock"
    cold = tmp / "cold"
    conf = make_station(tmp, dock, extra=f'\n[store]\nkind = "local"\npath = "{cold}"\n')
    k0 = vkey(conf)
    make_clip(ffmpeg, dock / "slot01" / "ABC1234_010203_20261120093000_0001.mp4")
    run_cli("ingest", str(dock), "--settle-ms", "0", config=conf)
    if rotate:
        run_cli("key", "rotate", "--reason", "yearly", "--overlap-days", "0", config=conf)
    if forge:
        forge_key_entry(conf)
    sha = json.loads(run_cli("find", "--json", config=conf).stdout)[0]["sha256"]
    bag = tmp / "bag"
    run_cli("export", sha, "--out", str(bag), "--purpose", "court", config=conf)
    return conf, bag, k0


def test_an_export_after_rotation_verifies_with_the_original_key(
    tmp_path: Path, ffmpeg: str
) -> None:
    conf, bag, k0 = _export(tmp_path, ffmpeg, rotate=True, forge=False)
    k1 = vkey(conf)
    for k in (k0, k1):
        p = verify("bag", str(bag), "--vkey", k, "--json")
        assert p.returncode == 0, p.stdout + p.stderr
        out = json.loads(p.stdout)
        assert [c["vkey"] for c in out["key_chain"]] == [k0, k1]
        assert out["checkpoint_signed_by"] == [k1]
    p = run_cli("verify", str(bag), "--vkey", k0, config=conf, check=False)
    assert p.returncode == 0 and "key change: entry" in p.stdout, p.stdout + p.stderr
    # Without the key entry the original key cannot reach the new one.
    entries = bag / "custody" / "entries"
    key_entry = next(
        e
        for e in sorted(entries.glob("*.entry"))
        if json.loads(e.read_text()).get("action") == "rotate"
    )
    key_entry.unlink()
    key_entry.with_suffix(".tlog-proof").unlink()
    p = verify("bag", str(bag), "--vkey", k0)
    assert p.returncode == 1
    assert "a key entry that hands the station key on from" in p.stdout, p.stdout


def test_a_bag_with_a_forged_key_entry_fails(tmp_path: Path, ffmpeg: str) -> None:
    _conf, bag, k0 = _export(tmp_path, ffmpeg, rotate=False, forge=True)
    p = verify("bag", str(bag), "--vkey", k0)
    assert p.returncode == 1, p.stdout
    assert "is not signed by the key it retires" in p.stdout, p.stdout
