"""The media worker's lower CPU and I/O priority reaches the ffmpeg processes it starts."""

from __future__ import annotations

import subprocess
import threading

from ingest.fingerprinter import IOPRIO_CLASS_IDLE, io_priority, lower_priority


def test_media_thread_and_its_children_run_at_low_priority() -> None:
    seen: dict[str, object] = {}

    def worker() -> None:
        seen["before"] = io_priority()
        lower_priority()
        seen["after"] = io_priority()
        # What a child (ffmpeg) inherits: its own I/O class and nice value.
        out = subprocess.run(
            ["sh", "-c", "ionice -p $$; cut -d' ' -f19 /proc/$$/stat"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        seen["child"] = out

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen["after"] == IOPRIO_CLASS_IDLE << 13 != seen["before"]
    assert seen["child"] == ["idle", "10"]
    # Only that thread was lowered, not the process (capture threads keep theirs).
    assert io_priority() == seen["before"]
