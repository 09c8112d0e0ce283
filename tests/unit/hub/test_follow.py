"""The hub's incremental follower (hub.follow) over a ledger folder: steps of any size
give the whole-log result; each kind of tampering is caught by name."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from hub.follow import Alarm, Followed, decode_levels, encode_levels, verify_step
from ledger.checkpoint import Checkpoint
from ledger.integrate import edge_root
from ledger.keys import KeyChain
from ledger.log import Ledger
from ledger.note import Signer, parse_note
from ledger.storage import FolderTiles
from ledger.tiles import TileID
from ledger.tree import EMPTY_ROOT

ORIGIN = "custody.example/test/dock-07"


class DictReader:
    """Reads tiles from a ledger folder, counting reads; a partial tile not there is cut
    from its full tile (as the hub's store reader does)."""

    def __init__(self, root: Path) -> None:
        self.tiles = FolderTiles(root)
        self.reads: list[str] = []

    def read(self, tid: TileID) -> tuple[bytes, str | None]:
        self.reads.append(tid.path())
        return self.tiles.read_tile(tid), ("tag" if tid.full else None)


def make_log(tmp: Path, n: int, signer: Signer, start: int = 0, name: str = "st") -> Ledger:
    led = Ledger(tmp / name / "ledger", tmp / name / "state", ORIGIN, signer)
    for i in range(start, start + n):
        led.append("ingest", {"sha256": f"{i:064x}", "size": i, "media_type": "video/mp4"})
    led.integrate()
    return led


def root_at(led: Ledger) -> tuple[int, bytes]:
    rec = led.latest()
    assert rec is not None
    cp = Checkpoint.parse_body(parse_note(rec.note).text)
    return cp.size, cp.root


def test_steps_of_any_size_reach_the_signed_root(tmp_path: Path) -> None:
    signer = Signer.generate(ORIGIN)
    chain = KeyChain(signer.verifier())
    led = make_log(tmp_path, 1, signer)
    f = Followed()
    reader = DictReader(tmp_path / "st" / "ledger")
    total = 1
    for grow in (0, 254, 1, 1, 300, 255, 700):
        if grow:
            for i in range(grow):
                led.append("probe", {"sha256": f"{total + i:064x}"})
            led.integrate()
            total += grow
        size, root = root_at(led)
        assert size == total
        step = verify_step(reader, ORIGIN, chain, f, size, root, 0, compare_partials=True)
        assert step.followed.size == size and step.followed.root == root
        assert step.row_count == size - f.size  # one row per new entry
        # The edge survives the state database's encoding.
        f = Followed(size, root, decode_levels(encode_levels(step.followed.levels)))
        assert edge_root(f.levels) == root
    # Only what was new was read: each full bundle once, plus the partial ones.
    full_bundles = [r for r in reader.reads if r.startswith("tile/entries/") and ".p/" not in r]
    assert len(full_bundles) == len(set(full_bundles)) == total // 256


def test_rows_below_the_catalogued_size_are_not_made_again(tmp_path: Path) -> None:
    signer = Signer.generate(ORIGIN)
    led = make_log(tmp_path, 300, signer)
    size, root = root_at(led)
    step = verify_step(
        DictReader(tmp_path / "st" / "ledger"),
        ORIGIN,
        KeyChain(signer.verifier()),
        Followed(),
        size,
        root,
        250,
        compare_partials=True,
    )
    assert step.entries == 300 and step.row_count == 50


def follow_from(
    root_dir: Path, key: Signer, old: Followed, size: int, root: bytes, **kw: object
) -> Followed:
    """One step over the ledger folder ``root_dir`` with ``key``'s chain."""
    step = verify_step(
        DictReader(root_dir),
        ORIGIN,
        KeyChain(key.verifier()),
        old,
        size,
        root,
        0,
        compare_partials=True,
        **kw,  # type: ignore[arg-type]
    )
    return step.followed


def _setup(tmp_path: Path, n: int = 600) -> tuple[Signer, Ledger, Path]:
    signer = Signer.generate(ORIGIN)
    led = make_log(tmp_path, n, signer)
    return signer, led, tmp_path / "st" / "ledger"


def test_an_altered_hash_tile_is_invalid_and_named(tmp_path: Path) -> None:
    signer, led, root_dir = _setup(tmp_path)
    p = root_dir / "tile/0/001"
    data = bytearray(p.read_bytes())
    data[40] ^= 1
    p.write_bytes(bytes(data))
    size, root = root_at(led)
    with pytest.raises(Alarm) as e:
        follow_from(root_dir, signer, Followed(), size, root)
    assert e.value.state == "invalid" and "tile/0/001" in e.value.problem


def test_an_entry_signed_by_another_key_is_invalid(tmp_path: Path) -> None:
    _signer, led, root_dir = _setup(tmp_path, 10)
    size, root = root_at(led)
    other = Signer.generate(ORIGIN)
    with pytest.raises(Alarm) as e:
        follow_from(root_dir, other, Followed(), size, root)
    assert e.value.state == "invalid" and "entry 0" in e.value.problem


def test_a_second_history_is_a_fork(tmp_path: Path) -> None:
    """The station signs 100 entries, the hub verifies them; a copy of the station at
    size 100 then signs other entries than the original: whichever the bucket shows
    the hub, it does not extend what the hub verified at a size it read again."""
    signer = Signer.generate(ORIGIN)
    led = make_log(tmp_path, 100, signer)
    led.close()
    shutil.copytree(tmp_path / "st", tmp_path / "fork")
    led = make_log(tmp_path, 50, signer, start=100)  # the original goes on
    size_a, root_a = root_at(led)
    f = follow_from(tmp_path / "st" / "ledger", signer, Followed(), size_a, root_a)
    forked = make_log(tmp_path, 80, signer, start=5000, name="fork")  # another history
    size_b, root_b = root_at(forked)
    with pytest.raises(Alarm) as e:
        follow_from(tmp_path / "fork" / "ledger", signer, f, size_b, root_b)
    assert e.value.state == "fork"


def test_a_checkpoint_root_for_other_entries_is_a_fork(tmp_path: Path) -> None:
    signer, led, root_dir = _setup(tmp_path, 20)
    size, _ = root_at(led)
    with pytest.raises(Alarm) as e:
        follow_from(root_dir, signer, Followed(), size, EMPTY_ROOT)
    assert e.value.state == "fork"


def test_a_witnessed_root_inside_the_step_must_match(tmp_path: Path) -> None:
    signer, led, root_dir = _setup(tmp_path, 40)
    size, root = root_at(led)
    with pytest.raises(Alarm) as e:
        follow_from(root_dir, signer, Followed(), size, root, watch={17: EMPTY_ROOT})
    assert e.value.state == "fork" and "size 17" in e.value.problem


def test_the_signed_message_cut_from_the_leaf_is_the_encoded_one() -> None:
    """The fast path (cutting the sig member out of the canonical leaf) gives exactly
    `Entry.signed_message`, also when a nested field repeats the sig member's text."""
    from hub.check import signed_message
    from ledger.entry import decode_entry, make_entry

    signer = Signer.generate(ORIGIN)
    payloads: list[dict[str, object]] = [
        {},
        {"a": 1, "sha256": "ab" * 32, "z": {"sig": "x", "q": [1, "sig"]}},
        {"aaa": "first", "sif": "before sig", "sih": "after sig"},
    ]
    for p in payloads:
        e = decode_entry(make_entry(signer, ORIGIN, "note", p, "2026-11-30T00:00:00.000Z"))
        assert signed_message(e) == e.signed_message()
        assert e.verify(signer.verifier())
    # A nested copy of the very sig member (a station could write one): the leaf's text
    # holds it twice, so the message is encoded from the fields; the same answer.
    import base64

    from ledger.entry import canonical_json

    sig = base64.b64encode(bytes(range(64))).decode()
    fields = {
        "v": 1, "type": "note", "time": "2026-11-30T00:00:00.000Z", "station": ORIGIN,
        "a": {"sig": sig}, "sig": sig,
    }  # fmt: skip
    e3 = decode_entry(canonical_json(fields))
    assert e3.leaf.count(b'"sig":"' + sig.encode() + b'"') == 2
    assert signed_message(e3) == e3.signed_message()
