"""Errors of the appliance: one line that says what happened and what to do.

Exit codes: 0 ok, 1 an integrity or verification failure, 2 a usage,
configuration or operational error.
"""

from __future__ import annotations

import errno

from ledger.errors import IntegrityError, LedgerError

__all__ = [
    "ConfigError",
    "CustodyError",
    "IntegrityError",
    "LedgerError",
    "describe_os_error",
]


class CustodyError(LedgerError):
    """An operational error of the appliance (exit code 2)."""


class ConfigError(CustodyError):
    """A configuration file that is missing or wrong; names the file and key."""

    def __init__(self, path: object, key: str, problem: str) -> None:
        where = f"config {path}" + (f": key '{key}'" if key else "")
        super().__init__(f"{where}: {problem}")
        self.key = key


def describe_os_error(e: OSError) -> str:
    """One line for a failed system call: the file, the cause, and its errno name
    (ENOSPC, EACCES...) so the real cause is searchable."""
    where = f"{e.filename}: " if e.filename else ""
    name = errno.errorcode.get(e.errno or 0, "")
    cause = e.strerror or str(e)
    return f"{where}{cause}" + (f" ({name})" if name else "")
