"""The review site's users (web/users.py): validation, argon2id logins, lockout and
throttling over a fake clock, signed sessions and their ends, reviewers' cases.

Real SQLite and real argon2; most tests use cheap argon2 parameters so a lockout test
does not spend seconds hashing (the rehash test uses the defaults, as production does).
"""

from __future__ import annotations

import sqlite3
import stat
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from web.users import ROLES, LoginRefused, Session, User, UserStore, WebError

PW = "correct horse battery"
OTHER = "wrong horse battery"


class Clock:
    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def cheap() -> PasswordHasher:
    return PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


def store(folder: Path, clock: Clock, **kw: int) -> UserStore:
    s = UserStore(folder, clock=clock, **kw)
    s._ph = cheap()
    return s


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def users(tmp_path: Path, clock: Clock) -> UserStore:
    s = store(tmp_path / "web", clock, user_failures=3, client_failures=5, window_s=100, lock_s=50)
    s.add("alice", "reviewer", PW, ["一中队"])
    return s


def refused(users: UserStore, name: str, password: str, client: str = "10.0.0.1") -> LoginRefused:
    with pytest.raises(LoginRefused) as e:
        users.authenticate(name, password, client)
    return e.value


def db_rows(folder: Path, sql: str) -> list[tuple[object, ...]]:
    db = sqlite3.connect(folder / "users.sqlite")
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


# -- users --------------------------------------------------------------------------------


def test_add_get_and_list(users: UserStore, clock: Clock) -> None:
    assert ROLES == ("reviewer", "supervisor", "admin")
    u = users.add("bob.w@unit-2_", "supervisor", PW)
    assert u == User("bob.w@unit-2_", "supervisor", (), False, int(clock.t))
    assert users.get("alice") == User("alice", "reviewer", ("一中队",), False, int(clock.t))
    assert users.get("nobody") is None
    assert users.get("bad name") is None
    assert [x.name for x in users.list()] == ["alice", "bob.w@unit-2_"]


@pytest.mark.parametrize(
    ("name", "role", "password", "units", "says"),
    [
        ("", "admin", PW, (), "user name"),
        ("a" * 65, "admin", PW, (), "user name"),
        ("bad name", "admin", PW, (), "user name"),
        ("x/../y", "admin", PW, (), "user name"),
        ("张三", "admin", PW, (), "user name"),
        ("carol", "root", PW, (), "role 'root'"),
        ("carol", "admin", "123456789", (), "at least 10"),
        ("carol", "admin", "x" * 1025, (), "at most 1024"),
        ("carol", "reviewer", PW, ("",), "unit"),
        ("carol", "reviewer", PW, ("u" * 65,), "unit"),
        ("carol", "reviewer", PW, ("a\nb",), "unit"),
    ],
)
def test_bad_input_is_one_line(
    users: UserStore, name: str, role: str, password: str, units: tuple[str, ...], says: str
) -> None:
    with pytest.raises(WebError) as e:
        users.add(name, role, password, units)
    assert says in str(e.value) and "\n" not in str(e.value)
    assert e.value.status == 400
    assert users.get("carol") is None


def test_a_name_is_added_once(users: UserStore) -> None:
    with pytest.raises(WebError, match="already exists") as e:
        users.add("alice", "admin", PW)
    assert e.value.status == 409
    assert users.get("alice") is not None and users.get("alice").role == "reviewer"  # type: ignore[union-attr]


def test_unknown_users_are_404(users: UserStore) -> None:
    calls: list[Callable[[], None]] = [
        lambda: users.passwd("zed", PW),
        lambda: users.disable("zed"),
        lambda: users.enable("zed"),
        lambda: users.assign("zed", "A-1"),
        lambda: users.unassign("zed", "A-1"),
    ]
    for call in calls:
        with pytest.raises(WebError, match="no user 'zed'") as e:
            call()
        assert e.value.status == 404


def test_folder_and_files_are_private_and_the_secret_stays(tmp_path: Path, clock: Clock) -> None:
    folder = tmp_path / "data" / "web"
    s = store(folder, clock)
    s.add("alice", "admin", PW)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for name in ("secret", "users.sqlite"):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600, name
    secret = (folder / "secret").read_bytes()
    assert len(secret) == 32
    cookie, _ = s.open_session(s.authenticate("alice", PW, "c"), "c")
    s.close()
    again = store(folder, clock)  # a restart: same secret, same users, same session
    assert (folder / "secret").read_bytes() == secret
    assert again.session(cookie) is not None
    assert not [p for p in folder.iterdir() if ".tmp-" in p.name]


def test_a_damaged_secret_is_named(tmp_path: Path, clock: Clock) -> None:
    folder = tmp_path / "web"
    folder.mkdir()
    (folder / "secret").write_bytes(b"short")
    with pytest.raises(WebError, match="secret is not 32 bytes"):
        UserStore(folder, clock=clock)


# -- login, lockout, throttling -------------------------------------------------------------


def test_login_and_its_refusals(users: UserStore) -> None:
    assert users.authenticate("alice", PW, "10.0.0.1").name == "alice"
    bad = refused(users, "alice", OTHER)
    unknown = refused(users, "mallory", PW)
    assert (bad.reason, bad.status, bad.retry_after) == ("bad password", 401, 0)
    assert (unknown.reason, unknown.status) == ("unknown user", 401)
    # The person cannot tell a wrong name from a wrong password.
    assert str(bad) == str(unknown) == "wrong user name or password"
    assert refused(users, "alice", "x" * 5000).reason == "bad password"
    assert refused(users, "a" * 10_000, PW).reason == "unknown user"


def test_a_user_is_locked_after_failures_within_the_window(users: UserStore, clock: Clock) -> None:
    for _ in range(3):
        assert refused(users, "alice", OTHER).reason == "bad password"
        clock.t += 10
    locked = refused(users, "alice", PW)  # the right password does not open a lock
    assert (locked.reason, locked.status) == ("locked", 423)
    assert locked.retry_after == 40  # locked at the third failure (10 s ago) for 50 s
    assert users.get("alice").locked_until == int(clock.t) + 40  # type: ignore[union-attr]
    assert [u.locked_until for u in users.list()] == [int(clock.t) + 40]
    clock.t += 39
    assert refused(users, "alice", PW).retry_after == 1
    clock.t += 1
    assert users.authenticate("alice", PW, "10.0.0.1").locked_until == 0
    # Failures further apart than the window never add up to a lock.
    for _ in range(5):
        refused(users, "alice", OTHER, client=f"10.0.1.{clock.t}")
        clock.t += 51
    assert users.authenticate("alice", PW, "10.0.0.9").name == "alice"


def test_a_good_login_clears_the_count(users: UserStore) -> None:
    refused(users, "alice", OTHER)
    refused(users, "alice", OTHER)
    users.authenticate("alice", PW, "10.0.0.1")
    refused(users, "alice", OTHER)
    refused(users, "alice", OTHER)
    assert users.authenticate("alice", PW, "10.0.0.1").name == "alice"


def test_after_a_lock_ends_the_old_failures_do_not_count(users: UserStore, clock: Clock) -> None:
    for _ in range(3):
        refused(users, "alice", OTHER)
    clock.t += 50  # the lock has ended, the failures are still inside the 100 s window
    assert refused(users, "alice", OTHER).reason == "bad password"
    assert users.authenticate("alice", PW, "10.0.0.1").name == "alice"


def test_failures_and_locks_survive_a_restart(tmp_path: Path, clock: Clock) -> None:
    kw = {"user_failures": 3, "window_s": 100, "lock_s": 50}
    s = store(tmp_path / "web", clock, **kw)
    s.add("alice", "admin", PW)
    refused(s, "alice", OTHER)
    refused(s, "alice", OTHER)
    s.close()
    s = store(tmp_path / "web", clock, **kw)
    refused(s, "alice", OTHER)
    s.close()
    s = store(tmp_path / "web", clock, **kw)
    assert refused(s, "alice", PW).reason == "locked"


def test_unknown_names_are_locked_like_real_ones(users: UserStore) -> None:
    for _ in range(3):
        assert refused(users, "mallory", OTHER).reason == "unknown user"
    assert refused(users, "mallory", OTHER).reason == "locked"


def test_a_client_with_many_failures_is_throttled(users: UserStore, clock: Clock) -> None:
    for i in range(5):  # spraying: one guess per name, no name reaches its lock
        refused(users, f"user{i}", OTHER, client="192.0.2.7")
        clock.t += 1
    t = refused(users, "alice", PW, client="192.0.2.7")
    assert (t.reason, t.status, t.retry_after) == ("throttled", 429, 95)
    # Another address is not held back, and alice's own count was never touched.
    assert users.authenticate("alice", PW, "192.0.2.8").name == "alice"
    # A good login from the throttled address does not reset the address's count.
    clock.t += 94
    assert refused(users, "alice", PW, client="192.0.2.7").reason == "throttled"
    clock.t += 1
    assert users.authenticate("alice", PW, "192.0.2.7").name == "alice"


def test_a_disabled_user_cannot_log_in_until_enabled(users: UserStore) -> None:
    cookie, _ = users.open_session(users.authenticate("alice", PW, "c"), "c")
    users.disable("alice")
    assert users.get("alice").disabled  # type: ignore[union-attr]
    assert users.session(cookie) is None
    r = refused(users, "alice", PW)
    assert (r.reason, r.status) == ("disabled", 401)
    assert refused(users, "alice", OTHER).reason == "bad password"  # no hint without it
    users.enable("alice")
    assert not users.authenticate("alice", PW, "c").disabled


def test_enable_lifts_a_lock(users: UserStore) -> None:
    for _ in range(3):
        refused(users, "alice", OTHER)
    assert refused(users, "alice", PW).reason == "locked"
    users.enable("alice")
    assert users.get("alice").locked_until == 0  # type: ignore[union-attr]
    assert users.authenticate("alice", PW, "10.0.0.1").name == "alice"


def test_old_parameters_are_rehashed_on_login(tmp_path: Path, clock: Clock) -> None:
    folder = tmp_path / "web"
    s = UserStore(folder, clock=clock)  # argon2-cffi's defaults, as in production
    s.add("alice", "admin", PW)
    weak = cheap().hash(PW)
    db = sqlite3.connect(folder / "users.sqlite")
    with db:
        db.execute("UPDATE users SET hash=? WHERE name='alice'", (weak,))
    db.close()
    assert refused(s, "alice", OTHER).reason == "bad password"
    assert db_rows(folder, "SELECT hash FROM users") == [(weak,)]  # only a good login
    s.authenticate("alice", PW, "c")
    (hashed,) = db_rows(folder, "SELECT hash FROM users")[0]
    assert isinstance(hashed, str) and hashed.startswith("$argon2id$")
    assert not PasswordHasher().check_needs_rehash(hashed)
    assert PasswordHasher().verify(hashed, PW)
    assert s.authenticate("alice", PW, "c").name == "alice"


# -- sessions -------------------------------------------------------------------------------


def test_a_session_is_signed_and_only_its_hash_is_stored(users: UserStore, clock: Clock) -> None:
    alice = users.authenticate("alice", PW, "10.0.0.1")
    cookie, csrf = users.open_session(alice, "10.0.0.1")
    token, mac = cookie.split(".")
    assert len(token) == 43 and len(mac) == 43 and len(csrf) == 43
    s = users.session(cookie)
    assert isinstance(s, Session)
    assert (s.user, s.csrf, s.client, s.created, s.seen) == (
        alice,
        csrf,
        "10.0.0.1",
        int(clock.t),
        int(clock.t),
    )
    assert len(s.token_hash) == 64
    stored = db_rows(users.folder, "SELECT token_hash, csrf FROM sessions")
    assert stored == [(s.token_hash, csrf)]
    assert token not in str(db_rows(users.folder, "SELECT * FROM sessions"))
    other, csrf2 = users.open_session(alice, "10.0.0.1")
    assert other != cookie and csrf2 != csrf


def _flip(text: str, i: int) -> str:
    c = text[i]
    return text[:i] + ("A" if c != "A" else "B") + text[i + 1 :]


def test_a_tampered_cookie_opens_nothing(users: UserStore, tmp_path: Path, clock: Clock) -> None:
    cookie, _ = users.open_session(users.authenticate("alice", PW, "c"), "c")
    token, mac = cookie.split(".")
    for i in range(len(token)):
        assert users.session(f"{_flip(token, i)}.{mac}") is None, i
    for i in range(len(mac)):
        assert users.session(f"{token}.{_flip(mac, i)}") is None, i
    wrong = [
        *("", ".", token, f"{token}.", f".{mac}", f"{cookie}.x", f"{mac}.{token}"),
        *(f"{token}=.{mac}", f"{token}.{mac}=", f"{token[:-1]}.{mac}", cookie + "A"),
        *(" " + cookie, "+" + cookie[1:], "/" + cookie[1:], "x" * 5000),
    ]
    for bad in wrong:
        assert users.session(bad) is None, bad
    # The same cookie signed by another site's secret is refused too.
    elsewhere = store(tmp_path / "other", clock)
    assert elsewhere.session(cookie) is None
    assert users.session(cookie) is not None


def test_a_session_ends_when_idle(users: UserStore, clock: Clock) -> None:
    users = store(users.folder, clock, idle_s=600, max_s=3600)
    cookie, _ = users.open_session(users.authenticate("alice", PW, "c"), "c")
    clock.t += 599
    assert users.session(cookie) is not None  # and `seen` moves on
    clock.t += 599
    s = users.session(cookie)
    assert s is not None and s.seen == int(clock.t)
    clock.t += 600
    assert users.session(cookie) is None
    clock.t -= 600  # gone for good, not only expired
    assert users.session(cookie) is None


def test_a_session_ends_at_its_maximum_age(users: UserStore, clock: Clock) -> None:
    users = store(users.folder, clock, idle_s=600, max_s=1000)
    cookie, _ = users.open_session(users.authenticate("alice", PW, "c"), "c")
    for _ in range(4):
        clock.t += 240
        assert users.session(cookie) is not None
    clock.t += 40  # never idle, but 1000 s old
    assert users.session(cookie) is None


def test_seen_is_written_only_every_few_seconds(users: UserStore, clock: Clock) -> None:
    cookie, _ = users.open_session(users.authenticate("alice", PW, "c"), "c")
    start = int(clock.t)
    clock.t += 3
    assert users.session(cookie).seen == start  # type: ignore[union-attr]
    assert db_rows(users.folder, "SELECT seen FROM sessions") == [(float(start),)]
    clock.t += 30
    assert users.session(cookie).seen == start + 33  # type: ignore[union-attr]


def test_a_new_password_ends_the_sessions(users: UserStore, clock: Clock) -> None:
    alice = users.authenticate("alice", PW, "c")
    cookies = [users.open_session(alice, "c")[0] for _ in range(2)]
    users.add("bob", "supervisor", PW)
    bob, _ = users.open_session(users.authenticate("bob", PW, "c"), "c")
    clock.t += 1
    users.passwd("alice", "a new long password")
    assert [users.session(c) for c in cookies] == [None, None]
    assert users.session(bob) is not None
    assert refused(users, "alice", PW).reason == "bad password"
    assert users.authenticate("alice", "a new long password", "c").name == "alice"
    with pytest.raises(WebError, match="at least 10"):
        users.passwd("alice", "short")


def test_a_session_older_than_the_password_is_refused(users: UserStore, clock: Clock) -> None:
    """Even a session row the passwd did not delete (written by an older process racing
    it) is refused once the password changed after it began."""
    cookie, _ = users.open_session(users.authenticate("alice", PW, "c"), "c")
    db = sqlite3.connect(users.folder / "users.sqlite")
    with db:
        db.execute("UPDATE users SET password_changed=? WHERE name='alice'", (clock.t + 1,))
    db.close()
    assert users.session(cookie) is None


def test_close_session(users: UserStore) -> None:
    alice = users.authenticate("alice", PW, "c")
    one, _ = users.open_session(alice, "c")
    two, _ = users.open_session(alice, "c")
    users.close_session(one)
    users.close_session("garbage")
    assert users.session(one) is None
    assert users.session(two) is not None


def test_sessions_from_many_threads(users: UserStore, clock: Clock) -> None:
    alice = users.authenticate("alice", PW, "c")
    cookies = [users.open_session(alice, "c")[0] for _ in range(8)]
    errors: list[BaseException] = []

    def work(cookie: str) -> None:
        try:
            for _ in range(50):
                assert users.session(cookie) is not None
                clock.t += 1
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(c,)) for c in cookies]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


# -- cases ----------------------------------------------------------------------------------


def test_cases_are_assigned_to_reviewers_only(users: UserStore) -> None:
    users.add("bob", "supervisor", PW)
    users.add("root", "admin", PW)
    users.add("dave", "reviewer", PW)
    users.assign("alice", "京公(刑)字[2024]123号")
    users.assign("alice", "A-2")
    users.assign("alice", "A-2")  # twice is once
    users.assign("dave", "A-2")
    assert users.cases_of("alice") == {"京公(刑)字[2024]123号", "A-2"}
    assert users.assignees("A-2") == ["alice", "dave"]
    assert users.assignees("A-9") == []
    users.unassign("alice", "A-2")
    assert users.assignees("A-2") == ["dave"]
    for name, role in (("bob", "supervisor"), ("root", "admin")):
        with pytest.raises(WebError, match=f"'{name}' is a {role}: cases are assigned to"):
            users.assign(name, "A-2")
        assert users.cases_of(name) == set()
    with pytest.raises(WebError, match="case"):
        users.assign("alice", "")
    with pytest.raises(WebError, match="case"):
        users.assign("alice", "a\nb")
