"""A station whose checkpoints two witnesses cosign, end to end: the real daemon
(`custody run`) and two real witness servers (`custody witness serve`), each its own
process on a free loopback port; the policy asks for both (quorum 2)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from ledger.note import Verifier
from ledger.policy import Policy, check_checkpoint, parse_policy

from ..conftest import REPO, run_cli
from .daemon import Daemon, entries, make_station, status, wait_for
from .test_appliance import drain, listen

ORIGIN = "custody.test/capture/dock-01"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Witness:
    """`custody witness serve` in its own folder, following the station's log."""

    def __init__(self, tmp: Path, name: str, station_vkey: str) -> None:
        self.data = tmp / name.replace("/", "_")
        self.vkey = run_cli("witness", "init", "--data", str(self.data), "--name", name).stdout
        self.vkey = self.vkey.strip()
        run_cli("witness", "--data", str(self.data), "add-log", "--vkey", station_vkey)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = self.data.parent / f"{self.data.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        cmd = [sys.executable, "-m", "custody", "witness", "--data", str(self.data), "serve"]
        cmd += ["--listen", f"127.0.0.1:{self.port}"]
        with open(self.log, "ab") as logf:
            env = dict(os.environ, PYTHONPATH=str(REPO))
            self.proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env)

        def accepting() -> bool:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return True
            except OSError:
                return False

        wait_for(accepting, 30, self.log)

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)
        self.proc = None


def setup(tmp: Path, extra: str = "") -> tuple[Path, list[Witness], Policy, Verifier]:
    dock = tmp / "dock"
    conf = make_station(tmp, dock, extra=extra)
    vkey = (conf.parent / "keys" / "station.vkey").read_text().strip()
    ws = [Witness(tmp, "w.test/one", vkey), Witness(tmp, "w.test/two", vkey)]
    text = (
        "# the station's witnesses: both must cosign\n"
        f"log {vkey}\n"
        f"witness w1 {ws[0].vkey} {ws[0].url}\n"
        f"witness w2 {ws[1].vkey} {ws[1].url}\n"
        "group both all w1 w2\n"
        "quorum both\n"
    )
    (conf.parent / "witnesses.policy").write_text(text)
    conf.write_text(
        conf.read_text()
        + '\n[witness]\npolicy = "witnesses.policy"\ntimeout_s = 2\nretry_s = 1\n'
        + "alarm_after_s = 2\npublish_wait_s = 60\n"
    )
    return conf, ws, parse_policy(text), Verifier.parse(vkey)


def cosigned(note: str, policy: Policy, station: Verifier) -> set[str]:
    return set(check_checkpoint(note, policy, [station]).cosigned)


def published(conf: Path) -> str:
    return (conf.parent / "ledger" / "checkpoint").read_text()


def size_of(note: str) -> int:
    return int(note.split("\n")[1])


def dock_file(conf: Path, name: str, data: bytes) -> None:
    slot = conf.parent.parent / "dock" / "slot01"
    slot.mkdir(parents=True, exist_ok=True)
    (slot / name).write_bytes(data)


def ingests(conf: Path) -> int:
    return sum(1 for e in entries(conf) if e["type"] == "ingest")


def caught_up(conf: Path, policy: Policy, station: Verifier) -> bool:
    """The published checkpoint covers every entry and both witnesses cosigned it."""
    note = published(conf)
    n = len(entries(conf))
    return size_of(note) == n and cosigned(note, policy, station) == {"w1", "w2"}


def test_published_checkpoints_carry_both_cosignatures_here_and_in_the_cold_store(
    tmp_path: Path,
) -> None:
    cold = tmp_path / "cold"
    conf, ws, policy, station = setup(
        tmp_path, f'\n[store]\nkind = "local"\npath = "{cold}"\nlock_mode = "none"\n'
    )
    d = Daemon(conf)
    try:
        d.wait_ready()
        dock_file(conf, "a.bin", b"evidence witnessed twice")
        wait_for(lambda: ingests(conf) == 1, 30, d.log)
        mirror = cold / "ledger" / ORIGIN

        def everywhere() -> bool:
            if not caught_up(conf, policy, station):
                return False
            size = size_of(published(conf))
            locked = mirror / "checkpoints" / str(size)
            return locked.exists() and (mirror / "checkpoint").read_text() == published(conf)

        wait_for(everywhere, 60, d.log)
    finally:
        assert d.stop() == 0
        for w in ws:
            w.stop()
    note = published(conf)
    assert cosigned(note, policy, station) == {"w1", "w2"}
    # The locked copy in the cold store carries them too.
    locked = (mirror / "checkpoints" / str(size_of(note))).read_text()
    assert locked == note
    # `custody ledger checkpoint` prints the stored note with the cosignature lines.
    assert run_cli("ledger", "checkpoint", config=conf).stdout == note
    doc = json.loads(run_cli("ledger", "checkpoint", "--json", config=conf).stdout)
    assert doc["size"] == size_of(note) and doc["quorum_met"] is True
    assert sorted(c["witness"] for c in doc["cosignatures"]) == ["w1", "w2"]
    assert all(len(c["key_id"]) == 8 and c["time"] > 1_700_000_000 for c in doc["cosignatures"])
    # Every checkpoint the mirror wrote before the quorum was in is the station's own.
    assert run_cli("ledger", "verify", config=conf).returncode == 0


def test_one_witness_down_capture_goes_on_status_says_so_and_the_quorum_catches_up(
    tmp_path: Path,
) -> None:
    mport = free_port()
    conf, ws, policy, station = setup(tmp_path, f'\n[metrics]\nlisten = "127.0.0.1:{mport}"\n')
    sock = listen(tmp_path / "notify.sock")
    d = Daemon(conf, env={"NOTIFY_SOCKET": str(tmp_path / "notify.sock")})
    try:
        d.wait_ready()
        dock_file(conf, "a.bin", b"first")
        wait_for(lambda: ingests(conf) == 1 and caught_up(conf, policy, station), 30, d.log)
        ws[1].stop()
        down_at = time.time()
        dock_file(conf, "b.bin", b"second, while w2 is down")
        # Capture goes on: recorded and published, cosigned by w1 alone.
        wait_for(lambda: ingests(conf) == 2, 30, d.log)
        wait_for(lambda: size_of(published(conf)) == len(entries(conf)), 30, d.log)
        wait_for(lambda: cosigned(published(conf), policy, station) == {"w1"}, 30, d.log)

        def alarmed() -> dict[str, Any] | None:
            st = status(conf)["witnesses"]
            return st if st["alarm"] else None

        wait_for(lambda: alarmed() is not None, 30, d.log)
        st = alarmed()
        assert st is not None and st["quorum_met"] is False
        assert st["quorum"] == "all of (w1, w2)"
        assert st["unmet_since"] >= down_at - 1
        w1, w2 = st["witnesses"]
        assert (w1["name"], w1["last_status"], w1["failing_since"]) == ("w1", 200, None)
        assert w2["name"] == "w2" and w2["url"] == ws[1].url and w2["last_status"] == "down"
        assert down_at - 1 <= w2["failing_since"] <= time.time()
        assert "cannot connect" in w2["last_error"]
        text = run_cli("status", config=conf).stdout
        assert "WITNESSES: witness quorum unmet since" in text and "(w2 down)" in text
        assert "w2 " + ws[1].url + ": DOWN since" in text
        # The systemd STATUS line and the metrics say it too.
        msgs = drain(sock, 3)
        assert any("witness quorum unmet since" in m and "(w2 down)" in m for m in msgs), msgs
        with urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=5) as r:
            metrics = r.read().decode()
        assert 'custody_witness_up{witness="w2"} 0.0' in metrics
        assert 'custody_witness_up{witness="w1"} 1.0' in metrics
        assert "custody_witness_quorum_met 0.0" in metrics
        assert 'custody_witness_last_ok_timestamp_seconds{witness="w1"}' in metrics
        # w2 comes back: the latest checkpoint gets its cosignature without a new capture.
        before = len(entries(conf))
        ws[1].start()
        wait_for(lambda: caught_up(conf, policy, station), 30, d.log)
        assert len(entries(conf)) == before
        wait_for(lambda: status(conf)["witnesses"]["quorum_met"], 10, d.log)
        st = status(conf)["witnesses"]
        assert not st["alarm"] and st["unmet_since"] is None
        assert st["witnesses"][1]["failing_since"] is None
        assert st["witnesses"][1]["size"] == before
    finally:
        assert d.stop() == 0
        sock.close()
        for w in ws:
            if w.proc is not None:
                w.stop()


def test_a_station_restored_from_an_old_copy_is_refused_by_its_witnesses(
    tmp_path: Path,
) -> None:
    conf, ws, policy, station = setup(tmp_path)
    data = conf.parent
    d = Daemon(conf)
    try:
        d.wait_ready()
        dock_file(conf, "a.bin", b"before the backup")
        wait_for(lambda: ingests(conf) == 1 and caught_up(conf, policy, station), 30, d.log)
    finally:
        assert d.stop() == 0
    backup = tmp_path / "backup"
    for sub in ("state", "ledger"):
        shutil.copytree(data / sub, backup / sub)
    d = Daemon(conf)
    try:
        d.wait_ready()
        dock_file(conf, "b.bin", b"after the backup")
        dock_file(conf, "c.bin", b"after the backup, too")
        wait_for(lambda: ingests(conf) == 3 and caught_up(conf, policy, station), 30, d.log)
    finally:
        assert d.stop() == 0
    seen = size_of(published(conf))
    # The state and ledger folders come back from the old copy; the dock is emptied, and
    # a new file is captured: the station signs a history the witnesses never saw.
    for sub in ("state", "ledger"):
        shutil.rmtree(data / sub)
        shutil.copytree(backup / sub, data / sub)
    shutil.rmtree(data.parent / "dock" / "slot01")
    d = Daemon(conf)
    try:
        d.wait_ready()
        dock_file(conf, "d.bin", b"another history")
        wait_for(lambda: ingests(conf) == 2, 30, d.log)  # capture goes on

        def refused() -> dict[str, Any] | None:
            st = status(conf)["witnesses"]
            return st if all(w["last_status"] == 409 for w in st["witnesses"]) else None

        wait_for(lambda: refused() is not None, 30, d.log)
        time.sleep(2.5)  # a few more rounds (retry_s = 1): still said once
    finally:
        assert d.stop() == 0
        for w in ws:
            w.stop()
    now = size_of(published(conf))
    assert now < seen
    st = refused()
    assert st is not None and st["quorum_met"] is False and st["cosigned_by"] == []
    for w in st["witnesses"]:
        assert w["last_error"] == (
            f"witness {w['name']} has cosigned size {seen} of this log but this station's "
            f"log has only {now}: its state was rolled back or forked"
        )
        assert w["size"] == seen and w["failing_since"] is not None
    ours = d.log.read_bytes()[d.log_start :].decode()
    errors = [ln for ln in ours.splitlines() if " ERROR " in ln]
    for name in ("w1", "w2"):
        assert len([ln for ln in errors if f"witness {name} " in ln]) == 1, errors
    # The witnesses cosigned nothing of the other history.
    assert cosigned(published(conf), policy, station) == set()


def test_custody_ingest_gathers_the_cosignatures_before_it_mirrors_the_ledger(
    tmp_path: Path,
) -> None:
    cold = tmp_path / "cold"
    conf, ws, policy, station = setup(
        tmp_path, f'\n[store]\nkind = "local"\npath = "{cold}"\nlock_mode = "none"\n'
    )
    try:
        dock_file(conf, "a.bin", b"ingested by hand")
        out = json.loads(
            run_cli(
                "ingest", str(tmp_path / "dock"), "--settle-ms", "0", "--json", config=conf
            ).stdout
        )
    finally:
        for w in ws:
            w.stop()
    assert out["captured"] == 1 and out["witnesses"]["quorum_met"] is True
    note = published(conf)
    assert size_of(note) == len(entries(conf))
    assert cosigned(note, policy, station) == {"w1", "w2"}
    mirror = cold / "ledger" / ORIGIN
    assert (mirror / "checkpoints" / str(size_of(note))).read_text() == note
    assert (mirror / "checkpoint").read_text() == note


def test_an_export_verifies_with_the_policy_and_not_with_a_witness_that_never_cosigned(
    tmp_path: Path,
) -> None:
    """The export's own checkpoint is new; the export asks the witnesses before it writes
    its proofs, so the package verifies under the station's policy (quorum 2), and fails
    under a policy that also requires a third witness, which never saw this station."""
    conf, ws, policy, station = setup(tmp_path)
    try:
        dock_file(conf, "a.bin", b"evidence for a court")
        run_cli("ingest", str(tmp_path / "dock"), "--settle-ms", "0", config=conf)
        sha = next(e["sha256"] for e in entries(conf) if e["type"] == "ingest")
        out = tmp_path / "bag"
        res = json.loads(
            run_cli(
                "export", sha, "--out", str(out), "--purpose", "court", "--json", config=conf
            ).stdout
        )
    finally:
        for w in ws:
            w.stop()
    third = Witness(tmp_path, "w.test/three", station.vkey())  # never asked
    third.stop()
    assert res["witness_quorum_met"] is True
    assert cosigned((out / "custody" / "checkpoint").read_text(), policy, station) == {
        "w1",
        "w2",
    }
    policy_file = conf.parent / "witnesses.policy"
    ok = run_cli(
        "verify", str(out), "--policy", str(policy_file), "--json", config=conf, check=False
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert json.loads(ok.stdout)["quorum"]["met"] is True
    ok = subprocess.run(
        [sys.executable, "-m", "verify", "bag", str(out), "--policy", str(policy_file)],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "trusted:" in ok.stdout
    strict = tmp_path / "three.policy"
    strict.write_text(
        policy_file.read_text().replace("group both all w1 w2", f"witness w3 {third.vkey}")
        + "group all3 all w1 w2 w3\nquorum all3\n"
    )
    strict.write_text(strict.read_text().replace("quorum both\n", ""))
    bad = run_cli("verify", str(out), "--policy", str(strict), config=conf, check=False)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "w3" in bad.stdout + bad.stderr
    # The station's own ledger, checked under each policy the same way.
    good = run_cli("ledger", "verify", "--policy", str(policy_file), "--json", config=conf)
    assert json.loads(good.stdout)["quorum"]["met"] is True
    bad = run_cli("ledger", "verify", "--policy", str(strict), config=conf, check=False)
    assert bad.returncode == 1 and "w3 (key id" in bad.stdout, bad.stdout


def test_witnesses_keep_accepting_the_station_across_a_key_rotation(tmp_path: Path) -> None:
    """Witnesses that know only the first key cosign the checkpoints signed during the
    rotation's overlap (the previous key co-signs); once a witness operator adds the new
    key, it cosigns checkpoints signed by the new key alone."""
    conf, ws, policy, station = setup(tmp_path)
    try:
        run_cli("note", "before", config=conf)
        run_cli("ingest", str(tmp_path / "dock"), "--settle-ms", "0", config=conf)
        assert cosigned(published(conf), policy, station) == {"w1", "w2"}
        rot = json.loads(run_cli("key", "rotate", "--json", config=conf).stdout)
        new = Verifier.parse(rot["new_vkey"])
        run_cli("note", "after the rotation", config=conf)
        run_cli("ingest", str(tmp_path / "dock"), "--settle-ms", "0", config=conf)
        note = published(conf)
        assert size_of(note) == len(entries(conf))
        assert cosigned(note, policy, new) == {"w1", "w2"}
        # The overlap ends; the witness operators add the new key; the station goes on.
        for w in ws:
            run_cli("witness", "--data", str(w.data), "add-log", "--vkey", new.vkey())
        (conf.parent / "keys" / "previous.until").write_text("0\n")
        run_cli("note", "new key only", config=conf)
        run_cli("ingest", str(tmp_path / "dock"), "--settle-ms", "0", config=conf)
        note = published(conf)
        assert note.count("\u2014 ") == 3  # the new key and two witnesses
        assert cosigned(note, policy, new) == {"w1", "w2"}
    finally:
        for w in ws:
            w.stop()
    v0 = station.vkey()
    r = run_cli("ledger", "verify", "--vkey", v0, "--json", config=conf, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
