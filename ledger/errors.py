"""Errors of the ledger: a message that says what happened and what to do.

`LedgerError` covers operational problems (missing files, locks, bad
arguments). `IntegrityError` is its own family: the log does not match its
signed checkpoints. It is never swallowed; the CLI exits 1 on it.
"""

from __future__ import annotations


class LedgerError(Exception):
    """An operational ledger problem; ``exit_code`` is what the CLI returns."""

    exit_code = 2

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}. {self.hint}" if self.hint else self.message


class Withdrawn(Exception):
    """Raised by an ``on_commit`` hook to withdraw its append, not an error: the state the
    entry would record is already recorded (another thread or an earlier run got there
    first), so the entry must not be written twice."""


class IntegrityError(LedgerError):
    """The stored log contradicts what the station signed."""

    exit_code = 1
