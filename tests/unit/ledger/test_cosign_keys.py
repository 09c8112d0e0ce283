"""The ledger's side of witnesses and key changes: cosignature lines stored and
published, the hold-back for the write-once mirror, the overlap signature of a
rotation, and a stale key refused after a rotation. Also the pure pieces:
cosignatures, policies and the key chain."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from ledger.checkpoint import Checkpoint, open_checkpoint
from ledger.cosignature import (
    CosignatureVerifier,
    Cosigner,
    parse_cosignature_lines,
    verify_cosignatures,
)
from ledger.entry import decode_entry, make_entry
from ledger.errors import LedgerError
from ledger.keys import KeyChainError, follow, key_entry_payload
from ledger.log import Ledger
from ledger.note import NoteError, Signer
from ledger.policy import PolicyError, check_checkpoint, parse_policy

ORIGIN = "custody.test/cosign"
K0 = Signer(ORIGIN, bytes(range(32)))
K1 = Signer(ORIGIN, bytes(range(1, 33)))
W1 = Cosigner("w1.test/witness", bytes(range(2, 34)))
W2 = Cosigner("w2.test/witness", bytes(range(3, 35)))


def body_of(note: str) -> str:
    return note[: note.index("\n\n") + 1]


def test_cosignatures_are_stored_and_published(tmp_path: Path) -> None:
    with Ledger(tmp_path / "ledger", tmp_path / "state", ORIGIN, K0) as led:
        led.append("note", {"text": "one"})
        rec = led.integrate()
        assert rec is not None
        line = W1.cosign(body_of(rec.note), 1_700_000_000).line()
        new = led.add_cosignatures(rec.size, [line])
        assert new.note == rec.note + line
        assert led.add_cosignatures(rec.size, [line]).note == new.note  # not repeated
        published = (tmp_path / "ledger" / "checkpoint").read_text()
        assert published == new.note
        assert led.latest() == new
        assert led.proof(0).checkpoint == new.note
        # The station's signature still verifies; the cosignature is ignored by it.
        assert open_checkpoint(published, [K0.verifier()]).checkpoint.size == 1
        assert [k for k, _ in verify_cosignatures(published, [W1.verifier()])] == [W1.verifier()]
        with pytest.raises(LedgerError):
            led.add_cosignatures(rec.size, ["not a signature line\n"])
        with pytest.raises(LedgerError):
            led.add_cosignatures(99, [line])


def test_publishable_waits_for_the_witness_round(tmp_path: Path) -> None:
    with Ledger(tmp_path / "ledger", tmp_path / "state", ORIGIN, K0) as led:
        led.append("note", {"text": "one"})
        first = led.integrate()
        assert first is not None and led.publishable() == first  # no witnesses: no wait
        led.set_witness_settled(0)
        led.append("note", {"text": "two"})
        second = led.integrate()
        assert second is not None and led.publishable() is None
        led.set_witness_settled(first.size)
        assert led.publishable() == first
        led.set_witness_settled(second.size)
        led.set_witness_settled(first.size)  # never goes back
        assert led.witness_settled() == second.size
        led.set_witness_settled(None)
        assert led.publishable() == second


def test_overlap_signs_checkpoints_with_both_keys(tmp_path: Path) -> None:
    with Ledger(tmp_path / "ledger", tmp_path / "state", ORIGIN, K0) as led:
        led.append("note", {"text": "before"})
        led.integrate()
    # Reopened with the new key: the old checkpoint (K0 only) is still recognised.
    with Ledger(tmp_path / "ledger", tmp_path / "state", ORIGIN, K1, also_sign=[K0]) as led:
        led.append("note", {"text": "after"})
        rec = led.integrate()
        assert rec is not None
        sc = open_checkpoint(rec.note, [K0.verifier(), K1.verifier()])
        assert set(sc.verified_by) == {K0.verifier(), K1.verifier()}
    with pytest.raises(Exception, match="not this station's"):
        # Without the old key known, the published checkpoint of K0+K1 is still
        # K1's; but a ledger that knows neither key refuses it.
        Ledger(tmp_path / "ledger", tmp_path / "state", ORIGIN, Signer.generate(ORIGIN))


def test_a_stale_key_cannot_append_after_a_rotation(tmp_path: Path) -> None:
    old = Ledger(tmp_path / "ledger", tmp_path / "state", ORIGIN, K0)
    new_vkey = K1.verifier().vkey()

    def switch(db: object, idx: list[int]) -> None:
        db.execute(  # type: ignore[attr-defined]
            "INSERT OR REPLACE INTO meta(key, value) VALUES ('signer', ?)", (new_vkey,)
        )

    rotator = Ledger(tmp_path / "ledger", tmp_path / "state", ORIGIN, K0)
    rotator.append("key", key_entry_payload(K0.verifier(), K1.verifier(), "test"), switch)
    rotator.close()
    with pytest.raises(LedgerError, match="station key changed"):
        old.append("note", {"text": "late"})
    old.close()
    with Ledger(tmp_path / "ledger", tmp_path / "state", ORIGIN, K1) as led:
        assert led.append("note", {"text": "fine"}) == 1


def test_key_chain_follows_rotation_and_rejects_a_forged_link() -> None:
    t = "2026-11-30T00:00:00Z"
    k2 = Signer(ORIGIN, bytes(range(5, 37)))
    create = decode_entry(
        make_entry(K0, ORIGIN, "key", {"action": "create", "vkey": K0.verifier().vkey()}, t)
    )
    rot = decode_entry(
        make_entry(K0, ORIGIN, "key", key_entry_payload(K0.verifier(), K1.verifier(), "r"), t)
    )
    rev = decode_entry(
        make_entry(K1, ORIGIN, "key", key_entry_payload(K1.verifier(), k2.verifier(), "lost", 6), t)
    )
    chain = follow(K0.verifier(), [(0, create), (4, rot), (9, rev)])
    assert chain.key_for_entry(4) == K0.verifier()
    assert chain.key_for_entry(5) == K1.verifier()
    assert chain.key_for_entry(10) == k2.verifier()
    assert chain.keys_for_checkpoint(4) == [K0.verifier()]
    assert K1.verifier() in chain.keys_for_checkpoint(7)
    assert K1.verifier() not in chain.keys_for_checkpoint(10)  # revoked past index 6
    assert chain.suspect(8) is not None and chain.suspect(6) is None
    # Pinned to a later key, the chain is the same.
    assert follow(k2.verifier(), [(0, create), (4, rot), (9, rev)]) == chain
    forged = decode_entry(
        make_entry(k2, ORIGIN, "key", key_entry_payload(K0.verifier(), K1.verifier(), "x"), t)
    )
    with pytest.raises(KeyChainError, match="not signed by the key it retires"):
        follow(K0.verifier(), [(4, forged)])
    with pytest.raises(KeyChainError, match="not in this log's key chain"):
        follow(Signer.generate(ORIGIN).verifier(), [(4, rot)])


def test_cosignature_keys_and_policy() -> None:
    v = W1.verifier()
    assert CosignatureVerifier.parse(v.vkey()) == v
    assert base64.b64decode(v.vkey().split("+", 2)[2])[0] == 0x04  # the cosignature type byte
    with pytest.raises(NoteError):
        CosignatureVerifier.parse(K0.verifier().vkey())  # a 0x01 log key
    assert Cosigner.parse(W1.key_string()) == W1
    note = Checkpoint(ORIGIN, 3, bytes(32)).sign([K0])
    body = body_of(note)
    lines = [W1.cosign(body, 1_700_000_000).line(), W2.cosign(body, 1_700_000_001).line()]
    assert len(parse_cosignature_lines("".join(lines))) == 2
    pol = parse_policy(
        f"# two bodies\nlog {K0.verifier().vkey()}\n"
        f"witness A {W1.verifier().vkey()} http://127.0.0.1:1\n"
        f"witness\tB {W2.verifier().vkey()}\ngroup ab 2 A B\nquorum ab\n"
    )
    assert not check_checkpoint(note + lines[0], pol).satisfied
    both = check_checkpoint(note + "".join(lines), pol)
    assert both.satisfied and set(both.cosigned) == {"A", "B"}
    # A cosignature line by a policy witness that does not verify is refused outright.
    name, enc = lines[1].rstrip("\n").rsplit(" ", 1)
    raw = bytearray(base64.b64decode(enc))
    raw[-1] ^= 1
    bad = f"{name} {base64.b64encode(bytes(raw)).decode()}\n"
    with pytest.raises(PolicyError):
        check_checkpoint(note + lines[0] + bad, pol)
    for text, why in [
        ("quorum A\n", "not defined"),
        (f"witness A {v.vkey()}\nwitness B {v.vkey()}\nquorum A\n", "duplicate"),
        (f"witness A {v.vkey()}\ngroup g 2 A\nquorum g\n", "threshold"),
        (f"witness A {v.vkey()}\ngroup g any A A\nquorum g\n", "twice"),
        (f"witness A {v.vkey()}\n", "no quorum"),
        ("quorum none\nquorum none\n", "second quorum"),
        ("quorum\x0bnone\n", "control"),
    ]:
        with pytest.raises(PolicyError, match=why):
            parse_policy(text)
    assert parse_policy("quorum none\n").satisfied([])
