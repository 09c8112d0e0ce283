"""Errors of capture. Each says what happened to which file and what happens next."""

from __future__ import annotations

from ledger.errors import LedgerError


class CaptureError(LedgerError):
    """A file could not be captured this time; it stays queued unless ``permanent``."""

    permanent = False


class SourceChanged(CaptureError):
    """The source changed or vanished while it was being read; it will be retried."""


class SourceUnreadable(CaptureError):
    """The source cannot be opened or read (permissions, I/O error, unplugged)."""


class NotRegularFile(CaptureError):
    """A symlink, FIFO, device or other non-regular file: never followed or read."""

    permanent = True


class CopyMismatch(CaptureError):
    """The stored copy did not read back identical: the local disk is failing."""


class DiskFull(CaptureError):
    """Local free space is under the floor; capture pauses until space returns."""
