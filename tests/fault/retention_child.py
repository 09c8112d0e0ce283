"""A sweeping process for the retention crash campaign: sweeps day by day from where
the last run left off (its clock injected, as is the cold folder's), until ``end_day``.

Usage: python -m tests.fault.retention_child CONFIG T0 END_DAY
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from archive.local import LocalFolderStore
from custody import config as cfg
from custody.retain import index_db, make_sweeper, sweep_lock
from custody.station import open_ledger
from retention.plan import DAY

T = TypeVar("T")


def fixed(value: T) -> Callable[[], T]:
    return lambda: value


def main() -> None:
    conf = cfg.load(Path(sys.argv[1]))
    t0, end_day = float(sys.argv[2]), int(sys.argv[3])
    assert conf.store is not None and conf.store.path is not None
    with open_ledger(conf) as ledger:
        db = index_db(ledger)
        db.execute("CREATE TABLE IF NOT EXISTS retention_meta (key TEXT PRIMARY KEY, value TEXT)")
        row = db.execute("SELECT value FROM retention_meta WHERE key='last_sweep'").fetchone()
        day = max(0, int((int(row[0]) - t0) // DAY)) if row else 0
        while day <= end_day:
            at = t0 + day * DAY
            store = LocalFolderStore(conf.store.path, clock=fixed(datetime.fromtimestamp(at, UTC)))
            with sweep_lock(conf):
                make_sweeper(conf, ledger, db, clock=fixed(at), store=store).sweep(
                    accept_clock=True
                )
            print(f"day {day}", flush=True)
            day += 1
            time.sleep(0.01)  # a day passes: kills land between sweeps as well as inside
        ledger.integrate()
        db.close()


if __name__ == "__main__":
    main()
