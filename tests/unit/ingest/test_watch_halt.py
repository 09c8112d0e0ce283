"""An integrity error raised while handling an inotify event halts capture: it is
never only logged (real inotify on a real folder)."""

from __future__ import annotations

import time
from pathlib import Path

from ingest.watch import DockWatcher
from ledger.errors import IntegrityError


def test_an_integrity_error_in_an_event_halts(tmp_path: Path) -> None:
    reasons: list[str] = []

    def on_file(path: Path, kind: str) -> None:
        raise IntegrityError(f"ledger damaged while noting {path.name}")

    watcher = DockWatcher([tmp_path], on_file, lambda p: None, halt=reasons.append)
    watcher.start()
    try:
        time.sleep(0.2)
        (tmp_path / "REC_0001.MP4").write_bytes(b"x")
        end = time.monotonic() + 10
        while not reasons and time.monotonic() < end:
            time.sleep(0.05)
    finally:
        watcher.stop()
    assert reasons, "the integrity error was swallowed"
    assert "ledger damaged while noting REC_0001.MP4" in reasons[0]
    assert "REC_0001.MP4" in reasons[0]
