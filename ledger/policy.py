"""Trust policies (C2SP tlog-policy): which logs, which witnesses, what quorum.

```
log <vkey> [<url>]
witness <name> <vkey> [<url>]
group <name> all|any|<k> <name>...
quorum <name>|none
```

Whitespace is ASCII space and tab only; ``#`` starts a comment line; names
are opaque octet strings; a group or the quorum may name only what earlier
lines defined; each name is a member of one group at most once; exactly one
quorum line. A checkpoint satisfies the policy when one of the logs signed
it and the quorum of witnesses cosigned it.

Pure: text in, values out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ledger.checkpoint import CheckpointError, open_checkpoint
from ledger.cosignature import Cosignature, CosignatureVerifier, verify_cosignatures
from ledger.note import NoteError, Verifier, parse_note

NONE = "none"
MAX_ITEMS = 256  # logs, witnesses and groups each; the spec asks for at least 32
_K_RE = re.compile(r"[1-9][0-9]{0,3}")
_WS = re.compile(r"[ \t]+")


class PolicyError(ValueError):
    """A policy file that does not parse, or a checkpoint that does not satisfy it."""


@dataclass(frozen=True)
class PolicyWitness:
    name: str
    key: CosignatureVerifier
    url: str | None = None


@dataclass(frozen=True)
class PolicyLog:
    key: Verifier
    url: str | None = None


@dataclass(frozen=True)
class Group:
    name: str
    threshold: int
    members: tuple[str, ...]


@dataclass(frozen=True)
class Policy:
    logs: tuple[PolicyLog, ...]
    witnesses: tuple[PolicyWitness, ...]
    groups: tuple[Group, ...]
    quorum: str  # a witness or group name, or "none"
    text: str = field(default="", compare=False)

    def witness_keys(self) -> list[CosignatureVerifier]:
        return [w.key for w in self.witnesses]

    def log_keys(self) -> list[Verifier]:
        return [lg.key for lg in self.logs]

    def satisfied(self, cosigned: Iterable[str]) -> bool:
        """Whether the witnesses named in ``cosigned`` meet the quorum."""
        if self.quorum == NONE:
            return True
        have = set(cosigned)
        groups = {g.name: g for g in self.groups}
        memo: dict[str, bool] = {}

        def holds(name: str) -> bool:
            if name in memo:
                return memo[name]
            g = groups.get(name)
            ok = name in have if g is None else sum(holds(m) for m in g.members) >= g.threshold
            memo[name] = ok
            return ok

        return holds(self.quorum)

    def describe_quorum(self) -> str:
        """The quorum in words, for verify output and status."""
        if self.quorum == NONE:
            return "no cosignature required (quorum none)"
        groups = {g.name: g for g in self.groups}

        def words(name: str) -> str:
            g = groups.get(name)
            if g is None:
                return name
            inner = ", ".join(words(m) for m in g.members)
            if g.threshold == len(g.members):
                return f"all of ({inner})"
            if g.threshold == 1:
                return f"any of ({inner})"
            return f"{g.threshold} of ({inner})"

        return words(self.quorum)


def parse_policy(text: str | bytes) -> Policy:
    """Parse a tlog-policy file strictly; errors name the line."""
    raw = text.encode("utf-8") if isinstance(text, str) else text
    for i, b in enumerate(raw):
        if (b < 0x20 and b not in (0x09, 0x0A)) or b == 0x7F:
            at = raw[:i].count(b"\n") + 1
            raise PolicyError(f"policy line {at}: control character 0x{b:02x}")
    # Names are opaque octets; decoding with surrogateescape keeps them byte-exact.
    src = raw.decode("utf-8", "surrogateescape")
    logs: list[PolicyLog] = []
    witnesses: list[PolicyWitness] = []
    groups: list[Group] = []
    names: set[str] = set()
    log_keys: set[bytes] = set()
    witness_keys: set[bytes] = set()
    quorum: str | None = None
    lines = src.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for no, line in enumerate(lines, 1):
        words = [w for w in _WS.split(line.strip(" \t")) if w]
        if not words or words[0].startswith("#"):
            continue

        def bad(why: str, no: int = no) -> PolicyError:
            return PolicyError(f"policy line {no}: {why}")

        kind = words[0]
        try:
            if kind == "log":
                if len(words) not in (2, 3):
                    raise bad("expected 'log <vkey> [<url>]'")
                lk = Verifier.parse(words[1])
                if lk.public_key in log_keys:
                    raise bad("duplicate log key")
                log_keys.add(lk.public_key)
                logs.append(PolicyLog(lk, words[2] if len(words) == 3 else None))
            elif kind == "witness":
                if len(words) not in (3, 4):
                    raise bad("expected 'witness <name> <vkey> [<url>]'")
                name = words[1]
                if name == NONE or name in names:
                    raise bad(f"name {name!r} is already defined")
                wk = CosignatureVerifier.parse(words[2])
                if wk.public_key in witness_keys:
                    raise bad("duplicate witness key")
                witness_keys.add(wk.public_key)
                names.add(name)
                witnesses.append(PolicyWitness(name, wk, words[3] if len(words) == 4 else None))
            elif kind == "group":
                if len(words) < 4:
                    raise bad("expected 'group <name> all|any|<k> <name>...'")
                name, k_s, members = words[1], words[2], tuple(words[3:])
                if name == NONE or name in names:
                    raise bad(f"name {name!r} is already defined")
                for m in members:
                    if m not in names:
                        raise bad(f"group member {m!r} is not defined on an earlier line")
                if len(set(members)) != len(members):
                    raise bad("a name is listed twice in one group")
                if k_s == "all":
                    k = len(members)
                elif k_s == "any":
                    k = 1
                elif _K_RE.fullmatch(k_s):
                    k = int(k_s)
                    if not 1 <= k <= len(members):
                        raise bad(f"threshold {k} is not between 1 and {len(members)}")
                else:
                    raise bad(f"threshold {k_s!r} is not all, any or a decimal number")
                names.add(name)
                groups.append(Group(name, k, members))
            elif kind == "quorum":
                if len(words) != 2:
                    raise bad("expected 'quorum <name>'")
                if quorum is not None:
                    raise bad("a second quorum line")
                if words[1] != NONE and words[1] not in names:
                    raise bad(f"quorum {words[1]!r} is not defined on an earlier line")
                quorum = words[1]
            else:
                raise bad(f"unknown keyword {kind!r}")
        except NoteError as e:
            raise bad(str(e)) from e
        if max(len(logs), len(witnesses), len(groups)) > MAX_ITEMS:
            raise bad(f"more than {MAX_ITEMS} logs, witnesses or groups")
    if quorum is None:
        raise PolicyError("policy has no quorum line")
    return Policy(tuple(logs), tuple(witnesses), tuple(groups), quorum, src)


@dataclass(frozen=True)
class PolicyCheck:
    """What a checkpoint shows against a policy."""

    log: Verifier | None  # the policy log whose signature verified (None: no log listed)
    cosigned: Mapping[str, Cosignature]  # policy witness name → its cosignature
    satisfied: bool


def check_checkpoint(
    note: str | bytes, policy: Policy, log_keys: Iterable[Verifier] = ()
) -> PolicyCheck:
    """Check a signed checkpoint against ``policy``.

    The log signature is checked against the policy's logs plus ``log_keys``
    (keys the caller trusts from elsewhere, e.g. a pinned station key); a
    known key that fails rejects the note. Cosignatures are checked against
    the policy's witnesses; a witness key whose line fails rejects it too.
    """
    keys = [*policy.log_keys(), *log_keys]
    if not keys:
        raise PolicyError("no log key to check the checkpoint against")
    try:
        sc = open_checkpoint(note, keys)
        n = parse_note(note)
        good = verify_cosignatures(n, policy.witness_keys())
    except (CheckpointError, NoteError) as e:
        raise PolicyError(str(e)) from e
    by_key = {w.key: w.name for w in policy.witnesses}
    cosigned = {by_key[k]: c for k, c in good}
    return PolicyCheck(sc.verified_by[0], cosigned, policy.satisfied(cosigned))
