"""`custody status`: what the station holds, is doing and needs."""

from __future__ import annotations

import argparse
import json
import sqlite3
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from custody.cli_common import load

if TYPE_CHECKING:
    from custody import config as cfg


def _ingest_status(conf: cfg.Config) -> dict[str, Any]:
    from ingest.status import capture_status

    db_path = conf.state_dir / "ledger.sqlite"
    out: dict[str, Any] = {"docks": {}, "daemon": None, "halted": None}
    try:
        daemon = json.loads((conf.state_dir / "daemon.json").read_text())
        if isinstance(daemon, dict):
            alive = _pid_alive(int(daemon.get("pid", 0)))
            out["daemon"] = daemon if alive else None
            # A halt outlives the daemon (it exits 1 when integration cannot resume):
            # it is said until a daemon starts again and rewrites the file.
            if daemon.get("halted"):
                out["halted"] = str(daemon["halted"])
    except (OSError, ValueError):
        pass
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        out.update(capture_status(db))
    finally:
        db.close()
    return out


def _pid_alive(pid: int) -> bool:
    import os

    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cmd_status(args: argparse.Namespace) -> int:
    from custody.station import open_ledger

    conf = load(args)
    with open_ledger(conf, writable=False) as ledger:
        latest = ledger.latest()
        out: dict[str, Any] = {
            "origin": conf.origin,
            "data_dir": str(conf.data_dir),
            "ledger": {
                "entries": ledger.next_index(),
                "pending": ledger.pending_count(),
                "checkpoint_size": latest.size if latest else 0,
                "checkpoint_signed_at": latest.signed_at if latest else None,
            },
        }
    out["capture"] = _ingest_status(conf)
    daemon = out["capture"]["daemon"] or {}
    out["halted"] = out["capture"]["halted"]
    out["problems"] = [str(p) for p in daemon.get("problems") or []]
    out["problems_total"] = int(daemon.get("problems_total") or len(out["problems"]))
    out["cold_store"] = _cold_status(conf, out["capture"])
    out["media"] = _media_status(conf)
    out["retention"] = _retention_status(conf)
    out["disk"] = _disk_status(conf)
    out["audit"] = _audit_status(conf)
    out["witnesses"] = _witness_status(conf, latest)
    out["key"] = _key_status(conf)
    if latest is not None:
        from ledger.entry import parse_time

        cp_age = time.time() - parse_time(latest.signed_at).timestamp()
        out["ledger"]["checkpoint_age_s"] = int(cp_age)
    if args.json:
        print(json.dumps(out))
    else:
        lg = out["ledger"]
        assert isinstance(lg, dict)
        print(f"station {out['origin']} ({out['data_dir']})")
        if out["halted"]:
            running = "" if out["capture"]["daemon"] else " (the daemon has stopped)"
            print(f"HALTED: capture and release are stopped{running}: {out['halted']}")
        ws = out["witnesses"]
        if ws and ws.get("alarm"):
            from witness.client import alarm_line

            print(f"WITNESSES: {alarm_line(ws)}: the published checkpoints lack cosignatures")
        if out["problems_total"]:
            shown = len(out["problems"])
            more = f", the latest {shown} shown" if shown < out["problems_total"] else ""
            print(f"PROBLEMS: {out['problems_total']} the daemon cannot resolve by itself{more}:")
            for line in out["problems"]:
                print(f"  problem: {line}")
        age = lg.get("checkpoint_age_s")
        print(
            f"ledger: {lg['entries']} entries, {lg['pending']} awaiting a checkpoint; "
            f"last checkpoint size {lg['checkpoint_size']} signed {lg['checkpoint_signed_at']}"
            + (f" ({age} s ago)" if age is not None else "")
        )
        ky = out["key"]
        print(
            f"station key: {ky['key_id'] or 'unknown'}"
            + (f" ({len(ky['history'])} keys so far)" if len(ky["history"]) > 1 else "")
            + (
                f"; the previous key co-signs checkpoints until {ky['previous_cosigns_until']}"
                if ky["previous_cosigns_until"]
                else ""
            )
        )
        dk = out["disk"]
        print(
            f"disk: {dk['free_bytes'] / (1 << 30):.1f} GiB free of "
            f"{dk['total_bytes'] / (1 << 30):.1f} GiB at {dk['path']}"
            + (" (BELOW the capture floor: capture pauses)" if dk["below_floor"] else "")
        )
        au = out["audit"]
        if au is None:
            print("audit: none yet (custody audit)")
        else:
            print(
                f"audit: {'everything held' if au['ok'] else 'PROBLEMS FOUND'} at {au['time']} "
                f"({au['mode']}, {au['objects_checked']} objects; fixity entry {au['entry']})"
            )
        capture = out["capture"]
        assert isinstance(capture, dict)
        daemon = capture["daemon"]
        if daemon:
            state = f"paused: {daemon['paused']}" if daemon["paused"] else "running"
            print(f"daemon: pid {daemon['pid']}, {state}, {daemon['waiting']} file(s) waiting")
            for c in daemon.get("copying", []):
                print(f"  copying {c['file']} ({c['size']} bytes) for {c['recorder']}")
        else:
            print("daemon: not running")
        for dock, recs in sorted(capture["docks"].items()):
            for rec, states in sorted(recs.items()):
                parts = ", ".join(
                    f"{s} {v['files']} ({v['bytes']} bytes)" for s, v in sorted(states.items())
                )
                print(f"  {dock} / {rec}: {parts}")
        for e in capture["recent_errors"]:
            print(f"  error: {e}")
        m = out["media"]
        print(
            f"media: {m['fingerprinted']} fingerprinted, {m['frames_hashed']} with frame "
            f"hashes, {m['access_copies']} access copies, {m['posters']} posters"
        )
        if m.get("awaiting_v2"):
            print(f"  {m['awaiting_v2']} awaiting a v2 packet fingerprint (backfill at idle)")
        if m["mode"] == "remux":
            print(
                "  transcodes: on request (custody derive, export); "
                f"{m['transcodes_waiting']} recording(s) would need one"
            )
        elif m["mode"] == "all":
            cap = m["transcode_budget_min"]
            print(
                "  transcodes: on the dock at idle priority, "
                + (f"at most {cap} min of footage a day" if cap else "no daily cap")
                + f"; {m['transcoded_today_s'] / 60:.1f} min today, "
                f"{m['transcodes_waiting']} waiting"
            )
        else:
            print("  access copies: off (custody derive makes one on request)")
        cold = out["cold_store"]
        if isinstance(cold, dict):
            print(
                f"cold store {cold['store']}: {cold['replicated']} replicated, backlog "
                f"{cold['backlog']} ({cold['backlog_bytes']} bytes), oldest unreplicated "
                f"{cold['oldest_unreplicated'] or '-'}; ledger mirrored to size "
                f"{cold['ledger_mirrored_size']}"
            )
            if cold.get("last_error"):
                print(f"  last error: {cold['last_error']}")
        else:
            print("cold store: none configured (the dock's disk holds the only copy)")
        _print_witnesses(ws)
        rt = out["retention"]
        if rt["policy"] is None:
            print(
                "retention: no policy applied, so nothing is ever deleted; review the policy "
                "file and run `custody retention apply`"
            )
        else:
            due = ", ".join(f"{k} {v}" for k, v in sorted(rt["due_now"].items())) or "nothing"
            print(
                f"retention: policy {rt['policy']} ({', '.join(rt['rules'])}); "
                f"{rt['items']} originals, {rt['deleted']} deleted, {rt['holds']} hold(s) in "
                f"force; due now: {due}"
            )
            last = rt.get("last_sweep")
            if last:
                print(
                    f"  last sweep {last['at_utc']}: {len(last['done'])} done, "
                    f"{len(last['refused'])} refused, {len(last['failed'])} failed"
                    + (f"; held back: {last['clock']}" if last.get("clock") else "")
                )
    # A halted daemon is an integrity failure someone must resolve: exit 1, as documented.
    return 1 if out["halted"] else 0


def _witness_status(conf: cfg.Config, latest: Any) -> dict[str, Any] | None:
    """What the station's witness client learned (kept in the ledger's database, so this
    works with the daemon down too); None without a [witness] policy."""
    if conf.witness_policy is None:
        return None
    from custody.station import station_verifier
    from witness.client import WitnessPolicyError, load_policy, read_status

    try:
        policy = load_policy(conf.witness_policy)
    except WitnessPolicyError as e:
        return {"policy": str(conf.witness_policy), "error": str(e)}
    db = sqlite3.connect(f"file:{conf.state_dir / 'ledger.sqlite'}?mode=ro", uri=True)
    try:
        return read_status(
            db,
            policy,
            conf.witness_policy,
            latest,
            [station_verifier(conf)],
            conf.witness.alarm_after_s,
            time.time(),
        )
    finally:
        db.close()


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "never"


def _print_witnesses(ws: dict[str, Any] | None) -> None:
    if ws is None:
        print("witnesses: none configured (checkpoints carry the station's signature alone)")
        return
    if ws.get("error"):
        print(f"witnesses: policy {ws['policy']} cannot be used: {ws['error']}")
        return
    by = ", ".join(ws["cosigned_by"]) or "none"
    state = "met" if ws["quorum_met"] else "NOT MET"
    since = f" since {_when(ws['unmet_since'])}" if ws["unmet_since"] else ""
    print(
        f"witnesses: quorum {ws['quorum']} {state}{since} for checkpoint {ws['checkpoint_size']} "
        f"(cosigned by {by}); policy {ws['policy']}"
    )
    if ws.get("check_error"):
        print(f"  the latest checkpoint does not pass the policy: {ws['check_error']}")
    for w in ws["witnesses"]:
        where = w["url"] or "no URL in the policy: never asked"
        if w["failing_since"] is not None:
            what = (
                f"DOWN since {_when(w['failing_since'])}"
                if w["last_status"] == "down"
                else f"REFUSING ({w['last_status']}) since {_when(w['failing_since'])}"
            )
            print(f"  {w['name']} {where}: {what}; last ok {_when(w['last_ok'])}")
            print(f"    {w['last_error']}")
        else:
            size = w["size"] if w["size"] is not None else "-"
            print(f"  {w['name']} {where}: cosigned size {size}, last ok {_when(w['last_ok'])}")


def _key_status(conf: cfg.Config) -> dict[str, Any]:
    """The station key in use, the keys before it, and a rotation's overlap."""
    from custody import keys
    from ledger.note import NoteError, Verifier

    files = keys.key_files(conf)
    history = keys.read_history(files)
    try:
        current = Verifier.parse(files.vkey.read_text())
    except (OSError, NoteError):
        current = None
    until = None
    try:
        t = int(files.previous_until.read_text().strip())
        if files.previous.exists():
            until = datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OSError, ValueError):
        pass
    return {
        "vkey": current.vkey() if current else None,
        "key_id": current.key_id.hex() if current else None,
        "history": [k.vkey() for k in history],
        "previous_cosigns_until": until,
    }


def _disk_status(conf: cfg.Config) -> dict[str, Any]:
    import os

    st = os.statvfs(conf.data_dir)
    free = st.f_bavail * st.f_frsize
    return {
        "path": str(conf.data_dir),
        "free_bytes": free,
        "total_bytes": st.f_blocks * st.f_frsize,
        "below_floor": free < conf.capture.min_free_mb << 20,
    }


def _audit_status(conf: cfg.Config) -> dict[str, Any] | None:
    """The latest `fixity` entry, found through the index (read-only)."""
    from custody.audit import last_fixity
    from custody.station import open_ledger
    from ledger.entry import decode_entry

    db = sqlite3.connect(f"file:{conf.state_dir / 'ledger.sqlite'}?mode=ro", uri=True)
    try:
        idx = last_fixity(db)
    finally:
        db.close()
    if idx is None:
        return None
    with open_ledger(conf, writable=False) as ledger:
        f = decode_entry(ledger.entry(idx))
    return {
        "entry": idx,
        "time": f.time,
        "ok": bool(f.fields.get("ok")),
        "mode": f.fields.get("mode"),
        "objects_checked": f.fields.get("objects_checked"),
        "problems": f.fields.get("problems", []),
    }


def _retention_status(conf: cfg.Config) -> dict[str, Any]:
    """From the retention index as the last sweep or command left it (read-only)."""
    import hashlib

    from custody.retain import applied_policy
    from retention.index import states
    from retention.index import status as index_status
    from retention.plan import plan

    policy, text = applied_policy(conf)
    out: dict[str, Any] = {
        "policy": hashlib.sha256(text.encode()).hexdigest()[:16] if policy else None,
        "rules": [f"{r.name}: {r.describe_keep()}" for r in policy.rules] if policy else [],
        "items": 0,
        "deleted": 0,
        "holds": 0,
        "due_now": {},
        "last_sweep": None,
    }
    db = sqlite3.connect(f"file:{conf.state_dir / 'ledger.sqlite'}?mode=ro", uri=True)
    try:
        out.update(index_status(db))
        if policy is not None and out["items"]:
            for a in plan(policy, states(db), int(time.time())):
                if not a.blocked:
                    out["due_now"][a.kind] = out["due_now"].get(a.kind, 0) + 1
    except sqlite3.OperationalError:
        pass  # no retention index yet
    finally:
        db.close()
    return out


def _media_status(conf: cfg.Config) -> dict[str, Any]:
    from ingest.status import media_status

    out: dict[str, Any] = {
        "mode": conf.media.access_copies,
        "transcode_budget_min": conf.media.transcode_budget_min,
        "frame_hashes": conf.media.frame_hashes,
    }
    db = sqlite3.connect(f"file:{conf.state_dir / 'ledger.sqlite'}?mode=ro", uri=True)
    try:
        out.update(media_status(db, time.strftime("%Y-%m-%d")))
    finally:
        db.close()
    return out


def _cold_status(conf: cfg.Config, capture: Any) -> dict[str, Any] | None:
    from custody.cold import open_store

    store = open_store(conf)
    if store is None:
        return None
    from archive.replicate import queue_status

    db = sqlite3.connect(f"file:{conf.state_dir / 'ledger.sqlite'}?mode=ro", uri=True)
    try:
        try:
            out = queue_status(db, store.id)
        except sqlite3.OperationalError:  # nothing captured yet: no queue table
            out = {
                "store": store.id,
                "backlog": 0,
                "backlog_bytes": 0,
                "replicated": 0,
                "oldest_unreplicated": None,
                "queue_error": None,
                "ledger_mirrored_size": 0,
            }
    finally:
        db.close()
    daemon = capture.get("daemon") if isinstance(capture, dict) else None
    live = (daemon or {}).get("replication") or {}
    out["last_error"] = live.get("last_error") or (
        out["queue_error"]["error"] if out["queue_error"] else ""
    )
    return out


def add_parsers(sub: Any) -> None:
    s = sub.add_parser(
        "status",
        help="the daemon's halt and problems first, then the daemon, queues per dock and "
        "recorder, ledger, disk, cold store, media, witnesses, retention, last audit; exit 1 when "
        "the daemon has halted on an integrity error",
    )
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_status)
