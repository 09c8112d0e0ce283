"""The review site's users: roles, argon2id passwords, login lockout, sessions and the
cases assigned to reviewers (法制审核 reviewers see only the cases given to them).

Everything lives in ``<data_dir>/web/``: ``users.sqlite`` (users, assignments, sessions,
login failures) and ``secret`` (32 random bytes, the HMAC key of session cookies). A
station's or the hub's web server reads them from its request threads; ``custody user``
changes them from another process at the same time, so the database is SQLite in WAL
mode and every durable fact (a failure, a lock, a session) is committed before the call
returns.

A session cookie is ``token "." HMAC-SHA256(secret, token)`` (both base64url, no
padding); the database holds only SHA-256 of the token, so a copy of the database opens
no session, and a cookie made up without the secret is refused before any lookup.
"""

from __future__ import annotations

import base64
import builtins
import hashlib
import hmac
import json
import math
import os
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ledger.durable import fsync_dir

ROLES = ("reviewer", "supervisor", "admin")

# What each role sees (for messages).
SEES = {
    "reviewer": "a reviewer sees the cases assigned to them",
    "supervisor": "a supervisor sees the footage of their units, or all without units",
    "admin": "an admin manages users and sees no footage",
}
NAME_RE = re.compile(r"[A-Za-z0-9._@-]{1,64}\Z")
MIN_PASSWORD = 10
MAX_PASSWORD = 1024
MAX_UNIT = 64
MAX_CASE = 128
MAX_CLIENT = 200
MAX_COOKIE = 200
SECRET_BYTES = 32
TOKEN_BYTES = 32
# `seen` is written at most this often per session: a page with twenty requests (video
# ranges, posters) must not be twenty writes, and an idle timeout of minutes does not
# need a finer clock.
SEEN_EVERY_S = 15

DB_NAME = "users.sqlite"
SECRET_NAME = "secret"

# Verified against when the user name is unknown, so an unknown name costs the same
# argon2 work as a wrong password and the time taken does not tell which names exist.
# Made with argon2-cffi's defaults (argon2id, m=64 MiB, t=3, p=4); when the defaults
# change, a fresh one is made once (`UserStore._dummy_hash`) so the work stays the same.
_DUMMY_HASH = (
    "$argon2id$v=19$m=65536,t=3,p=4$JlWt2lesA7IkaK3R2ViZhw$"
    "91YOnQKFnBTojmdRVxeZiAonT08gw9tAN8k7WAk6cv0"
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    units TEXT NOT NULL,          -- JSON list of unit names; [] = every unit / n.a.
    hash TEXT NOT NULL,           -- argon2id (PHC string)
    disabled INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    password_changed REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS assignments (
    user TEXT NOT NULL,
    case_no TEXT NOT NULL,
    PRIMARY KEY (user, case_no)
);
CREATE INDEX IF NOT EXISTS assignments_case ON assignments (case_no);
CREATE TABLE IF NOT EXISTS sessions (
    token_hash TEXT PRIMARY KEY,  -- SHA-256 (hex) of the token's 32 bytes
    user TEXT NOT NULL,
    csrf TEXT NOT NULL,
    client TEXT NOT NULL,
    created REAL NOT NULL,
    seen REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_user ON sessions (user);
-- Failed logins, by the name as typed (known or not) and by client address, kept apart
-- so that a good login clears the name's count but never the client's.
CREATE TABLE IF NOT EXISTS user_failures (user TEXT NOT NULL, time REAL NOT NULL);
CREATE INDEX IF NOT EXISTS user_failures_user ON user_failures (user, time);
CREATE TABLE IF NOT EXISTS client_failures (client TEXT NOT NULL, time REAL NOT NULL);
CREATE INDEX IF NOT EXISTS client_failures_client ON client_failures (client, time);
CREATE TABLE IF NOT EXISTS locks (
    user TEXT PRIMARY KEY,
    since REAL NOT NULL,
    until REAL NOT NULL
);
"""


class WebError(Exception):
    """One line a person can act on, and the HTTP status it answers with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class LoginRefused(WebError):
    """A login that did not succeed. ``reason`` is for the `access` entry and the logs;
    the message shown to the person never tells a wrong name from a wrong password."""

    REASONS = ("bad password", "unknown user", "disabled", "locked", "throttled")

    def __init__(self, reason: str, message: str, status: int = 401, retry_after: int = 0):
        super().__init__(message, status)
        self.reason = reason
        self.retry_after = retry_after


@dataclass(frozen=True)
class User:
    name: str
    role: str
    units: tuple[str, ...]  # () = every unit (supervisor) / not applicable
    disabled: bool
    created: int  # epoch seconds
    locked_until: int = 0  # epoch seconds while locked after failed logins, else 0


@dataclass(frozen=True)
class Session:
    token_hash: str
    user: User
    csrf: str
    client: str
    created: int
    seen: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str, size: int) -> bytes | None:
    """Strict base64url without padding: exactly ``size`` bytes, and only the one
    spelling of them (so a flipped unused bit is a different, refused cookie)."""
    if len(text) != math.ceil(size * 4 / 3):
        return None
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, UnicodeEncodeError):
        return None
    if len(data) != size or _b64(data) != text:
        return None
    return data


def _ceil(x: float) -> int:
    return max(1, math.ceil(x))


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        shown = name[:70] if isinstance(name, str) else name
        raise WebError(f"user name {shown!r} is not allowed: use 1-64 letters, digits or . _ @ -")
    return name


def check_role(role: str) -> str:
    if role not in ROLES:
        raise WebError(f"role {role!r} is not one of {', '.join(ROLES)}")
    return role


def check_units(units: Sequence[str]) -> tuple[str, ...]:
    if isinstance(units, str):
        units = (units,)
    out: list[str] = []
    for u in units:
        if not isinstance(u, str) or not 1 <= len(u) <= MAX_UNIT or not u.isprintable():
            raise WebError(f"unit {u!r} is not allowed: use 1-{MAX_UNIT} printable characters")
        if u not in out:
            out.append(u)
    return tuple(out)


def check_case(case: str) -> str:
    if not isinstance(case, str) or not 1 <= len(case) <= MAX_CASE or not case.isprintable():
        raise WebError(f"case {case!r} is not allowed: use 1-{MAX_CASE} printable characters")
    return case


def check_password(password: str) -> str:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise WebError(f"the password is too short: use at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise WebError(f"the password is too long: use at most {MAX_PASSWORD} characters")
    return password


def _hasher() -> Any:
    from argon2 import PasswordHasher

    return PasswordHasher()


def _verify(ph: Any, hashed: str, password: str) -> bool:
    from argon2.exceptions import InvalidHashError, VerificationError

    try:
        return bool(ph.verify(hashed, password))
    except (VerificationError, InvalidHashError):
        return False


class UserStore:
    """The users of one station's or hub's review site (``folder`` = ``<data_dir>/web``).

    Safe to share between threads: one connection, used under a lock for the short
    database steps; the slow argon2 work runs outside the lock.
    """

    def __init__(
        self,
        folder: Path,
        clock: Callable[[], float] = time.time,
        idle_s: int = 1800,
        max_s: int = 12 * 3600,
        user_failures: int = 5,
        client_failures: int = 20,
        window_s: int = 900,
        lock_s: int = 900,
    ) -> None:
        self.folder = Path(folder)
        self.clock = clock
        self.idle_s = idle_s
        self.max_s = max_s
        self.user_failures = user_failures
        self.client_failures = client_failures
        self.window_s = window_s
        self.lock_s = lock_s
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._secret = self._load_secret()
        self._lock = threading.RLock()
        self._db = self._open()
        self._ph: Any = None  # argon2's PasswordHasher, made at first use
        self._dummy = ""

    # -- files ---------------------------------------------------------------------------

    def _load_secret(self) -> bytes:
        path = self.folder / SECRET_NAME
        if not path.exists():
            tmp = self.folder / f".{SECRET_NAME}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, secrets.token_bytes(SECRET_BYTES))
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                # link, not rename: a secret another process made a moment ago is kept,
                # so the sessions it already signed stay valid.
                os.link(tmp, path)
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
            fsync_dir(self.folder)
        data = path.read_bytes()
        if len(data) != SECRET_BYTES:
            raise WebError(
                f"{path} is not {SECRET_BYTES} bytes: delete it and a new one is made "
                "(every session then ends)",
                500,
            )
        return data

    def _open(self) -> sqlite3.Connection:
        path = self.folder / DB_NAME
        # Made 0600 before SQLite opens it; SQLite gives its -wal and -shm the same mode.
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA busy_timeout = 30000")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = FULL")  # a failed login survives a power cut
            db.execute("BEGIN IMMEDIATE")
            db.executescript(SCHEMA)  # executescript commits
        except BaseException:
            db.close()
            raise
        return db

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> UserStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction, taken at once (no read-to-write upgrade deadlocks)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _read(self, sql: str, args: tuple[Any, ...] = ()) -> builtins.list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def _hasher(self) -> Any:
        if self._ph is None:
            self._ph = _hasher()
        return self._ph

    def _dummy_hash(self) -> str:
        """A hash with the hasher's own parameters, so verifying it is the same work."""
        if not self._dummy:
            ph = self._hasher()
            stale = ph.check_needs_rehash(_DUMMY_HASH)
            self._dummy = ph.hash(secrets.token_urlsafe(16)) if stale else _DUMMY_HASH
        return self._dummy

    # -- users ---------------------------------------------------------------------------

    def _user(self, row: tuple[Any, ...], now: float) -> User:
        name, role, units, disabled, created, until = row
        return User(
            name=name,
            role=role,
            units=tuple(json.loads(units)),
            disabled=bool(disabled),
            created=int(created),
            locked_until=math.ceil(until) if until is not None and until > now else 0,
        )

    _SELECT = (
        "SELECT u.name, u.role, u.units, u.disabled, u.created, l.until "
        "FROM users u LEFT JOIN locks l ON l.user = u.name"
    )

    def _exists(self, db: sqlite3.Connection, name: str) -> None:
        if db.execute("SELECT 1 FROM users WHERE name=?", (name,)).fetchone() is None:
            raise WebError(f"there is no user {name!r}", 404)

    def add(self, name: str, role: str, password: str, units: Sequence[str] = ()) -> User:
        check_name(name)
        check_role(role)
        units = check_units(units)
        check_password(password)
        with self._lock:
            if self._read("SELECT 1 FROM users WHERE name=?", (name,)):
                raise WebError(f"user {name!r} already exists", 409)
        hashed = self._hasher().hash(password)
        now = self.clock()
        with self._tx() as db:
            try:
                db.execute(
                    "INSERT INTO users (name, role, units, hash, disabled, created, "
                    "password_changed) VALUES (?, ?, ?, ?, 0, ?, ?)",
                    (name, role, json.dumps(list(units), ensure_ascii=False), hashed, now, now),
                )
            except sqlite3.IntegrityError:  # added by another process meanwhile
                raise WebError(f"user {name!r} already exists", 409) from None
        return User(name, role, units, False, int(now))

    def passwd(self, name: str, password: str) -> None:
        """A new password; every session of the user ends."""
        check_name(name)
        check_password(password)
        with self._lock:
            if not self._read("SELECT 1 FROM users WHERE name=?", (name,)):
                raise WebError(f"there is no user {name!r}", 404)
        hashed = self._hasher().hash(password)
        with self._tx() as db:
            self._exists(db, name)
            db.execute(
                "UPDATE users SET hash=?, password_changed=? WHERE name=?",
                (hashed, self.clock(), name),
            )
            db.execute("DELETE FROM sessions WHERE user=?", (name,))

    def disable(self, name: str) -> None:
        """The user can no longer log in; every session of the user ends."""
        check_name(name)
        with self._tx() as db:
            self._exists(db, name)
            db.execute("UPDATE users SET disabled=1 WHERE name=?", (name,))
            db.execute("DELETE FROM sessions WHERE user=?", (name,))

    def enable(self, name: str) -> None:
        """The user can log in again; this also lifts a lock after failed logins."""
        check_name(name)
        with self._tx() as db:
            self._exists(db, name)
            db.execute("UPDATE users SET disabled=0 WHERE name=?", (name,))
            db.execute("DELETE FROM locks WHERE user=?", (name,))
            db.execute("DELETE FROM user_failures WHERE user=?", (name,))

    def get(self, name: str) -> User | None:
        if not isinstance(name, str) or not NAME_RE.match(name):
            return None
        rows = self._read(self._SELECT + " WHERE u.name=?", (name,))
        return self._user(rows[0], self.clock()) if rows else None

    # -- cases assigned to reviewers -------------------------------------------------------

    def assign(self, name: str, case: str) -> None:
        check_name(name)
        check_case(case)
        with self._tx() as db:
            row = db.execute("SELECT role FROM users WHERE name=?", (name,)).fetchone()
            if row is None:
                raise WebError(f"there is no user {name!r}", 404)
            if row[0] != "reviewer":
                raise WebError(
                    f"{name!r} is a {row[0]}: cases are assigned to reviewers only ({SEES[row[0]]})"
                )
            db.execute(
                "INSERT OR IGNORE INTO assignments (user, case_no) VALUES (?, ?)", (name, case)
            )

    def unassign(self, name: str, case: str) -> None:
        check_name(name)
        check_case(case)
        with self._tx() as db:
            self._exists(db, name)
            db.execute("DELETE FROM assignments WHERE user=? AND case_no=?", (name, case))

    def cases_of(self, name: str) -> set[str]:
        rows = self._read("SELECT case_no FROM assignments WHERE user=?", (name,))
        return {r[0] for r in rows}

    def assignees(self, case: str) -> builtins.list[str]:
        rows = self._read("SELECT user FROM assignments WHERE case_no=? ORDER BY user", (case,))
        return [r[0] for r in rows]

    # -- login -----------------------------------------------------------------------------

    def authenticate(self, name: str, password: str, client: str) -> User:
        """The user, when the password is right and nothing stops the login; else raises
        `LoginRefused`. A client with too many recent failures is throttled (429), a name
        with too many is locked (423, even with the right password); neither costs any
        argon2 work. Unknown names are verified against a dummy hash, counted and locked
        like real ones, so neither time nor answers tell which names exist."""
        name = name[:64] if isinstance(name, str) else ""
        client = client[:MAX_CLIENT] if isinstance(client, str) else ""
        now = self.clock()
        start = now - self.window_s
        with self._lock:
            recent = self._read(
                "SELECT time FROM client_failures WHERE client=? AND time>? "
                "ORDER BY time DESC LIMIT ?",
                (client, start, self.client_failures),
            )
            if len(recent) >= self.client_failures:
                raise LoginRefused(
                    "throttled",
                    "too many failed logins from this address; try again later",
                    429,
                    _ceil(recent[-1][0] + self.window_s - now),
                )
            lock = self._read("SELECT until FROM locks WHERE user=?", (name,))
            if lock and lock[0][0] > now:
                raise LoginRefused(
                    "locked",
                    "this account is locked after too many failed logins; try again later "
                    "or ask an administrator",
                    423,
                    _ceil(lock[0][0] - now),
                )
            rows = self._read(
                "SELECT hash, disabled FROM users WHERE name=?",
                (name,) if NAME_RE.match(name) else ("",),
            )
        ph = self._hasher()
        if not rows or not isinstance(password, str) or len(password) > MAX_PASSWORD:
            _verify(ph, rows[0][0] if rows else self._dummy_hash(), "-" * MIN_PASSWORD)
            self._failed(name, client, now)
            raise LoginRefused(
                "unknown user" if not rows else "bad password",
                "wrong user name or password",
            )
        hashed, disabled = rows[0]
        if not _verify(ph, hashed, password):
            self._failed(name, client, now)
            raise LoginRefused("bad password", "wrong user name or password")
        if disabled:
            self._failed(name, client, now)
            raise LoginRefused("disabled", "this account is disabled; ask an administrator")
        new_hash = ph.hash(password) if ph.check_needs_rehash(hashed) else None
        with self._tx() as db:
            db.execute("DELETE FROM user_failures WHERE user=?", (name,))
            db.execute("DELETE FROM locks WHERE user=?", (name,))
            if new_hash is not None:
                # Only if unchanged: a passwd meanwhile wins over the rehash of the old one.
                db.execute(
                    "UPDATE users SET hash=? WHERE name=? AND hash=?", (new_hash, name, hashed)
                )
        user = self.get(name)
        if user is None:  # deleted meanwhile
            raise LoginRefused("unknown user", "wrong user name or password")
        return user

    def _failed(self, name: str, client: str, now: float) -> None:
        """Record a failure durably; lock the name when it reaches ``user_failures``."""
        start = now - self.window_s
        with self._tx() as db:
            db.execute("DELETE FROM user_failures WHERE time<=?", (start,))
            db.execute("DELETE FROM client_failures WHERE time<=?", (start,))
            # An ended lock is kept while its `since` still bounds the count below.
            db.execute("DELETE FROM locks WHERE since<=?", (start,))
            db.execute("INSERT INTO user_failures (user, time) VALUES (?, ?)", (name, now))
            db.execute("INSERT INTO client_failures (client, time) VALUES (?, ?)", (client, now))
            # Failures before the last lock ended were paid for by that lock.
            row = db.execute("SELECT since FROM locks WHERE user=?", (name,)).fetchone()
            since = max(start, row[0]) if row else start
            (n,) = db.execute(
                "SELECT count(*) FROM user_failures WHERE user=? AND time>?", (name, since)
            ).fetchone()
            if n >= self.user_failures:
                db.execute(
                    "INSERT OR REPLACE INTO locks (user, since, until) VALUES (?, ?, ?)",
                    (name, now, now + self.lock_s),
                )

    # -- sessions --------------------------------------------------------------------------

    def _mac(self, token: bytes) -> bytes:
        return hmac.new(self._secret, token, hashlib.sha256).digest()

    def _token(self, cookie: str) -> bytes | None:
        """The token of a cookie whose signature is right, else None."""
        if not isinstance(cookie, str) or len(cookie) > MAX_COOKIE or cookie.count(".") != 1:
            return None
        tok_s, mac_s = cookie.split(".")
        token = _unb64(tok_s, TOKEN_BYTES)
        mac = _unb64(mac_s, hashlib.sha256().digest_size)
        if token is None or mac is None or not hmac.compare_digest(mac, self._mac(token)):
            return None
        return token

    def open_session(self, user: User, client: str) -> tuple[str, str]:
        """A new session for a user who has just logged in: (cookie value, csrf token)."""
        token = secrets.token_bytes(TOKEN_BYTES)
        csrf = _b64(secrets.token_bytes(32))
        now = self.clock()
        with self._tx() as db:
            db.execute(
                "DELETE FROM sessions WHERE seen<=? OR created<=?",
                (now - self.idle_s, now - self.max_s),
            )
            db.execute(
                "INSERT INTO sessions (token_hash, user, csrf, client, created, seen) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (hashlib.sha256(token).hexdigest(), user.name, csrf, client[:MAX_CLIENT], now, now),
            )
        return f"{_b64(token)}.{_b64(self._mac(token))}", csrf

    def session(self, cookie: str) -> Session | None:
        """The live session of a cookie, else None: a wrong signature, an unknown or
        ended session, idle for ``idle_s`` or older than ``max_s``, a disabled or deleted
        user, or a password changed since the session began."""
        token = self._token(cookie)
        if token is None:
            return None
        token_hash = hashlib.sha256(token).hexdigest()
        now = self.clock()
        with self._lock:
            rows = self._read(
                "SELECT s.user, s.csrf, s.client, s.created, s.seen, u.disabled, "
                "u.password_changed FROM sessions s JOIN users u ON u.name = s.user "
                "WHERE s.token_hash=?",
                (token_hash,),
            )
            if not rows:
                return None
            name, csrf, client, created, seen, disabled, changed = rows[0]
            if (
                disabled
                or changed > created
                or now - seen >= self.idle_s
                or now - created >= self.max_s
            ):
                with self._tx() as db:
                    db.execute("DELETE FROM sessions WHERE token_hash=?", (token_hash,))
                return None
            if now - seen >= SEEN_EVERY_S:
                with self._tx() as db:
                    db.execute("UPDATE sessions SET seen=? WHERE token_hash=?", (now, token_hash))
                seen = now
            user = self.get(name)
        if user is None:
            return None
        return Session(token_hash, user, csrf, client, int(created), int(seen))

    def close_session(self, cookie: str) -> None:
        token = self._token(cookie)
        if token is not None:
            with self._tx() as db:
                db.execute(
                    "DELETE FROM sessions WHERE token_hash=?", (hashlib.sha256(token).hexdigest(),)
                )

    def list(self) -> builtins.list[User]:
        now = self.clock()
        return [self._user(r, now) for r in self._read(self._SELECT + " ORDER BY u.name")]


__all__ = [
    "ROLES",
    "LoginRefused",
    "Session",
    "User",
    "UserStore",
    "WebError",
]
