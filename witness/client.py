"""The station as a witness client (C2SP tlog-witness v1.0.0).

One thread in the daemon. Each turn it takes the station's latest signed
checkpoint; when the checkpoint lacks the quorum of the station's trust
policy (C2SP tlog-policy), it asks every policy witness with a URL that has
not cosigned it yet, in parallel, for a cosignature. Verified cosignature
lines are added to the stored checkpoint (`Ledger.add_cosignatures`), which
republishes ``<ledger>/checkpoint`` when it is still the latest.

Capture never waits for this thread. The only thing held back is the cold
store's write-once ``checkpoints/<size>``: `Ledger.set_witness_settled` is
called once the quorum is met, or once ``publish_wait_s`` has passed since
the checkpoint was signed, whichever comes first.

What the station learned of each witness (the size it last cosigned for this
log, its last answer, since when it fails) is kept in ``witness_state`` in
the ledger's SQLite file, and since when the quorum has been unmet in
``witness_quorum``; `read_status` reads both, with or without the daemon.

Answers, as the protocol defines them:

- 200: cosignature lines; only lines that verify with that witness's key in
  the policy are kept (others are ignored, as the spec says).
- 409 ``text/x.tlog.size``: the witness cosigned another size. If it is not
  larger than ours, we ask again at once with a proof from that size. If it
  is larger, the witness has seen more of this log than the station now
  holds: the station's state was rolled back or forked (said at ERROR once).
- 409 without that type: same size, another root: a fork (ERROR once).
- 403/404: the witness does not know the station's key or origin; its
  operator must run ``custody witness --data WDIR add-log --vkey <vkey>``.
- 422: the consistency proof did not verify: a fork or a damaged tile.
- no answer (refused, timed out): the witness is down; asked again every
  ``retry_s``.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import urllib3

from ledger.cosignature import CosignatureVerifier, parse_cosignature_lines
from ledger.entry import parse_time
from ledger.errors import LedgerError
from ledger.log import CheckpointRecord, Ledger
from ledger.note import NoteError, Verifier, parse_note
from ledger.policy import Policy, PolicyError, PolicyWitness, check_checkpoint, parse_policy
from witness.protocol import format_request, parse_conflict

log = logging.getLogger("custody.witness")

SCHEMA = """
CREATE TABLE IF NOT EXISTS witness_state (
    name TEXT PRIMARY KEY,            -- the witness's name in the policy
    vkey TEXT NOT NULL,               -- its cosignature key (another key: start afresh)
    url TEXT,                         -- its submission prefix
    size INTEGER NOT NULL DEFAULT 0,  -- the size of this log it last cosigned, as it told us
    last_status TEXT,                 -- its last answer: an HTTP code, or 'down'
    last_error TEXT,                  -- what was wrong with it (NULL after a cosignature)
    last_ok REAL,                     -- POSIX time of its last cosignature
    failing_since REAL                -- POSIX time of the first failure since then
);
CREATE TABLE IF NOT EXISTS witness_quorum (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    unmet_since REAL                  -- POSIX time the latest checkpoint began to lack it
);
"""

MAX_ANSWER = 64 * 1024  # a 200 is a few signature lines; a 409 a number
MAX_CONFLICT_RETRIES = 2  # a 409 with a size we can prove from: ask again at once
TICK_S = 0.2
USER_AGENT = "custody-station (C2SP tlog-witness v1.0.0 client)"


class WitnessPolicyError(LedgerError):
    """The configured witness policy cannot be used (exit code 2)."""


def load_policy(path: Path) -> Policy:
    """Read and parse the station's witness policy; one line naming the file when not."""
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        raise WitnessPolicyError(
            f"witness policy {path} does not exist",
            "write it (C2SP tlog-policy: witness lines with URLs, a quorum line) or remove "
            "[witness] policy from the config",
        ) from None
    except OSError as e:
        raise WitnessPolicyError(f"witness policy {path} cannot be read: {e.strerror}") from None
    if len(text) > 1 << 20:
        raise WitnessPolicyError(f"witness policy {path} is over 1 MiB: not a policy")
    try:
        policy = parse_policy(text)
    except PolicyError as e:
        raise WitnessPolicyError(f"witness policy {path}: {e}") from None
    if policy.quorum != "none" and not any(w.url for w in policy.witnesses):
        raise WitnessPolicyError(
            f"witness policy {path}: no witness line has a URL, so no witness can be asked",
            "add the witness's submission URL at the end of its line",
        )
    return policy


# -- the functional core -----------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """One witness's answer to one request, as bytes off the wire."""

    status: int
    body: bytes
    content_type: str | None


@dataclass(frozen=True)
class Outcome:
    """What one witness's part of a round came to.

    ``kind``: ``cosigned`` (``lines`` verified), ``down`` (no answer), ``ahead``
    (it cosigned more of this log than the station holds), ``fork`` (same size,
    another root), ``unknown_log`` (403/404), ``bad_proof`` (422), ``error``
    (anything else: 400, 429, 5xx, an answer that does not verify).
    """

    name: str
    kind: str
    status: str  # the HTTP code, or "down"
    size: int | None = None  # the witness's cosigned size, when it said it
    lines: tuple[str, ...] = ()
    error: str = ""


SERIOUS = ("ahead", "fork", "unknown_log", "bad_proof")


def witness_url(prefix: str) -> str:
    """The add-checkpoint URL under a witness's submission prefix."""
    return prefix.rstrip("/") + "/add-checkpoint"


def old_size_for(known: int, size: int) -> int:
    """The ``old`` to send: what the witness last cosigned, or 0 to ask it when that is
    larger than the checkpoint (it then answers 409 with its size, or cosigns if it was
    reset)."""
    return known if 0 <= known <= size else 0


def verified_lines(body: bytes, note: str, key: CosignatureVerifier) -> tuple[list[str], str]:
    """The cosignature lines in a 200 answer made by the witness's own key over this
    checkpoint; lines by other keys are ignored. Returns (lines, problem)."""
    try:
        sigs = parse_cosignature_lines(body)
        text = parse_note(note).text
    except NoteError as e:
        return [], f"answered 200 with something that is not signature lines ({e})"
    good: list[str] = []
    for sig in sigs:
        if not key.matches(sig):
            continue
        try:
            key.verify(text, sig)
        except NoteError as e:
            return [], f"answered 200 with a cosignature that does not verify ({e})"
        good.append(sig.line())
    if not good:
        return [], "answered 200 without a cosignature by its key in the policy"
    return good, ""


def judge(
    w: PolicyWitness,
    reply: Reply,
    old: int,
    size: int,
    note: str,
    station_vkey: str,
) -> Outcome:
    """The outcome of one answer to a request ``old`` → ``size`` (a 409 that names a
    size we can prove from comes back as kind ``retry`` with that size)."""
    code = str(reply.status)
    snippet = reply.body[:200].decode("utf-8", "replace").strip()
    if reply.status == 200:
        lines, problem = verified_lines(reply.body, note, w.key)
        if problem:
            return Outcome(w.name, "error", code, error=f"witness {w.name} {problem}")
        return Outcome(w.name, "cosigned", code, size=size, lines=tuple(lines))
    if reply.status == 409:
        theirs = parse_conflict(reply.body, reply.content_type)
        if theirs is None:
            return Outcome(
                w.name,
                "fork",
                code,
                error=f"witness {w.name} has cosigned another checkpoint of size {size} for "
                "this log (409: same size, another root): this station's log was forked",
            )
        if theirs > size:
            return Outcome(
                w.name,
                "ahead",
                code,
                size=theirs,
                error=f"witness {w.name} has cosigned size {theirs} of this log but this "
                f"station's log has only {size}: its state was rolled back or forked",
            )
        if theirs == old:
            return Outcome(
                w.name,
                "error",
                code,
                size=theirs,
                error=f"witness {w.name} answered 409 with size {theirs}, the size we sent",
            )
        return Outcome(w.name, "retry", code, size=theirs)
    if reply.status in (403, 404):
        what = "origin" if reply.status == 404 else "key"
        return Outcome(
            w.name,
            "unknown_log",
            code,
            error=f"witness {w.name} does not know this station's {what} ({code}"
            + (f": {snippet}" if snippet else "")
            + "); its operator must run: custody witness --data WDIR add-log --vkey "
            + station_vkey,
        )
    if reply.status == 422:
        return Outcome(
            w.name,
            "bad_proof",
            code,
            error=f"witness {w.name} refused the consistency proof from size {old} to {size} "
            "(422): this station's log is not the history it cosigned (a fork), or a tile "
            "is damaged; run 'custody ledger verify'",
        )
    return Outcome(
        w.name,
        "error",
        code,
        error=f"witness {w.name} answered {code}" + (f": {snippet}" if snippet else ""),
    )


def _signed_at(rec: CheckpointRecord) -> float:
    try:
        return parse_time(rec.signed_at).timestamp()
    except Exception:  # a malformed time is no reason to hold the mirror for ever
        return 0.0


def _hhmm(t: float) -> str:
    return time.strftime("%H:%M", time.localtime(t))


# -- state in SQLite ----------------------------------------------------------------------


def ensure_schema(db: sqlite3.Connection) -> None:
    db.executescript(SCHEMA)


def _rows(db: sqlite3.Connection) -> dict[str, dict[str, Any]]:
    try:
        cur = db.execute(
            "SELECT name, vkey, url, size, last_status, last_error, last_ok, failing_since "
            "FROM witness_state"
        )
    except sqlite3.OperationalError:  # the client never ran: no table yet
        return {}
    out = {}
    for name, vkey, url, size, st, err, ok, since in cur:
        out[name] = {
            "vkey": vkey,
            "url": url,
            "size": size,
            "last_status": (int(st) if st and st.isdigit() else st),
            "last_error": err,
            "last_ok": ok,
            "failing_since": since,
        }
    return out


def _unmet_since(db: sqlite3.Connection) -> float | None:
    try:
        row = db.execute("SELECT unmet_since FROM witness_quorum WHERE id = 1").fetchone()
    except sqlite3.OperationalError:
        return None
    return None if row is None or row[0] is None else float(row[0])


def read_status(
    db: sqlite3.Connection,
    policy: Policy,
    policy_path: Path | str,
    latest: CheckpointRecord | None,
    log_keys: Sequence[Verifier],
    alarm_after_s: float,
    now: float,
) -> dict[str, Any]:
    """The ``witnesses`` part of `custody status` (and of ``state/daemon.json``)."""
    cosigned: set[str] = set()
    met = policy.quorum == "none"
    check_error = ""
    if latest is not None:
        try:
            check = check_checkpoint(latest.note, policy, log_keys)
            cosigned, met = set(check.cosigned), check.satisfied
        except PolicyError as e:
            check_error = str(e)
    rows = _rows(db)
    since = None if met else _unmet_since(db)
    if not met and since is None and latest is not None:
        since = _signed_at(latest)
    each = []
    for w in policy.witnesses:
        r = rows.get(w.name)
        if r is not None and r["vkey"] != w.key.vkey():
            r = None  # another key under that name: what was learned is not about it
        each.append(
            {
                "name": w.name,
                "url": w.url,
                "vkey": w.key.vkey(),
                "cosigned_latest": w.name in cosigned,
                "size": r["size"] if r else None,
                "last_status": r["last_status"] if r else None,
                "last_error": r["last_error"] if r else None,
                "last_ok": r["last_ok"] if r else None,
                "failing_since": r["failing_since"] if r else None,
            }
        )
    return {
        "policy": str(policy_path),
        "quorum": policy.describe_quorum(),
        "checkpoint_size": latest.size if latest else 0,
        "quorum_met": met,
        "cosigned_by": sorted(cosigned),
        "unmet_since": since,
        "alarm": since is not None and now - since >= alarm_after_s,
        "alarm_after_s": alarm_after_s,
        "check_error": check_error or None,
        "witnesses": each,
    }


def alarm_line(status: dict[str, Any]) -> str:
    """The STATUS line part when the quorum has been unmet too long ("" otherwise):
    ``witness quorum unmet since 09:41 (w2 down)``."""
    if not status.get("alarm"):
        return ""
    why = []
    for w in status["witnesses"]:
        if w["cosigned_latest"]:
            continue
        st = w["last_status"]
        if w["url"] is None:
            why.append(f"{w['name']} has no URL")
        elif st == "down":
            why.append(f"{w['name']} down")
        elif st not in (None, 200):
            why.append(f"{w['name']} {st}")
        else:
            why.append(f"{w['name']} not yet")
    since = status["unmet_since"]
    return f"witness quorum unmet since {_hhmm(since)}" + (f" ({', '.join(why)})" if why else "")


# -- the imperative shell ------------------------------------------------------------------


@dataclass(frozen=True)
class ClientSettings:
    timeout_s: float = 5.0
    publish_wait_s: float = 30.0
    alarm_after_s: float = 300.0
    retry_s: float = 10.0


class WitnessClient:
    """Asks the policy's witnesses to cosign the station's latest checkpoint; thread-safe
    `status`. `step` is one turn (tests call it directly); `start` runs turns in a thread."""

    def __init__(
        self,
        ledger: Ledger,
        policy: Policy,
        policy_path: Path | str,
        log_keys: Sequence[Verifier],
        settings: ClientSettings | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ledger = ledger
        self.policy = policy
        self.policy_path = policy_path
        self.log_keys = list(log_keys)
        self.settings = settings = settings or ClientSettings()
        self.clock = clock
        self.station_vkey = self.log_keys[0].vkey() if self.log_keys else "<station vkey>"
        self.db = sqlite3.connect(ledger.db_path, timeout=60, check_same_thread=False)
        self.db.execute("PRAGMA busy_timeout=60000")
        self._db_lock = threading.Lock()
        with self._db_lock, self.db:
            ensure_schema(self.db)
            self._forget_other_keys()
        self.askable = [w for w in policy.witnesses if w.url]
        self._http = urllib3.PoolManager(
            num_pools=max(4, len(self.askable)),
            maxsize=1,
            retries=False,
            timeout=urllib3.Timeout(total=settings.timeout_s),
            headers={"User-Agent": USER_AGENT},
        )
        self._pool = ThreadPoolExecutor(
            max_workers=max(1, len(self.askable)), thread_name_prefix="witness"
        )
        self._next_try: dict[str, float] = {}
        self._said: dict[str, str] = {}  # witness → the problem kind already logged
        self._settled = -1
        self._checked: tuple[str, bool, frozenset[str]] | None = None
        self._check_said = ""
        self._alarmed = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.requests = 0  # sent since start (tests, benchmarks)
        # The mirror must not publish a checkpoint the round has not seen: until the first
        # turn decides, nothing new is settled (a station that had no policy before
        # published everything; that stays as it was).
        if ledger.witness_settled() is None:
            ledger.set_witness_settled(0)

    def _forget_other_keys(self) -> None:
        for w in self.policy.witnesses:
            self.db.execute(
                "DELETE FROM witness_state WHERE name = ? AND vkey != ?", (w.name, w.key.vkey())
            )
            self.db.execute(
                "INSERT INTO witness_state (name, vkey, url) VALUES (?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET url = excluded.url",
                (w.name, w.key.vkey(), w.url),
            )

    # -- running -----------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="witness-client", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def close(self) -> None:
        self.stop()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._http.clear()
        with self._db_lock:
            self.db.close()

    def _run(self) -> None:
        failing = ""
        while not self._stop.wait(TICK_S):
            try:
                self.step()
                if failing:
                    log.info("the witness client works again")
                    failing = ""
            except Exception as e:  # a bug or a database error: said once, tried again
                line = f"{type(e).__name__}: {e}"
                if line != failing:
                    log.exception("witness client turn failed (%s); trying again", line)
                    failing = line
                self._stop.wait(self.settings.retry_s)

    # -- one turn ----------------------------------------------------------------------

    def _check(self, rec: CheckpointRecord) -> tuple[bool, frozenset[str]]:
        """(quorum met, names of policy witnesses whose cosignature verifies)."""
        if self._checked is not None and self._checked[0] == rec.note:
            return self._checked[1], self._checked[2]
        try:
            c = check_checkpoint(rec.note, self.policy, self.log_keys)
            result = (c.satisfied, frozenset(c.cosigned))
            self._check_said = ""
        except PolicyError as e:
            line = f"the latest checkpoint (size {rec.size}) does not pass the witness policy: {e}"
            if line != self._check_said:
                log.error("%s", line)
                self._check_said = line
            result = (False, frozenset())
        self._checked = (rec.note, *result)
        return result

    def step(self) -> None:
        """One turn: ask the witnesses that owe the latest checkpoint a cosignature (when it
        lacks the quorum), then settle what the mirror may publish."""
        rec = self.ledger.latest()
        if rec is None:
            return
        met, cosigned = self._check(rec)
        now = self.clock()
        if not met:
            due = [
                w
                for w in self.askable
                if w.name not in cosigned and now >= self._next_try.get(w.name, 0.0)
            ]
            if due:
                self._round(rec, due)
                rec = self.ledger.checkpoint_at(rec.size) or rec
                met, cosigned = self._check(rec)
                now = self.clock()
        self._settle(rec, met, now)
        self._track_quorum(rec, met)

    def _round(self, rec: CheckpointRecord, due: list[PolicyWitness]) -> None:
        with self._db_lock:
            rows = _rows(self.db)
        futures = [
            self._pool.submit(self._ask, w, rec, int((rows.get(w.name) or {}).get("size") or 0))
            for w in due
        ]
        outcomes = []
        for f in futures:
            try:
                outcomes.append(f.result())
            except Exception:  # a bug in one request: that witness alone waits a turn
                log.exception("asking a witness failed unexpectedly")
        # Every witness's lines in one update: one commit, one rewrite of the checkpoint.
        lines = [ln for o in outcomes if o.kind == "cosigned" for ln in o.lines]
        if lines:
            self.ledger.add_cosignatures(rec.size, lines)
        for outcome in outcomes:
            self._apply(rec, outcome)

    def _post(self, url: str, body: bytes) -> Reply | str:
        """One request: the reply, or why there was none."""
        self.requests += 1
        try:
            resp = self._http.request(
                "POST",
                url,
                body=body,
                headers={"Content-Type": "text/plain; charset=utf-8"},
                preload_content=False,
                redirect=False,
            )
        except (urllib3.exceptions.HTTPError, OSError) as e:
            return _no_answer(e, self.settings.timeout_s)
        try:
            data = resp.read(MAX_ANSWER + 1)
            if len(data) > MAX_ANSWER:
                resp.close()  # the rest is not read: the connection cannot be reused
                return Reply(resp.status, b"(answer over 64 KiB)", None)
            resp.release_conn()
        except (urllib3.exceptions.HTTPError, OSError) as e:
            return _no_answer(e, self.settings.timeout_s)
        return Reply(resp.status, data, resp.headers.get("Content-Type"))

    def _ask(self, w: PolicyWitness, rec: CheckpointRecord, known: int) -> Outcome:
        assert w.url is not None
        url = witness_url(w.url)
        old = old_size_for(known, rec.size)
        for _ in range(MAX_CONFLICT_RETRIES + 1):
            proof = self.ledger.consistency(old, rec.size)["proof"] if 0 < old < rec.size else []
            reply = self._post(url, format_request(old, proof, rec.note))
            if isinstance(reply, str):
                return Outcome(w.name, "down", "down", error=f"witness {w.name} at {url}: {reply}")
            out = judge(w, reply, old, rec.size, rec.note, self.station_vkey)
            if out.kind != "retry":
                return out
            assert out.size is not None
            old = out.size
        return Outcome(
            w.name,
            "error",
            "409",
            size=old,
            error=f"witness {w.name} kept answering 409 with another size (last {old})",
        )

    def _apply(self, rec: CheckpointRecord, out: Outcome) -> None:
        now = self.clock()
        if out.kind == "cosigned":  # its lines are stored by `_round`
            with self._db_lock, self.db:
                self.db.execute(
                    "UPDATE witness_state SET size = ?, last_status = ?, last_error = NULL, "
                    "last_ok = ?, failing_since = NULL WHERE name = ?",
                    (rec.size, out.status, now, out.name),
                )
            self._next_try.pop(out.name, None)
            if self._said.pop(out.name, ""):
                log.info("witness %s cosigns again (size %d)", out.name, rec.size)
            return
        with self._db_lock, self.db:
            self.db.execute(
                "UPDATE witness_state SET size = COALESCE(?, size), last_status = ?, "
                "last_error = ?, failing_since = COALESCE(failing_since, ?) WHERE name = ?",
                (out.size, out.status, out.error[:1000], now, out.name),
            )
        self._next_try[out.name] = now + self.settings.retry_s
        if self._said.get(out.name) != out.kind:
            self._said[out.name] = out.kind
            if out.kind in SERIOUS:
                log.error("%s", out.error)
            else:
                log.warning("%s; asking again every %g s", out.error, self.settings.retry_s)

    def _settle(self, rec: CheckpointRecord, met: bool, now: float) -> None:
        if rec.size <= self._settled:
            return
        if met or now - _signed_at(rec) >= self.settings.publish_wait_s:
            self.ledger.set_witness_settled(rec.size)
            self._settled = rec.size
            if not met:
                log.info(
                    "checkpoint %d goes to the cold store without the witness quorum (waited %g s)",
                    rec.size,
                    self.settings.publish_wait_s,
                )

    def _track_quorum(self, rec: CheckpointRecord, met: bool) -> None:
        """Keep since when the latest checkpoint has lacked the quorum (every new
        checkpoint lacks it for the moment a round takes: only an alarm is logged)."""
        with self._db_lock:
            since = _unmet_since(self.db)
            if met and since is not None:
                with self.db:
                    self.db.execute("UPDATE witness_quorum SET unmet_since = NULL WHERE id = 1")
            elif not met and since is None:
                since = _signed_at(rec) or self.clock()
                with self.db:
                    self.db.execute(
                        "INSERT INTO witness_quorum (id, unmet_since) VALUES (1, ?) "
                        "ON CONFLICT(id) DO UPDATE SET unmet_since = excluded.unmet_since",
                        (since,),
                    )
        alarmed = (
            not met and since is not None and self.clock() - since >= self.settings.alarm_after_s
        )
        if alarmed and not self._alarmed:
            log.warning("%s: published checkpoints lack cosignatures", alarm_line(self.status()))
        elif met and self._alarmed:
            log.info("witness quorum met again (checkpoint %d)", rec.size)
        self._alarmed = alarmed

    def cosign_now(self, wait_s: float) -> CheckpointRecord | None:
        """Turns until the latest checkpoint meets the quorum or ``wait_s`` has passed,
        without the thread (for a command that publishes a checkpoint itself, e.g. an
        export: it then builds its proofs against the record returned, which carries
        whatever cosignatures came). Failing witnesses are asked at once, not after
        ``retry_s``."""
        end = time.monotonic() + wait_s
        self._next_try.clear()
        while True:
            self.step()
            rec = self.ledger.latest()
            if rec is None or self._check(rec)[0] or time.monotonic() >= end:
                return rec
            time.sleep(min(TICK_S, max(0.0, end - time.monotonic())))
            self._next_try.clear()

    # -- reporting ---------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        latest = self.ledger.latest()
        with self._db_lock:
            return read_status(
                self.db,
                self.policy,
                self.policy_path,
                latest,
                self.log_keys,
                self.settings.alarm_after_s,
                self.clock(),
            )


def _no_answer(e: BaseException, timeout_s: float) -> str:
    """Why a witness gave no answer, in a few words."""
    # NewConnectionError is a ConnectTimeoutError in urllib3 2: look at it first.
    if isinstance(e, urllib3.exceptions.TimeoutError | TimeoutError) and not isinstance(
        e, urllib3.exceptions.NewConnectionError
    ):
        return f"no answer within {timeout_s:g} s"
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.strerror:
            return f"cannot connect: {cur.strerror}"
        nxt = getattr(cur, "reason", None)
        cur = nxt if isinstance(nxt, BaseException) else (cur.__cause__ or cur.__context__)
    return f"no answer: {type(e).__name__}"


__all__ = [
    "SCHEMA",
    "ClientSettings",
    "Outcome",
    "Reply",
    "WitnessClient",
    "WitnessPolicyError",
    "alarm_line",
    "ensure_schema",
    "judge",
    "load_policy",
    "old_size_for",
    "read_status",
    "verified_lines",
    "witness_url",
]
