"""`custody annotate | hold | release` and `custody retention plan | apply | sweep`."""

from __future__ import annotations

import argparse
import json
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from custody.cli_common import Reporter, iso_date, parse_date, sha_arg, with_config
from custody.errors import CustodyError

if TYPE_CHECKING:
    from custody import config as cfg
    from retention.plan import Action
    from retention.sweep import SweepResult


def _originals(db: sqlite3.Connection, shas: list[str]) -> None:
    from retention.index import item

    for sha in shas:
        it = item(db, sha)
        if it is None:
            raise CustodyError(f"{sha}: no captured original has this SHA-256")
        if it["deleted_entry"] is not None:
            raise CustodyError(f"{sha}: deleted by retention (entry {it['deleted_entry']})")


def _report_sync(say: Reporter, res: SweepResult) -> None:
    say.fields["sync"] = res.to_json()
    for line in res.done:
        say.line(f"  {line}")
    for line in res.refused + res.failed:
        say.line(f"  not done now (the next sweep tries again): {line}")


def cmd_annotate(args: argparse.Namespace, conf: cfg.Config) -> int:
    from custody.retain import applied_policy, index_db, make_sweeper, sweep_lock
    from custody.station import open_ledger, operator
    from retention.index import refresh, states
    from retention.plan import schedule
    from retention.policy import PolicyError, category_key

    sha = sha_arg(args.sha256)
    who = args.operator or operator()
    payload: dict[str, Any] = {"sha256": sha, "operator": who}
    try:
        if args.category:
            payload["category"] = category_key(args.category)
    except PolicyError as e:
        raise CustodyError(str(e)) from None
    if args.case:
        payload["cases_added"] = sorted(set(args.case))
    if args.important is not None:
        payload["important"] = args.important
    if len(payload) == 2:
        raise CustodyError("nothing to record: give --category, --case or --important")
    if args.reason:
        payload["reason"] = args.reason
    say = Reporter(args.json)
    with open_ledger(conf) as ledger:
        db = index_db(ledger)
        try:
            refresh(ledger, db)
            _originals(db, [sha])
            idx = ledger.append("annotate", payload)
            say.fields.update(entry=idx, annotation=payload)
            say.line(f"recorded annotation as entry {idx}")
            with sweep_lock(conf):
                res = make_sweeper(conf, ledger, db, operator=who).sync([sha])
            _report_sync(say, res)
            policy, _ = applied_policy(conf)
            if policy is not None:
                st = states(db, only=sha)[0]
                s = schedule(policy, st.facts)
                say.fields["rule"] = s.rule.name
                say.fields["delete_on"] = iso_date(s.delete_at) if s.delete_at else None
                say.line(
                    f"rule {s.rule.name!r}: kept {s.rule.describe_keep()}"
                    + (f", until {iso_date(s.delete_at)}" if s.delete_at else "")
                )
            ledger.integrate()
        finally:
            db.close()
    say.finish()
    return 0


def _hold_targets(db: sqlite3.Connection, args: argparse.Namespace) -> tuple[str, str, list[str]]:
    if args.case:
        shas = [
            r[0]
            for r in db.execute("SELECT sha256 FROM retention_cases WHERE case_no=?", (args.case,))
        ]
        return "case", args.case, shas
    if not args.sha256:
        raise CustodyError("name a SHA-256 or --case NUMBER")
    sha = sha_arg(args.sha256)
    _originals(db, [sha])
    return "object", sha, [sha]


def cmd_hold(args: argparse.Namespace, conf: cfg.Config) -> int:
    from custody.retain import index_db, make_sweeper, sweep_lock
    from custody.station import open_ledger, operator
    from retention.index import refresh

    who = args.operator or operator()
    say = Reporter(args.json)
    with open_ledger(conf) as ledger:
        db = index_db(ledger)
        try:
            refresh(ledger, db)
            scope, target, shas = _hold_targets(db, args)
            idx = ledger.append(
                "hold", {"scope": scope, "target": target, "reason": args.reason, "operator": who}
            )
            say.fields.update(entry=idx, scope=scope, target=target, items=shas)
            say.line(
                f"hold recorded as entry {idx}: {scope} {target} "
                f"({len(shas)} item(s) now; footage linked to the case later is held too)"
                if scope == "case"
                else f"hold recorded as entry {idx}: {target}"
            )
            with sweep_lock(conf):
                _report_sync(say, make_sweeper(conf, ledger, db, operator=who).sync(shas))
            ledger.integrate()
        finally:
            db.close()
    say.finish()
    return 0


def cmd_release(args: argparse.Namespace, conf: cfg.Config) -> int:
    from custody.retain import index_db, make_sweeper, sweep_lock
    from custody.station import open_ledger, operator
    from retention.index import refresh

    who = args.operator or operator()
    say = Reporter(args.json)
    with open_ledger(conf) as ledger:
        db = index_db(ledger)
        try:
            refresh(ledger, db)
            scope, target, shas = _hold_targets(db, args)
            open_holds = db.execute(
                "SELECT entry FROM retention_holds WHERE scope=? AND target=? AND "
                "released_entry IS NULL",
                (scope, target),
            ).fetchall()
            if not open_holds:
                raise CustodyError(f"no hold in force on {scope} {target}")
            idx = ledger.append(
                "hold_release",
                {
                    "scope": scope,
                    "target": target,
                    "reason": args.reason,
                    "operator": who,
                    "holds": [int(h[0]) for h in open_holds],
                },
            )
            ended = [int(h[0]) for h in open_holds]
            say.fields.update(entry=idx, scope=scope, target=target, holds_ended=ended)
            say.line(
                f"release recorded as entry {idx} (ends hold entries "
                f"{', '.join(str(h) for h in ended)})"
            )
            with sweep_lock(conf):
                _report_sync(say, make_sweeper(conf, ledger, db, operator=who).sync(shas))
            ledger.integrate()
        finally:
            db.close()
    say.finish()
    return 0


_LOCK_BLOCK = "store lock until "


def _lock_until(a: Action) -> int | None:
    """The retain-until (epoch seconds) an action names: a lock extension's new date, or
    the store lock that holds back a deletion."""
    if a.kind == "lock" and a.detail.isdigit():
        return int(a.detail)
    rest = a.blocked[len(_LOCK_BLOCK) :] if a.blocked.startswith(_LOCK_BLOCK) else ""
    return int(rest) if rest.isdigit() else None


def _blocked_text(a: Action) -> str:
    """Why the action waits, with dates (the planner says epoch seconds)."""
    until = _lock_until(a)
    if a.blocked.startswith(_LOCK_BLOCK) and until is not None:
        return _LOCK_BLOCK + iso_date(until)
    return a.blocked


def _action_line(a: Action) -> str:
    until = _lock_until(a)
    what = {
        "delete": "delete",
        "evict_local": "evict dock copy",
        "tier": f"move to {a.detail}",
        "lock": f"extend lock to {iso_date(until) if until is not None else a.detail}",
    }[a.kind]
    line = f"{iso_date(a.due)}  {what:<28} {a.sha256[:16]}  rule {a.rule}"
    return line + (f"  BLOCKED: {_blocked_text(a)}" if a.blocked else "")


def cmd_plan(args: argparse.Namespace, conf: cfg.Config) -> int:
    from custody.retain import applied_policy, difference, index_db, read_policy
    from custody.station import open_ledger
    from retention.index import refresh, states
    from retention.plan import plan

    as_of = args.as_of if args.as_of is not None else int(time.time())
    current, _ = applied_policy(conf)
    new = read_policy(Path(args.policy))[0] if args.policy else None
    use = new or current
    if use is None:
        raise CustodyError(
            "no retention policy has been applied",
            "apply one: custody retention apply --policy FILE",
        )
    started = time.monotonic()
    with open_ledger(conf, writable=False) as ledger:
        db = index_db(ledger)
        try:
            refresh(ledger, db)
            sts = list(states(db))
            actions = plan(use, sts, as_of)
            diff = difference(conf, ledger, new) if new is not None else None
        finally:
            db.close()
    counts: dict[str, int] = {}
    blocked = 0
    for a in actions:
        counts[a.kind] = counts.get(a.kind, 0) + 1
        blocked += bool(a.blocked)
    out: dict[str, Any] = {
        "as_of": iso_date(as_of),
        "policy": args.policy or "applied",
        "items": len(sts),
        "due": counts,
        "blocked": blocked,
        "seconds": round(time.monotonic() - started, 3),
    }
    if diff is not None:
        out["compare"] = {
            "items": diff.items,
            "deleted_earlier": len(diff.deleted_earlier),
            "deleted_later": diff.deleted_later,
            "evicted_earlier": diff.evicted_earlier,
            "tier_changes": diff.tier_changes,
            "rule_changes": [
                {"from": a, "to": b, "items": n} for (a, b), n in sorted(diff.rule_changes.items())
            ],
            "earlier": [
                {"sha256": s, "current": iso_date(old), "new": iso_date(nw)}
                for s, old, nw in diff.deleted_earlier
            ],
        }
    if args.json:
        out["actions"] = [
            {
                "date": iso_date(a.due),
                "kind": a.kind,
                "sha256": a.sha256,
                "rule": a.rule,
                "detail": a.detail,
                "blocked": _blocked_text(a),
                # The store's retain-until this action extends to or waits for.
                "until": iso_date(u) if (u := _lock_until(a)) is not None else None,
            }
            for a in actions
        ]
        print(json.dumps(out, ensure_ascii=False))
        return 0
    print(
        f"retention plan as of {out['as_of']} under "
        f"{'policy ' + args.policy if args.policy else 'the applied policy'}: "
        f"{len(sts)} original(s)"
    )
    if not actions:
        print("  nothing is due")
    names = {
        "delete": "deletions",
        "evict_local": "dock-copy evictions",
        "tier": "storage-class moves",
        "lock": "lock extensions",
    }
    for k, n in sorted(counts.items()):
        print(f"  {names[k]}: {n}")
    if blocked:
        print(f"  of which blocked (held, locked, or not yet in the cold store): {blocked}")
    for a in actions[: args.limit]:
        print("  " + _action_line(a))
    if len(actions) > args.limit:
        print(f"  ... {len(actions) - args.limit} more (--limit N, or --json)")
    if diff is not None:
        c = out["compare"]
        print(f"compared with the applied policy, over {c['items']} original(s):")
        print(f"  deleted EARLIER: {c['deleted_earlier']}")
        print(f"  deleted later or no longer: {c['deleted_later']}")
        print(f"  dock copies evicted earlier: {c['evicted_earlier']}")
        print(f"  storage-class changes: {c['tier_changes']}")
        for rc in c["rule_changes"]:
            print(f"  rule {rc['from']} -> {rc['to']}: {rc['items']}")
        for e in c["earlier"][: args.limit]:
            print(f"  earlier: {e['sha256'][:16]}  {e['current']} -> {e['new']}")
        if c["deleted_earlier"]:
            print(
                f"applying it needs: custody retention apply --policy {args.policy} "
                f"--confirm {c['deleted_earlier']}"
            )
    return 0


def cmd_apply(args: argparse.Namespace, conf: cfg.Config) -> int:
    from custody.retain import apply_policy, read_policy
    from custody.station import open_ledger, operator

    path = Path(args.policy) if args.policy else conf.retention.policy
    if path is None:
        raise CustodyError("name the policy: --policy FILE (or [retention] policy in the config)")
    _, text = read_policy(path)
    with open_ledger(conf) as ledger:
        idx, diff = apply_policy(
            conf, ledger, text, args.operator or operator(), str(path), args.confirm
        )
        ledger.integrate()
    earlier = len(diff.deleted_earlier) if diff else 0
    say = Reporter(args.json)
    say.fields.update(policy=str(path), entry=idx, deleted_earlier=earlier)
    say.line(
        f"policy {path} applied (entry {idx})"
        + (f"; {earlier} item(s) now deleted earlier" if earlier else "")
    )
    say.finish()
    return 0


def cmd_sweep(args: argparse.Namespace, conf: cfg.Config) -> int:
    from custody.retain import index_db, make_sweeper, sweep_lock
    from custody.station import open_ledger, operator

    with open_ledger(conf) as ledger:
        db = index_db(ledger)
        try:
            with sweep_lock(conf):
                res = make_sweeper(conf, ledger, db, operator=args.operator or operator()).sweep(
                    dry_run=args.dry_run, accept_clock=args.accept_clock
                )
            ledger.integrate()
        finally:
            db.close()
    if args.json:
        print(json.dumps(res.to_json(), ensure_ascii=False))
    else:
        if res.clock:
            print(f"deletions and evictions held back: {res.clock}")
        for line in res.done:
            print(line)
        for line in res.refused:
            print(f"refused by the store: {line}")
        for line in res.failed:
            print(f"failed (tried again later): {line}")
        print(
            f"sweep: {len(res.done)} done, {len(res.refused)} refused, {len(res.failed)} failed, "
            f"{res.blocked} blocked"
        )
    # Refused or failed actions are operational (the store said no, or was away): the
    # next sweep tries again. Exit 1 is kept for integrity failures.
    return 2 if res.refused or res.failed else 0


def add_parsers(sub: Any) -> None:
    run = with_config

    s = sub.add_parser(
        "annotate",
        help="record category, case link or importance of footage (a signed entry); its "
        "dock copy, storage class and store lock follow the policy at once",
    )
    s.add_argument("sha256")
    s.add_argument(
        "--category",
        help="行政处罚 (administrative_penalty), 行政强制, 行政检查, 行政征收征用, 行政许可, other",
    )
    s.add_argument("--case", action="append", metavar="NUMBER", help="link to a case (repeatable)")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--important", dest="important", action="store_const", const=True)
    g.add_argument("--not-important", dest="important", action="store_const", const=False)
    s.add_argument("--reason")
    s.add_argument("--operator", help="who records it (default: the login user)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=run(cmd_annotate), important=None)

    for name, fn, what in (
        (
            "hold",
            cmd_hold,
            "hold footage (one original, or every item of a case, now and later): nothing "
            "held is deleted, and a legal hold is set in the cold store",
        ),
        ("release", cmd_release, "end the holds in force on an original or a case"),
    ):
        s = sub.add_parser(name, help=what)
        s.add_argument("sha256", nargs="?")
        s.add_argument("--case", metavar="NUMBER", help="every item linked to this case")
        s.add_argument("--reason", required=True)
        s.add_argument("--operator", help="who records it (default: the login user)")
        s.add_argument("--json", action="store_true")
        s.set_defaults(func=run(fn))

    rt = sub.add_parser("retention", help="preview, apply and run the retention policy")
    rsub = rt.add_subparsers(dest="retention_command", required=True, metavar="SUBCOMMAND")
    s = rsub.add_parser(
        "plan",
        help="what would move or be deleted, on which date (UTC), by which rule, and what "
        "blocks it; --policy compares a new policy with the applied one",
    )
    s.add_argument(
        "--as-of",
        type=parse_date,
        help="date to plan to, YYYY-MM-DD in local time (default: now)",
    )
    s.add_argument("--policy", help="compare a new policy file against the applied one")
    s.add_argument("--json", action="store_true", help="every action, with ISO dates")
    s.add_argument("--limit", type=int, default=50, help="lines of items to show")
    s.set_defaults(func=run(cmd_plan))
    s = rsub.add_parser(
        "apply",
        help="make a policy file the one in force (a signed entry); one that deletes items "
        "earlier needs --confirm N",
    )
    s.add_argument("--policy", help="default: [retention] policy in the config")
    s.add_argument("--confirm", type=int, help="the number of items it deletes earlier")
    s.add_argument("--operator", help="who applies it (default: the login user)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=run(cmd_apply))
    s = rsub.add_parser(
        "sweep",
        help="carry out what is due now (the daemon does this hourly); exit 2 when the store "
        "refused or failed an action (the next sweep tries again)",
    )
    s.add_argument("--dry-run", action="store_true", help="say what would be done, do nothing")
    s.add_argument(
        "--accept-clock",
        action="store_true",
        help="the clock jump since the last sweep is right; go ahead",
    )
    s.add_argument("--operator", help="who runs it (default: the login user)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=run(cmd_sweep))
