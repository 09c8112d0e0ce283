"""A small in-memory transparency log for the witness tests: leaves, roots,
consistency proofs and signed checkpoints, from the pure ledger core."""

from __future__ import annotations

from collections.abc import Sequence

from ledger import tree
from ledger.checkpoint import Checkpoint
from ledger.note import Signer
from witness.protocol import format_request


class ListReader:
    def __init__(self, hashes: list[bytes]) -> None:
        self.hashes = hashes

    def stored_hash(self, level: int, index: int) -> bytes:
        return tree.root_of(self.hashes[index << level : (index + 1) << level])


class MemoryLog:
    """A log whose leaves are ``b"<origin> entry <i>"``; signs with ``signer``."""

    def __init__(self, origin: str, signer: Signer | None = None, seed: str = "") -> None:
        self.origin = origin
        self.signer = signer or Signer.generate(origin)
        self.seed = seed
        self.leaves: list[bytes] = []

    @property
    def vkey(self) -> str:
        return self.signer.verifier().vkey()

    def grow_to(self, size: int) -> MemoryLog:
        while len(self.leaves) < size:
            i = len(self.leaves)
            self.leaves.append(tree.leaf_hash(f"{self.origin}{self.seed} entry {i}".encode()))
        return self

    def root(self, size: int) -> bytes:
        return tree.root_of(self.grow_to(size).leaves[:size])

    def proof(self, old: int, new: int) -> list[bytes]:
        if old == 0 or old == new:
            return []
        return tree.consistency_proof(ListReader(self.grow_to(new).leaves), old, new)

    def checkpoint(self, size: int, signers: Sequence[Signer] | None = None) -> str:
        cp = Checkpoint(self.origin, size, self.root(size))
        return cp.sign(list(signers) if signers is not None else [self.signer])

    def request(self, old: int, new: int, signers: Sequence[Signer] | None = None) -> bytes:
        return format_request(old, self.proof(old, new), self.checkpoint(new, signers))
