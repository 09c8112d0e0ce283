"""What a verifier says about the keys it trusted and the witnesses of a checkpoint.

Every verdict names each key it rested on and where that key came from: pinned by
the person on the command line, from the policy file they gave, or carried inside
the package (which proves integrity, not origin). Cosignatures on the checkpoint
are listed with each witness's name, key ID and time; against a policy the user
gave they are verified and the quorum judged, else they are listed as not checked.

Pure: notes and keys in, values and lines out.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ledger.note import NoteError, Verifier, parse_note
from ledger.policy import Policy, PolicyError, check_checkpoint

# Where a trusted key came from, as every verdict says it.
FROM_VKEY = "pinned by the user on the command line (--vkey)"
FROM_POLICY = "from the policy file you gave (--policy)"
FROM_PACKAGE = "carried inside the package"
PACKAGE_ONLY = "a key carried inside the package proves the package is intact, not who made it"
NOT_CHECKED = "not checked against a policy"


def trusted_key(role: str, name: str, key_id: bytes, vkey: str, source: str) -> dict[str, str]:
    """One trusted key as the JSON verdict lists it (``role``: "log" or "witness")."""
    return {"role": role, "name": name, "key_id": key_id.hex(), "vkey": vkey, "source": source}


def trusted_line(k: dict[str, str]) -> str:
    what = "witness " if k["role"] == "witness" else ""
    return f"trusted: {what}{k['name']} (key id {k['key_id']}), {k['source']}"


def policy_keys(policy: Policy, source: str = FROM_POLICY) -> list[dict[str, str]]:
    """The policy's log and witness keys, each as a trusted key from ``source``."""
    out = [trusted_key("log", v.key.name, v.key.key_id, v.key.vkey(), source) for v in policy.logs]
    out += [
        trusted_key("witness", w.name, w.key.key_id, w.key.vkey(), source) for w in policy.witnesses
    ]
    return out


def rfc3339(ts: int) -> str:
    try:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return f"{ts} (POSIX seconds, beyond the calendar)"


@dataclass
class Witnessing:
    """The cosignatures on one checkpoint and, with a policy, whether its quorum holds."""

    cosignatures: list[dict[str, object]] = field(default_factory=list)
    quorum: dict[str, object] | None = None
    problems: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = []
        for c in self.cosignatures:
            out.append(
                f"cosignature: {c['name']} (key id {c['key_id']}) at {c['time']}, {c['status']}"
            )
        if not self.cosignatures:
            out.append("cosignature: none on this checkpoint")
        q = self.quorum
        if q is not None and q["met"]:
            out.append(f"quorum: met, {q['quorum']} ({q['source']})")
        return out


def witnessing(
    note: str | bytes,
    policy: Policy | None,
    log_keys: Sequence[Verifier],
    policy_source: str = FROM_POLICY,
) -> Witnessing:
    """List the cosignatures on ``note`` and judge ``policy``'s quorum (if given).

    ``log_keys`` are the station keys already trusted for this checkpoint (their
    signature lines are not cosignatures)."""
    w = Witnessing()
    try:
        n = parse_note(note)
    except NoteError as e:
        w.problems.append(f"the checkpoint is not a signed note ({e})")
        return w
    logs = {(k.name, k.key_id) for k in log_keys}
    cosigned: dict[str, tuple[str, int]] = {}  # policy witness name -> (key id, time)
    if policy is not None:
        try:
            check = check_checkpoint(note, policy, log_keys)
            cosigned = {name: (c.key_id.hex(), c.timestamp) for name, c in check.cosigned.items()}
        except PolicyError as e:
            w.problems.append(f"the checkpoint does not hold against the policy: {e}")
    by_key = {(p.key.name, p.key.key_id): p for p in (policy.witnesses if policy else ())}
    for sig in n.signatures:
        if (sig.name, sig.key_id) in logs:
            continue
        ts = struct.unpack(">Q", sig.signature[:8])[0] if len(sig.signature) == 72 else None
        item: dict[str, object] = {
            "name": sig.name,
            "key_id": sig.key_id.hex(),
            "time": rfc3339(ts) if ts is not None else None,
            "timestamp": ts,
            "checked": False,
        }
        pw = by_key.get((sig.name, sig.key_id))
        if pw is not None and pw.name in cosigned:
            item.update(checked=True, status=f"verified, witness {pw.name} of the policy")
            item["witness"] = pw.name
        elif pw is not None:
            item["status"] = f"does NOT verify with witness {pw.name}'s key in the policy"
        elif policy is not None:
            item["status"] = "not a witness of the policy (ignored)"
        else:
            item["status"] = NOT_CHECKED
        if ts is None:
            item["status"] = f"not a cosignature/v1 line, {item['status']}"
        w.cosignatures.append(item)
    if policy is None:
        return w
    met = policy.satisfied(cosigned)
    missing = [p for p in policy.witnesses if p.name not in cosigned]
    w.quorum = {
        "quorum": policy.describe_quorum(),
        "met": met,
        "cosigned": sorted(cosigned),
        "missing": [p.name for p in missing],
        "source": policy_source,
    }
    if not met:
        absent = "; ".join(
            f"{p.name} (key id {p.key.key_id.hex()}) never cosigned this checkpoint"
            for p in missing
        )
        w.problems.append(
            f"the policy's quorum is not met: it needs {policy.describe_quorum()}; "
            f"missing: {absent or 'none'}"
        )
    return w
