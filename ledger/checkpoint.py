"""Checkpoints (C2SP tlog-checkpoint v1.0.0), signed as C2SP signed notes.

Body: ``<origin>\\n<size>\\n<base64 root>\\n`` and optional non-empty extension
lines. Parsing is strict: a decimal size without sign or leading zeros, a
canonical base64 root of exactly 32 bytes, no empty lines.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ledger.note import (
    BoundSigner,
    Note,
    NoteError,
    Signer,
    Verifier,
    b64,
    b64decode_strict,
    open_note,
    sign_note,
)
from ledger.tree import HASH_SIZE

_SIZE_RE = re.compile(r"0|[1-9][0-9]*")


class CheckpointError(ValueError):
    """A checkpoint that is malformed or not signed by a trusted key."""


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def body(self) -> str:
        return f"{self.origin}\n{self.size}\n{b64(self.root)}\n" + "".join(
            e + "\n" for e in self.extensions
        )

    def sign(self, signers: Sequence[Signer | BoundSigner]) -> str:
        """The signed note text."""
        return sign_note(self.body(), signers)

    @classmethod
    def parse_body(cls, text: str) -> Checkpoint:
        if not text.endswith("\n"):
            raise CheckpointError("checkpoint body does not end in a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise CheckpointError("checkpoint body needs origin, size and root lines")
        origin, size_s, root_s, *ext = lines
        if not origin:
            raise CheckpointError("checkpoint origin line is empty")
        if not _SIZE_RE.fullmatch(size_s) or len(size_s) > 20:
            raise CheckpointError(f"checkpoint size {size_s!r} is not a plain decimal")
        size = int(size_s)
        if size >= 1 << 64:
            raise CheckpointError("checkpoint size does not fit in 64 bits")
        try:
            root = b64decode_strict(root_s)
        except NoteError as e:
            raise CheckpointError(f"checkpoint root {root_s!r} is not base64") from e
        if len(root) != HASH_SIZE:
            raise CheckpointError(f"checkpoint root is {len(root)} bytes, not {HASH_SIZE}")
        for line in ext:
            if not line:
                raise CheckpointError("checkpoint has an empty extension line")
        return cls(origin, size, root, tuple(ext))


@dataclass(frozen=True)
class SignedCheckpoint:
    checkpoint: Checkpoint
    note: Note
    text: str
    verified_by: tuple[Verifier, ...]


def open_checkpoint(
    text: str | bytes, verifiers: Sequence[Verifier], origin: str | None = None
) -> SignedCheckpoint:
    """Verify a signed checkpoint against trusted keys and parse it.

    ``origin``, when given, must match the checkpoint's origin line.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise CheckpointError("checkpoint is not valid UTF-8") from e
    try:
        note, good = open_note(text, verifiers)
    except NoteError as e:
        raise CheckpointError(str(e)) from e
    cp = Checkpoint.parse_body(note.text)
    if origin is not None and cp.origin != origin:
        raise CheckpointError(f"checkpoint origin {cp.origin!r} is not {origin!r}")
    return SignedCheckpoint(cp, note, text, tuple(good))
