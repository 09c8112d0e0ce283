"""Verifiers enforce a witness policy: an export whose checkpoint two witnesses
cosigned verifies with a policy asking for both, and fails with a policy that names a
witness that never cosigned or a witness key that differs; every verdict names the
keys it trusted and where each came from."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from archive.retrieve import Retriever
from custody import config as cfg
from custody.cold import open_store
from custody.export import export_bag
from custody.retain import index_db
from custody.station import load_signer
from ingest.objects import LocalObjects
from ledger.cosignature import Cosigner
from ledger.log import CheckpointRecord, Ledger
from ledger.note import parse_note
from retention.index import refresh

from ..conftest import REPO, make_clip, run_cli
from .daemon import make_station

COSIGNED_AT = 1795000000  # 2026-11-18T11:06:40Z
W1 = Cosigner.generate("witness.test/sifaju")
W2 = Cosigner.generate("witness.test/jianchayuan")
W3 = Cosigner.generate("witness.test/archive")


class Witnessed(Ledger):
    """The station's ledger with two witnesses that cosign each new checkpoint (as the
    station's witness round stores their lines with `Ledger.add_cosignatures`)."""

    def integrate(self) -> CheckpointRecord | None:
        rec = super().integrate()
        if rec is not None:
            body = parse_note(rec.note).text
            lines = [w.cosign(body, COSIGNED_AT).line() for w in (W1, W2)]
            rec = self.add_cosignatures(rec.size, lines)
        return rec


def policy(log: str, *witnesses: Cosigner, quorum: str = "all") -> str:
    lines = [f"log {log}"]
    lines += [f"witness {w.name} {w.verifier().vkey()}" for w in witnesses]
    names = " ".join(w.name for w in witnesses)
    lines += [f"group q {quorum} {names}", "quorum q"]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def bag(tmp_path_factory: pytest.TempPathFactory, ffmpeg: str) -> tuple[Path, Path, str]:
    tmp = tmp_path_factory.mktemp("witnessed")
    dock = tmp / "dock"
    cold = tmp / "cold"
    conf_path = make_station(tmp, dock, extra=f'\n[store]\nkind = "local"\npath = "{cold}"\n')
    make_clip(ffmpeg, dock / "slot01" / "ABC1234_010203_20261120093000_0001.mp4")
    run_cli("ingest", str(dock), "--settle-ms", "0", config=conf_path)
    vkey = run_cli("ledger", "vkey", config=conf_path).stdout.strip()
    conf = cfg.load(conf_path)
    station_policy = policy(vkey, W1, W2).encode()
    out = tmp / "bag"
    with Witnessed(conf.ledger_dir, conf.state_dir, conf.origin, load_signer(conf)) as led:
        db = index_db(led)
        try:
            refresh(led, db)
            shas = [r[0] for r in db.execute("SELECT sha256 FROM retention_items")]
            export_bag(
                led,
                db,
                Retriever(LocalObjects(conf.store_dir).path, open_store(conf)),
                out,
                shas,
                None,
                "court of Menghai county",
                "clerk-wang",
                conf.origin,
                vkey,
                policy=station_policy,
            )
        finally:
            db.close()
    return conf_path, out, vkey


def verify(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "verify", *args], capture_output=True, text=True, cwd=REPO
    )


def write(tmp: Path, name: str, text: str) -> str:
    p = tmp / name
    p.write_text(text)
    return str(p)


def test_the_export_carries_the_cosigned_checkpoint_and_the_policy(
    bag: tuple[Path, Path, str],
) -> None:
    _, out, vkey = bag
    note = (out / "custody" / "checkpoint").read_text()
    assert note.count("\n\u2014 ") == 3  # the station and two witnesses
    assert (out / "policy.txt").read_text() == policy(vkey, W1, W2)
    assert "Witness-Policy: policy.txt\n" in (out / "bag-info.txt").read_text()
    how = (out / "VERIFY.txt").read_text()
    assert "--policy" in how and "carried inside the package" in how
    assert "policy.txt" in (out / "tagmanifest-sha256.txt").read_text()


def test_quorum_of_both_witnesses_verifies(bag: tuple[Path, Path, str], tmp_path: Path) -> None:
    conf, out, vkey = bag
    both = write(tmp_path, "both.txt", policy(vkey, W1, W2))
    p = verify("bag", str(out), "--vkey", vkey, "--policy", both)
    assert p.returncode == 0, p.stdout + p.stderr
    lines = p.stdout.splitlines()
    kid = vkey.split("+")[1]
    assert (
        f"trusted: {vkey.split('+')[0]} (key id {kid}), "
        "pinned by the user on the command line (--vkey)" in lines
    )
    for w in (W1, W2):
        assert (
            f"trusted: witness {w.name} (key id {w.verifier().key_id.hex()}), "
            "from the policy file you gave (--policy)"
        ) in lines
        assert (
            f"cosignature: {w.name} (key id {w.verifier().key_id.hex()}) at "
            f"2026-11-18T11:06:40Z, verified, witness {w.name} of the policy"
        ) in lines
    assert (
        f"quorum: met, all of ({W1.name}, {W2.name}) (from the policy file you gave (--policy))"
        in lines
    )
    j: Any = json.loads(verify("bag", str(out), "--vkey", vkey, "--policy", both, "--json").stdout)
    assert j["ok"] and j["quorum"]["met"] and j["quorum"]["missing"] == []
    assert {k["source"] for k in j["trusted_keys"]} == {
        "pinned by the user on the command line (--vkey)",
        "from the policy file you gave (--policy)",
    }
    assert [(c["name"], c["time"], c["checked"]) for c in j["cosignatures"]] == [
        (W1.name, "2026-11-18T11:06:40Z", True),
        (W2.name, "2026-11-18T11:06:40Z", True),
    ]
    assert j["witness_policy_in_package"] == "policy.txt"
    # The policy's log line alone is a trusted key too.
    p = verify("bag", str(out), "--policy", both, "--json")
    assert p.returncode == 0, p.stdout + p.stderr
    assert (
        json.loads(p.stdout)["trusted_keys"][0]["source"]
        == "from the policy file you gave (--policy)"
    )
    # Through the station's command.
    p = run_cli("verify", str(out), "--vkey", vkey, "--policy", both, config=conf, check=False)
    assert p.returncode == 0, p.stdout + p.stderr


def test_a_witness_that_never_cosigned_fails(bag: tuple[Path, Path, str], tmp_path: Path) -> None:
    conf, out, vkey = bag
    three = write(tmp_path, "three.txt", policy(vkey, W1, W2, W3))
    p = verify("bag", str(out), "--vkey", vkey, "--policy", three)
    assert p.returncode == 1, p.stdout + p.stderr
    assert (
        f"missing: {W3.name} (key id {W3.verifier().key_id.hex()}) never cosigned this checkpoint"
    ) in p.stdout
    j = json.loads(verify("bag", str(out), "--vkey", vkey, "--policy", three, "--json").stdout)
    assert not j["ok"] and not j["quorum"]["met"] and j["quorum"]["missing"] == [W3.name]
    p = run_cli("verify", str(out), "--vkey", vkey, "--policy", three, config=conf, check=False)
    assert p.returncode == 1 and W3.name in p.stdout
    # Two of three is what this policy asks for: met.
    two = write(tmp_path, "two.txt", policy(vkey, W1, W2, W3, quorum="2"))
    assert verify("bag", str(out), "--vkey", vkey, "--policy", two).returncode == 0


def test_a_witness_key_that_differs_fails(bag: tuple[Path, Path, str], tmp_path: Path) -> None:
    _, out, vkey = bag
    impostor = Cosigner.generate(W2.name)  # same name, another key
    other = write(tmp_path, "other.txt", policy(vkey, W1, impostor))
    p = verify("bag", str(out), "--vkey", vkey, "--policy", other)
    assert p.returncode == 1, p.stdout + p.stderr
    assert f"missing: {W2.name} (key id {impostor.verifier().key_id.hex()})" in p.stdout
    assert "not a witness of the policy (ignored)" in p.stdout


def test_without_a_policy_cosignatures_are_listed_unchecked(bag: tuple[Path, Path, str]) -> None:
    _, out, vkey = bag
    p = verify("bag", str(out), "--vkey", vkey)
    assert p.returncode == 0, p.stdout + p.stderr
    assert (
        f"cosignature: {W1.name} (key id {W1.verifier().key_id.hex()}) at "
        "2026-11-18T11:06:40Z, not checked against a policy" in p.stdout
    )
    assert "it makes no witness trusted by itself" in p.stdout
    j = json.loads(verify("bag", str(out), "--vkey", vkey, "--json").stdout)
    assert j["quorum"] is None and {c["status"] for c in j["cosignatures"]} == {
        "not checked against a policy"
    }
    # The package's own key: said, with what it proves.
    p = verify("bag", str(out), "--trust-bag-key")
    assert p.returncode == 0
    assert "carried inside the package" in p.stdout
    assert (
        "note: a key carried inside the package proves the package is intact, not who made it"
        in p.stdout
    )
    # A policy carried in the package, altered, is caught (the export entry names it).
    (out / "policy.txt").write_text(policy(vkey, W1))
    try:
        p = verify("bag", str(out), "--vkey", vkey)
        assert p.returncode == 1 and "policy.txt" in p.stdout
    finally:
        (out / "policy.txt").write_text(policy(vkey, W1, W2))


def test_ledger_folder_with_a_policy(bag: tuple[Path, Path, str], tmp_path: Path) -> None:
    conf, _, vkey = bag
    ledger_dir = conf.parent / "ledger"
    both = write(tmp_path, "both.txt", policy(vkey, W1, W2))
    three = write(tmp_path, "three.txt", policy(vkey, W1, W2, W3))
    p = verify("ledger", str(ledger_dir), "--vkey", vkey, "--policy", both, "--json")
    assert p.returncode == 0, p.stdout + p.stderr
    j = json.loads(p.stdout)
    assert j["quorum"]["met"] and len(j["cosignatures"]) == 2
    p = verify("ledger", str(ledger_dir), "--vkey", vkey, "--policy", three)
    assert p.returncode == 1 and f"missing: {W3.name}" in p.stdout, p.stdout
    p = run_cli("verify", str(ledger_dir), "--policy", three, config=conf, check=False)
    assert p.returncode == 1 and "the station's own key (config" in p.stdout
