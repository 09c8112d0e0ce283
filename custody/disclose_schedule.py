"""The disclosure schedule's wiring (``[disclose] schedule = "monthly"``), for the
station's daemon (`custody run`) and the county hub (`custody hub run`).

Every hour (and once at start: a station that was off on publication day publishes
when it comes back) the periods due (`disclose.target.due_periods`) are built into
``<state>/disclose-build/<period>`` by the lead's builder (`custody.disclose.
disclose_station` or `hub.disclose.disclose_county`, operator "custody daemon") and
copied to ``[disclose] out`` and/or ``[disclose.store]``. The first month that can
be due is the month of the publisher's own first log entry (the hub's: its own log,
so a county hub publishes from the month it was set up; earlier periods by hand with
`custody hub disclose`).

Failures are one log line each and wait for the next hour; capture and the hub's
sync never wait for a publication. An integrity error (the ledger) is raised.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from custody.config import DiscloseSettings
from custody.errors import CustodyError
from disclose.target import Build, Outcome, Target, TargetError, month_of, publish_due
from ledger.entry import decode_entry
from ledger.errors import IntegrityError, LedgerError

if TYPE_CHECKING:
    from hub.config import HubConfig

INTERVAL_H = 1


def targets(settings: DiscloseSettings) -> list[Target]:
    """Where publications go: the folder, and the bucket (a ``kind = "local"`` store is a
    folder too: published as one, atomically, with its index)."""
    out: list[Target] = []
    if settings.out is not None:
        out.append(Target(f"folder {settings.out}", out=settings.out))
    sc = settings.store
    if sc is not None:
        if sc.kind == "local":
            assert sc.path is not None
            out.append(Target(f"folder {sc.path}", out=sc.path))
        else:
            from archive.public import PublicBucket

            assert sc.s3 is not None
            bucket = PublicBucket(sc.s3)
            out.append(Target(f"bucket {bucket.where}", store=bucket))
    return out


def first_month(ledger: Any, timezone: str) -> str | None:
    """The month of the log's first entry in ``timezone`` (None for an empty log)."""
    try:
        leaf = ledger.entry(0)
    except (IndexError, LedgerError):
        return None
    t = datetime.fromisoformat(decode_entry(leaf).time.replace("Z", "+00:00"))
    return month_of(t, timezone)


def run_once(
    settings: DiscloseSettings,
    state_dir: Path,
    ledger: Any,
    build: Build,
    clock: Callable[[], float] = time.time,
) -> Outcome:
    """One scheduled pass: every period due now, to every target."""
    from disclose.rules import load_rules

    rules = load_rules(settings.rules)
    first = first_month(ledger, rules.timezone)
    if first is None:
        return Outcome()
    return publish_due(
        now=datetime.fromtimestamp(clock(), UTC),
        day=settings.day,
        timezone=rules.timezone,
        first_month=first,
        targets=targets(settings),
        build=build,
        state_dir=state_dir,
    )


def scheduled(
    settings: DiscloseSettings,
    state_dir: Path,
    ledger: Any,
    build: Build,
    log: logging.Logger,
    clock: Callable[[], float] = time.time,
    quiet: bool = False,
) -> None:
    """`run_once`, said in the log: a line per publication, a WARNING per problem, one
    ERROR line when the pass could not run at all; when nothing was due, one line saying
    what comes next (DEBUG when ``quiet``: the hourly runs after the first). Raises only
    `IntegrityError`."""
    try:
        res = run_once(settings, state_dir, ledger, build, clock)
    except IntegrityError:
        raise
    except (LedgerError, OSError, ValueError, TargetError, CustodyError) as e:
        # A rules file with an error, a full disk, a state file to move away.
        log.error("disclosure schedule not run: %s; it runs again in an hour", e)
        return
    except Exception:
        log.exception("disclosure schedule failed; it runs again in an hour")
        return
    for line in res.published:
        log.info("%s", line)
    for line in res.problems:
        log.warning("%s", line)
    if not res.due and res.next:
        log.log(
            logging.DEBUG if quiet else logging.INFO, "disclosure: nothing due; next: %s", res.next
        )


def station_build(conf: Any, clock: Callable[[], float] = time.time) -> Build:
    """The station's builder: `custody.disclose.disclose_station` (the lead's)."""

    def build(period: str, out: Path, operator: str) -> Any:
        from custody.disclose import disclose_station

        return disclose_station(conf, period, out, operator=operator, clock=clock)

    return build


def hub_build(conf: HubConfig, clock: Callable[[], float] = time.time) -> Build:
    """The county's builder: `hub.disclose.disclose_county` (the lead's)."""

    def build(period: str, out: Path, operator: str) -> Any:
        from hub.disclose import disclose_county

        return disclose_county(conf, period, out, operator=operator, clock=clock)

    return build


def start_hub_schedule(conf: HubConfig, ledger: Any) -> Callable[[], None] | None:
    """For `custody hub run`: the hourly disclosure job on its own scheduler thread
    (first pass at once); returns how to stop it, or None when the schedule is off."""
    if conf.disclose.schedule != "monthly":
        return None
    from apscheduler.schedulers.background import BackgroundScheduler

    log = logging.getLogger("custody.hub")
    build = hub_build(conf)

    runs = itertools.count()

    def job() -> None:
        try:
            scheduled(conf.disclose, conf.state_dir, ledger, build, log, quiet=next(runs) > 0)
        except IntegrityError as e:
            # The hub's own log: its sync says so too; nothing is published meanwhile.
            log.critical("disclosure not published: integrity error in the hub's log: %s", e)

    scheduler = BackgroundScheduler(timezone="UTC")
    scheduler.add_job(
        job,
        "interval",
        hours=INTERVAL_H,
        id="disclose",
        max_instances=1,
        coalesce=True,
        next_run_time=datetime.now(UTC),
    )
    scheduler.start()

    def stop() -> None:
        scheduler.shutdown(wait=False)

    return stop
