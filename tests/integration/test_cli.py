"""The `custody` command line, run as a real subprocess."""

from __future__ import annotations

import base64
import json
import os
import shutil
import stat
from pathlib import Path

from ledger import tree
from ledger.checkpoint import open_checkpoint
from ledger.note import Verifier
from ledger.proof import TlogProof

from ..conftest import run_cli


def test_init_creates_station(tmp_path: Path) -> None:
    data = tmp_path / "st"
    p = run_cli("init", "--data", str(data), "--origin", "custody.example/menghai/dock-01")
    vkey_line = p.stdout.strip().splitlines()[-1]
    v = Verifier.parse(vkey_line)
    assert v.name == "custody.example/menghai/dock-01"
    key = data / "keys" / "station.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert (data / "ledger" / "checkpoint").exists()
    conf = data / "custody.toml"
    assert run_cli("ledger", "vkey", config=conf).stdout.strip() == vkey_line
    first = json.loads(run_cli("ledger", "entry", "--index", "0", config=conf).stdout)
    assert first["type"] == "key" and first["vkey"] == vkey_line
    # Refuses to overwrite the key.
    before = key.read_bytes()
    again = run_cli("init", "--data", str(data), check=False)
    assert again.returncode == 2 and "refusing to replace a station key" in again.stderr
    assert key.read_bytes() == before


def test_config_from_environment(station: Path) -> None:
    env = dict(os.environ, CUSTODY_CONFIG=str(station))
    import subprocess
    import sys

    p = subprocess.run(
        [sys.executable, "-m", "custody", "status", "--json"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert json.loads(p.stdout)["ledger"]["entries"] == 1


def test_notes_proofs_and_verify(station: Path, tmp_path: Path) -> None:
    out = run_cli("note", "Recorder ABC1234 handed over by 警号 010203", config=station).stdout
    assert "entry 1" in out
    f = tmp_path / "notes.txt"
    f.write_text("seal intact\n\n  bag 7 opened for court  \n")
    out = run_cli("note", "--file", str(f), "--operator", "inspector-li", config=station).stdout
    assert "entry 2" in out and "entry 3" in out
    e3 = json.loads(run_cli("ledger", "entry", "--index", "3", config=station).stdout)
    assert e3["text"] == "bag 7 opened for court" and e3["operator"] == "inspector-li"

    vkey = Verifier.parse(run_cli("ledger", "vkey", config=station).stdout)
    cp_text = run_cli("ledger", "checkpoint", config=station).stdout
    cp = open_checkpoint(cp_text, [vkey]).checkpoint
    assert cp.size == 4

    leaf = run_cli("ledger", "entry", "--index", "2", config=station).stdout.rstrip("\n").encode()
    proof = TlogProof.parse(run_cli("ledger", "proof", "--index", "2", config=station).stdout)
    assert proof.checkpoint == cp_text
    proof.verify(leaf, [vkey])
    old = TlogProof.parse(
        run_cli("ledger", "proof", "--index", "0", "--size", "2", config=station).stdout
    )
    assert old.index == 0

    c = json.loads(
        run_cli("ledger", "consistency", "--old-size", "2", "--json", config=station).stdout
    )
    assert set(c) == {"old_size", "new_size", "old_root", "new_root", "proof"}
    assert c["new_size"] == 4 and base64.b64decode(c["new_root"]) == cp.root
    assert tree.verify_consistency(
        2, 4, base64.b64decode(c["old_root"]), cp.root, [base64.b64decode(h) for h in c["proof"]]
    )

    v = run_cli("ledger", "verify", config=station)
    assert "OK" in v.stdout
    vj = json.loads(run_cli("ledger", "verify", "--json", config=station).stdout)
    assert vj["ok"] and vj["entries_checked"] == 4 and vj["signatures_checked"] == 4


def test_bad_config_names_the_key(tmp_path: Path) -> None:
    conf = tmp_path / "c.toml"
    base = 'data_dir = "x"\norigin = "o/x"\n'
    cases = {
        'data_dir = "x"\norigin = "has space"\n': "key 'origin'",
        'data_dir = "x"\n': "key 'origin': is required",
        base + '[ledger]\ncheckpoint_interval_ms = "soon"\n': (
            "key 'ledger.checkpoint_interval_ms': must be an integer, not a string 'soon'"
        ),
        base + "retention_dayz = 3\n": "key 'retention_dayz': is not a known",
        base + '[store]\nkind = "s3"\nlock_mode = "strict"\n': (
            "key 'store.lock_mode': must be one of"
        ),
        base + '[store]\nkind = "s3"\n': "key 'store.bucket'",
        'data_dir = = "x"\n': "is not valid TOML",
    }
    for text, expected in cases.items():
        conf.write_text(text)
        p = run_cli("status", config=conf, check=False)
        assert p.returncode == 2, text
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1, p.stderr
        assert expected in lines[0] and str(conf) in lines[0], (expected, lines[0])
    missing = run_cli("status", config=tmp_path / "nope.toml", check=False)
    assert missing.returncode == 2 and "file not found" in missing.stderr


def test_a_missing_aws_profile_is_one_line(tmp_path: Path) -> None:
    run_cli("init", "--data", str(tmp_path / "st"), "--origin", "custody.test/x/dock-01")
    conf = tmp_path / "st" / "custody.toml"
    conf.write_text(
        conf.read_text()
        + '\n[store]\nkind = "s3"\nbucket = "evidence"\nendpoint_url = "http://127.0.0.1:9"\n'
        + 'profile = "county"\n'
    )
    empty = tmp_path / "aws-config"
    empty.write_text("")
    env = {"AWS_CONFIG_FILE": str(empty), "AWS_SHARED_CREDENTIALS_FILE": str(empty)}
    p = run_cli("store", "check", config=conf, check=False, env=env)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "profile 'county' is in no AWS config file" in lines[0], p.stderr


def test_note_errors(station: Path, tmp_path: Path) -> None:
    p = run_cli("note", "--file", str(tmp_path / "missing.txt"), config=station, check=False)
    assert p.returncode == 2 and "cannot read" in p.stderr
    p = run_cli("ledger", "entry", "--index", "99", config=station, check=False)
    assert p.returncode == 2 and "no entry at index 99" in p.stderr
    p = run_cli("ledger", "proof", "--index", "0", "--size", "7", config=station, check=False)
    assert p.returncode == 2 and "no checkpoint was signed at size 7" in p.stderr


def _grow(station: Path, n: int) -> None:
    notes = Path(station.parent / "bulk.txt")
    notes.write_text("".join(f"note {i}\n" for i in range(n)))
    run_cli("note", "--file", str(notes), config=station)


def _verify(station: Path, *extra: str) -> tuple[int, str]:
    p = run_cli("ledger", "verify", *extra, config=station, check=False)
    return p.returncode, p.stdout + p.stderr


def test_verify_names_a_corrupted_tile(station: Path) -> None:
    _grow(station, 600)
    tile = station.parent / "ledger" / "tile" / "0" / "001"
    os.chmod(tile, 0o644)
    data = bytearray(tile.read_bytes())
    data[100] ^= 0x40
    tile.write_bytes(bytes(data))
    rc, out = _verify(station)
    assert rc == 1
    assert "tile/0/001: 1 leaf hash(es) differ from the entries (first at index 259)" in out
    assert "FAILED (1 problems)" in out  # the tiles above are rebuilt from the entries


def test_verify_names_a_truncated_bundle(station: Path) -> None:
    _grow(station, 300)
    bundle = station.parent / "ledger" / "tile" / "entries" / "001.p/45"
    bundle.write_bytes(bundle.read_bytes()[:-10])
    rc, out = _verify(station)
    assert rc == 1
    assert "tile/entries/001.p/45: entry bundle is truncated" in out


def test_verify_names_checkpoint_signed_by_another_key(station: Path, tmp_path: Path) -> None:
    _grow(station, 5)
    other = tmp_path / "other"
    run_cli("init", "--data", str(other), "--origin", "custody.test/unit/dock-01")
    # A checkpoint with the same origin, signed by an impostor station key.
    shutil.copy(other / "ledger" / "checkpoint", station.parent / "ledger" / "checkpoint")
    rc, out = _verify(station)
    assert rc == 1
    assert "checkpoint: not signed by the station key" in out
    # The station's own history shows what it really signed.
    assert "rolled back" in out


def test_verify_names_a_rolled_back_checkpoint(station: Path, tmp_path: Path) -> None:
    _grow(station, 3)
    old = (station.parent / "ledger" / "checkpoint").read_bytes()
    (tmp_path / "seen-by-supervisor").write_bytes(old)
    _grow(station, 3)
    seen = station.parent / "ledger" / "checkpoint"
    (tmp_path / "newer").write_bytes(seen.read_bytes())
    seen.write_bytes(old)  # an attacker republishes an older, validly signed checkpoint
    rc, out = _verify(station)
    assert rc == 1
    assert "published size 4 is older than the signed checkpoint of size 7" in out
    # An outsider with only the folder and a checkpoint they kept sees it too.
    vkey = run_cli("ledger", "vkey", config=station).stdout.strip()
    p = run_cli(
        "ledger",
        "verify",
        "--dir",
        str(station.parent / "ledger"),
        "--vkey",
        vkey,
        "--known",
        str(tmp_path / "newer"),
        check=False,
    )
    assert p.returncode == 1 and "rolled back" in p.stdout


def test_verify_reports_every_problem_at_once(station: Path) -> None:
    _grow(station, 600)
    led = station.parent / "ledger"
    t = led / "tile" / "0" / "000"
    os.chmod(t, 0o644)
    t.write_bytes(t.read_bytes()[:-32])
    b = led / "tile" / "entries" / "002.p/89"
    b.write_bytes(b.read_bytes()[:-1])
    rc, out = _verify(station, "--json")
    assert rc == 1
    kinds = json.loads(out.splitlines()[0])["problem_counts"]
    assert {"tile-size", "bundle-truncated", "bundle-count"} <= set(kinds)


def test_verify_survives_hostile_input(station: Path, tmp_path: Path) -> None:
    """Malformed folders get named problems, never a traceback or a hang."""
    _grow(station, 300)
    _grow(station, 5)  # a second checkpoint: tile/0/001.p/45 is now an older partial
    led = station.parent / "ledger"
    vkey = run_cli("ledger", "vkey", config=station).stdout.strip()
    # An entry nested 30,000 deep and one with a 5,000-digit number.
    bundle = led / "tile" / "entries" / "001.p" / "50"
    from ledger.tiles import decode_bundle, encode_bundle

    entries = decode_bundle(bundle.read_bytes())
    entries[0] = b"[" * 30000
    entries[1] = b'{"n":' + b"9" * 5000 + b"}"
    bundle.write_bytes(encode_bundle(entries))
    # An older partial tile altered after it was published.
    old = led / "tile" / "0" / "001.p"
    (old / "45").write_bytes(bytes(45 * 32))
    rc, out = _verify(station)
    assert rc == 1
    assert "entry 256: not a valid custody entry" in out
    assert "entry 257: not a valid custody entry" in out
    assert "an older partial tile differs" in out
    assert "Traceback" not in out
    # An unsigned checkpoint claiming an absurd size ends quickly with a named problem.
    fake = tmp_path / "fake"
    shutil.copytree(led, fake)
    (fake / "checkpoint").write_text(
        "custody.test/unit/dock-01\n18446744073709551615\n" + "A" * 43 + "=\n\n— x AAAAAAA=\n"
    )
    p = run_cli("ledger", "verify", "--dir", str(fake), "--vkey", vkey, check=False)
    assert p.returncode == 1 and "no entries or tiles from here on" in p.stdout
    # A checkpoint that is a folder.
    (fake / "checkpoint").unlink()
    (fake / "checkpoint").mkdir()
    p = run_cli("ledger", "verify", "--dir", str(fake), "--vkey", vkey, check=False)
    assert p.returncode == 2 and "cannot be read" in p.stderr and "Traceback" not in p.stderr


def test_cli_errors_are_one_line(station: Path, tmp_path: Path) -> None:
    cases = [
        ("ledger", "entry", "--index", "99999999999999999999999"),
        ("ledger", "proof", "--index", "0", "--size", "-1"),
        ("ledger", "verify", "--known", str(tmp_path / "missing")),
    ]
    for args in cases:
        p = run_cli(*args, config=station, check=False)
        assert p.returncode == 2, args
        assert "Traceback" not in p.stderr and p.stderr.strip(), args
    bad = tmp_path / "latin1"
    bad.write_bytes(b"\xff\xfe")
    p = run_cli("ledger", "verify", "--vkey", str(bad), config=station, check=False)
    assert p.returncode == 2 and "not UTF-8" in p.stderr


def test_read_only_access_writes_nothing(station: Path) -> None:
    import hashlib

    def snapshot() -> dict[str, str]:
        # SQLite may add its -wal/-shm companions for a reader; data must not change.
        return {
            str(p.relative_to(station.parent)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in station.parent.rglob("*")
            if p.is_file() and not p.name.endswith(("-wal", "-shm"))
        }

    before = snapshot()
    run_cli("ledger", "entry", "--index", "0", config=station)
    run_cli("ledger", "proof", "--index", "0", config=station)
    run_cli("status", config=station)
    assert snapshot() == before


def test_court_checks_a_proof_offline(station: Path, tmp_path: Path) -> None:
    """python -m verify needs only the entry, the proof and the verifier key."""
    import subprocess
    import sys

    run_cli("note", "evidence bag 12 sealed", config=station)
    vkey = run_cli("ledger", "vkey", config=station).stdout.strip()
    entry = tmp_path / "entry.json"
    entry.write_text(run_cli("ledger", "entry", "--index", "1", config=station).stdout)
    proof = tmp_path / "entry.tlog-proof"
    proof.write_text(run_cli("ledger", "proof", "--index", "1", config=station).stdout)

    def court(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "verify", *args], capture_output=True, text=True, timeout=60
        )

    ok = court("proof", str(entry), str(proof), "--vkey", vkey)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "number 1 of 2" in ok.stdout
    forged = tmp_path / "forged.json"
    forged.write_text(entry.read_text().replace("bag 12", "bag 13"))
    bad = court("proof", str(forged), str(proof), "--vkey", vkey)
    assert bad.returncode == 1
    assert "inclusion proof does not verify" in bad.stdout
    assert "signature does not verify" in bad.stdout
    other = Verifier.parse(
        run_cli("init", "--data", str(tmp_path / "x"), "--origin", "custody.test/unit/dock-01")
        .stdout.strip()
        .splitlines()[-1]
    )
    wrong_key = court("proof", str(entry), str(proof), "--vkey", other.vkey())
    assert wrong_key.returncode == 1 and "no signature by a trusted key" in wrong_key.stdout
    whole = court("ledger", str(station.parent / "ledger"), "--vkey", vkey)
    assert whole.returncode == 0 and whole.stdout.splitlines()[-1].startswith("OK")
    assert whole.stdout.startswith("trusted: custody.test/unit/dock-01 (key id ")
    missing = court("ledger", str(tmp_path / "nope"), "--vkey", vkey)
    assert missing.returncode == 2
