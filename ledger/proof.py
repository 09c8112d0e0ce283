"""Offline inclusion proofs (C2SP tlog-proof v1).

```
c2sp.org/tlog-proof@v1
extra <base64>            (optional)
index <n>
<base64 proof hash>       (zero or more, leaf-level sibling first)

<signed checkpoint, verbatim>
```
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ledger.checkpoint import CheckpointError, SignedCheckpoint, open_checkpoint
from ledger.note import NoteError, Verifier, b64, b64decode_strict
from ledger.tree import HASH_SIZE, leaf_hash, verify_inclusion

HEADER = "c2sp.org/tlog-proof@v1"
_INDEX_RE = re.compile(r"index (0|[1-9][0-9]*)")


class ProofError(ValueError):
    """A tlog-proof that is malformed or does not prove what it claims."""


@dataclass(frozen=True)
class TlogProof:
    index: int
    hashes: tuple[bytes, ...]
    checkpoint: str  # the signed note, verbatim
    extra: bytes | None = None

    def format(self) -> str:
        lines = [HEADER]
        if self.extra is not None:
            lines.append(f"extra {b64(self.extra)}")
        lines.append(f"index {self.index}")
        lines.extend(b64(h) for h in self.hashes)
        return "\n".join(lines) + "\n\n" + self.checkpoint

    @classmethod
    def parse(cls, text: str | bytes) -> TlogProof:
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ProofError("proof is not valid UTF-8") from e
        head, sep, checkpoint = text.partition("\n\n")
        if not sep:
            raise ProofError("proof has no blank line before its checkpoint")
        lines = head.split("\n")
        if lines[0] != HEADER:
            raise ProofError(f"proof does not start with {HEADER!r}")
        pos = 1
        extra = None
        if pos < len(lines) and lines[pos].startswith("extra "):
            try:
                extra = b64decode_strict(lines[pos][6:])
            except NoteError as e:
                raise ProofError(f"proof extra data: {e}") from e
            pos += 1
        if pos >= len(lines) or not _INDEX_RE.fullmatch(lines[pos]):
            raise ProofError("proof has no valid 'index <n>' line")
        index = int(lines[pos][6:])
        hashes = []
        for line in lines[pos + 1 :]:
            try:
                h = b64decode_strict(line)
            except NoteError as e:
                raise ProofError(f"proof hash line {line!r} is not base64") from e
            if len(h) != HASH_SIZE:
                raise ProofError(f"proof hash line {line!r} is not 32 bytes")
            hashes.append(h)
        return cls(index, tuple(hashes), checkpoint, extra)

    def verify(
        self, leaf: bytes, verifiers: Sequence[Verifier], origin: str | None = None
    ) -> SignedCheckpoint:
        """Check the checkpoint signature and that ``leaf`` is at ``index`` under it."""
        try:
            sc = open_checkpoint(self.checkpoint, verifiers, origin)
        except CheckpointError as e:
            raise ProofError(f"proof checkpoint: {e}") from e
        cp = sc.checkpoint
        if not verify_inclusion(self.index, cp.size, leaf_hash(leaf), self.hashes, cp.root):
            raise ProofError(
                f"entry is not at index {self.index} of the tree of size {cp.size} "
                "(inclusion proof does not verify)"
            )
        return sc
