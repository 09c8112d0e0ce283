"""`access` entries: who saw which footage, downloaded what, asked for and approved which
export, and who failed to log in, signed into the log before the answer is sent.

One playback of a recording is dozens of HTTP Range requests; they are one `play`
entry per session, object and kind within `WINDOW_S` (likewise `download`), so the
log says who watched without growing by a leaf per request.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from web.source import Source

WINDOW_S = 600
MAX_TEXT = 300  # user-typed text in an entry (purpose, a failed login's name)

ACTIONS = (
    "view",
    "play",
    "download",
    "case_view",
    "export_request",
    "export_approve",
    "export_download",
    "login_failed",
)


def clip(text: str, limit: int = MAX_TEXT) -> str:
    """User-typed text as it goes into an entry: one line, bounded."""
    return " ".join(text.split())[:limit]


class AccessLog:
    def __init__(self, source: Source, clock: Callable[[], float] = time.monotonic) -> None:
        self.source = source
        self.clock = clock
        self._recent: dict[tuple[str, ...], float] = {}
        self._lock = threading.Lock()

    def record(
        self,
        action: str,
        user: str,
        role: str,
        client: str,
        once_per: tuple[str, ...] | None = None,
        **fields: Any,
    ) -> int | None:
        """Append one signed `access` entry (committed on return) and give its index.
        With ``once_per`` (a key such as the session and the object), an entry made for
        the same key within WINDOW_S stands for this one: None is returned."""
        assert action in ACTIONS, action
        if once_per is not None:
            key = (action, *once_per)
            now = self.clock()
            with self._lock:
                if now - self._recent.get(key, -WINDOW_S - 1) < WINDOW_S:
                    return None
                if len(self._recent) > 10_000:
                    self._recent = {k: t for k, t in self._recent.items() if now - t < WINDOW_S}
        payload: dict[str, Any] = {"action": action, "user": user, "role": role, "client": client}
        payload.update({k: v for k, v in fields.items() if v is not None})
        (index,) = self.source.record([("access", payload)])
        if once_per is not None:
            with self._lock:
                self._recent[(action, *once_per)] = self.clock()
        return index
