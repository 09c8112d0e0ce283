"""Signed notes with Ed25519 keys (C2SP signed-note v1.0.0).

Key strings follow the Go `sumdb/note` encoding that the transparency-log
world uses:

- verifier key: ``<name>+<hex key ID>+<base64(0x01 ‖ public key)>``
- signer key:   ``PRIVATE+KEY+<name>+<hex key ID>+<base64(0x01 ‖ seed)>``

key ID = SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key)[:4]. Signature lines are
``— <name> <base64(key ID ‖ signature)>`` with U+2014 EM DASH.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import nacl.bindings
import nacl.exceptions

ALG_ED25519 = 0x01
EM_DASH = "\u2014"
MAX_SIGNATURES = 100


class NoteError(ValueError):
    """A note or key that is malformed or does not verify."""


def b64decode_strict(s: str) -> bytes:
    """Standard base64 with padding, rejecting anything non-canonical."""
    try:
        raw = base64.b64decode(s.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as e:
        raise NoteError(f"not standard base64: {s!r}") from e
    if base64.b64encode(raw).decode("ascii") != s:
        raise NoteError(f"not canonical base64: {s!r}")
    return raw


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# Checked on every note a witness or verifier reads: regular expressions run in C.
_NAME_SPACE_OR_PLUS = re.compile(r"[\s+]")  # \s is str.isspace(): Unicode spaces too
_CONTROL = re.compile(r"[\x00-\x1f]")
_CONTROL_BUT_NEWLINE = re.compile(r"[\x00-\x09\x0b-\x1f]")


def check_key_name(name: str) -> None:
    if not name or _NAME_SPACE_OR_PLUS.search(name):
        raise NoteError(f"key name {name!r} must be non-empty, without spaces or '+'")
    if _CONTROL.search(name):
        raise NoteError(f"key name {name!r} contains control characters")


def key_id(name: str, public_key: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([ALG_ED25519]) + public_key).digest()[:4]


@dataclass(frozen=True)
class Verifier:
    """An Ed25519 note verifier key."""

    name: str
    public_key: bytes

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, self.public_key)

    def vkey(self) -> str:
        return f"{self.name}+{self.key_id.hex()}+{b64(bytes([ALG_ED25519]) + self.public_key)}"

    def verify(self, message: bytes, signature: bytes) -> bool:
        if len(signature) != 64:
            return False
        try:
            nacl.bindings.crypto_sign_open(signature + message, self.public_key)
        except nacl.exceptions.BadSignatureError:
            return False
        return True

    @classmethod
    def parse(cls, vkey: str) -> Verifier:
        """Parse ``name+hexid+base64key``; checks the key ID matches the key."""
        name, kid, key = split_vkey(vkey, "verifier key", ALG_ED25519, "an Ed25519 key")
        v = cls(name, key)
        if v.key_id != kid:
            raise NoteError(f"verifier key {vkey!r}: key ID does not match the key")
        return v


def split_vkey(vkey: str, what: str, alg: int, alg_name: str) -> tuple[str, bytes, bytes]:
    """``name+hexid+base64(alg ‖ key)`` → (name, key ID, 32-byte key), strictly (the
    caller checks the key ID against the key: how it is computed depends on ``alg``)."""
    parts = vkey.strip().split("+", 2)
    if len(parts) != 3:
        raise NoteError(f"{what} {vkey!r} is not name+keyid+key")
    name, hid, k = parts
    check_key_name(name)
    if len(hid) != 8 or hid != hid.lower():
        raise NoteError(f"{what} {vkey!r}: key ID must be 8 lowercase hex digits")
    try:
        kid = bytes.fromhex(hid)
    except ValueError as e:
        raise NoteError(f"{what} {vkey!r}: key ID is not hex") from e
    raw = b64decode_strict(k)
    if len(raw) != 33 or raw[0] != alg:
        raise NoteError(f"{what} {vkey!r}: not {alg_name}")
    return name, kid, raw[1:]


@dataclass(frozen=True)
class Signer:
    """An Ed25519 note signer (holds the 32-byte seed)."""

    name: str
    seed: bytes

    def __post_init__(self) -> None:
        check_key_name(self.name)
        if len(self.seed) != 32:
            raise NoteError("Ed25519 seed must be 32 bytes")

    @property
    def _secret(self) -> bytes:
        # PyNaCl's 64-byte secret key (seed ‖ public key); cheap to derive.
        return bytes(nacl.bindings.crypto_sign_seed_keypair(self.seed)[1])

    @property
    def public_key(self) -> bytes:
        return bytes(nacl.bindings.crypto_sign_seed_keypair(self.seed)[0])

    def verifier(self) -> Verifier:
        return Verifier(self.name, self.public_key)

    def key_string(self) -> str:
        kid = key_id(self.name, self.public_key)
        return f"PRIVATE+KEY+{self.name}+{kid.hex()}+{b64(bytes([ALG_ED25519]) + self.seed)}"

    def sign(self, message: bytes) -> bytes:
        return bytes(nacl.bindings.crypto_sign(message, self._secret)[:64])

    def bound(self) -> BoundSigner:
        """A signer with the secret key expanded once, for signing in bulk."""
        return BoundSigner(self)

    @classmethod
    def generate(cls, name: str) -> Signer:
        return cls(name, nacl.bindings.randombytes(32))

    @classmethod
    def parse(cls, skey: str) -> Signer:
        name, hid, seed = split_skey(skey, "signer key", ALG_ED25519, "an Ed25519 key")
        s = cls(name, seed)
        if key_id(name, s.public_key).hex() != hid:
            raise NoteError("signer key ID does not match the key")
        return s


def split_skey(skey: str, what: str, alg: int, alg_name: str) -> tuple[str, str, bytes]:
    """``PRIVATE+KEY+name+hexid+base64(alg ‖ seed)`` → (name, hex key ID, 32-byte seed);
    the caller checks the key ID (how it is computed depends on ``alg``)."""
    parts = skey.strip().split("+", 4)
    if len(parts) != 5 or parts[0] != "PRIVATE" or parts[1] != "KEY":
        raise NoteError(f"{what} is not PRIVATE+KEY+name+keyid+key")
    _, _, name, hid, k = parts
    raw = b64decode_strict(k)
    if len(raw) != 33 or raw[0] != alg:
        raise NoteError(f"{what} is not {alg_name}")
    return name, hid, raw[1:]


class BoundSigner:
    """Signer with its expanded secret cached (signing is then one C call)."""

    __slots__ = ("_sk", "key_id", "name")

    def __init__(self, signer: Signer) -> None:
        self.name = signer.name
        self._sk = signer._secret
        self.key_id = key_id(signer.name, signer.public_key)

    def sign(self, message: bytes) -> bytes:
        return bytes(nacl.bindings.crypto_sign(message, self._sk)[:64])


@dataclass(frozen=True)
class NoteSignature:
    name: str
    key_id: bytes
    signature: bytes
    canonical: bool = True  # False: the base64 had non-zero padding bits

    def line(self) -> str:
        return f"{EM_DASH} {self.name} {b64(self.key_id + self.signature)}\n"


@dataclass(frozen=True)
class Note:
    """A parsed signed note: its text (ending in newline) and signature lines."""

    text: str
    signatures: tuple[NoteSignature, ...]

    def format(self) -> str:
        return self.text + "\n" + "".join(s.line() for s in self.signatures)


def sign_note(text: str, signers: Iterable[Signer | BoundSigner]) -> str:
    """Sign ``text`` (which must end in a newline) with each signer."""
    if not text.endswith("\n"):
        raise NoteError("note text must end in a newline")
    _check_text(text)
    msg = text.encode()
    sigs = []
    for s in signers:
        kid = s.key_id if isinstance(s, BoundSigner) else key_id(s.name, s.public_key)
        sigs.append(NoteSignature(s.name, kid, s.sign(msg)))
    if not sigs:
        raise NoteError("a signed note needs at least one signer")
    return Note(text, tuple(sigs)).format()


def _check_text(text: str) -> None:
    m = _CONTROL_BUT_NEWLINE.search(text)
    if m:
        raise NoteError(f"note contains control character U+{ord(m.group()):04X}")


def parse_note(note: str | bytes) -> Note:
    """Split a signed note into text and signatures (no verification)."""
    if isinstance(note, bytes):
        try:
            note = note.decode("utf-8")
        except UnicodeDecodeError as e:
            raise NoteError("note is not valid UTF-8") from e
    _check_text(note)
    if not note.endswith("\n"):
        raise NoteError("note does not end in a newline")
    split = note.rfind("\n\n")
    if split < 0:
        raise NoteError("note has no blank line before its signatures")
    text, sig_block = note[: split + 1], note[split + 2 :]
    lines = sig_block[:-1].split("\n") if sig_block else []
    if not lines:
        raise NoteError("note has no signature lines")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"note has more than {MAX_SIGNATURES} signatures")
    sigs = []
    for line in lines:
        if not line.startswith(EM_DASH + " "):
            raise NoteError(
                f"malformed signature line {line!r} (must start with U+2014 and a space)"
            )
        rest = line[2:]
        name, sep, encoded = rest.rpartition(" ")
        if not sep:
            raise NoteError(f"malformed signature line {line!r}")
        check_key_name(name)
        try:
            raw = base64.b64decode(encoded.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError) as e:
            raise NoteError(f"signature in line {line!r} is not base64") from e
        canonical = base64.b64encode(raw).decode("ascii") == encoded
        if len(raw) < 5:
            raise NoteError(f"signature too short in line {line!r}")
        sigs.append(NoteSignature(name, raw[:4], raw[4:], canonical))
    return Note(text, tuple(sigs))


def open_note(note: str | bytes, verifiers: Sequence[Verifier]) -> tuple[Note, list[Verifier]]:
    """Parse and verify a note; return it and the verifiers whose signatures hold.

    Unknown keys are ignored; a known key whose signature fails rejects the
    whole note; at least one known key must verify (C2SP signed-note).
    """
    n = parse_note(note)
    known = {(v.name, v.key_id): v for v in verifiers}
    msg = n.text.encode()
    good: list[Verifier] = []
    unknown: list[str] = []
    for s in n.signatures:
        v = known.get((s.name, s.key_id))
        if v is None:
            unknown.append(f"{s.name}+{s.key_id.hex()}")
            continue
        if not s.canonical or not v.verify(msg, s.signature):
            raise NoteError(f"signature by {v.name}+{s.key_id.hex()} does not verify")
        good.append(v)
    if not good:
        raise NoteError(
            "no signature by a trusted key"
            + (f" (signed only by {', '.join(unknown)})" if unknown else "")
        )
    return n, good
