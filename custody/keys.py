"""Station key changes: `custody key rotate | revoke | list`.

Files under ``<data_dir>/keys/`` (folder mode 0700):

    station.key        the current signer key (0600)
    station.vkey       its verifier key
    history            every verifier key this station has used, oldest first
    previous.key       rotate only: the retired key, still co-signing checkpoints
    previous.until     until this time (POSIX seconds), then it is deleted
    rotation.json      only while a change is under way (crash recovery)

A change is one step in the log: a ``key`` entry signed by the current key
announces the next (`ledger.keys`). Order of work, each step durable before
the next: write the next key beside the current one with a plan; append the
key entry, whose commit also records the new key as the only one that may
sign further entries (`Ledger._check_signer`); then swap the files. A crash
anywhere is finished or undone the next time the station opens its ledger:
if the entry is in the log, the swap is completed; if not, the next key is
dropped and nothing happened.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from custody.errors import CustodyError
from ledger.durable import fsync_dir, write_atomic

if TYPE_CHECKING:
    from custody import config as cfg
    from ledger.log import Ledger
    from ledger.note import Signer, Verifier

KEY_MODE = 0o600
DEFAULT_OVERLAP_DAYS = 30


@dataclass(frozen=True)
class KeyFiles:
    folder: Path

    @property
    def current(self) -> Path:
        return self.folder / "station.key"

    @property
    def vkey(self) -> Path:
        return self.folder / "station.vkey"

    @property
    def history(self) -> Path:
        return self.folder / "history"

    @property
    def previous(self) -> Path:
        return self.folder / "previous.key"

    @property
    def previous_until(self) -> Path:
        return self.folder / "previous.until"

    @property
    def next(self) -> Path:
        return self.folder / "station.key.next"

    @property
    def plan(self) -> Path:
        return self.folder / "rotation.json"


def key_files(conf: cfg.Config) -> KeyFiles:
    return KeyFiles(conf.key_path.parent)


def write_key(path: Path, signer: Signer) -> None:
    """A private key file, created new (never overwritten), 0600, durable."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, KEY_MODE)
    try:
        os.write(fd, (signer.key_string() + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(path.parent)


def read_history(files: KeyFiles) -> list[Verifier]:
    """Every station key, oldest first (a station from before rotations: its one key)."""
    from ledger.note import NoteError, Verifier

    out: list[Verifier] = []
    try:
        lines = files.history.read_text().split()
    except OSError:  # none yet, or a user without access to keys/ (custody status)
        lines = []
    for ln in lines:
        try:
            v = Verifier.parse(ln)
        except NoteError as e:
            raise CustodyError(f"{files.history}: {e}") from None
        if v not in out:
            out.append(v)
    if not out:
        with contextlib.suppress(OSError, NoteError):
            out.append(Verifier.parse(files.vkey.read_text()))
    return out


def _append_history(files: KeyFiles, keys: list[Verifier]) -> None:
    text = "".join(k.vkey() + "\n" for k in keys)
    write_atomic(files.history, text.encode())


def _ledger_signer_vkey(conf: cfg.Config) -> str | None:
    """The key the ledger database says signs new entries (None: never rotated)."""
    db_path = conf.state_dir / "ledger.sqlite"
    if not db_path.exists():
        return None
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT value FROM meta WHERE key='signer'").fetchone()
    except sqlite3.OperationalError:
        return None
    finally:
        db.close()
    return str(row[0]) if row else None


def finish_interrupted(conf: cfg.Config) -> str:
    """Complete or undo a key change a crash interrupted; returns what was done ("")."""
    from ledger.note import NoteError, Signer

    files = key_files(conf)
    if not files.next.exists():
        if files.plan.exists():
            files.plan.unlink()
        return ""
    try:
        nxt = Signer.parse(files.next.read_text())
        plan = json.loads(files.plan.read_text())
    except (OSError, NoteError, ValueError) as e:
        raise CustodyError(
            f"an interrupted key change left {files.next} that cannot be read ({e})",
            "restore the keys folder from backup",
        ) from None
    if _ledger_signer_vkey(conf) != nxt.verifier().vkey():
        # The key entry never committed: nothing changed.
        files.next.unlink()
        files.plan.unlink(missing_ok=True)
        fsync_dir(files.folder)
        return "an interrupted key change never reached the ledger; the old key stays"
    _swap(conf, files, nxt, plan)
    return f"finished the interrupted key change to {nxt.verifier().vkey()}"


def _swap(conf: cfg.Config, files: KeyFiles, nxt: Signer, plan: dict[str, Any]) -> None:
    from ledger.note import Signer

    old_text = files.current.read_text()
    old = Signer.parse(old_text)
    history = read_history(files)
    for v in (old.verifier(), nxt.verifier()):
        if v not in history:
            history.append(v)
    _append_history(files, history)
    # A revoke ends any overlap too: only the new key signs from here on.
    files.previous.unlink(missing_ok=True)
    files.previous_until.unlink(missing_ok=True)
    if plan.get("action") == "rotate":
        write_key(files.previous, old)
        write_atomic(files.previous_until, f"{int(plan['until'])}\n".encode())
    os.replace(files.next, files.current)
    write_atomic(files.vkey, (nxt.verifier().vkey() + "\n").encode())
    files.plan.unlink(missing_ok=True)
    fsync_dir(files.folder)


def overlap_signer(conf: cfg.Config, now: float | None = None) -> Signer | None:
    """The previous key while its overlap lasts; deleted once it is over."""
    from ledger.note import NoteError, Signer

    files = key_files(conf)
    if not files.previous.exists():
        return None
    try:
        until = int(files.previous_until.read_text().strip())
    except (OSError, ValueError):
        until = 0
    if (now if now is not None else time.time()) >= until:
        files.previous.unlink(missing_ok=True)
        files.previous_until.unlink(missing_ok=True)
        fsync_dir(files.folder)
        return None
    try:
        return Signer.parse(files.previous.read_text())
    except NoteError as e:
        raise CustodyError(f"{files.previous}: {e}") from None


@dataclass(frozen=True)
class KeyChangeResult:
    action: str
    index: int
    old_vkey: str
    new_vkey: str
    overlap_until: str | None
    last_index: int | None


def change_key(
    conf: cfg.Config,
    ledger: Ledger,
    old: Signer,
    reason: str,
    operator: str,
    overlap_days: float = DEFAULT_OVERLAP_DAYS,
    last_index: int | None = None,
) -> KeyChangeResult:
    """Rotate (``last_index`` None) or revoke the station key; ``ledger`` is open with
    ``old``. The caller holds the daemon's lock."""
    from ledger.keys import key_entry_payload
    from ledger.note import Signer

    files = key_files(conf)
    if files.next.exists():
        raise CustodyError(f"{files.next} exists: a key change is under way")
    nxt = Signer.generate(old.name)
    action = "rotate" if last_index is None else "revoke"
    if last_index is not None and not 0 <= last_index < ledger.next_index():
        raise CustodyError(
            f"--last-index {last_index} is not an entry of this ledger "
            f"(it has {ledger.next_index()})"
        )
    until = int(time.time() + overlap_days * 86400) if action == "rotate" else 0
    write_atomic(
        files.plan,
        json.dumps({"action": action, "until": until, "new_vkey": nxt.verifier().vkey()}).encode(),
        mode=0o600,
    )
    write_key(files.next, nxt)
    payload = key_entry_payload(old.verifier(), nxt.verifier(), reason, last_index)
    payload["operator"] = operator
    if action == "rotate":
        payload["overlap_until"] = datetime.fromtimestamp(until, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    new_vkey = nxt.verifier().vkey()

    def switch(db: sqlite3.Connection, idx: list[int]) -> None:
        db.execute(
            "INSERT INTO meta(key, value) VALUES ('signer', ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (new_vkey,),
        )

    try:
        index = ledger.append("key", payload, switch)
    except BaseException:
        finish_interrupted(conf)  # undoes: the entry is not in the log
        raise
    # No checkpoint with the old key here: after a revoke it may not sign past
    # last_index + 1. The caller reopens the ledger with the new key and integrates.
    _swap(conf, files, nxt, {"action": action, "until": until})
    over = payload.get("overlap_until")
    return KeyChangeResult(
        action, index, old.verifier().vkey(), new_vkey, str(over) if over else None, last_index
    )
