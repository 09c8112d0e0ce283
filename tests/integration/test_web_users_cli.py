"""`custody user ...` and `custody hub user ...`: the real command in a subprocess, the
users it makes read back by the review site's own store (web/users.py)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from web.users import LoginRefused, UserStore

from ..conftest import run_cli

PW = "correct horse battery staple"


def users(config: Path, *args: str, hub: bool = False, input: str | None = None) -> Any:
    if hub:
        return run_cli("hub", "-c", str(config), "user", *args, check=False, input=input)
    return run_cli("user", *args, config=config, check=False, input=input)


def listed(config: Path, hub: bool = False) -> dict[str, dict[str, Any]]:
    p = users(config, "list", "--json", hub=hub)
    assert p.returncode == 0, p.stderr
    return {u["name"]: u for u in json.loads(p.stdout)["users"]}


def one_line_error(p: subprocess.CompletedProcess[str], says: str) -> None:
    assert p.returncode == 2, p.stdout + p.stderr
    assert p.stderr.count("\n") == 1 and p.stderr.startswith("custody: error: "), p.stderr
    assert says in p.stderr, p.stderr
    assert "Traceback" not in p.stderr


def test_station_users_from_the_command_line(station: Path) -> None:
    folder = station.parent / "web"
    p = users(station, "add", "alice", "--role", "reviewer", "--unit", "一中队", input=PW + "\n")
    assert p.returncode == 0, p.stderr
    assert "alice" in p.stdout
    # Trailing spaces are part of a password; only the newline is taken off.
    p = users(station, "add", "bob", "--role", "supervisor", input="  spaced password  \r\n")
    assert p.returncode == 0, p.stderr

    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for name in ("users.sqlite", "secret"):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600, name

    got = listed(station)
    assert set(got) == {"alice", "bob"}
    alice = got["alice"]
    assert alice["role"] == "reviewer" and alice["units"] == ["一中队"]
    assert alice["disabled"] is False and alice["locked_until"] == 0 and alice["cases"] == []
    assert isinstance(alice["created"], int) and alice["created"] > 1_600_000_000
    assert got["bob"]["units"] == []

    store = UserStore(folder)
    assert store.authenticate("alice", PW, "127.0.0.1").role == "reviewer"
    assert store.authenticate("bob", "  spaced password  ", "127.0.0.1").role == "supervisor"

    one_line_error(users(station, "add", "alice", "--role", "admin", input=PW), "already exists")
    one_line_error(
        users(station, "add", "carol", "--role", "admin", input="123456789\n"), "at least 10"
    )
    one_line_error(users(station, "add", "carol", "--role", "admin", input=""), "no password")
    one_line_error(users(station, "add", "bad/name", "--role", "admin", input=PW), "user name")
    assert set(listed(station)) == {"alice", "bob"}

    assert users(station, "assign", "alice", "--case", "京公(刑)字[2024]123号").returncode == 0
    assert listed(station)["alice"]["cases"] == ["京公(刑)字[2024]123号"]
    assert store.cases_of("alice") == {"京公(刑)字[2024]123号"}
    one_line_error(users(station, "assign", "bob", "--case", "A-1"), "'bob' is a supervisor")
    one_line_error(users(station, "assign", "zed", "--case", "A-1"), "no user 'zed'")
    assert users(station, "unassign", "alice", "--case", "京公(刑)字[2024]123号").returncode == 0
    assert listed(station)["alice"]["cases"] == []

    # The web server's session ends when another process disables the user.
    cookie, _ = store.open_session(store.authenticate("alice", PW, "127.0.0.1"), "127.0.0.1")
    assert store.session(cookie) is not None
    assert users(station, "disable", "alice").returncode == 0
    assert store.session(cookie) is None
    assert listed(station)["alice"]["disabled"] is True
    table = users(station, "list").stdout.splitlines()
    assert table[0].split() == ["NAME", "ROLE", "UNITS", "STATE", "CASES"]
    assert table[1].split() == ["alice", "reviewer", "一中队", "disabled", "-"]
    assert table[2].split() == ["bob", "supervisor", "all", "active", "-"]
    with pytest.raises(LoginRefused):
        store.authenticate("alice", PW, "127.0.0.1")
    assert users(station, "enable", "alice").returncode == 0

    assert users(station, "passwd", "alice", input="a brand new password\n").returncode == 0
    with pytest.raises(LoginRefused):
        store.authenticate("alice", PW, "127.0.0.1")
    assert store.authenticate("alice", "a brand new password", "127.0.0.1").name == "alice"
    one_line_error(users(station, "passwd", "alice", input="short\n"), "at least 10")
    one_line_error(users(station, "passwd", "zed", input=PW), "no user 'zed'")
    one_line_error(users(station, "disable", "zed"), "no user 'zed'")
    store.close()


def test_a_lock_shows_in_the_list_and_enable_lifts_it(station: Path) -> None:
    assert users(station, "add", "dave", "--role", "admin", input=PW).returncode == 0
    store = UserStore(station.parent / "web", user_failures=2)
    for _ in range(2):
        with pytest.raises(LoginRefused):
            store.authenticate("dave", "not the password", "10.1.1.1")
    assert listed(station)["dave"]["locked_until"] > 0
    assert "locked until " in users(station, "list").stdout
    assert users(station, "enable", "dave").returncode == 0
    assert listed(station)["dave"]["locked_until"] == 0
    assert store.authenticate("dave", PW, "10.1.1.1").name == "dave"
    store.close()


def test_hub_users_live_in_the_hubs_folder(tmp_path: Path) -> None:
    run_cli("hub", "init", "--data", str(tmp_path / "hub"), "--name", "witness.test/hub")
    conf = tmp_path / "hub" / "hub.toml"
    p = users(conf, "add", "county", "--role", "supervisor", hub=True, input=PW + "\n")
    assert p.returncode == 0, p.stderr
    assert users(conf, "add", "rev", "--role", "reviewer", hub=True, input=PW).returncode == 0
    assert set(listed(conf, hub=True)) == {"county", "rev"}
    assert (tmp_path / "hub" / "web" / "users.sqlite").exists()
    one_line_error(
        users(conf, "add", "county", "--role", "admin", hub=True, input=PW), "already exists"
    )
    one_line_error(
        users(conf, "assign", "county", "--case", "A-1", hub=True), "'county' is a supervisor"
    )
    assert users(conf, "assign", "rev", "--case", "A-1", hub=True).returncode == 0
    assert listed(conf, hub=True)["rev"]["cases"] == ["A-1"]


def test_files_made_by_root_go_to_the_data_folders_owner(station: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: the command run as root hands its files to the station's user")
    data = station.parent
    os.chown(data, 65534, 65534)
    assert users(station, "add", "erin", "--role", "admin", input=PW).returncode == 0
    for path in (data / "web", data / "web" / "users.sqlite", data / "web" / "secret"):
        assert (path.stat().st_uid, path.stat().st_gid) == (65534, 65534), path


def test_the_command_line_does_not_load_argon2_to_start() -> None:
    code = (
        "import sys, custody.cli; custody.cli.build_parser().parse_args(['user', 'list']); "
        "print('argon2' in sys.modules, 'web.users' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.split() == ["False", "False"]
