"""Errors of the appliance: one line that says what happened and what to do.

Exit codes: 0 ok, 1 an integrity or verification failure, 2 a usage,
configuration or operational error.
"""

from __future__ import annotations

from ledger.errors import IntegrityError, LedgerError

__all__ = ["ConfigError", "CustodyError", "IntegrityError", "LedgerError"]


class CustodyError(LedgerError):
    """An operational error of the appliance (exit code 2)."""


class ConfigError(CustodyError):
    """A configuration file that is missing or wrong; names the file and key."""

    def __init__(self, path: object, key: str, problem: str) -> None:
        where = f"config {path}" + (f": key '{key}'" if key else "")
        super().__init__(f"{where}: {problem}")
        self.key = key
