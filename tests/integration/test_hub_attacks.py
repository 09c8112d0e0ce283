"""Attacks on a station's log in the shared bucket, each caught by name within one
`custody hub sync`: the state, a problem line, a signed `alarm` entry in the hub's own
ledger (once, not every sync), and nothing cosigned for the station while it is in
alarm. A second, honest station is followed on as if nothing happened.

The stations are real (`custody init`, `custody ingest`); the logs grow by signed notes
where clips add nothing (a note is one entry, and one checkpoint per `custody note`).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ledger.checkpoint import Checkpoint
from ledger.note import Signer

from .hubfix import County, Scene, by_origin, copy_station

ATTACKS = 6  # the tests below that take a `scene`: one victim each


@pytest.fixture(scope="module")
def county(tmp_path_factory: pytest.TempPathFactory, seaweed: Any, ffmpeg: str) -> County:
    return County(tmp_path_factory.mktemp("county"), seaweed, ffmpeg, ATTACKS)


@pytest.fixture
def scene(county: County) -> Scene:
    return county.scene()


def test_checkpoint_signed_by_another_key(scene: Scene) -> None:
    old = scene.victim.checkpoint()
    forger = Signer.generate(scene.victim.origin)  # the same name, another key
    root = bytes(random.randbytes(32))
    forged = Checkpoint(scene.victim.origin, old["size"] + 5, root).sign([forger])
    scene.put(scene.prefix() + "checkpoint", forged.encode())
    scene.caught("invalid", "checkpoint")


def test_rollback_to_an_older_checkpoint(scene: Scene) -> None:
    older = scene.victim.size()
    newer = scene.victim.notes(4, "after")
    _, doc = scene.sync()
    assert by_origin(doc)[scene.victim.origin]["size"] == newer
    scene.put(scene.prefix() + "checkpoint", scene.get(f"{scene.prefix()}checkpoints/{older}"))
    v = scene.caught("rollback", str(older))
    assert v["size"] == newer  # the verified state stays where it was


def test_fork_a_second_history_signed_with_the_station_key(scene: Scene) -> None:
    # A copy of the station (same key, same origin) taken before either records more.
    twin = copy_station(scene.victim, 1)
    honest = scene.victim.notes(4, "honest")
    _, doc = scene.sync()
    assert by_origin(doc)[scene.victim.origin]["size"] == honest
    # The copy writes a longer history of its own into the bucket (new object versions
    # of `checkpoint`; sizes the honest log never had, so no write-once name collides).
    forked = twin.notes(9, "forked")
    assert forked > honest
    assert scene.get(scene.prefix() + "checkpoint").decode().split("\n")[1] == str(forked)
    v = scene.caught("fork")
    assert v["size"] == honest


def _alter(data: bytes, at: int | None = None) -> bytes:
    """One byte changed (inside the data, not at the framing)."""
    i = len(data) // 2 if at is None else at
    return data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1 :]


def _grow_and_alter(scene: Scene, tile: Callable[[int], str]) -> str:
    """The victim grows; the new tile ``tile(size)`` is altered before the hub reads it."""
    size = scene.victim.notes(5, "more")
    key = scene.prefix() + tile(size)
    scene.put(key, _alter(scene.get(key)))
    return key


def test_entry_bundle_altered_before_the_hub_read_it(scene: Scene) -> None:
    key = _grow_and_alter(scene, lambda n: f"tile/entries/000.p/{n}")
    scene.caught("invalid", key.removeprefix(scene.prefix()))


def test_hash_tile_altered_before_the_hub_read_it(scene: Scene) -> None:
    key = _grow_and_alter(scene, lambda n: f"tile/0/000.p/{n}")
    scene.caught("invalid", key.removeprefix(scene.prefix()))


def test_full_tile_altered_after_the_hub_verified_it(scene: Scene) -> None:
    # Past 256 entries: the full (write-once, locked) bundle and hash tile exist.
    size = scene.victim.notes(300, "fill")
    assert size > 256
    _, doc = scene.sync()
    assert by_origin(doc)[scene.victim.origin]["size"] == size
    for name in ("tile/entries/000", "tile/0/000"):
        assert scene.get(scene.prefix() + name)
    # A new version of the verified full bundle: entry 100 says something else.
    key = scene.prefix() + "tile/entries/000"
    scene.put(key, _alter(scene.get(key)))
    scene.victim.notes(2, "after")  # and the station goes on
    scene.caught("invalid", "tile/entries/000")


def test_a_station_that_stops_is_silent(tmp_path: Path, seaweed: Any, ffmpeg: str) -> None:
    """silent_after_h = 0.001 (3.6 s) and a schedule that covers the whole week: once
    that long has passed without a new checkpoint, the quiet station is `silent`, the
    station that went on recording is not."""
    quiet_s = 0.001 * 3600
    working = {"schedule": "mon-sun 00:00-24:00", "silent_after_h": 0.001}
    sc = Scene(tmp_path, seaweed, ffmpeg, station_fields=working)
    synced = time.monotonic()  # the victim's last new checkpoint, as the hub saw it
    sc.bystander.notes(2, "still working")
    time.sleep(max(0.0, quiet_s + 1 - (time.monotonic() - synced)))
    env: dict[str, str] = {}
    p = sc.hub.run("sync", "--json", env=env)
    assert p.returncode == 0, p.stderr  # silent is not an integrity alarm
    doc = by_origin(json.loads(p.stdout))
    assert doc[sc.victim.origin]["state"] == "silent", doc[sc.victim.origin]
    assert doc[sc.victim.origin]["problems"]
    assert sc.victim.origin in p.stderr
    assert doc[sc.bystander.origin]["state"] == "ok"
    alarms = [a for a in sc.hub.alarms() if a["origin"] == sc.victim.origin]
    assert [a["state"] for a in alarms] == ["silent"]
    # Recording again ends it.
    sc.victim.notes(1, "back")
    p = sc.hub.run("sync", "--json", env=env)
    assert by_origin(json.loads(p.stdout))[sc.victim.origin]["state"] == "ok"
