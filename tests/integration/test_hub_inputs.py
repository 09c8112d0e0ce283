"""Bad input to the county hub: one clear line each, no traceback, and the hub keeps
following the stations that are fine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .hubfix import (
    County,
    Hub,
    by_origin,
    closed_port,
    lines_naming,
    real_stations,
)


def test_an_unreachable_store_is_one_line_and_the_others_are_followed(
    tmp_path: Path, seaweed: Any, ffmpeg: str
) -> None:
    bucket, (up, away) = real_stations(2, seaweed, tmp_path, ffmpeg, clips=1)
    hub = Hub.init(tmp_path)
    hub.follow([up], seaweed.endpoint, bucket)
    hub.follow([away], f"http://127.0.0.1:{closed_port()}", bucket)
    p, doc = hub.sync(expect=0)  # not an integrity alarm: exit 0, a line on stderr
    s = by_origin(doc)
    assert s[up.origin]["state"] == "ok" and s[up.origin]["size"] == up.size()
    assert s[away.origin]["state"] == "unreachable", s[away.origin]
    assert s[away.origin]["size"] == 0 and s[away.origin]["problems"]
    assert "Traceback" not in p.stderr
    said = lines_naming(p.stderr, away.origin)
    assert len(said) == 1, p.stderr
    assert "unreachable" in said[0] or "cannot" in said[0] or "connect" in said[0], said
    # Plain text too: one line per station, the unreachable one named.
    text = hub.run("sync")
    assert text.returncode == 0 and "Traceback" not in text.stderr
    assert len(lines_naming(text.stdout, up.origin, "ok")) == 1, text.stdout
    assert len(lines_naming(text.stdout + text.stderr, away.origin, "unreachable")) >= 1


def test_a_station_listed_twice_is_a_config_error(
    tmp_path: Path, seaweed: Any, ffmpeg: str
) -> None:
    bucket, (st,) = real_stations(1, seaweed, tmp_path, ffmpeg, clips=0)
    hub = Hub.init(tmp_path)
    hub.follow([st, st], seaweed.endpoint, bucket)
    for cmd in (("sync",), ("status", "--json")):
        p = hub.run(*cmd)
        assert p.returncode == 2, (cmd, p.stdout, p.stderr)
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
        assert st.origin in lines[0] and "twice" in lines[0], lines


def test_a_vkey_that_is_not_the_origin_s_is_a_config_error(
    tmp_path: Path, seaweed: Any, ffmpeg: str
) -> None:
    bucket, (a, b) = real_stations(2, seaweed, tmp_path, ffmpeg, clips=0)
    hub = Hub.init(tmp_path)
    hub.add_station(a.origin, b.vkey, seaweed.endpoint, bucket)
    p = hub.run("sync")
    assert p.returncode == 2, (p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    assert "vkey" in lines[0] and a.origin in lines[0], lines


@pytest.mark.parametrize(
    "bad",
    ["not TOML [", 'data_dir = "x"\nname = "n.example/hub"\nbogus = 1\n'],
    ids=["not-toml", "unknown-key"],
)
def test_a_broken_hub_toml_is_one_line(tmp_path: Path, bad: str) -> None:
    hub = Hub.init(tmp_path)
    hub.cfg.write_text(bad)
    p = hub.run("sync")
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and "hub.toml" in p.stderr, p.stderr


def _truncate(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _garbage(data: bytes) -> bytes:
    return bytes(range(256)) * (len(data) // 256 + 1)


CORRUPTED = 5  # the tests below that take a victim of the county: one each


@pytest.fixture(scope="module")
def county(tmp_path_factory: pytest.TempPathFactory, seaweed: Any, ffmpeg: str) -> County:
    return County(tmp_path_factory.mktemp("county"), seaweed, ffmpeg, CORRUPTED)


@pytest.mark.parametrize(
    ("tile", "damage"),
    [
        ("tile/entries/000.p/{n}", _truncate),
        ("tile/entries/000.p/{n}", _garbage),
        ("tile/0/000.p/{n}", _truncate),
        ("tile/0/000.p/{n}", _garbage),
    ],
    ids=["truncated-bundle", "garbage-bundle", "truncated-tile", "garbage-tile"],
)
def test_malformed_tiles_are_invalid_and_named(county: County, tile: str, damage: Any) -> None:
    sc = county.scene()
    n = sc.victim.notes(3, "more")
    key = sc.prefix() + tile.format(n=n)
    sc.put(key, damage(sc.get(key)))
    sc.caught("invalid", tile.format(n=n))


def test_a_checkpoint_that_is_not_a_note_is_invalid(county: County) -> None:
    sc = county.scene()
    sc.put(sc.prefix() + "checkpoint", b"\x00\xffnot a signed note")
    sc.caught("invalid", "checkpoint")
