"""Where finished publications go, and when: the disclosure schedule (公示 on a timetable).

A publication folder is built privately (`custody disclose`'s own code, into a folder
of the station's or the hub's state) and then copied, unchanged, to where the public
reads it: a folder a web server serves (``[disclose] out``) and/or a bucket prefix
meant for public reading (``[disclose.store]``, never the evidence bucket).

- `due_periods` (pure): which months and years are due at a given time. A month is
  published on day ``day`` of the next month (local time of the rules' zone), a year
  on day ``day`` of January (the annual figures are due by 31 January, 国办发〔2018〕118号).
  After downtime only the last 12 months are caught up, never months before the log
  began.
- `publish_folder`: one publication to a folder (written aside as
  ``<out>/.<period>.partial``, fsynced, renamed to ``<out>/<period>``; an existing
  different ``<out>/<period>`` is never replaced) and/or to a bucket under
  ``<period>/`` (each object with its Content-Type, no object lock; an object already
  there with the same SHA-256 is accepted). ``index.json`` beside the periods lists
  them, so a reader finds every publication from one address.
- `publish_due`: the scheduled run. What was published where is kept in
  ``<state>/disclose.json`` (written atomically), so a restart publishes no period
  twice: one `disclose` entry per period, whichever targets it goes to (a target
  added later gets the kept or published copy, or a new build when there is none).
  Without a record (the state file lost) the targets are read back first. A build
  is kept in ``<state>/disclose-build/<period>`` until every target holds it, so a
  bucket that is away is retried from the same build, with no second entry, and it
  never holds up the folder. A build appears whole or not at all (the builder writes
  it aside and renames it once signed): found whole after a crash, it is used. Only
  a crash or an error *during* a build leaves the period "building": the next run
  builds it again, and that second `disclose` entry says so in its ``operator``
  (`REBUILT`), since the first may or may not have been appended.

This package reaches stores only through the `PublicStore` port below; the
composition root (custody, hub) passes an adapter over its S3 client.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import zoneinfo
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from ledger.durable import fsync_dir, write_atomic
from ledger.errors import IntegrityError

CATCH_UP_MONTHS = 12
INDEX = "index.json"
INDEX_FORMAT = "custody-disclosure-index/v1"
STATE_FORMAT = "custody-disclose-state/v1"
STATE_FILE = "disclose.json"
BUILD_DIR = "disclose-build"
OPERATOR = "custody daemon"
REBUILT = "custody daemon (built again: an earlier build of this period was cut short or lost)"
# Written last, in this order: a reader (or a restart) that finds the last of them finds
# the whole publication.
LAST = ("MANIFEST", "disclose.entry", "disclose.tlog-proof")

_MONTH = re.compile(r"([0-9]{4})-(0[1-9]|1[0-2])")
_LABEL = re.compile(r"[0-9]{4}(?:-(?:0[1-9]|1[0-2]))?")
_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css",
    ".json": "application/json",
    ".csv": "text/csv; charset=utf-8",
}
TEXT = "text/plain; charset=utf-8"  # checkpoints, keys, MANIFEST, the entry and its proof


class TargetError(Exception):
    """A publication that cannot go where it was asked to; one line saying why."""


class PublicStore(Protocol):
    """A bucket prefix for public reading, as publishing needs it (keys are bare: the
    store adds its configured prefix)."""

    where: str  # e.g. "s3://public/disclosure/", for messages

    def sha256(self, key: str) -> str | None:
        """The stored object's SHA-256 (hex), None when the key holds nothing."""
        ...

    def read(self, key: str) -> bytes | None:
        """A small object's bytes, None when the key holds nothing."""
        ...

    def put(
        self, key: str, data: bytes, sha256: str, content_type: str, *, replace: bool = False
    ) -> None:
        """Store ``data`` under ``key`` with no lock, its SHA-256 confirmed by the store.
        Without ``replace`` an existing object is never overwritten."""
        ...

    def list(self, prefix: str) -> Iterator[str]:
        """Keys below ``prefix``."""
        ...


# -- when ---------------------------------------------------------------------------


def _month_number(text: str, what: str) -> int:
    m = _MONTH.fullmatch(text)
    if m is None:
        raise ValueError(f"{what} must be a month as YYYY-MM, not {text!r}")
    return int(m[1]) * 12 + int(m[2]) - 1


def due_periods(
    now: datetime, day: int, timezone: str, published: set[str], first_month: str
) -> list[str]:
    """The periods due at ``now`` and not in ``published``, oldest first (a December
    before its year).

    Month M is due from 00:00 on day ``day`` of month M+1 in ``timezone``; year Y from
    that moment for its December (day ``day`` of January Y+1). Only periods whose last
    month is among the 12 months before ``now``'s month are due (catch-up after
    downtime), and none whose last month is before ``first_month`` (the log's first
    entry: nothing to publish before it; a year the log began in is published)."""
    if now.tzinfo is None:
        raise ValueError("now must carry a time zone")
    if not 1 <= day <= 28:
        raise ValueError(f"day must be from 1 to 28, not {day}")
    zone = zoneinfo.ZoneInfo(timezone)
    local = now.astimezone(zone)
    current = local.year * 12 + local.month - 1
    first = _month_number(first_month, "first_month")
    due: list[str] = []
    for n in range(max(first, current - CATCH_UP_MONTHS), current):
        year, month = divmod(n, 12)
        next_year, next_month = divmod(n + 1, 12)
        if local < datetime(next_year, next_month + 1, day, tzinfo=zone):
            continue
        label = f"{year:04d}-{month + 1:02d}"
        if label not in published:
            due.append(label)
        if month == 11 and str(year) not in published:
            due.append(str(year))
    return due


def month_of(time: datetime, timezone: str) -> str:
    """The month (YYYY-MM) ``time`` falls in, in ``timezone``."""
    local = time.astimezone(zoneinfo.ZoneInfo(timezone))
    return f"{local.year:04d}-{local.month:02d}"


# -- where --------------------------------------------------------------------------


def content_type(path: str) -> str:
    return _CONTENT_TYPES.get(os.path.splitext(path)[1].lower(), TEXT)


def _check_period(period: str) -> None:
    if _LABEL.fullmatch(period) is None:
        raise ValueError(f"a period is YYYY or YYYY-MM, not {period!r}")


def _read_tree(root: Path) -> dict[str, bytes]:
    """Every file below ``root`` by its '/'-separated relative path."""
    files: dict[str, bytes] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        for name in dirnames + filenames:
            p = here / name
            if p.is_symlink():
                raise TargetError(f"{p}: a symlink in a publication; refusing to publish it")
        for name in filenames:
            p = here / name
            files[p.relative_to(root).as_posix()] = p.read_bytes()
        dirnames.sort()
    return files


def _in_order(files: dict[str, bytes]) -> list[tuple[str, bytes]]:
    rest = sorted((k, v) for k, v in files.items() if k not in LAST)
    return rest + [(k, files[k]) for k in LAST if k in files]


def _publication(src: Path) -> dict[str, bytes]:
    if not (src / "MANIFEST").is_file() or not (src / "disclose.entry").is_file():
        raise TargetError(f"{src} is not a finished publication (no MANIFEST or disclose.entry)")
    return _read_tree(src)


def _index_item(period: str, manifest: bytes, data_json: bytes | None) -> dict[str, str]:
    generated = ""
    if data_json is not None:
        try:
            doc = json.loads(data_json)
            if isinstance(doc, dict) and isinstance(doc.get("generated"), str):
                generated = doc["generated"]
        except ValueError:
            pass
    return {
        "period": period,
        "generated": generated,
        "manifest_sha256": hashlib.sha256(manifest).hexdigest(),
        "path": f"{period}/",
    }


def _index_bytes(items: Sequence[dict[str, str]]) -> bytes:
    doc = {"format": INDEX_FORMAT, "periods": sorted(items, key=lambda i: i["period"])}
    return (json.dumps(doc, ensure_ascii=False, indent=1) + "\n").encode()


def _write_tree(root: Path, files: Sequence[tuple[str, bytes]]) -> None:
    """Every file written and fsynced, then every folder, deepest first. Modes are for
    public reading whatever the daemon's umask: a web server runs as another user."""
    root.mkdir(mode=0o755)
    os.chmod(root, 0o755)
    dirs = {root}
    for rel, data in files:
        path = root / rel
        new = [d for d in reversed(path.relative_to(root).parents) if root / d not in dirs]
        for d in new:  # top down
            (root / d).mkdir(mode=0o755)
            os.chmod(root / d, 0o755)
            dirs.add(root / d)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            os.fchmod(fd, 0o644)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
    for d in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
        fsync_dir(d)


def _to_folder(files: dict[str, bytes], out: Path, period: str) -> bool:
    """Whether ``<out>/<period>`` was written now (False: it already held these files)."""
    final = out / period
    if final.exists() or final.is_symlink():
        if final.is_dir() and not final.is_symlink() and _read_tree(final) == files:
            return False
        raise TargetError(
            f"{final} already holds a different publication of {period}; a published "
            "period is never replaced: leave it, or move it away to publish this one"
        )
    out.mkdir(parents=True, exist_ok=True)
    partial = out / f".{period}.partial"
    if partial.exists():
        shutil.rmtree(partial)  # an interrupted copy: never shown, made again
    _write_tree(partial, _in_order(files))
    # rename(2) onto a non-empty folder fails: a publication that appeared meanwhile
    # is kept, not replaced.
    os.rename(partial, final)
    fsync_dir(out)
    return True


def folder_index(out: Path) -> bytes:
    """``index.json`` for a folder: every complete ``<period>/`` in it."""
    items = []
    for p in sorted(out.iterdir()):
        if _LABEL.fullmatch(p.name) and p.is_dir() and not p.is_symlink():
            manifest = p / "MANIFEST"
            if manifest.is_file():
                data = p / "data.json"
                items.append(
                    _index_item(
                        p.name,
                        manifest.read_bytes(),
                        data.read_bytes() if data.is_file() else None,
                    )
                )
    return _index_bytes(items)


def _to_store(files: dict[str, bytes], store: PublicStore, period: str) -> int:
    """Objects uploaded now (those already there with the same SHA-256 are kept)."""
    sent = 0
    for rel, data in _in_order(files):
        key = f"{period}/{rel}"
        sha = hashlib.sha256(data).hexdigest()
        have = store.sha256(key)
        if have == sha:
            continue
        if have is not None:
            raise TargetError(
                f"{store.where}{key} already holds other bytes (SHA-256 {have[:16]}); a "
                "published period is never replaced: remove that prefix to publish again"
            )
        store.put(key, data, sha, content_type(rel))
        sent += 1
    return sent


def _store_index(store: PublicStore, period: str, files: dict[str, bytes]) -> bytes:
    """The bucket's ``index.json`` with ``period`` in it: the one there, else rebuilt
    from the periods the bucket holds."""
    items: dict[str, dict[str, str]] = {}
    old = store.read(INDEX)
    try:
        doc = json.loads(old) if old is not None else None
        if isinstance(doc, dict) and doc.get("format") == INDEX_FORMAT:
            for i in doc["periods"]:
                items[str(i["period"])] = {k: str(i[k]) for k in _index_item("", b"", None)}
        else:
            doc = None
    except (ValueError, KeyError, TypeError):
        doc = None
    if doc is None:
        for key in store.list(""):
            label, _, rest = key.partition("/")
            if rest == "MANIFEST" and _LABEL.fullmatch(label):
                manifest = store.read(key)
                if manifest is not None:
                    items[label] = _index_item(label, manifest, store.read(f"{label}/data.json"))
    items[period] = _index_item(period, files["MANIFEST"], files.get("data.json"))
    return _index_bytes(list(items.values()))


def publish_folder(
    src: Path, out: Path | None, store: PublicStore | None, period: str
) -> list[str]:
    """Copy the finished publication ``src`` to ``<out>/<period>/`` and/or to the
    store's ``<period>/``, and refresh each one's ``index.json``. Returns where it now
    is, one line each (saying when it was there already)."""
    _check_period(period)
    files = _publication(src)
    done: list[str] = []
    if out is not None:
        new = _to_folder(files, out, period)
        write_atomic(out / INDEX, folder_index(out), 0o644)
        done.append(f"{out / period}" + ("" if new else " (there already)"))
    if store is not None:
        sent = _to_store(files, store, period)
        index = _store_index(store, period, files)
        store.put(
            INDEX, index, hashlib.sha256(index).hexdigest(), content_type(INDEX), replace=True
        )
        done.append(f"{store.where}{period}/" + ("" if sent else " (there already)"))
    return done


# -- the scheduled run --------------------------------------------------------------


class Built(Protocol):
    """What a build reports (`disclose.publish.DiscloseResult` has these and more)."""

    @property
    def manifest_sha256(self) -> str: ...

    @property
    def entry_index(self) -> int: ...


# (period, the folder to create, operator) -> the built publication, its entry logged.
Build = Callable[[str, Path, str], Built]


@dataclass(frozen=True)
class Target:
    """One place publications go: a folder, or a bucket prefix."""

    name: str  # how the state file and the log lines name it
    out: Path | None = None
    store: PublicStore | None = None

    def holds(self, period: str) -> bool:
        """Whether the place has the whole publication (its last file is written last)."""
        if self.out is not None:
            return (self.out / period / LAST[-1]).is_file()
        assert self.store is not None
        return self.store.sha256(f"{period}/{LAST[-1]}") is not None


@dataclass(frozen=True)
class Outcome:
    due: tuple[str, ...] = ()
    published: tuple[str, ...] = ()  # one line per period and place
    problems: tuple[str, ...] = ()  # one line each, what to do included
    built: tuple[str, ...] = field(default=())  # periods built (a `disclose` entry) now
    next: str = ""  # the next period to come due and when, for the log


def load_state(path: Path) -> dict[str, dict[str, Any]]:
    """The periods' records in ``disclose.json`` (empty when there is none yet)."""
    try:
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except ValueError as e:
        raise TargetError(
            f"{path}: not readable as JSON ({e}); move it away: publications already "
            "out are found again in their targets"
        ) from None
    periods = doc.get("periods") if isinstance(doc, dict) else None
    if not isinstance(periods, dict):
        raise TargetError(f"{path}: not a disclosure state file; move it away")
    return {str(k): dict(v) for k, v in periods.items() if isinstance(v, dict)}


def _save_state(path: Path, periods: dict[str, dict[str, Any]]) -> None:
    doc = {"format": STATE_FORMAT, "periods": dict(sorted(periods.items()))}
    write_atomic(path, (json.dumps(doc, indent=1) + "\n").encode(), 0o600)


def published_periods(periods: dict[str, dict[str, Any]], targets: Sequence[Target]) -> set[str]:
    """Periods every one of ``targets`` holds, by the state file."""
    names = {t.name for t in targets}
    return {p for p, r in periods.items() if names <= set(r.get("targets", ()))}


def _say(e: Exception) -> str:
    return str(e) or type(e).__name__


def _read_back(
    period: str, targets: Sequence[Target], done: set[str], failed: set[str], problems: list[str]
) -> None:
    """Add to ``done`` the targets already holding ``period``. One that cannot be looked
    at (a bucket away) is taken as not holding it: the others are not held up, and it
    gets the same build later (or refuses it, if a different one is there)."""
    for t in targets:
        if t.name in failed:
            continue
        try:
            if t.holds(period):
                done.add(t.name)
        except IntegrityError:
            raise
        except Exception as e:
            failed.add(t.name)
            problems.append(
                f"disclosure {period}: cannot look at {t.name}: {_say(e)}; it is tried again "
                "at the next run"
            )


def next_due(now: datetime, day: int, timezone: str) -> tuple[str, datetime]:
    """The next month to come due after ``now`` and when (this month, next month's day)."""
    zone = zoneinfo.ZoneInfo(timezone)
    local = now.astimezone(zone)
    n = local.year * 12 + local.month  # next month's number
    return f"{local.year:04d}-{local.month:02d}", datetime(n // 12, n % 12 + 1, day, tzinfo=zone)


def publish_due(
    *,
    now: datetime,
    day: int,
    timezone: str,
    first_month: str,
    targets: Sequence[Target],
    build: Build,
    state_dir: Path,
) -> Outcome:
    """Build and publish every period due at ``now`` (see `due_periods`) to every target.

    Problems (a bucket away, a folder that refuses, a build that fails) are lines in
    the outcome, to be tried again at the next run; an `IntegrityError` is raised."""
    state_path = state_dir / STATE_FILE
    build_root = state_dir / BUILD_DIR
    periods = load_state(state_path)
    due = due_periods(now, day, timezone, published_periods(periods, targets), first_month)
    published: list[str] = []
    problems: list[str] = []
    built: list[str] = []
    failed: set[str] = set()  # targets that failed this run
    for period in due:
        rec = periods.setdefault(period, {})
        done: set[str] = set(rec.get("targets", ()))
        # No record (a state file lost, a period published by hand): read it back.
        if not rec:
            _read_back(period, targets, done, failed, problems)
        missing = [t for t in targets if t.name not in done]
        src = build_root / period
        source: Path | None = None
        # A build appears whole or not at all (written aside, renamed when signed): one
        # found after a crash that came before its record is used, not built again.
        if missing and rec.get("state") in ("building", "built") and (src / LAST[-1]).is_file():
            if rec["state"] == "building":
                manifest = hashlib.sha256((src / LAST[0]).read_bytes()).hexdigest()
                rec.update(state="built", manifest_sha256=manifest)
                _save_state(state_path, periods)
            source = src
        for t in targets:
            if source is None and missing and t.out is not None and t.name in done:
                # The same publication, copied on to a target added since: no new entry.
                source = t.out / period if t.holds(period) else None
        if missing and source is None:
            operator = REBUILT if rec.get("state") in ("building", "built") else OPERATOR
            try:
                for left in (src, src.with_name(src.name + ".partial")):
                    if left.exists():
                        shutil.rmtree(left)  # cut short by a crash: built again
                rec.update(state="building", targets=sorted(done))
                _save_state(state_path, periods)
                src.parent.mkdir(parents=True, exist_ok=True)
                res = build(period, src, operator)
            except IntegrityError:
                raise
            except Exception as e:
                problems.append(
                    f"disclosure {period} not built: {_say(e)}; it is tried again at the next run"
                )
                continue
            rec.update(
                state="built", manifest_sha256=res.manifest_sha256, entry_index=res.entry_index
            )
            _save_state(state_path, periods)
            built.append(period)
            source = src
        for t in missing:
            assert source is not None
            if t.name in failed:
                continue  # said once this run; its periods wait for the next
            try:
                lines = publish_folder(source, t.out, t.store, period)
            except IntegrityError:
                raise
            except Exception as e:
                failed.add(t.name)
                problems.append(
                    f"disclosure {period} not published to {t.name}: {_say(e)}; it is tried "
                    "again at the next run"
                )
                continue
            done.add(t.name)
            rec["targets"] = sorted(done)
            _save_state(state_path, periods)
            published += [f"disclosure {period} published: {line}" for line in lines]
        if {t.name for t in targets} <= done:
            rec.update(state="published", targets=sorted(done))
            _save_state(state_path, periods)
            if src.exists():
                shutil.rmtree(src, ignore_errors=True)
    label, when = next_due(now, day, timezone)
    return Outcome(
        tuple(due),
        tuple(published),
        tuple(problems),
        tuple(built),
        f"{label} on {when:%Y-%m-%d} ({timezone})",
    )
