"""A disclosure's entry and proof check with the Go reference code for transparency
logs (golang.org/x/mod/sumdb/tlog and .../note, from Debian's golang-golang-x-mod-dev):
an outsider with their own tools can tie the publication to the station's log."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

from tests.conftest import run_cli
from tests.interop.test_go_note import GOPATH, HERE, build_go

PROOF_TOOL = HERE / "verifyproof.go"


def test_go_checks_the_disclose_entry_and_its_proof(tmp_path: Path) -> None:
    tool = build_go(PROOF_TOOL, tmp_path / "go")
    assert GOPATH.is_dir()
    data = tmp_path / "station"
    assert run_cli("init", "--data", str(data)).returncode == 0
    conf = data / "custody.toml"
    assert run_cli("-c", str(conf), "note", "shift opened").returncode == 0
    pub = tmp_path / "pub"
    r = run_cli("-c", str(conf), "disclose", "--out", str(pub), "--period", "2026")
    assert r.returncode == 0, r.stderr
    vkey = pub / "publisher.vkey"
    entry, proof = pub / "disclose.entry", pub / "disclose.tlog-proof"
    ok = subprocess.run(
        [str(tool), str(vkey), str(entry), str(proof)], capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stdout
    assert ok.stdout.startswith("included 2 of ")
    # The entry is the one that names this MANIFEST.
    manifest = hashlib.sha256((pub / "MANIFEST").read_bytes()).hexdigest()
    assert f'"manifest_sha256":"{manifest}"' in entry.read_text()
    # A real check: another entry, or another key, fails in Go too.
    other = tmp_path / "other.entry"
    other.write_bytes(entry.read_bytes().replace(b'"period":"2026"', b'"period":"2025"'))
    bad = subprocess.run(
        [str(tool), str(vkey), str(other), str(proof)], capture_output=True, text=True
    )
    assert bad.returncode == 1 and "not included" in bad.stdout
    key2 = tmp_path / "k2"
    run_cli("init", "--data", str(key2))
    bad = subprocess.run(
        [str(tool), str(key2 / "keys" / "station.vkey"), str(entry), str(proof)],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1, bad.stdout
