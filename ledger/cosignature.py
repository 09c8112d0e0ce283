"""Witness cosignatures (C2SP tlog-cosignature v1.0.1, Ed25519 ``cosignature/v1``).

A cosignature is a signed-note signature line on a checkpoint, made by a
witness that checked the checkpoint is consistent with everything it saw
before from that log:

- key ID = SHA-256(name ‖ ``\\n`` ‖ 0x04 ‖ public key)[:4]
- line   = ``— <name> base64(key ID ‖ u64 big-endian timestamp ‖ signature)``
- signed message = ``cosignature/v1\\ntime <T>\\n`` followed by the
  checkpoint body (the note text, without signature lines)
- verifier key: ``<name>+<hex key ID>+<base64(0x04 ‖ public key)>``
- signer key:   ``PRIVATE+KEY+<name>+<hex key ID>+<base64(0x04 ‖ seed)>``

Pure: bytes and strings in, values out.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import nacl.bindings
import nacl.exceptions

from ledger.note import (
    EM_DASH,
    Note,
    NoteError,
    NoteSignature,
    b64,
    check_key_name,
    parse_note,
    split_skey,
    split_vkey,
)

ALG_COSIGNATURE_V1 = 0x04
HEADER = "cosignature/v1"
MAX_TIMESTAMP = (1 << 63) - 1


def cosignature_key_id(name: str, public_key: bytes) -> bytes:
    return hashlib.sha256(
        name.encode() + b"\n" + bytes([ALG_COSIGNATURE_V1]) + public_key
    ).digest()[:4]


def signed_message(body: str, timestamp: int) -> bytes:
    """What a cosignature/v1 signs: the header, the time line and the checkpoint body."""
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise NoteError(f"cosignature timestamp {timestamp} is out of range")
    if not body.endswith("\n"):
        raise NoteError("checkpoint body does not end in a newline")
    return f"{HEADER}\ntime {timestamp}\n".encode() + body.encode()


@dataclass(frozen=True)
class Cosignature:
    """One verified cosignature: who made it and when (POSIX seconds)."""

    name: str
    key_id: bytes
    timestamp: int
    signature: bytes

    def line(self) -> str:
        raw = self.key_id + struct.pack(">Q", self.timestamp) + self.signature
        return f"{EM_DASH} {self.name} {b64(raw)}\n"


@dataclass(frozen=True)
class CosignatureVerifier:
    """A witness's public key, as a policy or a station pins it."""

    name: str
    public_key: bytes

    @property
    def key_id(self) -> bytes:
        return cosignature_key_id(self.name, self.public_key)

    def vkey(self) -> str:
        raw = bytes([ALG_COSIGNATURE_V1]) + self.public_key
        return f"{self.name}+{self.key_id.hex()}+{b64(raw)}"

    def matches(self, sig: NoteSignature) -> bool:
        return sig.name == self.name and sig.key_id == self.key_id

    def verify(self, body: str, sig: NoteSignature) -> Cosignature:
        """Check one signature line made by this key over ``body``; raise if it fails."""
        if not self.matches(sig):
            raise NoteError(f"signature is not by witness {self.name}+{self.key_id.hex()}")
        if not sig.canonical or len(sig.signature) != 8 + 64:
            raise NoteError(f"cosignature by {self.name} is malformed")
        (timestamp,) = struct.unpack(">Q", sig.signature[:8])
        signature = sig.signature[8:]
        try:
            msg = signed_message(body, timestamp)
            nacl.bindings.crypto_sign_open(signature + msg, self.public_key)
        except (NoteError, nacl.exceptions.BadSignatureError) as e:
            raise NoteError(f"cosignature by {self.name} does not verify") from e
        return Cosignature(self.name, sig.key_id, timestamp, signature)

    @classmethod
    def parse(cls, vkey: str) -> CosignatureVerifier:
        """Parse ``name+hexid+base64(0x04 ‖ key)``; the key ID must match the key."""
        name, kid, key = split_vkey(
            vkey, "witness key", ALG_COSIGNATURE_V1, "an Ed25519 cosignature/v1 key (0x04)"
        )
        v = cls(name, key)
        if v.key_id != kid:
            raise NoteError(f"witness key {vkey!r}: key ID does not match the key")
        return v


@dataclass(frozen=True)
class Cosigner:
    """A witness's signing key (holds the 32-byte Ed25519 seed)."""

    name: str
    seed: bytes

    def __post_init__(self) -> None:
        check_key_name(self.name)
        if len(self.seed) != 32:
            raise NoteError("Ed25519 seed must be 32 bytes")

    @cached_property
    def _keypair(self) -> tuple[bytes, bytes]:
        # Derived once: a witness cosigns every request, and deriving costs as much as
        # signing. (cached_property writes the instance dict, which a frozen dataclass
        # allows; it takes no part in equality.)
        pk, sk = nacl.bindings.crypto_sign_seed_keypair(self.seed)
        return bytes(pk), bytes(sk)

    @cached_property
    def key_id(self) -> bytes:
        return cosignature_key_id(self.name, self.public_key)

    @property
    def public_key(self) -> bytes:
        return self._keypair[0]

    def verifier(self) -> CosignatureVerifier:
        return CosignatureVerifier(self.name, self.public_key)

    def key_string(self) -> str:
        kid = cosignature_key_id(self.name, self.public_key)
        raw = bytes([ALG_COSIGNATURE_V1]) + self.seed
        return f"PRIVATE+KEY+{self.name}+{kid.hex()}+{b64(raw)}"

    def cosign(self, body: str, timestamp: int) -> Cosignature:
        """Cosign a checkpoint body (the caller has checked it is consistent)."""
        if timestamp <= 0:
            raise NoteError("a cosignature needs a non-zero timestamp")
        sig = bytes(
            nacl.bindings.crypto_sign(signed_message(body, timestamp), self._keypair[1])[:64]
        )
        return Cosignature(self.name, self.key_id, timestamp, sig)

    @classmethod
    def generate(cls, name: str) -> Cosigner:
        return cls(name, nacl.bindings.randombytes(32))

    @classmethod
    def parse(cls, skey: str) -> Cosigner:
        name, hid, seed = split_skey(
            skey, "witness signing key", ALG_COSIGNATURE_V1, "an Ed25519 cosignature/v1 key"
        )
        c = cls(name, seed)
        if c.key_id.hex() != hid:
            raise NoteError("witness signing key ID does not match the key")
        return c


def verify_cosignatures(
    note: Note | str | bytes, witnesses: Sequence[CosignatureVerifier]
) -> list[tuple[CosignatureVerifier, Cosignature]]:
    """The witness keys whose cosignature on this note verifies, with each cosignature.

    Lines by unknown keys are ignored (C2SP signed-note); a line that names a
    known witness key but does not verify makes the note malformed and raises.
    """
    n = note if isinstance(note, Note) else parse_note(note)
    good: dict[CosignatureVerifier, Cosignature] = {}
    for sig in n.signatures:
        for w in witnesses:
            if w.matches(sig):
                good[w] = w.verify(n.text, sig)
    return list(good.items())


def parse_cosignature_lines(text: str | bytes) -> list[NoteSignature]:
    """Split a witness's 200 answer (signature lines only) into signatures."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise NoteError("witness answer is not UTF-8") from e
    if not text.endswith("\n"):
        raise NoteError("witness answer does not end in a newline")
    # Reuse the note parser on a one-line stand-in text: it checks each line.
    return list(parse_note("x\n\n" + text).signatures)


def add_signature_lines(note: str, lines: Sequence[str]) -> str:
    """The note with extra signature lines appended (each line ends in a newline);
    lines the note already carries are not repeated."""
    have = set(note.split("\n"))
    extra = "".join(ln for ln in lines if ln.rstrip("\n") not in have)
    return note + extra
