"""The review site's data on a station: its ledger, its search index and its stores.

The web process is one more writer of the station's ledger (the ledger takes its file
lock per commit, as `custody note` does beside the daemon): `access` entries are
appended and committed before any footage or page is sent, and a background thread
integrates them into checkpoints within a second.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from custody import config as cfg
from custody.find import Query, count, find
from custody.station import open_ledger, station_verifier
from ledger.entry import decode_entry
from ledger.errors import LedgerError
from ledger.note import Verifier
from ledger.proof import ProofError
from retention.index import refresh
from web.source import Blob, FindQuery, Item

log = logging.getLogger("custody.web")

DERIVED_KIND = {"access": "access_copy", "poster": "poster"}
DERIVED_TYPE = {"access": "video/mp4", "poster": "image/jpeg"}
REFRESH_EVERY_S = 1.0


class StationSource:
    kind = "station"

    def __init__(self, conf: cfg.Config) -> None:
        self.conf = conf
        self.name = conf.origin
        self.ledger = open_ledger(conf)
        self.ledger.start_integrator(0.5)
        self._db = sqlite3.connect(self.ledger.db_path, timeout=60, check_same_thread=False)
        self._db.execute("PRAGMA busy_timeout=60000")
        self._lock = threading.RLock()
        self._refreshed = 0.0
        self._store: Any = None
        self._store_opened = False
        self.refresh(force=True)

    def close(self) -> None:
        self.ledger.stop_integrator()
        self.ledger.close()
        self._db.close()

    # -- the index ---------------------------------------------------------------------

    def refresh(self, force: bool = False) -> None:
        """Fold new entries into the search index (at most once a second)."""
        now = time.monotonic()
        with self._lock:
            if force or now - self._refreshed >= REFRESH_EVERY_S:
                refresh(self.ledger, self._db)
                self._refreshed = now

    def _rows(self, sql: str, args: tuple[Any, ...] | list[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def find(self, q: FindQuery, offset: int, limit: int) -> tuple[list[Item], int]:
        self.refresh()
        query = Query(
            officer=q.officer,
            recorder=q.recorder,
            unit=q.unit,
            since=q.since,
            until=q.until,
            category=q.category,
            case=q.case,
            units=q.units,
            shas=q.shas,
        )
        with self._lock:
            items = find(self._db, query, limit=limit, offset=offset)
            total = count(self._db, query)
        for it in items:
            it["origin"] = self.name
        return items, total

    def item(self, sha256: str) -> Item | None:
        self.refresh()
        with self._lock:
            got = find(self._db, Query(sha_prefix=sha256, include_deleted=True), limit=1)
        if not got or got[0]["sha256"] != sha256:
            return None
        it = got[0]
        it["origin"] = self.name
        return it

    def case_objects(self, case: str) -> list[str]:
        self.refresh()
        return [
            r[0]
            for r in self._rows(
                "SELECT sha256 FROM retention_cases WHERE case_no=? ORDER BY sha256", (case,)
            )
        ]

    def cases_of(self, sha256: str) -> list[str]:
        return [
            r[0]
            for r in self._rows(
                "SELECT case_no FROM retention_cases WHERE sha256=? ORDER BY case_no", (sha256,)
            )
        ]

    def _derived(self, sha256: str, kind: str) -> str | None:
        rows = self._rows(
            "SELECT derived FROM derivative_of WHERE original=? AND kind=? ORDER BY entry DESC",
            (sha256, kind),
        )
        return str(rows[0][0]) if rows else None

    def entries(self, sha256: str) -> list[dict[str, Any]]:
        """Every entry about the original, its copies and its cases' holds, in log order."""
        self.refresh()
        names = [sha256] + [
            r[0]
            for r in self._rows("SELECT derived FROM derivative_of WHERE original=?", (sha256,))
        ]
        marks = ",".join("?" * len(names))
        idx = {
            r[0]
            for r in self._rows(f"SELECT entry FROM entry_refs WHERE sha256 IN ({marks})", names)
        }
        cases = self.cases_of(sha256)
        if cases:
            cm = ",".join("?" * len(cases))
            for e, rel in self._rows(
                f"SELECT entry, released_entry FROM retention_holds WHERE scope='case' "
                f"AND target IN ({cm})",
                cases,
            ):
                idx.add(e)
                if rel is not None:
                    idx.add(rel)
        out = []
        for i in sorted(idx):
            e = self.entry(i)
            # A poster or copy can be byte-identical for several recordings (a black first
            # frame): another original's derive entry names this copy but is not about it.
            subject = e["fields"].get("sha256")
            if e["type"] == "derive" and subject != sha256:
                continue
            out.append(e)
        return out

    def entry(self, index: int) -> dict[str, Any]:
        fields = dict(decode_entry(self.ledger.entry(index)).fields)
        fields.pop("sig", None)
        return {
            "origin": self.name,
            "index": index,
            "type": fields.get("type"),
            "time": fields.get("time"),
            "fields": fields,
        }

    # -- bytes ---------------------------------------------------------------------------

    def _cold(self) -> Any:
        if not self._store_opened:
            from custody.cold import open_store

            self._store = open_store(self.conf)
            self._store_opened = True
        return self._store

    def blob(self, sha256: str, kind: str) -> Blob | None:
        from archive.store import object_key
        from ingest.objects import LocalObjects

        it = self.item(sha256)
        if it is None or it["deleted_entry"] is not None:
            return None
        if kind == "original":
            target, media_type = sha256, str(it["media_type"] or "application/octet-stream")
        elif kind in DERIVED_KIND:
            got = self._derived(sha256, DERIVED_KIND[kind])
            if got is None:
                return None
            target, media_type = got, DERIVED_TYPE[kind]
        else:
            return None
        local = LocalObjects(self.conf.store_dir).path(target)
        try:
            return Blob(local.stat().st_size, media_type, path=local)
        except FileNotFoundError:
            pass
        store = self._cold()
        if store is None or not hasattr(store, "get_range"):
            return None
        key = object_key(target)
        st = store.head(key)
        if st is None:
            return None

        def read(start: int, end: int) -> Iterator[bytes]:
            return store.get_range(key, start, end)  # type: ignore[no-any-return]

        return Blob(int(st.size), media_type, read=read)

    # -- proof ---------------------------------------------------------------------------

    def _verifiers(self) -> list[Verifier]:
        from custody import keys

        # Every key the station has had: a checkpoint after a rotation is signed by the
        # new key, an entry before it by the old one.
        out = [station_verifier(self.conf)]
        out += [v for v in keys.read_history(keys.key_files(self.conf)) if v not in out]
        return out

    def proof(self, sha256: str) -> dict[str, Any]:
        from ledger.policy import parse_policy
        from verify.witnesses import witnessing

        it = self.item(sha256)
        out: dict[str, Any] = {"ok": False, "problems": [], "witnesses": [], "quorum": None}
        if it is None:
            out["problems"].append("no such recording")
            return out
        index = int(it["ingest_entry"])
        verifiers = self._verifiers()
        out.update(index=index, station_key=verifiers[0].vkey())
        try:
            proof = self.ledger.proof(index)
        except LedgerError as e:
            out["problems"].append(f"no checkpoint covers the capture entry yet ({e.message})")
            return out
        out["proof"] = proof.format()
        out["checkpoint"] = proof.checkpoint
        try:
            sc = proof.verify(self.ledger.entry(index), verifiers, self.name)
            out.update(ok=True, size=sc.checkpoint.size, root=sc.checkpoint.root.hex())
        except ProofError as e:
            out["problems"].append(str(e))
        policy = None
        if self.conf.witness_policy is not None:
            try:
                policy = parse_policy(self.conf.witness_policy.read_bytes())
            except (OSError, ValueError) as e:
                out["problems"].append(f"witness policy {self.conf.witness_policy}: {e}")
        w = witnessing(proof.checkpoint, policy, verifiers)
        out["witnesses"] = w.cosignatures
        out["quorum"] = w.quorum
        out["problems"] += w.problems
        return out

    # -- the rest --------------------------------------------------------------------------

    def audits(self) -> list[dict[str, Any]]:
        try:
            row = self._rows("SELECT value FROM audit_state WHERE key='last_fixity'")
        except sqlite3.OperationalError:  # no audit ever ran here
            return []
        if not row:
            return []
        e = self.entry(int(row[0][0]))
        f = e["fields"]
        results = f.get("results") or {}
        failures = sum(v for k, v in results.items() if not k.endswith("_ok"))
        return [
            {
                "origin": self.name,
                "time": e["time"],
                "entry": e["index"],
                "ok": bool(f.get("ok")),
                "mode": f.get("mode"),
                "checked": f.get("objects_checked", 0),
                "failures": failures + int(f.get("completeness_problems", 0) or 0),
                "problems": list(f.get("problems") or []),
            }
        ]

    def alarms(self) -> list[dict[str, Any]]:
        return []

    def overview(self) -> list[dict[str, Any]]:
        self.refresh()
        rows = self._rows(
            "SELECT i.unit, COUNT(*), SUM(i.size), "
            "(SELECT COUNT(DISTINCT c.case_no) FROM retention_cases c JOIN retention_items j "
            "ON j.sha256 = c.sha256 WHERE j.unit = i.unit AND j.deleted_entry IS NULL) "
            "FROM retention_items i WHERE i.deleted_entry IS NULL GROUP BY i.unit ORDER BY i.unit"
        )
        return [
            {"origin": self.name, "unit": u, "recordings": n, "bytes": b or 0, "cases": c}
            for u, n, b, c in rows
        ]

    def record(self, entries: list[tuple[str, dict[str, Any]]]) -> list[int]:
        out = list(self.ledger.append_entries(entries))
        self._refreshed = float("-inf")  # the next read folds them: a page shows its own view
        return out

    def export(
        self, shas: list[str], case: str | None, purpose: str, who: str, out: Path
    ) -> dict[str, Any]:
        from archive.retrieve import Retriever
        from custody.export import export_bag, read_policy
        from ingest.objects import LocalObjects

        self.refresh(force=True)
        policy = read_policy(self.conf.witness_policy)
        fetch = Retriever(LocalObjects(self.conf.store_dir).path, self._cold())
        db = sqlite3.connect(self.ledger.db_path, timeout=60)
        try:
            res = export_bag(
                self.ledger,
                db,
                fetch,
                out,
                shas,
                case,
                purpose,
                who,
                self.name,
                station_verifier(self.conf).vkey(),
                sm3=self.conf.capture.sm3,
                policy=policy,
            )
        finally:
            db.close()
        return {
            "files": res.files,
            "bytes": res.bytes,
            "entries": res.entries,
            "checkpoint_size": res.checkpoint_size,
            "export_entry": res.export_entry,
            "skipped": list(res.skipped),
        }
