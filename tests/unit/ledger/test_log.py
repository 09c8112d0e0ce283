"""The station ledger: durable appends, integration, reopening, proofs from tiles."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from ledger import tree
from ledger.audit import verify_log
from ledger.checkpoint import open_checkpoint
from ledger.entry import decode_entry
from ledger.errors import IntegrityError, LedgerError
from ledger.log import Ledger
from ledger.note import Signer
from verify.folder import FolderSource

SIGNER = Signer("custody.test/log", bytes(range(32)))


def open_ledger(tmp: Path, signer: Signer | None = SIGNER) -> Ledger:
    return Ledger(tmp / "ledger", tmp / "state", SIGNER.name, signer)


def check_log(tmp: Path, entries: bool = True) -> None:
    src = FolderSource(tmp / "ledger")
    rep = verify_log(
        src, src.read_checkpoint(), [SIGNER.verifier()], SIGNER.name, check_entries=entries
    )
    assert rep.ok, rep.lines()


def test_append_integrate_reopen(tmp_path: Path) -> None:
    with open_ledger(tmp_path) as led:
        idx = led.append_entries([("note", {"text": f"n{i}"}) for i in range(300)])
        assert idx == list(range(300))
        assert led.pending_count() == 300
        assert decode_entry(led.entry(5)).payload() == {"text": "n5"}  # still pending
        rec = led.integrate()
        assert rec is not None and rec.size == 300
        assert led.pending_count() == 0
        assert led.integrate() is None
    with open_ledger(tmp_path) as led:
        assert led.append("note", {"text": "after reopen"}) == 300
        led.integrate()
        assert decode_entry(led.entry(300)).payload() == {"text": "after reopen"}
        assert decode_entry(led.entry(7)).payload() == {"text": "n7"}
        with pytest.raises(LedgerError, match="no entry at index 301"):
            led.entry(301)
    check_log(tmp_path)


def test_proofs_from_tiles_match_reference(tmp_path: Path) -> None:
    with open_ledger(tmp_path) as led:
        sizes = []
        for n in (1, 255, 1, 300, 44, 512):
            led.append_leaves([b"leaf %d" % (led.next_index() + i) for i in range(n)])
            rec = led.integrate()
            assert rec is not None
            sizes.append(rec.size)
        hs = [tree.leaf_hash(b"leaf %d" % i) for i in range(sizes[-1])]
        for size in sizes:
            root = tree.root_of(hs[:size])
            cp = open_checkpoint(led.checkpoint_at(size).note, [SIGNER.verifier()])  # type: ignore[union-attr]
            assert cp.checkpoint.root == root
            for i in {0, size // 2, size - 1}:
                p = led.proof(i, size)
                p.verify(b"leaf %d" % i, [SIGNER.verifier()])
            for old in sizes:
                if old <= size:
                    c = led.consistency(old, size)
                    assert tree.verify_consistency(
                        old, size, tree.root_of(hs[:old]), root, c["proof"]
                    )
        with pytest.raises(LedgerError, match="no checkpoint was signed at size 3"):
            led.proof(0, 3)
        with pytest.raises(LedgerError, match="not in the checkpoint"):
            led.proof(sizes[0], sizes[0])


def test_group_commit_from_many_threads(tmp_path: Path) -> None:
    got: list[int] = []
    lock = threading.Lock()
    with open_ledger(tmp_path) as led:
        led.start_integrator(0.02)

        def worker(t: int) -> None:
            for i in range(100):
                idx = led.append("note", {"thread": t, "i": i})
                with lock:
                    got.append(idx)

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        led.stop_integrator()
        assert sorted(got) == list(range(800))
        assert led.latest().size == 800  # type: ignore[union-attr]
    check_log(tmp_path)


def _child_append(tmp: str, n: int) -> None:
    with open_ledger(Path(tmp)) as led:
        for i in range(n):
            led.append("note", {"pid": os.getpid(), "i": i})
            if i % 10 == 0:
                led.integrate()
        led.integrate()


def test_several_processes_append_to_one_ledger(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_child_append, args=(str(tmp_path), 60)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    with open_ledger(tmp_path) as led:
        led.integrate()
        assert led.latest().size == 180  # type: ignore[union-attr]
        seen = {(e["pid"], e["i"]) for e in (decode_entry(led.entry(i)).fields for i in range(180))}
        assert len(seen) == 180
    check_log(tmp_path)


def test_refuses_other_origin(tmp_path: Path) -> None:
    open_ledger(tmp_path).close()
    with pytest.raises(LedgerError, match="belongs to origin"):
        Ledger(tmp_path / "ledger", tmp_path / "state", "custody.test/other", None)


def test_damaged_right_edge_is_an_integrity_error(tmp_path: Path) -> None:
    with open_ledger(tmp_path) as led:
        led.append_leaves([b"x%d" % i for i in range(10)])
        led.integrate()
    tile = tmp_path / "ledger" / "tile" / "0" / "000.p" / "10"
    data = bytearray(tile.read_bytes())
    data[0] ^= 1
    tile.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="do not hash to the signed root"):
        open_ledger(tmp_path)
    # Read-only access (a supervisor looking) still works and verify names the tile.
    with open_ledger(tmp_path, signer=None) as led:
        assert led.entry(3) == b"x3"


def test_republishes_checkpoint_lost_after_recording(tmp_path: Path) -> None:
    with open_ledger(tmp_path) as led:
        led.append_leaves([b"a", b"b"])
        rec = led.integrate()
    assert rec is not None
    (tmp_path / "ledger" / "checkpoint").unlink()
    with open_ledger(tmp_path) as led:
        # Republished on open, before anything new arrives.
        assert (tmp_path / "ledger" / "checkpoint").read_text() == rec.note
        led.append_leaves([b"c"])
        led.integrate()
        assert led.latest().size == 3  # type: ignore[union-attr]
    assert (tmp_path / "ledger" / "checkpoint").read_text().split("\n")[1] == "3"


def test_read_only_ledger_cannot_append(tmp_path: Path) -> None:
    open_ledger(tmp_path).close()
    with open_ledger(tmp_path, signer=None) as led, pytest.raises(LedgerError, match="read-only"):
        led.append("note", {"text": "x"})


def test_on_commit_runs_in_the_append_transaction(tmp_path: Path) -> None:
    with open_ledger(tmp_path) as led:
        db = sqlite3.connect(led.db_path)
        db.execute("CREATE TABLE jobs (name TEXT PRIMARY KEY, entry INTEGER)")
        db.commit()

        def record(name: str) -> Callable[[sqlite3.Connection, list[int]], None]:
            def cb(conn: sqlite3.Connection, idx: list[int]) -> None:
                conn.execute("INSERT INTO jobs VALUES (?, ?)", (name, idx[0]))

            return cb

        assert led.append("note", {"text": "a"}, record("a")) == 0
        # A failing callback rolls back its own append only; the index is not used up.
        with pytest.raises(sqlite3.IntegrityError):
            led.append("note", {"text": "a again"}, record("a"))
        assert led.append("note", {"text": "b"}, record("b")) == 1
        assert dict(db.execute("SELECT name, entry FROM jobs")) == {"a": 0, "b": 1}
        assert led.next_index() == 2
        db.close()


def test_lost_state_adopts_the_published_checkpoint(tmp_path: Path) -> None:
    """State folder lost or restored from an old backup: never sign a fork."""
    import shutil

    with open_ledger(tmp_path) as led:
        led.append_leaves([b"a%d" % i for i in range(300)])
        rec = led.integrate()
    assert rec is not None
    shutil.rmtree(tmp_path / "state")
    with open_ledger(tmp_path) as led:
        assert led.latest().size == 300  # type: ignore[union-attr]
        assert led.next_index() == 300
        led.append_leaves([b"after"])
        led.integrate()
        assert led.entry(300) == b"after" and led.entry(5) == b"a5"
    check_log(tmp_path, entries=False)


def test_state_from_another_history_is_refused(tmp_path: Path) -> None:
    import shutil

    with open_ledger(tmp_path) as led:
        led.append_leaves([b"a%d" % i for i in range(10)])
        led.integrate()
    shutil.copytree(tmp_path / "state", tmp_path / "old-state")
    with open_ledger(tmp_path) as led:
        led.append_leaves([b"b%d" % i for i in range(300)])
        led.integrate()
    # Restore the old state, then something appends different entries before anyone opens it.
    shutil.rmtree(tmp_path / "state")
    shutil.copytree(tmp_path / "old-state", tmp_path / "state")
    db = sqlite3.connect(tmp_path / "state" / "ledger.sqlite")
    db.executemany("INSERT INTO pending VALUES (?, ?)", [(10 + i, b"fork") for i in range(5)])
    db.commit()
    db.close()
    with pytest.raises(IntegrityError, match="differs from the published log"):
        open_ledger(tmp_path)


def test_tiles_without_any_checkpoint_are_refused(tmp_path: Path) -> None:
    with open_ledger(tmp_path) as led:
        led.append_leaves([b"a"])
        led.integrate()
    (tmp_path / "ledger" / "checkpoint").unlink()
    import shutil

    shutil.rmtree(tmp_path / "state")
    with pytest.raises(IntegrityError, match="no checkpoint this station signed"):
        open_ledger(tmp_path)


def test_signature_checks_inline_and_on_a_pool_agree(tmp_path: Path) -> None:
    """The pure verifier checks signatures in order on its own; the threaded shell hands
    batches to a pool. Both name the same forged entries, in index order."""
    from ledger.entry import make_entry
    from verify.parallel import verify_log as verify_on_pool

    forger = Signer(SIGNER.name, bytes(range(1, 33)))  # same name, another key
    with open_ledger(tmp_path) as led:
        for i in range(700):
            signer = forger if i in (3, 300, 699) else SIGNER
            led.append_leaves(
                [make_entry(signer.bound(), SIGNER.name, "note", {"n": i}, "2026-11-30T00:00:00Z")]
            )
        led.integrate()
    src = FolderSource(tmp_path / "ledger")
    text = src.read_checkpoint()
    reports = [
        verify_log(src, text, [SIGNER.verifier()], SIGNER.name),
        verify_on_pool(src, text, [SIGNER.verifier()], SIGNER.name, workers=3),
    ]
    for rep in reports:
        bad = [line for line in rep.lines() if "signature does not verify" in line]
        assert [b.split(":")[0] for b in bad] == [f"entry {i}" for i in (3, 300, 699)], bad
        assert rep.signatures_checked == 700
