"""The station's witness client against stand-in witnesses over real HTTP on loopback.

The stand-in is a small threaded HTTP server around the witness protocol's pure core
(``witness.protocol.parse_request`` and ``decide``), with a switch to answer what a
broken or hostile witness would. The real server is exercised through the daemon in
tests/integration/test_witnessed_station.py.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from archive.local import LocalFolderStore
from archive.replicate import Replicator
from archive.settings import ReplicationSettings
from custody import config as cfg
from custody.errors import ConfigError
from ledger.cosignature import Cosigner, verify_cosignatures
from ledger.log import Ledger
from ledger.note import Signer, Verifier
from ledger.policy import check_checkpoint, parse_policy
from witness.client import (
    ClientSettings,
    Reply,
    WitnessClient,
    WitnessPolicyError,
    alarm_line,
    judge,
    load_policy,
)
from witness.protocol import LogState, decide, format_request, parse_request

ORIGIN = "custody.test/witness-client/dock-01"
SIGNER = Signer(ORIGIN, bytes(range(32)))


class StandIn:
    """A witness on a free loopback port. ``mode``: ``ok`` (the protocol), or a fault."""

    def __init__(self, name: str, knows: list[Verifier], port: int = 0) -> None:
        self.cosigner = Cosigner(name, hashlib.sha256(name.encode()).digest())
        self.knows = knows
        self.state: dict[str, LogState] = {v.name: LogState(v.name) for v in knows}
        self.lock = threading.Lock()
        self.mode = "ok"
        self.requests: list[bytes] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status, ctype, out = outer.answer(self.path, body)
                self.send_response(status)
                if ctype:
                    self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def answer(self, path: str, body: bytes) -> tuple[int, str | None, bytes]:
        self.requests.append(body)
        if path != "/add-checkpoint":
            return 404, None, b"not found\n"
        if self.mode == "foreign-line":
            other = Cosigner(self.cosigner.name, bytes([99] * 32))
            req = parse_request(body)
            return 200, "text/plain", other.cosign(req.note.text, 1_700_000_000).line().encode()
        if self.mode == "bad-signature":
            req = parse_request(body)
            line = self.cosigner.cosign(req.note.text + "x\n", 1_700_000_000).line()
            return 200, "text/plain", line.encode()
        with self.lock:
            req = parse_request(body)
            ans = decide(
                req,
                self.state.get(req.checkpoint.origin),
                self.knows,
                self.cosigner,
                1_700_000_000,
            )
            if ans.new_state is not None:
                self.state[req.checkpoint.origin] = ans.new_state
        return ans.status, ans.content_type, ans.body

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def witnesses() -> Iterator[list[StandIn]]:
    ws = [StandIn("w.test/one", [SIGNER.verifier()]), StandIn("w.test/two", [SIGNER.verifier()])]
    yield ws
    for w in ws:
        w.close()


def policy_text(ws: Sequence[StandIn | tuple[Cosigner, str]], quorum: str = "both") -> str:
    lines = [f"log {SIGNER.verifier().vkey()}"]
    for i, w in enumerate(ws, 1):
        c, url = (w.cosigner, w.url) if isinstance(w, StandIn) else (w[0], w[1])
        lines.append(f"witness w{i} {c.verifier().vkey()} {url}")
    lines.append("group both all " + " ".join(f"w{i}" for i in range(1, len(ws) + 1)))
    lines.append(f"quorum {quorum}")
    return "\n".join(lines) + "\n"


class Clock:
    def __init__(self) -> None:
        import time

        self.t = time.time()

    def __call__(self) -> float:
        return self.t


def make(
    tmp: Path, ws: list[StandIn], clock: Callable[[], float] | None = None, **settings: float
) -> tuple[Ledger, WitnessClient]:
    led = Ledger(tmp / "ledger", tmp / "state", ORIGIN, SIGNER)
    led.append("note", {"text": "first"})
    led.integrate()
    opts: dict[str, float] = {"timeout_s": 2, "publish_wait_s": 30, "retry_s": 10}
    opts.update(settings)
    client = WitnessClient(
        led,
        parse_policy(policy_text(ws)),
        tmp / "policy",
        [SIGNER.verifier()],
        ClientSettings(**opts),
        **({"clock": clock} if clock else {}),
    )
    return led, client


def cosigners(led: Ledger, ws: list[StandIn]) -> set[str]:
    rec = led.latest()
    assert rec is not None
    return {v.name for v, _ in verify_cosignatures(rec.note, [w.cosigner.verifier() for w in ws])}


def test_both_witnesses_cosign_the_latest_checkpoint_which_is_then_published(
    tmp_path: Path, witnesses: list[StandIn]
) -> None:
    led, client = make(tmp_path, witnesses)
    try:
        assert led.witness_settled() == 0  # nothing reaches the locked mirror before a turn
        client.step()
        rec = led.latest()
        assert rec is not None and rec.size == 1  # one note
        assert cosigners(led, witnesses) == {"w.test/one", "w.test/two"}
        # The published checkpoint carries them, and still verifies as the station's.
        published = (tmp_path / "ledger" / "checkpoint").read_text()
        assert published == rec.note
        pol = parse_policy(policy_text(witnesses))
        assert check_checkpoint(published, pol).satisfied
        assert led.witness_settled() == rec.size
        st = client.status()
        assert st["quorum_met"] and not st["alarm"] and st["unmet_since"] is None
        assert [w["size"] for w in st["witnesses"]] == [rec.size, rec.size]
        assert [w["last_status"] for w in st["witnesses"]] == [200, 200]
        # A new checkpoint: the witnesses get a consistency proof from what they cosigned.
        led.append_entries([("note", {"text": f"n{i}"}) for i in range(40)])
        led.integrate()
        client.step()
        assert cosigners(led, witnesses) == {"w.test/one", "w.test/two"}
        body = witnesses[0].requests[-1].decode()
        assert body.startswith(f"old {rec.size}\n") and body.count("\n\n") == 2
    finally:
        client.close()
        led.close()


def test_cosign_now_returns_the_latest_checkpoint_with_what_came_in_time(
    tmp_path: Path, witnesses: list[StandIn]
) -> None:
    led, client = make(tmp_path, witnesses)
    try:
        rec = client.cosign_now(5)
        assert rec is not None and rec == led.latest()
        assert cosigners(led, witnesses) == {"w.test/one", "w.test/two"}
        witnesses[1].close()
        led.append("note", {"text": "w2 is away"})
        led.integrate()
        rec = client.cosign_now(0.5)  # gives up after the wait, with w1's cosignature
        assert rec is not None and rec.size == 2 and "— w.test/one" in rec.note
        assert client.requests >= 4  # w2 asked again within the wait, not after retry_s
    finally:
        client.close()
        led.close()


def test_request_body_is_the_spec_layout() -> None:
    note = "o\n1\nAAAA\n\n— o AAAA\n"
    assert format_request(0, [], note) == b"old 0\n\n" + note.encode()
    assert format_request(3, [b"\x01" * 32], note).startswith(
        b"old 3\nAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\n\n"
    )


def test_idle_while_the_latest_checkpoint_has_the_quorum(
    tmp_path: Path, witnesses: list[StandIn]
) -> None:
    led, client = make(tmp_path, witnesses)
    try:
        client.step()
        sent = client.requests
        for _ in range(5):
            client.step()
        assert client.requests == sent == 2
    finally:
        client.close()
        led.close()


def test_a_witness_at_another_size_is_asked_again_at_once_with_the_right_proof(
    tmp_path: Path, witnesses: list[StandIn]
) -> None:
    led, client = make(tmp_path, witnesses)
    try:
        # The witness cosigned size 1 through someone else (another station process, a
        # restored state database): the client believes 0 and learns 1 from the 409.
        rec = led.latest()
        assert rec is not None
        witnesses[0].answer("/add-checkpoint", format_request(0, [], rec.note))
        led.append_entries([("note", {"text": f"n{i}"}) for i in range(10)])
        led.integrate()
        client.step()
        assert cosigners(led, witnesses) == {"w.test/one", "w.test/two"}
        sent = [b.split(b"\n", 1)[0] for b in witnesses[0].requests]
        assert sent == [b"old 0", b"old 0", b"old 1"]
    finally:
        client.close()
        led.close()


def test_a_witness_down_is_retried_the_mirror_waits_at_most_publish_wait_and_alarms(
    tmp_path: Path, witnesses: list[StandIn], caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    led, client = make(tmp_path, witnesses, clock, publish_wait_s=30, alarm_after_s=300, retry_s=10)
    down = witnesses[1]
    port = down.port
    down.close()
    try:
        with caplog.at_level(logging.INFO, "custody.witness"):
            client.step()
            rec = led.latest()
            assert rec is not None
            assert cosigners(led, witnesses) == {"w.test/one"}
            # Capture goes on (the client never blocks appends), the mirror holds back.
            st = client.status()
            w2 = st["witnesses"][1]
            assert w2["last_status"] == "down" and w2["failing_since"] == clock.t
            assert "cannot connect" in w2["last_error"] and w2["name"] == "w2"
            assert not st["quorum_met"] and not st["alarm"]
            assert led.witness_settled() == 0 and led.publishable() is None
            # Retried every retry_s, not every turn.
            client.step()
            assert client.requests == 2
            clock.t += 31
            client.step()
            assert client.requests == 3
            assert led.witness_settled() == rec.size  # published uncosigned after the wait
            assert "without the witness quorum" in caplog.text
            clock.t += 300
            st = client.status()
            assert st["alarm"] and st["unmet_since"] is not None
            assert alarm_line(st).endswith("(w2 down)")
            assert alarm_line(st).startswith("witness quorum unmet since ")
            client.step()
            client.step()
            alarms = [r for r in caplog.records if "quorum unmet since" in r.getMessage()]
            assert len(alarms) == 1 and alarms[0].levelname == "WARNING"  # said once
        downs = [r for r in caplog.records if "w2" in r.getMessage() and "cannot" in r.getMessage()]
        assert len(downs) == 1 and downs[0].levelname == "WARNING"  # said once
        # It comes back on the same port: the next turn catches the quorum up.
        witnesses[1] = StandIn("w.test/two", [SIGNER.verifier()], port=port)
        clock.t += 11
        client.step()
        assert cosigners(led, witnesses) == {"w.test/one", "w.test/two"}
        st = client.status()
        assert st["quorum_met"] and not st["alarm"]
        assert st["witnesses"][1]["failing_since"] is None
    finally:
        client.close()
        led.close()


def test_a_witness_ahead_of_the_station_is_one_error_naming_it(
    tmp_path: Path, witnesses: list[StandIn], caplog: pytest.LogCaptureFixture
) -> None:
    led, client = make(tmp_path, witnesses, retry_s=0.01)
    try:
        for w in witnesses:
            w.state[ORIGIN] = LogState(ORIGIN, 1000, b"\x00" * 32)
        with caplog.at_level(logging.INFO, "custody.witness"):
            for _ in range(3):
                client.step()
                import time

                time.sleep(0.02)
        errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
        assert sorted(errors) == [
            "witness w1 has cosigned size 1000 of this log but this station's log has only "
            "1: its state was rolled back or forked",
            "witness w2 has cosigned size 1000 of this log but this station's log has only "
            "1: its state was rolled back or forked",
        ]
        st = client.status()
        assert [w["last_status"] for w in st["witnesses"]] == [409, 409]
        assert [w["size"] for w in st["witnesses"]] == [1000, 1000]
        assert not st["quorum_met"]
        # Asked again with old 0 (never old > new, which is a 400).
        assert all(b.startswith(b"old 0\n") for b in witnesses[0].requests)
    finally:
        client.close()
        led.close()


def test_a_witness_that_does_not_know_the_station_names_the_add_log_command(
    tmp_path: Path, witnesses: list[StandIn]
) -> None:
    witnesses[0].state.clear()
    witnesses[1].knows = [Signer("custody.test/other", bytes(32)).verifier()]
    led, client = make(tmp_path, witnesses)
    try:
        client.step()
        st = client.status()
        e1, e2 = (w["last_error"] for w in st["witnesses"])
        assert st["witnesses"][0]["last_status"] == 404 and "origin" in e1
        assert st["witnesses"][1]["last_status"] == 403 and "key" in e2
        for e in (e1, e2):
            assert e.endswith(
                f"custody witness --data WDIR add-log --vkey {SIGNER.verifier().vkey()}"
            )
    finally:
        client.close()
        led.close()


@pytest.mark.parametrize("mode", ["foreign-line", "bad-signature"])
def test_a_cosignature_that_does_not_verify_is_never_added(
    tmp_path: Path, witnesses: list[StandIn], mode: str
) -> None:
    witnesses[0].mode = mode
    led, client = make(tmp_path, witnesses)
    try:
        client.step()
        rec = led.latest()
        assert rec is not None
        assert cosigners(led, witnesses) == {"w.test/two"}
        assert rec.note.count("— w.test/one") == 0
        st = client.status()
        assert "w1" in st["witnesses"][0]["last_error"]
        assert st["witnesses"][0]["last_status"] == 200 and not st["quorum_met"]
    finally:
        client.close()
        led.close()


def test_judge_a_fork_at_the_same_size_and_a_bad_proof() -> None:
    pol = parse_policy(policy_text([(Cosigner("w.test/x", bytes(32)), "http://127.0.0.1:9")]))
    w = pol.witnesses[0]
    fork = judge(w, Reply(409, b"same size\n", "text/plain"), 5, 5, "", "v")
    assert fork.kind == "fork" and "w1" in fork.error
    bad = judge(w, Reply(422, b"", None), 3, 5, "", "v")
    assert bad.kind == "bad_proof" and "from size 3 to 5" in bad.error
    retry = judge(w, Reply(409, b"4\n", "text/x.tlog.size"), 3, 5, "", "v")
    assert retry.kind == "retry" and retry.size == 4
    busy = judge(w, Reply(429, b"slow down\n", "text/plain"), 3, 5, "", "v")
    assert busy.kind == "error" and busy.error == "witness w1 answered 429: slow down"


def test_the_bucket_checkpoint_gains_cosignatures_that_came_after_it_was_mirrored(
    tmp_path: Path, witnesses: list[StandIn]
) -> None:
    led, client = make(tmp_path, witnesses, publish_wait_s=0)
    witnesses[1].mode = "foreign-line"  # w2 gives nothing usable at first
    store = LocalFolderStore(tmp_path / "cold")
    rep = Replicator(led, store, lambda s: tmp_path / s, ReplicationSettings(lock_mode="none"))
    try:
        client.step()  # w1 only; published at once (publish_wait_s = 0)
        rec = led.latest()
        assert rec is not None and led.witness_settled() == rec.size
        assert rep.sync_ledger() == rec.size
        cp = tmp_path / "cold" / "ledger" / ORIGIN / "checkpoint"
        locked = tmp_path / "cold" / "ledger" / ORIGIN / "checkpoints" / str(rec.size)
        assert "— w.test/one" in cp.read_text() and "— w.test/two" not in cp.read_text()
        witnesses[1].mode = "ok"
        client._next_try.clear()
        client.step()
        assert cosigners(led, witnesses) == {"w.test/one", "w.test/two"}
        rep.sync_ledger()
        assert cp.read_text() == led.latest().note  # type: ignore[union-attr]
        assert "— w.test/two" not in locked.read_text()  # write-once: as it was mirrored
    finally:
        rep.close()
        client.close()
        led.close()


def test_config_witness_section(tmp_path: Path) -> None:
    conf = tmp_path / "custody.toml"
    base = f'data_dir = "{tmp_path}"\norigin = "custody.test/c"\n'
    conf.write_text(base)
    c = cfg.load(conf)
    assert c.witness_policy is None and c.witness.publish_wait_s == 30
    conf.write_text(base + '[witness]\npolicy = "w/policy"\nretry_s = 3\npublish_wait_s = 0\n')
    c = cfg.load(conf)
    assert c.witness_policy == tmp_path / "w" / "policy"
    assert (c.witness.timeout_s, c.witness.retry_s, c.witness.alarm_after_s) == (5, 3, 300)
    conf.write_text(base + "[witness]\ntimeout = 3\n")
    with pytest.raises(ConfigError, match=r"witness\.timeout'"):
        cfg.load(conf)
    conf.write_text(base + "[witness]\ntimeout_s = 0\n")
    with pytest.raises(ConfigError, match=r"witness\.timeout_s"):
        cfg.load(conf)


def test_load_policy_says_what_is_wrong(tmp_path: Path) -> None:
    p = tmp_path / "policy"
    with pytest.raises(WitnessPolicyError, match="does not exist"):
        load_policy(p)
    p.write_text("quorum nobody\n")
    with pytest.raises(WitnessPolicyError, match="policy line 1"):
        load_policy(p)
    w = Cosigner("w.test/a", bytes(32)).verifier().vkey()
    p.write_text(f"witness a {w}\nquorum a\n")
    with pytest.raises(WitnessPolicyError, match="no witness line has a URL"):
        load_policy(p)
