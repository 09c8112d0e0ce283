"""The pure witness core: strict parsing of add-checkpoint bodies and every answer of
the C2SP tlog-witness v1.0.0 table, decided from (stored state, request, log keys)."""

from __future__ import annotations

import base64
import hashlib
import struct

import pytest

from ledger.cosignature import CosignatureVerifier, Cosigner
from ledger.note import EM_DASH, Signer, parse_note
from ledger.tree import EMPTY_ROOT
from witness.protocol import (
    MAX_PROOF_LINES,
    SIZE_CONTENT_TYPE,
    AddCheckpoint,
    Answer,
    BadRequest,
    LogState,
    decide,
    format_request,
    origin_id,
    parse_conflict,
    parse_request,
)

from .tlog import MemoryLog

ORIGIN = "custody.test/unit/dock-01"
NOW = 1_700_000_000
WITNESS = Cosigner.generate("witness.test/w1")


@pytest.fixture
def log() -> MemoryLog:
    return MemoryLog(ORIGIN).grow_to(40)


def answer(
    log: MemoryLog, body: bytes, stored: LogState | None, keys: list[Signer] | None = None
) -> Answer:
    verifiers = [s.verifier() for s in (keys if keys is not None else [log.signer])]
    return decide(parse_request(body), stored, verifiers, WITNESS, NOW)


def stored_at(log: MemoryLog, size: int) -> LogState:
    return LogState(ORIGIN, size, log.root(size) if size else EMPTY_ROOT)


# Parsing.


def test_a_well_formed_request_parses(log: MemoryLog) -> None:
    req = parse_request(log.request(7, 20))
    assert isinstance(req, AddCheckpoint)
    assert req.old_size == 7 and req.checkpoint.size == 20 and req.checkpoint.origin == ORIGIN
    assert list(req.proof) == log.proof(7, 20)
    assert req.text == log.checkpoint(20)


def test_the_spec_example_request_parses() -> None:
    body = (
        "old 20852014\n"
        "PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=\n"
        "jrJZDmY8Y7SyJE0MWLpLozkIVMSMZcD5kvuKxPC3swk=\n"
        "5+pKlUdi2LeF/BcMHBn+Ku6yhPGNCswZZD1X/6QgPd8=\n"
        "/6WVhPs2CwSsb5rYBH5cjHV/wSmA79abXAwhXw3Kj/0=\n"
        "\n"
        "example.com/behind-the-sofa\n"
        "20852163\n"
        "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
        "\n"
        "\u2014 example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe"
        "4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
        "\u2014 example.com/behind-the-sofa opLqBQsREYCgu6xQkYQwJr9fo45a62DN9EdmHXnZdXNqlcVG"
        "lCum2Wks+49/V6267UEjw6QUXTS5Rovnzv++qbSzm9Q=\n"
    ).encode()
    req = parse_request(body)
    assert req.old_size == 20852014 and len(req.proof) == 4
    assert req.checkpoint.size == 20852163 and len(req.note.signatures) == 2


def _with_proof_lines(log: MemoryLog, lines: list[str], old: str = "old 5") -> bytes:
    return (old + "\n" + "".join(ln + "\n" for ln in lines) + "\n" + log.checkpoint(20)).encode()


H = base64.b64encode(bytes(32)).decode()


@pytest.mark.parametrize(
    "old",
    ["old 05", "old 00", "old -1", "old +5", "old  5", "old 5 ", "old\t5", "Old 5", "old", "old x"],
)
def test_old_size_line_must_be_plain_decimal(log: MemoryLog, old: str) -> None:
    with pytest.raises(BadRequest):
        parse_request(_with_proof_lines(log, [H], old=old))


def test_63_proof_lines_parse_and_64_do_not(log: MemoryLog) -> None:
    assert len(parse_request(_with_proof_lines(log, [H] * MAX_PROOF_LINES)).proof) == 63
    with pytest.raises(BadRequest, match="more than 63"):
        parse_request(_with_proof_lines(log, [H] * (MAX_PROOF_LINES + 1)))


def test_a_hundred_thousand_proof_lines_are_refused(log: MemoryLog) -> None:
    with pytest.raises(BadRequest, match="over 65536 bytes"):
        parse_request(_with_proof_lines(log, [H] * 100_000))
    # As many as fit in the size limit: refused at line 64, the rest never read.
    with pytest.raises(BadRequest, match="more than 63"):
        parse_request(_with_proof_lines(log, [H] * 1_400))


@pytest.mark.parametrize(
    "line",
    [
        "not base64!",
        H[:-1],  # padding missing
        base64.b64encode(bytes(31)).decode(),  # 31 bytes
        base64.b64encode(bytes(33)).decode(),
        H.replace("A=", "B="),  # non-zero padding bits: not canonical
        " " + H,
        H + " ",
        base64.urlsafe_b64encode(b"\xff" * 32).decode(),  # URL-safe alphabet
    ],
)
def test_proof_lines_must_be_canonical_base64_hashes(log: MemoryLog, line: str) -> None:
    with pytest.raises(BadRequest):
        parse_request(_with_proof_lines(log, [line]))


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\n",
        b"garbage",
        b"old 5\n",  # no empty line, no checkpoint
        b"old 5\n\n",  # no checkpoint
        b"\x00\x01\x02\xff" * 100,
        b"old 5\n\nexample\n",  # not a signed note
        b"GET / HTTP/1.1\r\n\r\n",
    ],
)
def test_garbage_is_a_bad_request(body: bytes) -> None:
    with pytest.raises(BadRequest):
        parse_request(body)


def test_missing_empty_line_is_a_bad_request(log: MemoryLog) -> None:
    body = log.request(5, 20)
    # Take the proof/checkpoint separator out: the checkpoint's origin then reads as a proof line.
    first_blank = body.index(b"\n\n")
    with pytest.raises(BadRequest):
        parse_request(body[:first_blank] + body[first_blank + 1 :])


def test_non_utf8_is_a_bad_request(log: MemoryLog) -> None:
    body = log.request(5, 20).replace(ORIGIN.encode(), b"custody.test/\xff\xfe")
    with pytest.raises(BadRequest, match="UTF-8"):
        parse_request(body)


def test_a_huge_line_is_a_bad_request(log: MemoryLog) -> None:
    with pytest.raises(BadRequest, match="too long"):
        parse_request(_with_proof_lines(log, ["A" * 50_000]))
    cp = log.checkpoint(20).replace(ORIGIN, "x" * 50_000, 1)
    with pytest.raises(BadRequest, match="too long"):
        parse_request(b"old 0\n\n" + cp.encode())


def test_a_malformed_checkpoint_is_a_bad_request(log: MemoryLog) -> None:
    good = log.checkpoint(20)
    for bad in (
        good.replace("\n20\n", "\n020\n"),
        good.replace(ORIGIN + "\n", "\n"),
        good[:-1],  # no final newline
        good.replace("\u2014", "-"),
    ):
        with pytest.raises(BadRequest):
            parse_request(b"old 5\n\n" + bad.encode())


# Deciding: the status table.


def test_unknown_origin_is_404(log: MemoryLog) -> None:
    a = answer(log, log.request(0, 5), None)
    assert a.status == 404 and a.new_state is None


def test_no_signature_by_a_log_key_is_403(log: MemoryLog) -> None:
    stranger = Signer.generate(ORIGIN)  # same name, another key
    a = answer(log, log.request(0, 5, signers=[stranger]), stored_at(log, 0))
    assert a.status == 403 and a.new_state is None


def test_a_log_key_whose_signature_fails_is_403(log: MemoryLog) -> None:
    other = MemoryLog(ORIGIN, log.signer, seed="other").grow_to(5)
    good = log.checkpoint(5)
    forged = other.checkpoint(5)  # other root, log's signature of other body
    sig_line = forged.split("\n\n", 1)[1]
    tampered = good.split("\n\n", 1)[0] + "\n\n" + sig_line
    a = answer(log, format_request(0, [], tampered), stored_at(log, 0))
    assert a.status == 403


def test_unknown_keys_are_ignored(log: MemoryLog) -> None:
    stranger = Signer.generate("someone.else/key")
    a = answer(log, log.request(0, 5, signers=[stranger, log.signer]), stored_at(log, 0))
    assert a.status == 200


def test_any_of_several_log_keys_may_sign(log: MemoryLog) -> None:
    rotated = Signer.generate(ORIGIN)
    keys = [log.signer, rotated]
    a = answer(log, log.request(0, 5, signers=[rotated]), stored_at(log, 0), keys=keys)
    assert a.status == 200


def test_old_larger_than_the_checkpoint_is_400(log: MemoryLog) -> None:
    body = format_request(30, [], log.checkpoint(20))
    a = answer(log, body, stored_at(log, 30))
    assert a.status == 400 and a.new_state is None


def test_a_stale_old_size_is_409_with_the_stored_size(log: MemoryLog) -> None:
    a = answer(log, log.request(5, 20), stored_at(log, 10))
    assert a.status == 409 and a.body == b"10\n" and a.content_type == SIZE_CONTENT_TYPE
    assert parse_conflict(a.body, a.content_type) == 10
    a = answer(log, log.request(0, 20), stored_at(log, 10))
    assert (a.status, a.body) == (409, b"10\n")


def test_same_size_another_root_is_409_without_a_size(log: MemoryLog) -> None:
    fork = MemoryLog(ORIGIN, log.signer, seed="fork")
    a = answer(log, fork.request(10, 10), stored_at(log, 10))
    assert a.status == 409 and a.content_type != SIZE_CONTENT_TYPE
    assert parse_conflict(a.body, a.content_type) is None and a.new_state is None


def test_a_bad_consistency_proof_is_422(log: MemoryLog) -> None:
    proof = log.proof(10, 20)
    proof[0] = bytes(32)
    a = answer(log, format_request(10, proof, log.checkpoint(20)), stored_at(log, 10))
    assert a.status == 422 and a.new_state is None
    a = answer(log, format_request(10, [], log.checkpoint(20)), stored_at(log, 10))
    assert a.status == 422


def test_a_fork_that_grew_is_422(log: MemoryLog) -> None:
    fork = MemoryLog(ORIGIN, log.signer, seed="fork")
    a = answer(log, fork.request(10, 20), stored_at(log, 10))
    assert a.status == 422


def test_a_proof_from_size_zero_must_be_empty(log: MemoryLog) -> None:
    a = answer(log, format_request(0, [bytes(32)], log.checkpoint(20)), stored_at(log, 0))
    assert a.status == 422


def test_an_empty_checkpoint_must_have_the_empty_root(log: MemoryLog) -> None:
    from ledger.checkpoint import Checkpoint

    bad = Checkpoint(ORIGIN, 0, bytes(32)).sign([log.signer])
    assert answer(log, format_request(0, [], bad), stored_at(log, 0)).status == 422
    good = Checkpoint(ORIGIN, 0, EMPTY_ROOT).sign([log.signer])
    assert answer(log, format_request(0, [], good), stored_at(log, 0)).status == 200


def test_equal_sizes_need_an_empty_proof(log: MemoryLog) -> None:
    body = format_request(10, [bytes(32)], log.checkpoint(10))
    assert answer(log, body, stored_at(log, 10)).status == 422


def test_a_consistent_checkpoint_is_cosigned_and_stored(log: MemoryLog) -> None:
    for old, new in ((0, 1), (0, 17), (1, 2), (3, 7), (8, 16), (10, 40), (13, 13)):
        a = answer(log, log.request(old, new), stored_at(log, old))
        assert a.status == 200, (old, new, a.reason)
        assert a.content_type == "text/plain; charset=utf-8"
        line = a.body.decode()
        assert line.startswith(f"{EM_DASH} witness.test/w1 ") and line.endswith("\n")
        assert a.new_state == LogState(ORIGIN, new, log.root(new), log.checkpoint(new) + line), (
            old,
            new,
        )
        stored = parse_note(a.new_state.checkpoint or "")
        (cosig,) = [s for s in stored.signatures if s.name == "witness.test/w1"]
        got = WITNESS.verifier().verify(stored.text, cosig)
        assert got.timestamp == NOW


def test_the_cosignature_verifies_with_the_witness_vkey(log: MemoryLog) -> None:
    a = answer(log, log.request(0, 9), stored_at(log, 0))
    verifier = CosignatureVerifier.parse(WITNESS.verifier().vkey())
    (sig,) = parse_note("x\n\n" + a.body.decode()).signatures
    assert verifier.verify(log.checkpoint(9).split("\n\n")[0] + "\n", sig).timestamp == NOW


# The client's half.


def test_format_request_round_trips(log: MemoryLog) -> None:
    body = format_request(10, log.proof(10, 33), log.checkpoint(33))
    assert body.startswith(b"old 10\n")
    req = parse_request(body)
    assert req.old_size == 10 and list(req.proof) == log.proof(10, 33)


def test_format_request_refuses_what_no_witness_accepts(log: MemoryLog) -> None:
    with pytest.raises(ValueError):
        format_request(-1, [], log.checkpoint(3))
    with pytest.raises(ValueError):
        format_request(1, [bytes(32)] * 64, log.checkpoint(3))
    with pytest.raises(ValueError):
        format_request(1, [bytes(31)], log.checkpoint(3))
    with pytest.raises(ValueError):
        format_request(1, [], log.checkpoint(3)[:-1])


@pytest.mark.parametrize(
    ("body", "ctype", "size"),
    [
        (b"10\n", "text/x.tlog.size", 10),
        (b"0\n", "text/x.tlog.size", 0),
        (b"10\n", "Text/X.Tlog.Size; charset=utf-8", 10),
        (b"10\n", None, None),
        (b"10\n", "text/plain", None),
        (b"10", "text/x.tlog.size", None),
        (b"010\n", "text/x.tlog.size", None),
        (b"-1\n", "text/x.tlog.size", None),
        (b"ten\n", "text/x.tlog.size", None),
        (b"\xff\n", "text/x.tlog.size", None),
    ],
)
def test_parse_conflict(body: bytes, ctype: str | None, size: int | None) -> None:
    assert parse_conflict(body, ctype) == size


def test_origin_id_is_the_hex_sha256_of_the_origin() -> None:
    assert origin_id(ORIGIN) == hashlib.sha256(ORIGIN.encode()).hexdigest()


# The spec's example cosignature (C2SP tlog-cosignature v1.0.1). The spec publishes no
# public key, so this checks the framing and the message a verifier would check.

SPEC_LINE = (
    "\u2014 witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9"
    "dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==\n"
)
SPEC_BODY = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"


def test_the_spec_example_cosignature_decodes() -> None:
    from ledger.cosignature import parse_cosignature_lines, signed_message

    (sig,) = parse_cosignature_lines(SPEC_LINE)
    assert sig.name == "witness.example.com/w1" and sig.canonical
    assert sig.key_id.hex() == "8d66cf3f"
    assert len(sig.signature) == 8 + 64
    (timestamp,) = struct.unpack(">Q", sig.signature[:8])
    assert timestamp == 1679315147
    # The message the spec shows under "Signed message", byte for byte.
    expected = (
        b"cosignature/v1\ntime 1679315147\nexample.com/behind-the-sofa\n20852163\n"
        b"CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    )
    assert signed_message(SPEC_BODY, timestamp) == expected
    # And our own line for that key ID, time and signature is the spec's line.
    from ledger.cosignature import Cosignature

    ours = Cosignature("witness.example.com/w1", sig.key_id, timestamp, sig.signature[8:])
    assert ours.line() == SPEC_LINE
