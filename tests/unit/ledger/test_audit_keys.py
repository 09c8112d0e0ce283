"""Whole-log verification follows the station key chain: rotations, revocations, and
key entries that are not signed by the key they retire."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ledger.audit import Report, verify_log
from ledger.entry import make_entry
from ledger.keys import key_entry_payload
from ledger.log import Ledger
from ledger.note import Signer
from verify.folder import FolderSource

ORIGIN = "custody.test/keys"
K0 = Signer(ORIGIN, bytes(range(32)))
K1 = Signer(ORIGIN, bytes(range(1, 33)))
K2 = Signer(ORIGIN, bytes(range(2, 34)))
THIEF = Signer(ORIGIN, bytes(range(3, 35)))
T = "2026-11-20T09:30:00Z"


def _open(tmp: Path, signer: Signer, *, old: tuple[Signer, ...] = ()) -> Ledger:
    return Ledger(
        tmp / "ledger",
        tmp / "state",
        ORIGIN,
        signer,
        known_keys=[s.verifier() for s in old],
    )


def rotated_log(tmp: Path, before: int = 300, after: int = 300) -> Path:
    """``before`` entries by K0, a key entry K0 -> K1 signed by K0, ``after`` entries by
    K1 (crossing bundle boundaries on both sides)."""
    with _open(tmp, K0) as led:
        led.append("key", {"action": "create", "vkey": K0.verifier().vkey()})
        led.append_entries([("note", {"n": i}) for i in range(before)])
        led.append("key", key_entry_payload(K0.verifier(), K1.verifier(), "yearly rotation"))
        led.integrate()
    with _open(tmp, K1, old=(K0,)) as led:
        led.append_entries([("note", {"n": i}) for i in range(after)])
        led.integrate()
    return tmp / "ledger"


def check(folder: Path, *pinned: Signer, known: tuple[bytes, ...] = ()) -> Report:
    src = FolderSource(folder)
    return verify_log(src, src.read_checkpoint(), [s.verifier() for s in pinned], ORIGIN, known)


def test_rotation_verifies_with_the_original_key_and_with_the_new_one(tmp_path: Path) -> None:
    folder = rotated_log(tmp_path)
    for pinned in (K0, K1):
        rep = check(folder, pinned)
        assert rep.ok, (pinned, rep.lines())
        assert rep.entries_checked == 602
        assert rep.checkpoint_signed_by == [K1.verifier()]
        chain: Any = rep.to_json()["key_chain"]
        assert [c["vkey"] for c in chain] == [K0.verifier().vkey(), K1.verifier().vkey()]
        assert chain[1]["key_entry"] == 301 and chain[1]["action"] == "rotate"
        assert any("key change: entry 301 (rotate)" in line for line in rep.lines())
    # A key that is not in the chain at all proves nothing.
    rep = check(folder, K2)
    assert not rep.ok and "key-chain" in rep.counts


def test_entries_after_the_rotation_signed_by_the_old_key_fail(tmp_path: Path) -> None:
    folder = rotated_log(tmp_path, after=0)
    with _open(tmp_path, K1, old=(K0,)) as led:
        led.append_leaves([make_entry(K0, ORIGIN, "note", {"late": True}, T)])
        led.integrate()
    rep = check(folder, K0)
    assert not rep.ok
    assert [p.where for p in rep.problems] == ["entry 302"], rep.lines()


def test_a_forged_key_entry_is_rejected(tmp_path: Path) -> None:
    # Someone without K0 writes a key entry that hands the station over to their key.
    with _open(tmp_path, K0) as led:
        led.append_entries([("note", {"n": i}) for i in range(10)])
        forged = key_entry_payload(K0.verifier(), THIEF.verifier(), "takeover")
        led.append_leaves([make_entry(THIEF, ORIGIN, "key", forged, T)])
        led.append_entries([("note", {"n": i}) for i in range(5)])
        led.integrate()
    rep = check(tmp_path / "ledger", K0)
    assert not rep.ok
    assert rep.counts.get("key-entry") == 1
    line = next(p.line() for p in rep.problems if p.kind == "key-entry")
    assert "key entry 10 is not signed by the key it retires" in line
    assert rep.chain is not None and not rep.chain.changes  # the thief's key is not trusted
    # ... and the thief's entries after it do not verify either.
    assert rep.counts.get("entry-signature", 0) == 0  # these were signed by K0, the ledger's
    # A forged entry signed by the thief after a forged key entry fails twice over.
    with _open(tmp_path, K0) as led:
        led.append_leaves([make_entry(THIEF, ORIGIN, "note", {"thief": True}, T)])
        led.integrate()
    rep = check(tmp_path / "ledger", K0)
    assert rep.counts.get("entry-signature") == 1 and rep.counts.get("key-entry") == 1


def test_a_revocation_marks_later_old_key_entries_as_suspect(tmp_path: Path) -> None:
    with _open(tmp_path, K0) as led:
        led.append_entries([("note", {"n": i}) for i in range(20)])  # 0..19: trusted
        led.append_entries([("note", {"stolen": i}) for i in range(5)])  # 20..24: doubtful
        revoke = key_entry_payload(K0.verifier(), K1.verifier(), "key stolen", last_index=19)
        led.append("key", revoke)  # 25
        led.integrate()
    with _open(tmp_path, K1, old=(K0,)) as led:
        led.append_entries([("note", {"n": i}) for i in range(3)])
        led.integrate()
    rep = check(tmp_path / "ledger", K0)
    assert rep.ok, rep.lines()  # the log itself is whole
    assert [r.to_json() for r in rep.revoked] == [
        {
            "first": 20,
            "last": 25,
            "count": 6,
            "vkey": K0.verifier().vkey(),
            "key_id": K0.verifier().key_id.hex(),
            "revoked_by": 25,
        }
    ]
    assert rep.to_json()["revoked_signatures"] == [r.to_json() for r in rep.revoked]
    warning = "warning: entries 20 to 25 signed by the revoked key"
    assert any(line.startswith(warning) for line in rep.lines())


def test_known_checkpoints_by_either_key_are_checked_on_the_way(tmp_path: Path) -> None:
    folder = rotated_log(tmp_path, before=10, after=0)
    early = (folder / "checkpoint").read_bytes()  # size 12, signed by K0
    with _open(tmp_path, K1, old=(K0,)) as led:
        led.append_entries([("note", {"n": i}) for i in range(7)])
        led.integrate()
    for pinned in (K0, K1):
        rep = check(folder, pinned, known=(early,))
        assert rep.ok and rep.checkpoints_checked == 1, rep.lines()
