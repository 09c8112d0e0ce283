"""The witness protocol (C2SP tlog-witness v1.0.0), pure: bytes and stored state in,
the answer and the state to store out.

A log asks for a cosignature with ``POST <prefix>/add-checkpoint`` and a body of

- ``old <size>`` (decimal, no leading zeros): the size the log believes the
  witness last cosigned for it,
- 0 to 63 lines, each one base64 SHA-256 hash: an RFC 6962 consistency proof
  from that size to the new checkpoint's size,
- an empty line,
- the signed checkpoint (a C2SP signed note).

The witness answers 200 with its cosignature line(s), or 400 (malformed, or
old > new), 403 (no trusted signature of the origin's log), 404 (unknown
origin), 409 (``old`` is not the size it last cosigned: the body is that size
and a newline, ``Content-Type: text/x.tlog.size``; or the same size with
another root: no body type), 422 (the consistency proof fails).

`format_request` and `parse_conflict` are the client's half, for a station
that asks witnesses.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from ledger.checkpoint import Checkpoint, CheckpointError
from ledger.cosignature import Cosigner, add_signature_lines
from ledger.note import Note, NoteError, Verifier, b64, b64decode_strict, parse_note
from ledger.tree import EMPTY_ROOT, HASH_SIZE, verify_consistency

MAX_PROOF_LINES = 63
# The largest body we read (C2SP sets none). A real request is a few KiB: 63 proof
# lines are 2.8 KiB and a checkpoint with a dozen signatures under 2 KiB.
MAX_BODY = 64 * 1024
# No line of a real request comes near this; a longer one is garbage, said so early.
MAX_LINE = 8 * 1024
# Sizes are kept in SQLite's signed 64-bit integers; no log comes near 2**63 leaves.
MAX_SIZE = (1 << 63) - 1

SIZE_CONTENT_TYPE = "text/x.tlog.size"
TEXT_CONTENT_TYPE = "text/plain; charset=utf-8"

_SIZE_RE = re.compile(r"0|[1-9][0-9]{0,18}")


class BadRequest(ValueError):
    """A body that is not a well-formed add-checkpoint request (answered 400)."""


@dataclass(frozen=True)
class AddCheckpoint:
    """A parsed add-checkpoint request."""

    old_size: int
    proof: tuple[bytes, ...]
    checkpoint: Checkpoint
    note: Note
    text: str  # the signed checkpoint exactly as sent


@dataclass(frozen=True)
class LogState:
    """What the witness keeps per log: the latest checkpoint it cosigned (size 0 and
    the empty tree's root before the first), and that checkpoint with our cosignature."""

    origin: str
    size: int = 0
    root: bytes = EMPTY_ROOT
    checkpoint: str | None = None


@dataclass(frozen=True)
class Answer:
    """The HTTP answer to one request and, on 200 only, the state to store."""

    status: int
    body: bytes
    content_type: str | None
    new_state: LogState | None = None
    reason: str = ""  # one phrase for the request log
    origin: str | None = None


def _size(s: str, what: str) -> int:
    if not _SIZE_RE.fullmatch(s):
        raise BadRequest(f"{what} {s[:40]!r} is not a decimal without leading zeros")
    n = int(s)
    if n > MAX_SIZE:
        raise BadRequest(f"{what} {n} is too large")
    return n


def parse_request(body: bytes) -> AddCheckpoint:
    """Parse an add-checkpoint body strictly; raise `BadRequest` on anything else.

    Reads at most 64 proof lines before deciding, so a body of 10**5 lines costs
    no more than one of 64.
    """
    if len(body) > MAX_BODY:
        raise BadRequest(f"body is over {MAX_BODY} bytes")
    if not body.endswith(b"\n"):
        raise BadRequest("body does not end in a newline")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("body is not UTF-8") from None
    old_line, _, rest = text.partition("\n")
    if len(old_line) > MAX_LINE:
        raise BadRequest("old size line is too long")
    if not old_line.startswith("old "):
        raise BadRequest("body does not start with 'old <size>'")
    old_size = _size(old_line[4:], "old size")
    proof: list[bytes] = []
    while True:
        line, sep, rest = rest.partition("\n")
        if not sep:
            raise BadRequest("no empty line after the consistency proof")
        if not line:
            break
        if len(proof) == MAX_PROOF_LINES:
            raise BadRequest(f"more than {MAX_PROOF_LINES} consistency proof lines")
        if len(line) > MAX_LINE:
            raise BadRequest("consistency proof line is too long")
        try:
            h = b64decode_strict(line)
        except NoteError:
            raise BadRequest(f"proof line {line[:60]!r} is not canonical base64") from None
        if len(h) != HASH_SIZE:
            raise BadRequest(f"proof line {line[:60]!r} is {len(h)} bytes, not {HASH_SIZE}")
        proof.append(h)
    if any(len(ln) > MAX_LINE for ln in rest.split("\n")):
        raise BadRequest("checkpoint has a line that is too long")
    try:
        note = parse_note(rest)
        checkpoint = Checkpoint.parse_body(note.text)
    except (NoteError, CheckpointError) as e:
        raise BadRequest(f"malformed checkpoint: {e}") from None
    if checkpoint.size > MAX_SIZE:
        raise BadRequest(f"checkpoint size {checkpoint.size} is too large")
    return AddCheckpoint(old_size, tuple(proof), checkpoint, note, rest)


def bad_request(reason: str) -> Answer:
    return Answer(400, (reason + "\n").encode(), TEXT_CONTENT_TYPE, reason=reason)


def _plain(status: int, reason: str, origin: str) -> Answer:
    return Answer(status, (reason + "\n").encode(), TEXT_CONTENT_TYPE, None, reason, origin)


def trusted_signatures(note: Note, log_keys: Sequence[Verifier]) -> int:
    """How many signatures by the log's keys verify; 0 when one of them fails.

    C2SP signed-note: signatures by unknown keys are ignored; a known key whose
    signature does not verify makes the note unacceptable.
    """
    known = {(v.name, v.key_id): v for v in log_keys}
    msg = note.text.encode()
    good = 0
    for s in note.signatures:
        v = known.get((s.name, s.key_id))
        if v is None:
            continue
        if not s.canonical or not v.verify(msg, s.signature):
            return 0
        good += 1
    return good


def decide(
    request: AddCheckpoint,
    stored: LogState | None,
    log_keys: Sequence[Verifier],
    cosigner: Cosigner,
    timestamp: int,
) -> Answer:
    """The answer to a request, given what the witness stored for its origin (None:
    the origin is unknown) and the origin's log keys. ``timestamp`` (POSIX seconds,
    non-zero) goes into the cosignature."""
    cp = request.checkpoint
    origin = cp.origin
    if stored is None:
        return _plain(404, "unknown log origin", origin)
    if not trusted_signatures(request.note, log_keys):
        return _plain(403, "no verifying signature by a key of this log", origin)
    if request.old_size > cp.size:
        return _plain(400, "old size is larger than the checkpoint size", origin)
    if request.old_size != stored.size:
        return Answer(
            409,
            f"{stored.size}\n".encode(),
            SIZE_CONTENT_TYPE,
            None,
            f"old size {request.old_size} is not the cosigned size {stored.size}",
            origin,
        )
    if cp.size == 0 and cp.root != EMPTY_ROOT:
        return _plain(422, "an empty tree has another root", origin)
    if request.old_size == cp.size:
        if request.proof:
            return _plain(422, "a consistency proof between equal sizes must be empty", origin)
        if cp.root != stored.root:
            # A fork: the same size with another root. No size body: the size is right.
            return _plain(409, "same size, another root than the cosigned checkpoint", origin)
    elif not verify_consistency(request.old_size, cp.size, stored.root, cp.root, request.proof):
        return _plain(422, "the consistency proof does not verify", origin)
    line = cosigner.cosign(request.note.text, timestamp).line()
    new = LogState(origin, cp.size, cp.root, add_signature_lines(request.text, [line]))
    return Answer(200, line.encode(), TEXT_CONTENT_TYPE, new, "cosigned", origin)


def origin_id(origin: str) -> str:
    """The hex SHA-256 of an origin: the path segment of its monitoring URL."""
    return hashlib.sha256(origin.encode()).hexdigest()


# The client's half.


def format_request(old_size: int, proof_hashes: Sequence[bytes], checkpoint_note: str) -> bytes:
    """The add-checkpoint body for a signed checkpoint, a consistency proof from
    ``old_size`` to its size, and the size the client believes the witness has."""
    if not 0 <= old_size <= MAX_SIZE:
        raise ValueError(f"old size {old_size} is out of range")
    if len(proof_hashes) > MAX_PROOF_LINES:
        raise ValueError(f"a consistency proof has at most {MAX_PROOF_LINES} hashes")
    if any(len(h) != HASH_SIZE for h in proof_hashes):
        raise ValueError(f"a consistency proof hash is {HASH_SIZE} bytes")
    if not checkpoint_note.endswith("\n"):
        raise ValueError("a signed checkpoint ends in a newline")
    proof = "".join(b64(h) + "\n" for h in proof_hashes)
    return f"old {old_size}\n{proof}\n{checkpoint_note}".encode()


def parse_conflict(body: bytes, content_type: str | None) -> int | None:
    """The witness's size from a 409 answer, or None when the 409 does not carry
    one (same size, another root: a fork) or the body is not a size."""
    if content_type is None:
        return None
    if content_type.split(";", 1)[0].strip().lower() != SIZE_CONTENT_TYPE:
        return None
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        return None
    if not text.endswith("\n") or not _SIZE_RE.fullmatch(text[:-1]):
        return None
    return int(text[:-1])


__all__ = [
    "MAX_BODY",
    "MAX_PROOF_LINES",
    "SIZE_CONTENT_TYPE",
    "TEXT_CONTENT_TYPE",
    "AddCheckpoint",
    "Answer",
    "BadRequest",
    "LogState",
    "bad_request",
    "decide",
    "format_request",
    "origin_id",
    "parse_conflict",
    "parse_request",
    "trusted_signatures",
]
