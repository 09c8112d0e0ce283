"""`custody run` and `custody ingest`: the capture pipeline wired to the ledger.

One daemon per data folder (an exclusive lock on ``state/daemon.lock``).
SIGTERM or SIGINT: stop taking new work, let in-flight copies finish (they
are idempotent if cut short), integrate the ledger, exit 0.
SIGHUP: read the configuration again and take the new docks (the retention
policy in force is read at every sweep); a configuration with an error is
refused in one log line and the running one is kept.
Under systemd (``Type=notify``): READY=1 once capture runs, STATUS= lines,
watchdog pings from the main loop, RELOADING=1 and STOPPING=1.
With ``[witness] policy``, a witness thread (`witness.client.WitnessClient`) asks
the policy's witnesses to cosign each checkpoint; capture never waits for it.

An integrity error anywhere (the ledger's integrator, capture, replication, a
sweep) is never logged and retried like an outage: capture and release stop at
once, ``state/daemon.json`` says ``halted`` (and keeps saying it after the
daemon is gone), so do the metrics and the systemd STATUS line; the daemon
tries integration again for `HALT_GRACE_S` (someone may restore the file at
fault), and exits 1 if that does not resolve it.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import logging
import os
import signal
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from archive.errors import LockingNotEnabled, StoreError
from custody import config as cfg
from custody.cold import open_store, replication_settings
from custody.errors import CustodyError, describe_os_error
from custody.station import open_ledger
from ingest import dockfs
from ingest.derive import MediaSettings
from ingest.jobs import JobDb
from ingest.mediasched import MediaSteps
from ingest.objects import LocalObjects
from ingest.pipeline import Capturer
from ingest.problems import Problems
from ingest.release import Releaser
from ingest.settings import DockSettings
from ingest.stability import WriteMarks
from ledger.durable import LockBusy, file_lock, write_atomic
from ledger.errors import IntegrityError

if TYPE_CHECKING:
    from archive.replicate import Replicator
    from ingest.watch import DockWatcher
    from witness.client import WitnessClient

log = logging.getLogger("custody")

TICK_S = 0.25
# How long a halted daemon keeps trying to integrate the ledger again before it exits 1.
HALT_GRACE_S = 30.0
HALT_RETRY_S = 5.0


class JsonFormatter(logging.Formatter):
    """One JSON object per line (``[daemon] log_format = "json"``)."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "time": datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


def setup_logging(level: str = "INFO", fmt: str = "plain") -> None:
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    elif os.environ.get("JOURNAL_STREAM"):
        # journald stamps each line itself.
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    logging.getLogger("watchdog").setLevel(logging.WARNING)
    for quiet in ("botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(quiet).setLevel(logging.WARNING)


class InstanceLock:
    """One capturer per data folder (the daemon or a `custody ingest`), held until
    `release`; the kernel frees it if the process dies."""

    def __init__(self, path: Path, what: str = "custody run") -> None:
        self._held = contextlib.ExitStack()
        try:
            self._held.enter_context(file_lock(path, wait=False, record_pid=True))
        except LockBusy as e:
            who = f" (PID {e.holder}, holding {path})" if e.holder else f" (holding {path})"
            raise CustodyError(
                f"cannot start {what}: another custody process{who} is capturing into "
                f"{path.parent.parent}",
                "with the daemon running, put the files on a dock instead; otherwise wait "
                "for the other 'custody ingest' to finish",
            ) from None

    def release(self) -> None:
        self._held.close()


def status_doc(
    cap: Capturer,
    started: float,
    rep: Replicator | None,
    halted: str,
    witnesses: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What `custody status` shows of the running daemon (``state/daemon.json``)."""
    doc: dict[str, Any] = {
        "pid": os.getpid(),
        "started": started,
        "updated": time.time(),
        "paused": cap.paused,
        "halted": halted or None,
        "waiting": cap.queued_count(),
        "copying": [
            {"recorder": r, "file": f, "size": n, "since": t}
            for r, (f, n, t) in sorted(dict(cap.copying).items())
        ],
        "captured": cap.stats.captured,
        "sightings": cap.stats.sightings,
        "failures": cap.stats.failed,
        "last_errors": list(cap.stats.errors)[-5:],
        "problems": cap.problems.lines(),
        "problems_total": cap.problems.total(),
    }
    if rep is not None:
        doc["replication"] = rep.status()
    if witnesses is not None:
        doc["witnesses"] = witnesses
    return doc


class StatusFile:
    """``state/daemon.json``, replaced atomically every few seconds. A full disk is one
    log line (until the file can be written again), never a traceback per write, and
    leaves no temporary file behind."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._failing = ""

    def write(self, doc: dict[str, Any]) -> bool:
        try:
            write_atomic(self.path, json.dumps(doc).encode(), sync_dir=False)
        except OSError as e:
            line = f"cannot write {self.path}: {e.strerror or e}"
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                line += " (the disk is full: make room on it)"
            if line != self._failing:
                log.error("%s", line)
                self._failing = line
            return False
        if self._failing:
            log.info("%s is written again", self.path)
            self._failing = ""
        return True

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def _summary(
    cap: Capturer,
    rep: Replicator | None,
    halted: str = "",
    witnesses: dict[str, Any] | None = None,
) -> str:
    from witness.client import alarm_line

    if halted:
        return f"HALTED: integrity error: {halted}"[:400]
    out = (
        f"captured {cap.stats.captured}, waiting {cap.queued_count()}, "
        f"copying {len(cap.copying)}, failures {cap.stats.failed}"
    )
    if rep is not None:
        st = rep.status()
        out += f"; cold store backlog {st.get('backlog', 0)}"
    if cap.paused:
        out += f"; PAUSED: {cap.paused}"
    if cap.problems.total():
        out += f"; {cap.problems.total()} problem(s), see custody status"
    alarm = alarm_line(witnesses) if witnesses is not None else ""
    if alarm:
        out += f"; {alarm}"
    return out


def halted_reason(cap: Capturer, ledger: Any, rep: Replicator | None) -> str:
    """The integrity error that stops this daemon ("" while none)."""
    for where, reason in (
        ("ledger", ledger.halted),
        ("capture", cap.halted),
        ("cold store", rep.integrity_error if rep is not None else ""),
    ):
        if reason:
            return f"{where}: {reason}"
    return ""


def run(conf: cfg.Config, stop: threading.Event | None = None) -> int:
    # What only the daemon needs: `custody ingest` runs without them.
    from apscheduler.schedulers.background import BackgroundScheduler

    from custody.notify import Notifier
    from ingest.watch import DockWatcher, mount_table

    lock = InstanceLock(conf.state_dir / "daemon.lock")
    stop = stop or threading.Event()
    reload = threading.Event()
    notify = Notifier()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("received %s: finishing in-flight work and stopping", signal.Signals(signum).name)
        stop.set()

    def on_hup(_signum: int, _frame: object) -> None:
        reload.set()

    # First thing: a stop request during start-up (recovery can take a while) is honoured
    # once start-up is done, not by dying half-way.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_hup)
    notify.status("starting: opening the ledger and recovering")
    ledger = open_ledger(conf)
    # Before the mirror starts: with a policy, it holds checkpoints/<size> for the round.
    witnesses = make_witness_client(conf, ledger)
    objects = LocalObjects(conf.store_dir)
    rep = make_replicator(conf, ledger, objects)
    cap = make_capturer(ledger, objects, conf.docks, conf.capture, rep, conf.media)
    started = time.time()
    if not conf.docks:
        log.warning("no [[docks]] in %s: nothing to watch", conf.path)
    ledger.start_integrator(conf.ledger.checkpoint_interval_ms / 1000)
    cap.recover()
    if rep is not None:
        rep.start()
    if witnesses is not None:
        witnesses.start()
    watcher = DockWatcher(
        [d.path for d in conf.docks],
        cap.discover,
        cap.scan_dir,
        cap.problems,
        halt=cap.halt,
        events_lost=cap.events_lost,
    )
    watcher.start()
    scheduler = BackgroundScheduler(timezone="UTC")

    def reconcile() -> None:
        watcher.refresh()
        n = cap.scan()
        log.debug("reconciliation scan looked at %d files", n)

    scheduler.add_job(
        reconcile,
        "interval",
        seconds=conf.capture.scan_interval_s,
        id="scan",
        # First run one interval from now (the scan below covers the start); never
        # next_run_time=None, which adds the job paused: it would never run.
        max_instances=1,
        coalesce=True,
    )
    mounts = [mount_table()]

    def watch_mounts() -> None:
        now = mount_table()
        if now != mounts[0]:
            mounts[0] = now
            log.info("mount table changed: watching the docks afresh and scanning them")
            watcher.rewatch()
            cap.forget_identities()
            cap.scan()

    scheduler.add_job(
        watch_mounts, "interval", seconds=1, id="mounts", max_instances=1, coalesce=True
    )

    status_file = StatusFile(conf.state_dir / "daemon.json")

    def witness_status() -> dict[str, Any] | None:
        if witnesses is None:
            return None
        try:
            return witnesses.status()
        except Exception as e:  # the status is written whatever the witnesses' part says
            log.debug("witness status not available: %s", e)
            return None

    def status_job() -> None:
        halted = halted_reason(cap, ledger, rep)
        ws = witness_status()
        status_file.write(status_doc(cap, started, rep, halted, ws))
        notify.status(_summary(cap, rep, halted, ws))

    scheduler.add_job(
        status_job, "interval", seconds=2, id="status", max_instances=1, coalesce=True
    )
    if rep is not None:
        scheduler.add_job(
            _clean_uploads,
            "interval",
            hours=1,
            args=(rep,),
            id="stale-uploads",
            coalesce=True,
            # First sweep right away, on the scheduler's thread: a slow or unreachable store
            # must not hold up the start of capture.
            next_run_time=datetime.now(UTC),
        )
    scheduler.add_job(
        _retention_sweep,
        "interval",
        minutes=conf.retention.sweep_interval_min,
        args=(conf, ledger, cap),
        id="retention",
        max_instances=1,
        coalesce=True,
        next_run_time=datetime.now(UTC),
    )
    if conf.disclose.schedule == "monthly":
        scheduler.add_job(
            _disclose,
            "interval",
            hours=1,
            args=(conf, ledger, cap, itertools.count()),
            id="disclose",
            max_instances=1,
            coalesce=True,
            # At start too, on the scheduler's thread: a station that was off on the
            # publication day publishes when it comes back, and capture never waits.
            next_run_time=datetime.now(UTC),
        )
    if conf.media.access_copies == "all" or conf.media.frame_hashes:
        # Media steps left waiting (a spent transcode budget) are queued again.
        scheduler.add_job(
            cap.schedule_media,
            "interval",
            minutes=30,
            id="media",
            max_instances=1,
            coalesce=True,
        )
    stop_metrics = None
    if conf.metrics_listen:
        from custody.metrics import serve

        try:
            stop_metrics = serve(
                conf.metrics_listen,
                cap,
                rep,
                ledger,
                str(conf.data_dir),
                lambda: halted_reason(cap, ledger, rep),
                witness_status,
            )
            log.info("metrics on http://%s/metrics", conf.metrics_listen)
        except OSError as e:
            log.error("metrics not served on %s: %s (capture goes on)", conf.metrics_listen, e)
    scheduler.start()
    reconcile()  # everything already on the docks at start
    # Originals from before custody-packets/v2, at idle priority after every other media step.
    cap.media_steps.start_backfill()

    log.info(
        "custody running: origin %s, %d dock(s), data %s",
        conf.origin,
        len(conf.docks),
        conf.data_dir,
    )
    notify.ready(_summary(cap, rep))
    last_ping = 0.0
    halt = _Halt(ledger, cap, conf.ledger.checkpoint_interval_ms / 1000, conf.ledger.halt_grace_s)
    try:
        while not stop.wait(TICK_S):
            halted = halted_reason(cap, ledger, rep)
            if halted and halt.begin(halted):
                status_job()  # said at once, not at the next status write
            if halted and halt.give_up():
                break
            try:
                cap.tick()
            except IntegrityError as e:
                cap.halt(str(e))
            except Exception:
                log.exception("capture tick failed; continuing")
            if reload.is_set():
                reload.clear()
                notify.reloading()
                conf = _reload(conf, cap, watcher)
                notify.send("READY=1", f"STATUS={_summary(cap, rep, halted)}")
            # The watchdog hears from the main loop only while it goes round.
            if notify.watchdog_s and time.monotonic() - last_ping >= notify.watchdog_s:
                notify.watchdog()
                last_ping = time.monotonic()
    finally:
        halted = halted_reason(cap, ledger, rep)
        # Taken now, while the replicator's database is still open.
        try:
            last = status_doc(cap, started, rep, halted, witness_status())
        except Exception:  # the stop goes on whatever the status says
            last = {"pid": os.getpid(), "started": started, "halted": halted or None}
        if halted:
            notify.status(_summary(cap, rep, halted))
        notify.stopping()
        if stop_metrics is not None:
            stop_metrics()
        scheduler.shutdown(wait=False)
        watcher.stop()
        if witnesses is not None:
            witnesses.close()
        if rep is not None:
            rep.close(timeout=60)  # before the capturer: it may still be releasing for us
        cap.close(wait=True)
        ledger.stop_integrator()
        if not ledger.halted:
            try:
                ledger.integrate()
            except IntegrityError as e:
                halted = halted or str(e)
                log.critical("ledger integration failed at stop: integrity error: %s", e)
        ledger.close()
        if halted:
            # Kept for `custody status` after the daemon is gone: what stopped it.
            last["halted"] = halted
            last["stopped"] = time.time()
            status_file.write(last)
        else:
            status_file.remove()
        lock.release()
        if halted:
            log.critical("custody stopped by an integrity error: %s", halted)
        else:
            log.info("custody stopped")
        notify.close()
    return 1 if halted else 0


class _Halt:
    """What the daemon does once an integrity error stopped capture: integrate the
    ledger again every `HALT_RETRY_S` (someone may have restored the file at fault),
    resume if the ledger alone was at fault and it integrates, else give up after
    `[ledger] halt_grace_s` (`HALT_GRACE_S` by default)."""

    def __init__(
        self, ledger: Any, cap: Capturer, interval: float, grace_s: float = HALT_GRACE_S
    ) -> None:
        self.ledger = ledger
        self.cap = cap
        self.interval = interval
        self.grace_s = grace_s
        self.since = 0.0
        self.tried = 0.0

    def begin(self, reason: str) -> bool:
        """True the first time (the status is written at once)."""
        if self.since:
            return False
        self.since = self.tried = time.monotonic()
        self.cap.halt(reason)
        return True

    def give_up(self) -> bool:
        now = time.monotonic()
        if self.ledger.halted and now - self.tried >= HALT_RETRY_S:
            self.tried = now
            try:
                self.ledger.integrate()
            except IntegrityError:
                pass
            else:
                log.warning("the ledger integrates again: its integrity error is resolved")
                if self.cap.halted == f"ledger: {self.ledger.halted}":
                    self.cap.resume_after_halt()
                self.ledger.halted = ""
                self.ledger.stop_integrator()
                self.ledger.start_integrator(self.interval)
                self.since = 0.0
                return False
        if now - self.since < self.grace_s:
            return False
        log.critical(
            "integrity error not resolved in %d s: stopping (exit 1); run 'custody ledger "
            "verify' and restore the ledger or state folder from backup",
            self.grace_s,
        )
        return True


def _reload(conf: cfg.Config, cap: Capturer, watcher: DockWatcher) -> cfg.Config:
    """SIGHUP: the configuration again. Docks are taken at once; other sections need a
    restart (said in the log). A configuration with an error changes nothing."""
    try:
        new = cfg.load(conf.path)
    except CustodyError as e:
        log.error("configuration not reloaded, the running one is kept: %s", e)
        return conf
    if new.data_dir != conf.data_dir or new.origin != conf.origin:
        log.error(
            "configuration not reloaded: data_dir and origin cannot change while running "
            "(restart custody to change them)"
        )
        return conf
    if new.docks != conf.docks:
        cap.set_docks(new.docks)
        watcher.set_roots([d.path for d in new.docks])
        cap.scan()
        log.info(
            "configuration reloaded: %d dock(s): %s",
            len(new.docks),
            ", ".join(str(d.path) for d in new.docks),
        )
    else:
        log.info("configuration reloaded: docks unchanged")
    others = [
        name
        for name, a, b in (
            ("[capture]", conf.capture, new.capture),
            ("[store]", conf.store, new.store),
            ("[media]", conf.media, new.media),
            ("[ledger]", conf.ledger, new.ledger),
            ("[witness]", conf.witness, new.witness),
        )
        if a != b
    ]
    if others:
        log.warning("%s changed: restart custody for that to take effect", ", ".join(others))
        return replace(conf, docks=new.docks, retention=new.retention)
    return new


def _retention_sweep(conf: cfg.Config, ledger: Any, cap: Capturer) -> None:
    """The scheduled sweep: what the applied policy allows now, each move an entry."""
    from custody.retain import index_db, make_sweeper, sweep_lock
    from retention.index import record_sweep

    db = index_db(ledger)
    try:
        with sweep_lock(conf):
            res = make_sweeper(conf, ledger, db).sweep()
        if res.clock:
            log.warning("retention: deletions held back: %s", res.clock)
        for line in res.refused:
            log.warning("retention: refused by the store: %s", line)
        for line in res.failed:
            log.warning("retention: not done now: %s", line)
        if res.done:
            log.info("retention sweep: %d done (%s)", len(res.done), "; ".join(res.done[:5]))
        record_sweep(db, res.to_json(), int(time.time()))
    except IntegrityError as e:
        cap.halt(f"retention sweep: {e}")
    except (OSError, sqlite3.OperationalError) as e:
        # A full disk, an I/O error: one line a person can act on, not a traceback.
        why = describe_os_error(e) if isinstance(e, OSError) else f"the state database: {e}"
        log.error(
            "retention sweep not run: %s (make room on the disk holding %s); it runs again "
            "at the next interval",
            why,
            conf.state_dir,
        )
    except Exception:
        log.exception("retention sweep failed; it runs again at the next interval")
    finally:
        db.close()


def _disclose(conf: cfg.Config, ledger: Any, cap: Capturer, runs: Iterator[int]) -> None:
    """The scheduled disclosure (公示): the periods due, built and published
    (`custody.disclose_schedule`); a bucket away is a WARNING line, tried next hour."""
    from custody.disclose_schedule import scheduled, station_build

    quiet = next(runs) > 0  # "nothing due" is said at start, then only in DEBUG
    try:
        scheduled(conf.disclose, conf.state_dir, ledger, station_build(conf), log, quiet=quiet)
    except IntegrityError as e:
        cap.halt(f"disclosure: {e}")


def make_witness_client(conf: cfg.Config, ledger: Any) -> WitnessClient | None:
    """The witness client for the configured policy (None without one: then nothing is
    held back from the cold store's mirror)."""
    if conf.witness_policy is None:
        ledger.set_witness_settled(None)
        return None
    from custody.station import station_verifier
    from witness.client import ClientSettings, WitnessClient, load_policy

    policy = load_policy(conf.witness_policy)
    w = conf.witness
    settings = ClientSettings(
        timeout_s=w.timeout_s,
        publish_wait_s=w.publish_wait_s,
        alarm_after_s=w.alarm_after_s,
        retry_s=w.retry_s,
    )
    client = WitnessClient(ledger, policy, conf.witness_policy, [station_verifier(conf)], settings)
    log.info(
        "witnesses: %s (quorum %s), from %s",
        ", ".join(x.name for x in policy.witnesses) or "none",
        policy.describe_quorum(),
        conf.witness_policy,
    )
    return client


def make_replicator(conf: cfg.Config, ledger: Any, objects: LocalObjects) -> Replicator | None:
    """The upload queue for the configured cold store (None without one).

    Refuses a bucket without object lock when locking is required; a store that
    cannot be reached now is no reason not to capture: the queue waits for it.
    """
    store = open_store(conf)
    if store is None:
        return None
    from archive.replicate import Replicator

    settings = replication_settings(conf)
    try:
        store.check_locking(settings.locking)
    except LockingNotEnabled as e:
        raise CustodyError(e.message, e.hint) from None
    except StoreError as e:
        # Unreachable, a clock the store finds skewed, expired credentials: capture goes on
        # and uploads wait (the lock check runs again before the first upload).
        log.warning("cold store not usable at start (%s); uploads wait for it", e)
    return Replicator(ledger, store, objects.path, settings)


def backfill(rep: Replicator) -> int:
    """Queue captured objects that this store has no row for (a store added later)."""
    from archive.replicate import enqueue_missing
    from ingest.status import captured_objects

    return enqueue_missing(rep.db, rep.store_id, captured_objects(rep.db))


def _clean_uploads(rep: Replicator) -> None:
    try:
        rep.clean_stale_uploads()
    except StoreError as e:
        log.info("stale-upload cleanup skipped: %s", e)


def make_capturer(
    ledger: Any,
    objects: LocalObjects,
    docks: list[DockSettings] | tuple[DockSettings, ...],
    settings: Any,
    rep: Replicator | None,
    media: MediaSettings | None = None,
) -> Capturer:
    """The capture pipeline, composed: one job table, the problems and writers' marks
    capture and release share, the media steps, the releaser and the capturer over
    them, wired to the cold store's queue when there is one."""
    gone = DeletedIndex(ledger.db_path)
    on_new_object = None if rep is None else _queue_again_if_deleted(gone, rep)
    replicated = None if rep is None else _unless_deleted(gone, rep.stored_entry)
    jobs = JobDb(ledger.db_path)
    problems, marks = Problems(), WriteMarks()
    media_steps = MediaSteps(ledger, objects, jobs, media, on_new_object, settings.min_free_mb)
    releaser = Releaser(
        ledger, objects, jobs, settings, problems, marks, time.monotonic, replicated
    )
    cap = Capturer(
        ledger,
        objects,
        docks,
        settings,
        on_new_object=on_new_object,
        replicated=replicated,
        media=media,
        deleted=gone.entry,
        jobs=jobs,
        media_steps=media_steps,
        releaser=releaser,
        problems=problems,
        marks=marks,
    )
    if rep is not None:
        rep.on_stored = cap.release_replicated
        n = backfill(rep)  # after the capturer made its tables
        if n:
            log.info("queued %d captured object(s) for %s that were never queued", n, rep.store_id)
    return cap


class DeletedIndex:
    """Whether retention deleted an object (an original, or an access copy or poster that
    went with it), from the retention index: the `delete` entry, else None."""

    def __init__(self, db_path: Path) -> None:
        import sqlite3

        self._lock = threading.Lock()
        self._db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, check_same_thread=False)

    def entry(self, sha256: str) -> int | None:
        from retention.index import deleted_entry

        with self._lock:
            return deleted_entry(self._db, sha256)


def _unless_deleted(gone: DeletedIndex, stored_entry: Any) -> Any:
    """The cold store's `store` entry for an object, but None for one retention deleted:
    a recorder's file is never released on the strength of a copy that no longer exists
    (docked again, it is captured anew and released once stored again)."""

    def replicated(sha256: str) -> int | None:
        deleted = gone.entry(sha256)
        if deleted is not None:
            log.info(
                "%s was deleted by retention (entry %s): captured anew, released once stored again",
                sha256[:16],
                deleted,
            )
            return None
        entry: int | None = stored_entry(sha256)
        return entry

    return replicated


def _queue_again_if_deleted(gone: DeletedIndex, rep: Replicator) -> Any:
    """The upload hook: an object whose stored copy retention deleted goes back to the
    queue when it is made or docked again."""
    from archive.replicate import requeue

    def on_new_object(conn: Any, sha256: str, size: int, role: str) -> None:
        if gone.entry(sha256) is not None:
            requeue(conn, rep.store_id, sha256, size, role)
            rep.kick()
        else:
            rep.enqueue_in(conn, sha256, size, role)

    return on_new_object


def ingest_once(
    conf: cfg.Config, paths: list[Path], settle_ms: int, wait_s: float = 300
) -> dict[str, Any]:
    """Capture everything under ``paths`` now, with the same pipeline as the daemon.

    Refuses to run beside `custody run` on the same data folder (one capturer per
    store, so a duplicate is always a sighting and no copy in progress is swept).
    """
    lock = InstanceLock(conf.state_dir / "daemon.lock", "custody ingest")
    try:
        return _ingest(conf, paths, settle_ms, wait_s)
    finally:
        lock.release()


def _own_files(conf: cfg.Config) -> tuple[set[tuple[int, int]], set[tuple[int, int]]]:
    """The station's own data folder and key, as (st_dev, st_ino): ``inside`` is the data
    folder and the key themselves (an argument passing through either is within them),
    ``around`` every folder holding them up to ``/`` (an argument naming one contains
    them)."""
    inside: set[tuple[int, int]] = set()
    around: set[tuple[int, int]] = set()
    for own in (conf.data_dir, conf.key_path):
        try:
            real = Path(os.path.realpath(own))
            st = os.stat(real)
        except OSError:
            continue
        inside.add((st.st_dev, st.st_ino))
        for folder in real.parents:
            with contextlib.suppress(OSError):
                up = os.stat(folder)
                around.add((up.st_dev, up.st_ino))
    return inside, around


def ingest_argument(conf: cfg.Config, given: Path) -> Path:
    """An argument of `custody ingest` as the folder or file it names, reached without
    following a symlink anywhere in it; never the station's own data folder or key, nor
    a folder holding or within them (the station would capture its own store and key,
    as a dock there is refused in the configuration). CustodyError otherwise."""
    try:
        got = dockfs.reach(given)
    except dockfs.Outside as e:
        raise CustodyError(
            f"{given}: not taken: {os.fsdecode(e.refused.path)} is {e.refused.reason}",
            "name the folder or file itself, by a path with no symlink in it",
        ) from None
    except FileNotFoundError:
        raise CustodyError(f"{given}: not found") from None
    except OSError as e:
        raise CustodyError(f"{given}: cannot be read: {e.strerror}") from None
    here = (got.st.st_dev, got.st.st_ino)
    inside, around = _own_files(conf)
    p, data = got.path, conf.data_dir
    if (
        here in inside
        or here in around
        or inside & set(got.through)
        or p == data
        or p in data.parents
        or data in p.parents
    ):
        raise CustodyError(
            f"{given}: not taken: it overlaps the station's data folder {data} (its store "
            "and key are never captured)",
            "name the recorder's card or folder, not the station's",
        )
    if not (stat.S_ISDIR(got.st.st_mode) or stat.S_ISREG(got.st.st_mode)):
        raise CustodyError(f"{given}: not taken: not a folder or a regular file")
    return p


def _ingest(conf: cfg.Config, paths: list[Path], settle_ms: int, wait_s: float) -> dict[str, Any]:
    docks: list[DockSettings] = []
    files: dict[Path, list[str]] = {}
    # Every argument is checked before anything is captured: one refused, none taken.
    checked = [ingest_argument(conf, given) for given in paths]
    configured = {d.path: d for d in conf.docks}
    for p in checked:
        if p in configured:
            # A configured dock: its vendor patterns, recorder table and identity command.
            docks.append(configured[p])
        elif p.is_dir():
            docks.append(DockSettings(path=p, name=f"ingest:{p.name or p}"))
        else:
            files.setdefault(p.parent, []).append(p.name)
    for parent, names in files.items():
        # Exactly these files (a file called "[1].txt" is not a pattern), and none of the
        # same name deeper down below their folder.
        docks.append(DockSettings(path=parent, name=f"ingest:{parent.name}", files=tuple(names)))
    settings = replace(conf.capture, settle_ms=settle_ms)
    ledger = open_ledger(conf)
    witnesses = make_witness_client(conf, ledger)
    objects = LocalObjects(conf.store_dir)
    rep = make_replicator(conf, ledger, objects)
    cap = make_capturer(ledger, objects, docks, settings, rep, conf.media)

    def cosign() -> None:
        # After capture: the witnesses get one short chance (a few seconds, not
        # publish_wait_s) before the mirror runs; what is still missing is the daemon's.
        if witnesses is not None:
            witnesses.cosign_now(conf.witness.timeout_s + 1)

    try:
        cap.recover()
        cap.scan()
        finished = cap.drain(timeout=wait_s)
        replication: dict[str, Any] | None = None
        if rep is None:
            cap.finish_releases()  # after the release settle
            ledger.integrate()
            cosign()
        else:
            # One pass: what the store takes now is replicated (and released); the rest
            # stays queued for the daemon.
            rep.run_due(limit=1_000_000)
            cap.finish_releases()
            ledger.integrate()
            cosign()
            try:
                rep.sync_ledger()
            except StoreError as e:
                log.warning("ledger not mirrored to the cold store now: %s", e)
            replication = rep.status()
            rep.close()
        ledger.integrate()
        return {
            "replication": replication,
            "captured": cap.stats.captured,
            "sightings": cap.stats.sightings,
            "failures": cap.stats.failed,
            "bytes": cap.stats.bytes,
            "errors": list(cap.stats.errors),
            "paused": cap.paused,
            "still_queued": cap.queued_count(),
            "still_changing": [] if finished else cap.waiting_files(),
            "problems": cap.problems.lines(),
            "problems_total": cap.problems.total(),
            "halted": halted_reason(cap, ledger, rep) or None,
            "witnesses": witnesses.status() if witnesses is not None else None,
        }
    finally:
        if witnesses is not None:
            witnesses.close()
        cap.close()
        ledger.close()
