"""Entries: canonical encoding equals RFC 8785, signatures, limits."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.entry import (
    MAX_SAFE_INT,
    EntryError,
    canonical_json,
    decode_entry,
    format_time,
    make_entry,
    parse_time,
)
from ledger.note import Signer

SIGNER = Signer("custody.test/entry", bytes(range(32)))
T = "2026-11-30T08:00:00.000Z"
OTHER = Signer("custody.test/entry", bytes(range(1, 33)))

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-MAX_SAFE_INT, MAX_SAFE_INT),
    st.text(max_size=20),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=25,
)


@settings(max_examples=500)
@given(json_values)
def test_canonical_equals_rfc8785(value: Any) -> None:
    assert canonical_json(value) == rfc8785.dumps(value)


def test_key_order_is_utf16_not_code_points() -> None:
    # U+FF61 sorts after U+10000 by code point but before it in UTF-16 (surrogates < 0xE000).
    v = {"\uff61": 1, "\U00010000": 2}
    assert canonical_json(v) == rfc8785.dumps(v)
    assert canonical_json(v).index("\U00010000".encode()) < canonical_json(v).index(
        "\uff61".encode()
    )


@pytest.mark.parametrize(
    "bad", [1.5, {"a": float("nan")}, 2**53, -(2**53), {1: "x"}, "\ud800", {"a": {1, 2}}]
)
def test_values_outside_domain_are_refused(bad: Any) -> None:
    with pytest.raises(EntryError):
        canonical_json(bad)


def test_sign_and_verify() -> None:
    leaf = make_entry(SIGNER, SIGNER.name, "note", {"text": "hello 执法记录仪", "n": 3}, T)
    e = decode_entry(leaf)
    assert e.type == "note" and e.payload() == {"text": "hello 执法记录仪", "n": 3}
    assert e.verify(SIGNER.verifier())
    assert not e.verify(OTHER.verifier())
    assert e.signed_message().startswith(b"custody-entry/v1\n")
    # The signature covers the canonical encoding of the entry without sig.
    fields = json.loads(leaf)
    sig = base64.b64decode(fields.pop("sig"))
    assert SIGNER.verifier().verify(b"custody-entry/v1\n" + rfc8785.dumps(fields), sig)


@settings(max_examples=300)
@given(pos=st.integers(0, 10_000), bit=st.integers(0, 7))
def test_any_changed_byte_fails(pos: int, bit: int) -> None:
    leaf = make_entry(SIGNER, SIGNER.name, "note", {"text": "the original", "case": "A-1"}, T)
    pos %= len(leaf)
    bad = leaf[:pos] + bytes([leaf[pos] ^ (1 << bit)]) + leaf[pos + 1 :]
    try:
        e = decode_entry(bad)
    except EntryError:
        return
    assert not e.verify(SIGNER.verifier())


def test_signature_base64_must_be_canonical() -> None:
    """A leaf is malleable if the sig's unused base64 bits may vary; refuse that."""
    leaf = make_entry(SIGNER, SIGNER.name, "note", {"text": "x"}, T)
    fields = json.loads(leaf)
    s = fields["sig"]
    assert s.endswith("==")
    last = s[-3]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    twin = alphabet[alphabet.index(last) ^ 1]  # differs only in a bit base64 ignores
    fields["sig"] = s[:-3] + twin + "=="
    assert base64.b64decode(fields["sig"]) == base64.b64decode(s)
    with pytest.raises(EntryError, match="canonical base64"):
        decode_entry(rfc8785.dumps(fields))


def test_limits_and_reserved_fields() -> None:
    with pytest.raises(EntryError, match="sidecar"):
        make_entry(SIGNER, SIGNER.name, "note", {"text": "x" * 70_000}, T)
    with pytest.raises(EntryError, match="reserved"):
        make_entry(SIGNER, SIGNER.name, "note", {"sig": "x"}, T)
    with pytest.raises(EntryError, match="type"):
        make_entry(SIGNER, SIGNER.name, "Bad Type", {}, T)
    with pytest.raises(EntryError, match="floats"):
        make_entry(SIGNER, SIGNER.name, "note", {"duration": 1.5}, T)


def test_non_canonical_leaf_is_refused() -> None:
    leaf = make_entry(SIGNER, SIGNER.name, "note", {"text": "x"}, T)
    spaced = json.dumps(json.loads(leaf), indent=1).encode()
    with pytest.raises(EntryError, match="canonical"):
        decode_entry(spaced)


def test_times() -> None:
    t = datetime(2026, 11, 25, 8, 30, 0, 123456, tzinfo=UTC)
    s = format_time(t)
    assert s == "2026-11-25T08:30:00.123Z"
    assert parse_time(s) == t.replace(microsecond=123000)
    with pytest.raises(EntryError):
        parse_time("2026-11-25 08:30:00")
    with pytest.raises(EntryError):
        format_time(datetime(2026, 1, 1))
