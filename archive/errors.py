"""Errors of the cold store. Each says what happened and what to do.

`StoreUnavailable` and `TransferCorrupted` are transient: the upload queue
retries them with backoff. The integrity family (`ObjectConflict`,
`ObjectCorrupt`, `LocalCopyCorrupt`) is never swallowed: a stored or local
object does not hold the bytes its SHA-256 names.
"""

from __future__ import annotations

from ledger.errors import IntegrityError, LedgerError


class StoreError(LedgerError):
    """An operational problem with the cold store (configuration, permissions)."""


class StoreUnavailable(StoreError):
    """The store cannot be reached or answered with a server error; retried later."""


class TransferCorrupted(StoreError):
    """The store rejected an upload whose bytes did not match their checksum; retried."""


class LockRefused(StoreError):
    """The store refused a delete, overwrite or shortening because of object lock or a hold."""


class LockingNotEnabled(StoreError):
    """The bucket has no object lock although the configuration requires it."""


class NotFound(StoreError):
    """No object under that key (or hash) in the store."""


class RestoreRequired(StoreError):
    """The object is in a cold class and must be restored before it can be read."""


class ObjectConflict(IntegrityError):
    """A key already holds an object whose checksum differs from the one being written."""


class ObjectCorrupt(IntegrityError):
    """A stored object read back with a different SHA-256 than its key or record."""


class LocalCopyCorrupt(IntegrityError):
    """The dock's own copy no longer hashes to its name; it was not uploaded."""
