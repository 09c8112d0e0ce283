"""Ledger entries: RFC 8785 canonical JSON, signed by the station key.

An entry is a JSON object with ``v`` (schema version), ``type``, ``time``
(RFC 3339 UTC, ``Z``), ``station`` (the log origin), its payload, and
``sig``: standard base64 of the Ed25519 signature over
``custody-entry/v1\\n`` followed by the canonical encoding of the entry
without ``sig``. The leaf is the canonical encoding of the whole entry,
at most 65,535 bytes.

Values are integers, strings, booleans, null, lists and objects; floats are
refused (durations in integer milliseconds, rates as ``"30000/1001"``).

Canonical encoding uses the standard library's JSON encoder, which for this
restricted value domain produces exactly the RFC 8785 bytes (a property test
checks it against the `rfc8785` package); keys outside ASCII fall back to
`rfc8785` itself because RFC 8785 orders keys by UTF-16 code units.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import rfc8785

from ledger.note import BoundSigner, Signer, Verifier
from ledger.tiles import MAX_ENTRY_SIZE

SCHEMA_VERSION = 1
SIG_PREFIX = b"custody-entry/v1\n"
ENVELOPE = ("v", "type", "time", "station", "sig")
MAX_SAFE_INT = (1 << 53) - 1

_TIME_RE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?Z"
)
_TYPE_RE = re.compile(r"[a-z][a-z0-9_.-]{0,63}")


class EntryError(ValueError):
    """An entry that cannot be encoded, or a leaf that is not a valid entry."""


def _check(value: object, path: str = "$") -> bool:
    """Refuse values outside the entry domain; returns False if some key is not ASCII."""
    ascii_keys = True
    # Where each value sits is kept as (parent, key) links and spelled out only for an
    # error: this runs once per entry a verifier reads.
    stack: list[tuple[object, object]] = [(value, path)]
    while stack:
        v, at = stack.pop()
        t = type(v)
        if t is str or t is bool or v is None:
            continue
        if t is int:
            if not -MAX_SAFE_INT <= v <= MAX_SAFE_INT:  # type: ignore[operator]
                raise EntryError(f"{_where(at)}: integer {v} is outside ±(2^53-1)")
            continue
        if t is dict or isinstance(v, Mapping):
            for k, item in v.items():  # type: ignore[attr-defined]
                if type(k) is not str:
                    raise EntryError(f"{_where(at)}: object key {k!r} is not a string")
                if not k.isascii():
                    ascii_keys = False
                if type(item) is not str:
                    stack.append((item, (at, "." + k)))
            continue
        if isinstance(v, list | tuple):
            stack.extend((item, (at, f"[{i}]")) for i, item in enumerate(v))
            continue
        where = _where(at)
        if isinstance(v, float):
            raise EntryError(f"{where}: floats are not allowed (use integers or strings)")
        if isinstance(v, str | int):  # subclasses (enums and the like) are not JSON values here
            raise EntryError(f"{where}: {type(v).__name__} must be a plain str or int")
        raise EntryError(f"{where}: {type(v).__name__} is not a JSON value")
    return ascii_keys


def _where(at: object) -> str:
    """The path of a value from its (parent, key) links, e.g. ``$.recorder.unit``."""
    parts: list[str] = []
    while isinstance(at, tuple):
        at, part = at
        parts.append(part)
    return str(at) + "".join(reversed(parts))


def _encode(value: object) -> bytes:
    try:
        return json.dumps(
            value, ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False
        ).encode("utf-8")
    except UnicodeEncodeError as e:
        raise EntryError("a string is not valid Unicode (lone surrogate)") from e


def canonical_json(value: object) -> bytes:
    """RFC 8785 (JCS) encoding of ``value`` in the restricted entry domain."""
    if not _check(value):
        try:
            return bytes(rfc8785.dumps(value))  # type: ignore[arg-type]
        except Exception as e:
            raise EntryError(f"cannot canonicalize: {e}") from e
    return _encode(value)


def format_time(t: datetime) -> str:
    """RFC 3339 UTC with millisecond precision and a ``Z``."""
    if t.tzinfo is None:
        raise EntryError("entry times must be timezone-aware")
    t = t.astimezone(UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def parse_time(s: str) -> datetime:
    m = _TIME_RE.fullmatch(s)
    if not m:
        raise EntryError(f"time {s!r} is not RFC 3339 UTC with Z")
    y, mo, d, h, mi, sec, frac = m.groups()
    try:
        return datetime(
            int(y),
            int(mo),
            int(d),
            int(h),
            int(mi),
            int(sec),
            int((frac or "0").ljust(6, "0")[:6]),
            tzinfo=UTC,
        )
    except ValueError as e:
        raise EntryError(f"time {s!r} is not a valid date and time") from e


@dataclass(frozen=True)
class Entry:
    """A decoded, well-formed entry (signature not yet checked)."""

    fields: Mapping[str, Any]
    leaf: bytes
    ascii_keys: bool = True

    @property
    def type(self) -> str:
        return str(self.fields["type"])

    @property
    def time(self) -> str:
        return str(self.fields["time"])

    @property
    def station(self) -> str:
        return str(self.fields["station"])

    @property
    def signature(self) -> bytes:
        return base64.b64decode(self.fields["sig"])

    def signed_message(self) -> bytes:
        unsigned = {k: v for k, v in self.fields.items() if k != "sig"}
        # The leaf was checked to be in the entry domain when it was decoded.
        body = _encode(unsigned) if self.ascii_keys else canonical_json(unsigned)
        return SIG_PREFIX + body

    def verify(self, verifier: Verifier) -> bool:
        return verifier.verify(self.signed_message(), self.signature)

    def payload(self) -> dict[str, Any]:
        return {k: v for k, v in self.fields.items() if k not in ENVELOPE}


def make_entry(
    signer: Signer | BoundSigner,
    station: str,
    type_: str,
    payload: Mapping[str, Any],
    time: datetime | str,
) -> bytes:
    """Build and sign an entry stamped ``time`` (the caller reads the clock: this core
    does not); returns its leaf bytes (canonical JSON)."""
    if not _TYPE_RE.fullmatch(type_):
        raise EntryError(f"entry type {type_!r} must be lowercase letters, digits, _ . -")
    clash = [k for k in payload if k in ENVELOPE]
    if clash:
        raise EntryError(f"payload uses reserved field(s) {', '.join(clash)}")
    t = time if isinstance(time, str) else format_time(time)
    fields: dict[str, Any] = {"v": SCHEMA_VERSION, "type": type_, "time": t, "station": station}
    fields.update(payload)
    ascii_keys = _check(fields)
    body = _encode(fields) if ascii_keys else canonical_json(fields)
    sig = signer.sign(SIG_PREFIX + body)
    fields["sig"] = base64.b64encode(sig).decode("ascii")
    # Checked above; adding the ASCII "sig" string cannot leave the domain.
    leaf = _encode(fields) if ascii_keys else canonical_json(fields)
    if len(leaf) > MAX_ENTRY_SIZE:
        raise EntryError(
            f"entry is {len(leaf)} bytes; the limit is {MAX_ENTRY_SIZE} "
            "(put large lists in a sidecar object and reference its hash)"
        )
    return leaf


def decode_entry(leaf: bytes) -> Entry:
    """Parse a leaf as an entry; checks canonical form and the envelope fields."""
    try:
        fields = json.loads(leaf.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:  # JSONDecodeError is a ValueError
        raise EntryError(f"leaf is not JSON: {e}") from e
    except RecursionError:
        raise EntryError("leaf is nested too deeply to be an entry") from None
    if not isinstance(fields, dict):
        raise EntryError("leaf is not a JSON object")
    try:
        ascii_keys = _check(fields)
        canon = _encode(fields) if ascii_keys else canonical_json(fields)
    except EntryError as e:
        raise EntryError(f"leaf holds a value outside the entry domain: {e}") from e
    if canon != leaf:
        raise EntryError("leaf is not in RFC 8785 canonical form")
    if type(fields.get("v")) is not int or fields["v"] != SCHEMA_VERSION:
        raise EntryError(f"unknown entry schema version {fields.get('v')!r}")
    for k in ("type", "time", "station", "sig"):
        if not isinstance(fields.get(k), str):
            raise EntryError(f"entry field {k!r} is missing or not a string")
    if not _TYPE_RE.fullmatch(fields["type"]):
        raise EntryError(f"entry type {fields['type']!r} is malformed")
    parse_time(fields["time"])
    try:
        sig = base64.b64decode(fields["sig"], validate=True)
    except binascii.Error as e:
        raise EntryError("entry signature is not base64") from e
    if len(sig) != 64:
        raise EntryError("entry signature is not 64 bytes")
    if base64.b64encode(sig).decode("ascii") != fields["sig"]:
        # Base64 can spell the same bytes in several ways; only one leaf may verify.
        raise EntryError("entry signature is not canonical base64")
    return Entry(fields, leaf, ascii_keys)


def sign_entries(
    signer: Signer | BoundSigner,
    station: str,
    items: Sequence[tuple[str, Mapping[str, Any]]],
    time: datetime | str,
) -> list[bytes]:
    """Sign several entries with one timestamp (a batch)."""
    t = time if isinstance(time, str) else format_time(time)
    return [make_entry(signer, station, ty, p, t) for ty, p in items]
