"""A station's public disclosure (公示): figures from its own log, published as a signed
folder (`disclose/`). Also the parts the hub's disclosure shares: reading a log's
entries as catalog rows, and signing the ``disclose`` entry into a log."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from custody.errors import CustodyError
from disclose.figures import (
    AuditFigures,
    Figures,
    Period,
    audits,
    compute,
    limit_memory,
    parse_period,
)
from disclose.publish import DiscloseResult, LogRef, Publication, PublishError, Signed, build
from disclose.rules import Rules, RulesError, load_rules
from ledger.entry import decode_entry
from ledger.log import CheckpointRecord, Ledger
from ledger.note import parse_note
from ledger.policy import PolicyError, parse_policy
from ledger.tiles import TILE_WIDTH, bundle_for_size, decode_bundle

if TYPE_CHECKING:
    import pyarrow as pa

    from custody import config as cfg

AUDIT_TYPES = frozenset(("fixity", "audit"))


def rules_of(path: Path | None) -> Rules:
    try:
        return load_rules(path)
    except RulesError as e:
        raise CustodyError(str(e)) from None


def prepare(
    rules_path: Path | None, period: str, out: Path, clock: Callable[[], float], operator: str
) -> tuple[Rules, Period, float]:
    """What both publishers check first: the operator's name on one line, the rules, the
    period (begun), a new folder."""
    if not operator or any(ord(c) < 0x20 or c in "\x7f\u2028\u2029" for c in operator):
        raise CustodyError("the operator name is empty or holds a line break or control character")
    rules = rules_of(rules_path)
    now = clock()
    per = period_of(period, rules, now)
    if out.exists():
        raise CustodyError(f"{out} already exists; choose a new folder for the publication")
    return rules, per, now


def period_of(text: str, rules: Rules, now: float) -> Period:
    try:
        p = parse_period(text, rules.timezone)
    except ValueError as e:
        raise CustodyError(str(e)) from None
    if p.start.timestamp() > now:
        raise CustodyError(f"period {p.label} has not begun yet; nothing to disclose")
    return p


def log_leaves(ledger: Ledger, size: int) -> Iterator[tuple[int, bytes]]:
    """Every leaf of ``ledger`` below ``size``, one entry bundle read at a time."""
    for n in range((size + TILE_WIDTH - 1) // TILE_WIDTH):
        leaves = decode_bundle(ledger.tiles.read_tile(bundle_for_size(n, size)))
        base = n * TILE_WIDTH
        for i, leaf in enumerate(leaves[: size - base]):
            yield base + i, leaf


def read_log(
    ledger: Ledger, origin: str, size: int, rows: bool
) -> tuple[pa.Table | None, list[tuple[datetime, Mapping[str, Any]]]]:
    """The log's entries as catalog rows (``rows``: the hub's row function, so a station
    counts exactly as the county does), and its audit entries ``(time, fields)``."""
    from hub.rows import RowBuffer, leaf_hash, parse_utc

    buf = RowBuffer() if rows else None
    found: list[tuple[datetime, Mapping[str, Any]]] = []
    for i, leaf in log_leaves(ledger, size):
        fields = dict(decode_entry(leaf).fields)
        if buf is not None:
            buf.add_entry(origin, i, leaf, fields, leaf_hash(leaf))
        if fields.get("type") in AUDIT_TYPES:
            t = parse_utc(fields.get("time"))
            if t is not None:
                found.append((t, fields))
    return (buf.to_arrow() if buf is not None else None), found


def spill_folder(state_dir: Path) -> str:
    """Where DuckDB spills beyond its memory limit: under state/, which the systemd
    sandbox lets the station and the hub write."""
    spill = state_dir / "disclose-spill"
    spill.mkdir(parents=True, exist_ok=True)
    return str(spill)


def figures_of(
    table: pa.Table, period: Period, state_dir: Path, named: tuple[str, ...] = ()
) -> Figures:
    import duckdb

    con = duckdb.connect(
        config={"autoinstall_known_extensions": False, "autoload_known_extensions": False}
    )
    try:
        con.execute("SET TimeZone = 'UTC'")
        limit_memory(con, spill_folder(state_dir))
        con.register("log_rows", table)
        return compute(con, "log_rows", period, named)
    finally:
        con.close()


def cosignatures(note: str, origin: str) -> int:
    """Signature lines on a checkpoint other than the log's own."""
    try:
        return sum(1 for s in parse_note(note).signatures if s.name != origin)
    except ValueError:
        return 0


def witness_vkeys(policy: bytes | None) -> list[str]:
    if policy is None:
        return []
    try:
        return [w.key.vkey() for w in parse_policy(policy).witnesses]
    except PolicyError as e:
        raise CustodyError(f"the witness policy does not parse: {e}") from None


DAEMON = "custody daemon"
COMMAND = "custody disclose"


def public_operator(operator: str) -> str:
    """What the published entry says ran it: the daemon's own words, else the command.
    A person's login name (which may be an officer number) is never published."""
    return operator if operator.startswith(DAEMON) else COMMAND


def signer_into(
    ledger: Ledger,
    cosign: Callable[[], CheckpointRecord | None] | None = None,
    person: str | None = None,
) -> Callable[[dict[str, Any]], Signed]:
    """``sign(payload)``: append the ``disclose`` entry, integrate it into a signed
    checkpoint (witnesses asked first when ``cosign``), and return its proof. Who ran
    it (``person``) goes into a ``note`` entry after it: the log keeps the name, the
    publication (which carries the ``disclose`` entry) does not."""

    def sign(payload: dict[str, Any]) -> Signed:
        index = ledger.append("disclose", payload)
        if person is not None:
            ledger.append(
                "note",
                {
                    "text": f"disclosure {payload.get('period')} published: entry {index}",
                    "operator": person,
                },
            )
        ledger.integrate()
        latest = ledger.latest()
        if cosign is not None:
            latest = cosign() or latest
        if latest is None or latest.size <= index:
            raise CustodyError("the ledger did not sign a checkpoint holding the disclose entry")
        return Signed(
            index, ledger.entry(index), ledger.proof(index, latest.size).format(), latest.size
        )

    return sign


def _not_inside(out: Path, folders: list[Path], what: str) -> None:
    where = out.resolve()
    for f in folders:
        if where.is_relative_to(f.resolve()):
            raise CustodyError(f"{out} is inside {what} ({f}); publish to a folder of its own")


def publish(
    out: Path,
    pub: Publication,
    operator: str,
    ledger: Ledger,
    cosign: Callable[[], CheckpointRecord | None] | None = None,
) -> DiscloseResult:
    """Write ``pub`` to ``out`` and sign it into ``ledger``. The published entry names
    what ran it; a person's name goes into a note the folder does not carry."""
    published_as = public_operator(operator)
    person = None if published_as == operator else operator
    try:
        return build(out, pub, published_as, signer_into(ledger, cosign, person))
    except PublishError as e:
        raise CustodyError(str(e)) from None


def now_text(now: float) -> str:
    """RFC 3339 UTC in whole seconds: when the publication was made."""
    return datetime.fromtimestamp(int(now), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def disclose_station(
    conf: cfg.Config,
    period: str,
    out: Path,
    operator: str,
    clock: Callable[[], float] = time.time,
    rules_path: Path | None = None,
) -> DiscloseResult:
    """Publish ``period`` of this station's log to ``out`` (a new folder)."""
    from custody.daemon import make_witness_client
    from custody.export import read_policy
    from custody.station import open_ledger, station_verifier

    t0 = time.monotonic()
    rules, per, now = prepare(rules_path or conf.disclose.rules, period, out, clock, operator)
    _not_inside(out, [d.path for d in conf.docks], "a dock (it would be captured as footage)")
    _not_inside(out, [conf.ledger_dir, conf.store_dir], "the station's ledger or store")
    policy = read_policy(conf.witness_policy)
    vkey = station_verifier(conf).vkey()
    with open_ledger(conf) as ledger:
        witnesses = make_witness_client(conf, ledger) if policy is not None else None

        def cosign() -> CheckpointRecord | None:
            assert witnesses is not None
            return witnesses.cosign_now(conf.witness.timeout_s + 1)

        try:
            return _publish_station(conf, ledger, per, rules, now, out, operator, policy, vkey,
                                    cosign if witnesses is not None else None, t0)  # fmt: skip
        finally:
            if witnesses is not None:
                witnesses.close()


def _publish_station(
    conf: cfg.Config,
    ledger: Ledger,
    per: Period,
    rules: Rules,
    now: float,
    out: Path,
    operator: str,
    policy: bytes | None,
    vkey: str,
    cosign: Callable[[], CheckpointRecord | None] | None,
    t0: float,
) -> DiscloseResult:
    ledger.integrate()
    latest = ledger.latest()
    if cosign is not None:
        # The checkpoint published in logs/01 is the witnessed one: ask them first.
        latest = cosign() or latest
    size = latest.size if latest is not None else 0
    table, audit_entries = read_log(ledger, conf.origin, size, rows=True)
    assert table is not None
    fig = figures_of(table, per, conf.state_dir, tuple(rules.units))
    logs = []
    if latest is not None:
        logs.append(
            LogRef(
                conf.origin, vkey, latest.note, latest.size, cosignatures(latest.note, conf.origin)
            )
        )
    pub = Publication(
        period=per,
        scope="station",
        origin=conf.origin,
        rules=rules,
        figures=fig,
        audits=audits(audit_entries, per),
        logs=logs,
        witnesses=witness_vkeys(policy),
        sizes={conf.origin: size},
        generated=now_text(now),
        complete=now >= per.end.timestamp(),
        policy=policy,
        publisher_vkey=vkey,
    )
    res = publish(out, pub, operator, ledger, cosign)
    return replace(res, seconds=round(time.monotonic() - t0, 3))


__all__ = [
    "COMMAND",
    "DAEMON",
    "AuditFigures",
    "cosignatures",
    "disclose_station",
    "figures_of",
    "log_leaves",
    "now_text",
    "period_of",
    "prepare",
    "public_operator",
    "publish",
    "read_log",
    "rules_of",
    "signer_into",
    "spill_folder",
    "witness_vkeys",
]
