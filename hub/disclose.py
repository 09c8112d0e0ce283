"""The county's public disclosure (公示): figures for every station the hub follows,
computed from the Iceberg catalog by DuckDB, each station's latest checkpoint with the
hub's cosignature, signed into the hub's own log (docs/disclosure.md)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from custody.disclose import (
    cosignatures,
    now_text,
    prepare,
    publish,
    read_log,
    spill_folder,
)
from disclose.figures import audits, compute, limit_memory
from disclose.publish import DiscloseResult, LogRef, Publication
from hub.catalog import duckdb_connect, duckdb_entries_sql
from hub.config import HubConfig
from hub.follow import Alarm
from hub.rows import ARROW_SCHEMA
from hub.sync import Hub


def disclose_county(
    conf: HubConfig,
    period: str,
    out: Path,
    operator: str,
    clock: Callable[[], float] = time.time,
    rules_path: Path | None = None,
) -> DiscloseResult:
    """Publish ``period`` of the county to ``out`` (a new folder)."""
    t0 = time.monotonic()
    rules, per, now = prepare(rules_path or conf.disclose.rules, period, out, clock, operator)
    hub = Hub(conf, clock)
    try:
        cat = hub.catalog
        cat.refresh()
        sizes = cat.catalogued()
        con = duckdb_connect(conf.catalog)
        limit_memory(con, spill_folder(conf.state_dir))
        try:
            if cat.count() == 0:
                con.register("no_rows", ARROW_SCHEMA.empty_table())
                relation = "no_rows"
            else:
                relation = duckdb_entries_sql(cat.table)
            fig = compute(con, relation, per, tuple(rules.units))
        finally:
            con.close()
        hub.ledger.integrate()
        latest = hub.ledger.latest()
        own_size = latest.size if latest is not None else 0
        _, audit_entries = read_log(hub.ledger, conf.name, own_size, rows=False)
        vkey = hub.signer.verifier().vkey()
        logs = []
        if latest is not None:
            logs.append(LogRef(conf.name, vkey, latest.note, latest.size, 0))
        for st in conf.stations:
            row = hub.state.station(st.origin, int(now))
            w = hub.witness.state(st.origin)
            note = w.checkpoint if w is not None and w.size == row.followed.size else None
            note = note or row.checkpoint
            if not note or row.followed.size == 0:
                continue  # nothing verified yet: no checkpoint to vouch for
            try:
                skey = hub._chain(st).current().vkey()
            except Alarm:  # a chain in alarm: publish the key the hub pinned
                skey = st.vkey.vkey()
            logs.append(
                LogRef(st.origin, skey, note, row.followed.size, cosignatures(note, st.origin))
            )
        pub = Publication(
            period=per,
            scope="county",
            origin=conf.name,
            rules=rules,
            figures=fig,
            audits=audits(audit_entries, per),
            logs=logs,
            witnesses=[hub.cosigner.verifier().vkey()],
            sizes={**sizes, conf.name: own_size},
            generated=now_text(now),
            complete=now >= per.end.timestamp(),
            publisher_vkey=vkey,
        )
        res = publish(out, pub, operator, hub.ledger)
    finally:
        hub.close()
    return replace(res, seconds=round(time.monotonic() - t0, 3))


__all__ = ["disclose_county"]
