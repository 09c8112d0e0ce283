"""The independent Merkle-tree vectors in tests/vectors/data, used as they are."""

from __future__ import annotations

import base64
import random
from pathlib import Path
from typing import Any

import pytest

from ledger import tree
from ledger.checkpoint import CheckpointError, open_checkpoint
from ledger.log import Ledger
from ledger.note import Signer, Verifier, parse_note
from ledger.tiles import TileHashReader

from ..conftest import VECTORS


class ListReader:
    """Stored hashes straight from a list of leaf hashes (the reference for proof generation)."""

    def __init__(self, hashes: list[bytes]) -> None:
        self.hashes = hashes

    def stored_hash(self, level: int, index: int) -> bytes:
        return tree.root_of(self.hashes[index << level : (index + 1) << level])


def leaf_hashes(v: dict[str, Any]) -> list[bytes]:
    return [tree.leaf_hash(base64.b64decode(x["data_b64"])) for x in v["leaves"]]


def test_leaf_hashes(vectors: dict[str, Any]) -> None:
    for x in vectors["leaves"]:
        assert tree.leaf_hash(x["data_text"].encode()).hex() == x["leaf_hash"]


def test_every_root(vectors: dict[str, Any]) -> None:
    hs = leaf_hashes(vectors)
    assert len(vectors["roots"]) == 101
    for r in vectors["roots"]:
        assert tree.root_of(hs[: r["size"]]).hex() == r["root"], r["size"]
        cr = tree.CompactRange()
        for h in hs[: r["size"]]:
            cr.append(h)
        assert cr.root().hex() == r["root"]


def test_known_answer_rfc6962(vectors: dict[str, Any]) -> None:
    ka = vectors["known_answer"]
    hs = [tree.leaf_hash(bytes.fromhex(x)) for x in ka["leaves_hex"]]
    for r in ka["roots"]:
        assert tree.root_of(hs[: r["size"]]).hex() == r["root"]


def test_inclusion_cases(vectors: dict[str, Any]) -> None:
    hs = leaf_hashes(vectors)
    cases = vectors["inclusion"]
    assert len(cases) == 274
    for c in cases:
        proof = [bytes.fromhex(p) for p in c["proof"]]
        ok = tree.verify_inclusion(
            c["index"], c["size"], bytes.fromhex(c["leaf_hash"]), proof, bytes.fromhex(c["root"])
        )
        assert ok == c["valid"], c["description"]
        if c["valid"]:
            # Our generator must produce the same proof as the independent one.
            assert tree.inclusion_proof(ListReader(hs), c["index"], c["size"]) == proof


def test_consistency_cases(vectors: dict[str, Any]) -> None:
    hs = leaf_hashes(vectors)
    cases = vectors["consistency"]
    assert len(cases) == 306
    for c in cases:
        proof = [bytes.fromhex(p) for p in c["proof"]]
        ok = tree.verify_consistency(
            c["old_size"],
            c["new_size"],
            bytes.fromhex(c["old_root"]),
            bytes.fromhex(c["new_root"]),
            proof,
        )
        assert ok == c["valid"], c["description"]
        if c["valid"]:
            assert tree.consistency_proof(ListReader(hs), c["old_size"], c["new_size"]) == proof


def test_checkpoint_cases(vectors: dict[str, Any]) -> None:
    cases = vectors["checkpoints"]
    assert len(cases) == 32
    for c in cases:
        vks = [Verifier.parse(v) for v in c["verifier_keys"]]
        if c["valid"]:
            sc = open_checkpoint(c["note"], vks)
            assert sc.checkpoint.origin == c["origin"]
            assert sc.checkpoint.size == c["size"]
            assert sc.checkpoint.root.hex() == c["root"]
        else:
            with pytest.raises(CheckpointError):
                open_checkpoint(c["note"], vks)


def test_keys_reproduce_signatures(vectors: dict[str, Any]) -> None:
    """Ed25519 is deterministic: re-signing each valid body gives the same signature lines."""
    signers = {}
    for k in vectors["keys"]:
        s = Signer.parse(k["signer_key"])
        assert s.verifier().vkey() == k["verifier_key"]
        assert s.seed.hex() == k["seed_hex"]
        assert Verifier.parse(k["verifier_key"]).key_id.hex() == k["key_id"]
        assert s.key_string() == k["signer_key"]
        signers[(s.name, k["key_id"])] = s
    reproduced = 0
    for c in vectors["checkpoints"]:
        if not c["valid"]:
            continue
        note = parse_note(c["note"])
        for sig in note.signatures:
            known = signers.get((sig.name, sig.key_id.hex()))
            if known is not None:
                assert known.sign(note.text.encode()) == sig.signature
                reproduced += 1
    assert reproduced >= 10


def _ledger_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_tiles_byte_for_byte(vectors: dict[str, Any], tmp_path: Path) -> None:
    t = vectors["tiles"]
    signer = Signer.parse(vectors["keys"][0]["signer_key"])
    with Ledger(tmp_path / "log", tmp_path / "state", signer.name, signer) as led:
        led.append_leaves([f"leaf-{i}".encode() for i in range(t["size"])])
        led.integrate()
    ours = _ledger_files(tmp_path / "log")
    theirs = _ledger_files(VECTORS / t["dir"])
    assert sorted(theirs) == sorted(t["files"])
    assert ours == theirs


def test_tiles_byte_for_byte_in_random_batches(vectors: dict[str, Any], tmp_path: Path) -> None:
    """Integrated in many batches, the same final files exist (stale partials are allowed)."""
    t = vectors["tiles"]
    signer = Signer.parse(vectors["keys"][0]["signer_key"])
    rng = random.Random(7)
    with Ledger(tmp_path / "log", tmp_path / "state", signer.name, signer) as led:
        i = 0
        while i < t["size"]:
            n = min(t["size"] - i, rng.randint(1, 70))
            led.append_leaves([f"leaf-{j}".encode() for j in range(i, i + n)])
            i += n
            if rng.random() < 0.6:
                led.integrate()
        led.integrate()
        reader = TileHashReader(led.tiles, t["size"])
        assert tree.tree_root(reader, t["size"]).hex() == t["root"]
        for r in vectors["roots"]:
            assert tree.tree_root(reader, r["size"]).hex() == r["root"]
    ours = _ledger_files(tmp_path / "log")
    theirs = _ledger_files(VECTORS / t["dir"])
    for name, data in theirs.items():
        assert ours[name] == data, name
    # Partial tiles whose full tile exists were collected.
    assert not (tmp_path / "log" / "tile" / "0" / "000.p").exists()
