"""The witness's SQLite state: the key file, following logs, and the compare-and-set of
each add-checkpoint (one transaction, later requests see what earlier ones stored)."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from ledger.cosignature import Cosigner
from ledger.note import Signer
from witness.protocol import AddCheckpoint, parse_request
from witness.state import (
    WitnessError,
    WitnessState,
    init_witness,
    load_cosigner,
)

from .tlog import MemoryLog

ORIGIN = "custody.test/unit/dock-01"
NOW = 1_700_000_000.0


@pytest.fixture
def wdir(tmp_path: Path) -> Path:
    init_witness(tmp_path / "w", "witness.test/w1")
    return tmp_path / "w"


@pytest.fixture
def log() -> MemoryLog:
    return MemoryLog(ORIGIN).grow_to(100)


def test_init_writes_a_private_key_once(wdir: Path) -> None:
    key = wdir / "witness.key"
    assert key.stat().st_mode & 0o777 == 0o600 and wdir.stat().st_mode & 0o777 == 0o700
    cosigner = load_cosigner(wdir)
    assert key.read_text() == cosigner.key_string() + "\n"
    assert cosigner.name == "witness.test/w1"
    with pytest.raises(WitnessError, match="already exists"):
        init_witness(wdir, "witness.test/w1")
    assert load_cosigner(wdir) == cosigner


def test_bad_names_and_missing_folders_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(WitnessError, match="key name"):
        init_witness(tmp_path / "x", "has space")
    with pytest.raises(WitnessError, match="no witness key"):
        load_cosigner(tmp_path)
    with pytest.raises(WitnessError, match="no witness folder"):
        WitnessState(tmp_path / "none")


def test_the_database_is_wal_and_fully_synchronous(wdir: Path) -> None:
    state = WitnessState(wdir)
    assert state.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert state.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    state.close()


def test_add_log_and_rotation_keep_the_state(wdir: Path, log: MemoryLog) -> None:
    state = WitnessState(wdir)
    assert state.add_log(log.vkey) == (ORIGIN, True)
    assert state.add_log(log.vkey) == (ORIGIN, False)
    cosigner = load_cosigner(wdir)
    (a,) = state.add_checkpoints([parse_request(log.request(0, 10))], cosigner, lambda: NOW)
    assert a.status == 200
    rotated = Signer.generate(ORIGIN)
    assert state.add_log(rotated.verifier().vkey()) == (ORIGIN, True)
    (info,) = state.logs()
    assert info.size == 10 and info.root == log.root(10) and info.updated == int(NOW)
    assert info.vkeys == (log.vkey, rotated.verifier().vkey())
    with pytest.raises(WitnessError, match="log key"):
        state.add_log("nonsense")
    assert state.add_log(log.vkey, origin="another/origin") == ("another/origin", True)
    assert [i.origin for i in state.logs()] == ["another/origin", ORIGIN]
    state.close()


def test_a_batch_is_decided_in_order_in_one_transaction(wdir: Path, log: MemoryLog) -> None:
    state = WitnessState(wdir)
    state.add_log(log.vkey)
    cosigner = load_cosigner(wdir)
    reqs = [parse_request(log.request(0, 5)), parse_request(log.request(0, 7))]
    reqs.append(parse_request(log.request(5, 9)))
    answers = state.add_checkpoints(reqs, cosigner, lambda: NOW)
    assert [a.status for a in answers] == [200, 409, 200]
    assert answers[1].body == b"5\n"
    assert state.logs()[0].size == 9
    state.close()


def test_a_failed_transaction_stores_nothing(wdir: Path, log: MemoryLog) -> None:
    state = WitnessState(wdir)
    state.add_log(log.vkey)

    def broken_clock() -> float:
        raise OSError("clock gone")

    with pytest.raises(OSError):
        state.add_checkpoints([parse_request(log.request(0, 5))], load_cosigner(wdir), broken_clock)
    assert not state.db.in_transaction and state.logs()[0].size == 0
    state.close()


def test_two_connections_racing_cannot_both_win(wdir: Path, log: MemoryLog) -> None:
    """The compare-and-set holds across connections (processes): BEGIN IMMEDIATE."""
    setup = WitnessState(wdir)
    setup.add_log(log.vkey)
    setup.close()
    cosigner: Cosigner = load_cosigner(wdir)
    barrier = threading.Barrier(2)

    def submit(request: AddCheckpoint, statuses: list[int], i: int) -> None:
        state = WitnessState(wdir)
        barrier.wait()
        (a,) = state.add_checkpoints([request], cosigner, lambda: NOW)
        statuses[i] = a.status
        state.close()

    size = 0
    for _ in range(30):
        reqs = [parse_request(log.request(size, size + n)) for n in (1, 2)]
        statuses = [0, 0]
        threads = [threading.Thread(target=submit, args=(reqs[i], statuses, i)) for i in (0, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(statuses) == [200, 409], statuses
        size += 1 + statuses.index(200)
    check = sqlite3.connect(wdir / "witness.db")
    assert check.execute("SELECT size FROM logs").fetchone() == (size,)
    check.close()


def test_a_revoked_station_key_is_removed_and_its_checkpoints_refused(
    wdir: Path, log: MemoryLog
) -> None:
    state = WitnessState(wdir)
    state.add_log(log.vkey)
    cosigner = load_cosigner(wdir)
    with pytest.raises(WitnessError, match="only key"):
        state.remove_key(log.vkey)
    new = Signer.generate(ORIGIN)
    state.add_log(new.verifier().vkey())
    (a,) = state.add_checkpoints([parse_request(log.request(0, 10))], cosigner, lambda: NOW)
    assert a.status == 200
    assert state.remove_key(log.vkey) == ORIGIN
    with pytest.raises(WitnessError, match="not followed"):
        state.remove_key(log.vkey)
    # A thief holding the old key is refused; the new key goes on from the same state.
    (a,) = state.add_checkpoints([parse_request(log.request(10, 12))], cosigner, lambda: NOW)
    assert a.status == 403
    req = log.request(10, 12, signers=[new])
    (a,) = state.add_checkpoints([parse_request(req)], cosigner, lambda: NOW)
    assert a.status == 200
    (info,) = state.logs()
    assert info.size == 12 and info.vkeys == (new.verifier().vkey(),)
    state.close()
