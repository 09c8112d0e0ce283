"""The Go reference code for signed notes (golang.org/x/mod/sumdb/note, from
Debian's golang-golang-x-mod-dev) still verifies the station's signature on a
checkpoint that carries witness cosignatures: it ignores the cosignature lines
as signatures by unknown keys, as C2SP signed-note asks of every verifier."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ledger.cosignature import Cosigner
from ledger.log import Ledger
from ledger.note import Signer

HERE = Path(__file__).resolve().parent
GOPATH = Path("/usr/share/gocode")  # where Debian's golang-*-dev packages put sources
ORIGIN = "custody.test/interop/dock-01"


def build_go(source: Path, folder: Path) -> Path:
    """Build one Go program against Debian's golang.org/x/mod sources (no network)."""
    go = shutil.which("go")
    assert go, "needs Debian's golang-go (scripts/test installs it)"
    assert (GOPATH / "src/golang.org/x/mod/sumdb/note/note.go").exists(), (
        "needs Debian's golang-golang-x-mod-dev (scripts/test installs it)"
    )
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / source.stem
    env = dict(
        os.environ,
        GO111MODULE="off",
        GOPATH=str(GOPATH),
        GOCACHE=str(folder / "cache"),
        GOFLAGS="",
    )
    subprocess.run([go, "build", "-o", str(out), str(source)], check=True, env=env)
    return out


@pytest.fixture(scope="module")
def verifynote(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_go(HERE / "verifynote.go", tmp_path_factory.mktemp("go"))


def go_verify(tool: Path, vkey: str, note: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    (tmp / "vkey").write_text(vkey + "\n")
    (tmp / "note").write_text(note)
    return subprocess.run(
        [str(tool), str(tmp / "vkey"), str(tmp / "note")], capture_output=True, text=True
    )


def test_go_verifies_a_cosigned_checkpoint(verifynote: Path, tmp_path: Path) -> None:
    station = Signer.generate(ORIGIN)
    witnesses = [Cosigner.generate(f"w{i}.test/witness") for i in (1, 2)]
    with Ledger(tmp_path / "ledger", tmp_path / "state", ORIGIN, station) as led:
        led.append_entries([("note", {"text": f"n{i}"}) for i in range(5)])
        rec = led.integrate()
        assert rec is not None
        body = rec.note[: rec.note.index("\n\n") + 1]
        lines = [w.cosign(body, 1_764_460_800 + i).line() for i, w in enumerate(witnesses)]
        note = led.add_cosignatures(rec.size, lines).note
    assert note.count("\u2014 ") == 3
    ok = go_verify(verifynote, station.verifier().vkey(), note, tmp_path)
    assert ok.returncode == 0, ok.stdout
    assert ok.stdout.strip() == "verified 1 unverified 2"
    # And it is a real check: another key, or a changed root, fails in Go too.
    other = go_verify(verifynote, Signer.generate(ORIGIN).verifier().vkey(), note, tmp_path)
    assert other.returncode == 1
    lines_ = note.split("\n")
    lines_[2] = "A" * 43 + "="
    assert (
        go_verify(verifynote, station.verifier().vkey(), "\n".join(lines_), tmp_path).returncode
        == 1
    )
    # Go does not take a cosignature (0x04) key as a note verifier key at all.
    assert go_verify(verifynote, witnesses[0].verifier().vkey(), note, tmp_path).returncode == 2
