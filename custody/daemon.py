"""`custody run` and `custody ingest`: the capture pipeline wired to the ledger.

One daemon per data folder (an exclusive lock on ``state/daemon.lock``).
SIGTERM or SIGINT: stop taking new work, let in-flight copies finish (they
are idempotent if cut short), integrate the ledger, exit 0.
"""

from __future__ import annotations

import fcntl
import glob
import json
import logging
import os
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler

from custody import config as cfg
from custody.errors import CustodyError
from custody.station import open_ledger
from ingest.objects import LocalObjects
from ingest.pipeline import Capturer
from ingest.settings import DockSettings
from ingest.watch import DockWatcher, mount_table
from ledger.durable import write_atomic

log = logging.getLogger("custody")

TICK_S = 0.25


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    logging.getLogger("watchdog").setLevel(logging.WARNING)


class InstanceLock:
    def __init__(self, path: Path, what: str = "custody run") -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.f = open(path, "a+")  # noqa: SIM115 - held for the life of the daemon
        try:
            fcntl.flock(self.f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.f.close()
            raise CustodyError(
                f"cannot start {what}: another custody process is capturing into "
                f"{path.parent.parent}",
                "with the daemon running, put the files on a dock instead; otherwise wait "
                "for the other 'custody ingest' to finish",
            ) from None
        self.f.seek(0)
        self.f.truncate()
        self.f.write(f"{os.getpid()}\n")
        self.f.flush()

    def release(self) -> None:
        self.f.close()


def _write_status(conf: cfg.Config, cap: Capturer, started: float) -> None:
    doc: dict[str, Any] = {
        "pid": os.getpid(),
        "started": started,
        "updated": time.time(),
        "paused": cap.paused,
        "waiting": cap.queued_count(),
        "copying": [
            {"recorder": r, "file": f, "size": n, "since": t}
            for r, (f, n, t) in sorted(dict(cap.copying).items())
        ],
        "captured": cap.stats.captured,
        "sightings": cap.stats.sightings,
        "failures": cap.stats.failed,
        "last_errors": list(cap.stats.errors)[-5:],
    }
    write_atomic(conf.state_dir / "daemon.json", json.dumps(doc).encode(), sync_dir=False)


def run(conf: cfg.Config, stop: threading.Event | None = None) -> int:
    lock = InstanceLock(conf.state_dir / "daemon.lock")
    stop = stop or threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("received %s: finishing in-flight work and stopping", signal.Signals(signum).name)
        stop.set()

    # First thing: a stop request during start-up (recovery can take a while) is honoured
    # once start-up is done, not by dying half-way.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    ledger = open_ledger(conf)
    objects = LocalObjects(conf.store_dir)
    cap = Capturer(ledger, objects, conf.docks, conf.capture)
    started = time.time()
    if not conf.docks:
        log.warning("no [[docks]] in %s: nothing to watch", conf.path)
    ledger.start_integrator(conf.ledger.checkpoint_interval_ms / 1000)
    cap.recover()
    watcher = DockWatcher([d.path for d in conf.docks], cap.discover, _on_dir(cap))
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
        next_run_time=None,
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
    scheduler.add_job(
        _write_status,
        "interval",
        seconds=2,
        args=(conf, cap, started),
        id="status",
        max_instances=1,
        coalesce=True,
    )
    scheduler.start()
    reconcile()  # everything already on the docks at start

    log.info(
        "custody running: origin %s, %d dock(s), data %s",
        conf.origin,
        len(conf.docks),
        conf.data_dir,
    )
    try:
        while not stop.wait(TICK_S):
            try:
                cap.tick()
            except Exception:
                log.exception("capture tick failed; continuing")
    finally:
        scheduler.shutdown(wait=False)
        watcher.stop()
        cap.close(wait=True)
        ledger.stop_integrator()
        ledger.integrate()
        ledger.close()
        with_status = conf.state_dir / "daemon.json"
        with_status.unlink(missing_ok=True)
        lock.release()
        log.info("custody stopped")
    return 0


def _on_dir(cap: Capturer) -> Any:
    def scan_dir(path: Path) -> None:
        # A new recorder folder or mount: files may have arrived before its watch existed.
        for dirpath, _dirs, files in os.walk(path, followlinks=False):
            for name in files:
                cap.discover(Path(dirpath) / name)

    return scan_dir


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


def _ingest(conf: cfg.Config, paths: list[Path], settle_ms: int, wait_s: float) -> dict[str, Any]:
    docks: list[DockSettings] = []
    files: dict[Path, list[str]] = {}
    for given in paths:
        if given.is_symlink() or not given.exists():
            raise CustodyError(f"{given}: not found (symlinks are not followed)")
        p = given.resolve()
        if p.is_dir():
            docks.append(DockSettings(path=p, name=f"ingest:{p.name or p}"))
        else:
            files.setdefault(p.parent, []).append(p.name)
    for parent, names in files.items():
        # Exact names: a file called "[1].txt" or "a*.txt" is not a pattern.
        include = tuple(glob.escape(n) for n in names)
        docks.append(DockSettings(path=parent, name=f"ingest:{parent.name}", include=include))
    settings = replace(conf.capture, settle_ms=settle_ms)
    ledger = open_ledger(conf)
    objects = LocalObjects(conf.store_dir)
    cap = Capturer(ledger, objects, docks, settings)
    try:
        cap.recover()
        cap.scan()
        finished = cap.drain(timeout=wait_s)
        ledger.integrate()
        return {
            "captured": cap.stats.captured,
            "sightings": cap.stats.sightings,
            "failures": cap.stats.failed,
            "bytes": cap.stats.bytes,
            "errors": list(cap.stats.errors),
            "paused": cap.paused,
            "still_queued": cap.queued_count(),
            "still_changing": [] if finished else cap.waiting_files(),
        }
    finally:
        cap.close()
        ledger.close()
