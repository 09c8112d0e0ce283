"""systemd's notify protocol: readiness, status lines and watchdog pings.

A datagram to the socket named by ``NOTIFY_SOCKET`` (a path, or ``@name`` for the
abstract namespace), as sd_notify(3) describes; a few lines rather than a library.
Outside systemd (no ``NOTIFY_SOCKET``) every call does nothing. The watchdog interval
is half of ``WATCHDOG_USEC`` (when ``WATCHDOG_PID``, if set, is this process).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger("custody")


class Notifier:
    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        addr = env.get("NOTIFY_SOCKET", "")
        self.addr: str | None = None
        if addr.startswith("@"):
            self.addr = "\0" + addr[1:]
        elif addr.startswith("/"):
            self.addr = addr
        self.watchdog_s: float | None = None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_s = int(usec) / 2e6
        self._sock: socket.socket | None = None
        self._warned = False

    @property
    def active(self) -> bool:
        return self.addr is not None

    def send(self, *fields: str) -> bool:
        if self.addr is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                # Never block the main loop (or the status job) on a listener that stopped
                # reading: a message that does not fit now is dropped; the next one says
                # the same, newer.
                self._sock.setblocking(False)
            self._sock.sendto("\n".join(fields).encode(), self.addr)
            return True
        except OSError as e:
            if not self._warned:
                self._warned = True
                log.warning("cannot notify systemd at %s: %s", self.addr.lstrip("\0"), e)
            return False

    def ready(self, status: str) -> bool:
        return self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def status(self, status: str) -> bool:
        return self.send(f"STATUS={status}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def reloading(self) -> bool:
        return self.send("RELOADING=1", "STATUS=reloading the configuration")

    def stopping(self) -> bool:
        return self.send("STOPPING=1", "STATUS=stopping: finishing in-flight work")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
