"""`custody init | note`: create a station; record signed remarks."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from custody.cli_common import load
from custody.errors import CustodyError, describe_os_error

MAX_NOTE_CHARS = 8000
MAX_NOTES_FILE = 64 << 10  # bytes read from --file at most


def cmd_init(args: argparse.Namespace) -> int:
    from custody.station import init_station

    res = init_station(Path(args.data), args.origin)
    if args.json:
        print(json.dumps({"config": str(res.config_path), "vkey": res.vkey}))
        return 0
    print(f"station initialised: config {res.config_path}")
    print("verifier key (give it to your supervisors to pin):")
    print(res.vkey)
    return 0


def _read_notes_file(path: str) -> str:
    """The text of a notes file, read at most MAX_NOTES_FILE bytes (a pipe or
    /dev/stdin is fine; /dev/zero or a huge file is refused, not read into memory)."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_NOTES_FILE + 1)
    except IsADirectoryError:
        raise CustodyError(f"--file {path} is a folder, not a file of notes") from None
    except OSError as e:
        raise CustodyError(f"cannot read {path}: {describe_os_error(e)}") from None
    if len(data) > MAX_NOTES_FILE:
        raise CustodyError(
            f"--file {path} holds more than {MAX_NOTES_FILE // 1024} KiB; notes are short "
            "remarks, one per line (split the file, or record a long document's hash instead)"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise CustodyError(f"{path} is not UTF-8 text") from None


def _note_lines(args: argparse.Namespace) -> list[str]:
    if args.file:
        text = _read_notes_file(args.file)
        lines = [ln.strip() for ln in text.splitlines()]
        lines = [ln for ln in lines if ln]
        if not lines:
            raise CustodyError(f"{args.file} holds no notes (one note per non-empty line)")
    else:
        lines = [" ".join(args.text).strip()]
        if not lines[0]:
            raise CustodyError("the note is empty")
    for ln in lines:
        if len(ln) > MAX_NOTE_CHARS:
            raise CustodyError(f"a note is {len(ln)} characters; the limit is {MAX_NOTE_CHARS}")
    return lines


def cmd_note(args: argparse.Namespace) -> int:
    from custody.station import open_ledger, operator
    from ledger.errors import LedgerError

    conf = load(args)
    lines = _note_lines(args)
    who = args.operator or operator()
    with open_ledger(conf) as ledger:
        idx = ledger.append_entries([("note", {"text": ln, "operator": who}) for ln in lines])
        if not args.json:  # said at once: the entries are recorded whatever follows
            for i in idx:
                print(f"recorded note as entry {i}", flush=True)
        try:
            rec = ledger.integrate()
        except LedgerError as e:
            raise type(e)(
                f"the notes are recorded (entries {idx[0]}..{idx[-1]}) but no checkpoint "
                f"covers them yet: {e.message}",
                "do not record them again; the next checkpoint will include them",
            ) from None
    if args.json:
        size = rec.size if rec is not None else None
        print(json.dumps({"entries": list(idx), "operator": who, "checkpoint_size": size}))
    elif rec is not None:
        print(f"checkpoint size {rec.size}")
    return 0


def add_parsers(sub: Any) -> None:
    s = sub.add_parser(
        "init", help="create a station: config, key, folders; print the verifier key"
    )
    s.add_argument("--data", required=True, help="data folder to create (custody.toml goes there)")
    s.add_argument("--origin", help="log origin and key name, e.g. custody.example/menghai/dock-01")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_init)

    s = sub.add_parser(
        "note", help="record signed chain-of-custody remarks (one entry each), then a checkpoint"
    )
    s.add_argument("text", nargs="*", help="the remark")
    s.add_argument(
        "--file",
        help=f"read remarks from a file (or a pipe), one per non-empty line; at most "
        f"{MAX_NOTES_FILE // 1024} KiB, {MAX_NOTE_CHARS} characters a remark",
    )
    s.add_argument("--operator", help="who makes the remark (default: the login user)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_note)
