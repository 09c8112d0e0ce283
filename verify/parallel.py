"""The threaded shell around `ledger.audit.verify_log`: signatures checked on a pool
(here, beside the verifiers, because the ledger core starts no threads).

`ledger.audit` is pure and starts no threads; whoever verifies a large log wants
the signature checks (libsodium releases the GIL) overlapped with decoding and
hashing. This opens the pool for the length of one verification.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

import ledger.audit as audit
from ledger.note import Verifier
from ledger.tiles import TileSource


def verify_log(
    source: TileSource,
    checkpoint_text: bytes | None,
    verifiers: Sequence[Verifier],
    origin: str | None = None,
    known_checkpoints: Iterable[bytes | str] = (),
    check_entries: bool = True,
    progress: Callable[[int, int], None] | None = None,
    on_leaf: Callable[[int, bytes], None] | None = None,
    workers: int = 2,
) -> audit.Report:
    """`ledger.audit.verify_log` with signature checks on ``workers`` threads."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return audit.verify_log(
            source,
            checkpoint_text,
            verifiers,
            origin,
            known_checkpoints,
            check_entries,
            progress,
            executor=pool,
            on_leaf=on_leaf,
        )
