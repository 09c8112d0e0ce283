"""What every `custody` command module shares: the config, argument types, dates.

The command modules (``custody.cli_*``) import this one and never ``custody.cli``,
which only builds the parser and runs the command: so there is no import cycle.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from custody.errors import CustodyError

if TYPE_CHECKING:
    from custody import config as cfg
    from ledger.note import Verifier

MAX_INDEX = (1 << 63) - 1

Command = Callable[[argparse.Namespace], int]


def load(args: argparse.Namespace) -> cfg.Config:
    """The station's config, from -c/--config, $CUSTODY_CONFIG or the default path."""
    from custody import config as cfg

    return cfg.load(cfg.config_path(args.config))


def with_config(fn: Callable[[argparse.Namespace, cfg.Config], int]) -> Command:
    """A command that takes the loaded config as its second argument."""
    return lambda args: fn(args, load(args))


def index_arg(text: str) -> int:
    """argparse type: a ledger index or size (0 .. 2^63-1)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 0 <= v <= MAX_INDEX:
        raise argparse.ArgumentTypeError(f"{v} is outside 0..{MAX_INDEX}")
    return v


def sha_arg(value: str) -> str:
    v = value.lower()
    if len(v) != 64 or any(c not in "0123456789abcdef" for c in v):
        raise CustodyError(f"{value!r} is not a SHA-256 (64 hex digits)")
    return v


def parse_date(value: str) -> int:
    """argparse type: a date (or ISO date and time) as epoch seconds. Without a zone it
    is the station's local time: an officer asking for 25 November means the local day,
    not 08:00 to 08:00 in Beijing."""
    try:
        d = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date (YYYY-MM-DD)") from None
    if d.tzinfo is None:
        d = d.astimezone()  # a naive time is taken as local time
    return int(d.timestamp())


def iso_date(t: int | None) -> str:
    """A UTC date (YYYY-MM-DD) for epoch seconds; "never" for None."""
    if t is None:
        return "never"
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d")


def read_text(path: str, what: str, limit: int = 1 << 20) -> str:
    """A small input file (a key, a checkpoint): bounded, and a FIFO, device or folder
    is refused at once instead of hanging or filling memory."""
    from verify import readfile

    try:
        return readfile.read_text(path, limit)
    except FileNotFoundError:
        raise CustodyError(f"cannot read {what} {path}: it does not exist") from None
    except readfile.Unreadable as e:
        raise CustodyError(f"cannot read {what} {path}: {e}") from None


def parse_vkey(value: str) -> Verifier:
    """--vkey: the verifier key itself, or a file holding it (anything at that path is
    read as the file, and refused if it is not a regular UTF-8 file)."""
    from ledger.note import NoteError, Verifier

    text = read_text(value, "verifier key file", 1 << 16) if os.path.lexists(value) else value
    try:
        return Verifier.parse(text.strip())
    except NoteError as e:
        raise CustodyError(f"--vkey: {e}") from None


def cold_store(conf: cfg.Config) -> Any:
    """The configured cold store; an error naming the config when there is none."""
    from custody.cold import open_store

    store = open_store(conf)
    if store is None:
        raise CustodyError(f"{conf.path} has no [store]", "add a [store] table (see README)")
    return store


class Progress:
    """A progress line on stderr, only when a person is watching (stderr is a terminal):
    nothing at all in a pipe, a log or a cron mail."""

    def __init__(self, what: str, unit: str) -> None:
        self.on = sys.stderr.isatty()
        self.what, self.unit = what, unit
        self.done, self.total = 0, 0
        self._last = 0.0
        self._shown = False

    def update(self, done: int, total: int = 0) -> None:
        self.done, self.total = done, total
        now = time.monotonic()
        if self.on and (now - self._last > 0.2 or (total and done == total)):
            self._last = now
            of = f"/{total}" if total else ""
            sys.stderr.write(f"\r{self.what} {done}{of} {self.unit}")
            sys.stderr.flush()
            self._shown = True

    def step(self) -> None:
        self.update(self.done + 1, self.total)

    def end(self) -> None:
        if self._shown:
            sys.stderr.write("\n")
            sys.stderr.flush()
            self._shown = False


def full_disk(args: argparse.Namespace) -> str:
    """The station folder whose disk is (nearly) full, or "".

    SQLite reports a full disk as "disk I/O error" (its shared-memory file cannot
    grow) as often as "database or disk is full"; this names the real cause."""
    try:
        conf = load(args)
    except Exception:  # no usable config: nothing to look at
        return ""
    for d in (conf.state_dir, conf.ledger_dir, conf.data_dir):
        try:
            st = os.statvfs(d)
        except OSError:
            continue
        if st.f_bavail * st.f_frsize < 1 << 20:
            return str(d)
    return ""


class Reporter:
    """What a command reports: lines for a person as they happen, or with --json one
    object at the end (``fields``), never both."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.fields: dict[str, Any] = {}

    def line(self, text: str) -> None:
        if not self.as_json:
            print(text, flush=True)

    def finish(self) -> None:
        if self.as_json:
            import json

            print(json.dumps(self.fields, ensure_ascii=False))
