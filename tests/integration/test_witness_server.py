"""The witness server for real: `custody witness serve` in a subprocess on a free
loopback port, spoken to over HTTP. Every status of the C2SP tlog-witness v1.0.0
table, bad input, the compare-and-set under racing clients, slow clients, the rate
limit, persistence and a clean stop."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nacl.exceptions
import nacl.signing
import pytest

from ledger.checkpoint import Checkpoint
from ledger.note import Signer
from witness.protocol import format_request, origin_id

from ..conftest import run_cli
from ..unit.witness.tlog import MemoryLog

ORIGIN = "custody.test/unit/dock-01"
WITNESS_NAME = "witness.test/w1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Reply:
    status: int
    content_type: str | None
    body: bytes
    headers: dict[str, str]


@dataclass
class Witness:
    wdir: Path
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    def connect(self, timeout: float = 10) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def post(
        self,
        body: bytes,
        path: str = "/add-checkpoint",
        method: str = "POST",
        conn: http.client.HTTPConnection | None = None,
    ) -> Reply:
        c = conn or self.connect()
        try:
            c.request(method, path, body=body)
            r = c.getresponse()
            data = r.read()
            return Reply(
                r.status,
                r.getheader("Content-Type"),
                data,
                {k.lower(): v for k, v in r.getheaders()},
            )
        finally:
            if conn is None:
                c.close()

    def stored(self) -> str | None:
        """The latest cosigned checkpoint, from the monitoring endpoint."""
        r = self.post(b"", path=f"/{origin_id(ORIGIN)}/checkpoint", method="GET")
        return r.body.decode() if r.status == 200 else None

    def listing(self) -> dict[str, dict[str, object]]:
        out = json.loads(run_cli("witness", "--data", str(self.wdir), "list", "--json").stdout)
        return {entry["origin"]: entry for entry in out["logs"]}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=20)


def raw_exchange(port: int, head: bytes, body: bytes = b"") -> bytes:
    """Send a request by hand; what came back (the server may close early, before all
    of the body is sent: then what it said before closing, or nothing)."""
    got = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        try:
            s.sendall(head)
            if head.endswith(b"Expect: 100-continue\r\n\r\n"):
                got = s.recv(4096)
                if not got.startswith(b"HTTP/1.1 100 "):
                    return got
                got = b""
            s.sendall(body)
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            while chunk := s.recv(65536):
                got += chunk
        except ConnectionResetError:
            pass
    return got


def init_witness(tmp: Path, *logs: MemoryLog) -> Path:
    wdir = tmp / "witness"
    run_cli("witness", "init", "--data", str(wdir), "--name", WITNESS_NAME)
    for log in logs:
        run_cli("witness", "--data", str(wdir), "add-log", "--vkey", log.vkey)
    return wdir


def start(wdir: Path, *extra: str) -> Witness:
    port = free_port()
    log_path = wdir.parent / f"serve-{port}.log"
    cmd = [sys.executable, "-m", "custody", "witness", "--data", str(wdir), "serve"]
    proc = subprocess.Popen(
        [*cmd, "--listen", f"127.0.0.1:{port}", *extra],
        stdout=subprocess.DEVNULL,
        stderr=log_path.open("wb"),
    )
    w = Witness(wdir, port, proc, log_path)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"witness exited {proc.returncode}: {w.log()}"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return w
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"witness did not listen: {w.log()}")


@pytest.fixture
def log() -> MemoryLog:
    return MemoryLog(ORIGIN).grow_to(200)


@pytest.fixture
def witness(tmp_path: Path, log: MemoryLog) -> Iterator[Witness]:
    w = start(init_witness(tmp_path, log), "--rate", "0", "--body-timeout", "2")
    yield w
    w.proc.kill() if w.proc.poll() is None else None
    w.proc.wait()


def test_every_status_of_the_table_over_http(witness: Witness, log: MemoryLog) -> None:
    # 200: the first checkpoint, from size 0.
    r = witness.post(log.request(0, 10))
    assert r.status == 200, r
    assert r.content_type == "text/plain; charset=utf-8"
    assert re.fullmatch(rb"\xe2\x80\x94 witness\.test/w1 [A-Za-z0-9+/=]{104}\n", r.body), r.body
    first = witness.stored()
    assert first == log.checkpoint(10) + r.body.decode()

    # 409 with the size: a stale old size.
    r = witness.post(log.request(5, 20))
    assert (r.status, r.content_type, r.body) == (409, "text/x.tlog.size", b"10\n")
    # 409 without a size: the same size with another root (a fork).
    fork = MemoryLog(ORIGIN, log.signer, seed="fork")
    r = witness.post(fork.request(10, 10))
    assert r.status == 409 and r.content_type != "text/x.tlog.size", r
    # 422: a bad consistency proof, and a fork that grew.
    proof = log.proof(10, 20)
    proof[-1] = hashlib.sha256(b"not it").digest()
    r = witness.post(format_request(10, proof, log.checkpoint(20)))
    assert r.status == 422, r
    assert witness.post(fork.request(10, 20)).status == 422
    # 404: an origin the witness does not follow.
    stranger = MemoryLog("custody.test/unit/dock-99").grow_to(5)
    assert witness.post(stranger.request(0, 5)).status == 404
    # 403: signed by a foreign key only (same name, another key).
    foreign = MemoryLog(ORIGIN, Signer.generate(ORIGIN)).grow_to(20)
    assert witness.post(foreign.request(10, 20)).status == 403
    # 400: old larger than the checkpoint's size.
    assert witness.post(format_request(15, [], log.checkpoint(12))).status == 400
    # 413: a body over the limit.
    r = witness.post(b"old 0\n" + b"A" * 70_000)
    assert r.status == 413, r
    # 405: add-checkpoint is POST only.
    assert witness.post(b"", method="GET").status == 405
    assert witness.post(log.request(10, 20), method="PUT").status == 405
    # Nothing above changed the state.
    assert witness.stored() == first
    assert witness.listing()[ORIGIN]["size"] == 10

    # 200 again with the right old size and proof; the stored size moves on.
    assert witness.post(log.request(10, 20)).status == 200
    assert witness.post(log.request(20, 20)).status == 200  # same checkpoint again
    assert witness.listing()[ORIGIN]["size"] == 20

    # One log line per request, with its status.
    lines = [ln for ln in witness.log().splitlines() if " /add-checkpoint " in ln]
    statuses = [int(re.search(r"/add-checkpoint (\d{3}) ", ln).group(1)) for ln in lines]  # type: ignore[union-attr]
    assert statuses == [200, 409, 409, 422, 422, 404, 403, 400, 413, 405, 405, 200, 200]


def test_bad_input_is_answered_and_changes_nothing(witness: Witness, log: MemoryLog) -> None:
    assert witness.post(log.request(0, 10)).status == 200
    before = witness.stored()
    h = base64.b64encode(bytes(32))
    cp = log.checkpoint(20).encode()
    bodies = {
        "garbage": os.urandom(5000),
        "empty": b"",
        "non-UTF-8": log.request(10, 20).replace(ORIGIN.encode(), b"custody.test/\xff\xfe"),
        "leading zeros": log.request(10, 20).replace(b"old 10\n", b"old 010\n"),
        "64 proof lines": b"old 10\n" + (h + b"\n") * 64 + b"\n" + cp,
        "bad base64": b"old 10\n" + b"!!notbase64!!\n\n" + cp,
        "missing blank line": b"old 10\n" + cp,
        "huge line": b"old 10\n" + b"A" * 60_000 + b"\n\n" + cp,
        "NUL bytes": b"old 10\n\n" + cp.replace(b"\n20\n", b"\n2\x000\n"),
        "no newline at end": log.request(10, 20)[:-1],
    }
    for what, body in bodies.items():
        r = witness.post(body)
        assert r.status == 400, (what, r)
    # 10**5 proof lines: over the body limit, refused without reading it all. A client
    # that asks first (Expect: 100-continue) gets the 413 before sending its body; one that
    # sends it anyway gets the 413 or, if the close overtook it, a closed connection.
    huge = b"old 10\n" + (h + b"\n") * 100_000 + b"\n" + cp
    sized = f"POST /add-checkpoint HTTP/1.1\r\nHost: w\r\nContent-Length: {len(huge)}\r\n"
    got = raw_exchange(witness.port, sized.encode() + b"Expect: 100-continue\r\n\r\n", huge)
    assert got.startswith(b"HTTP/1.1 413 "), got[:200]
    got = raw_exchange(witness.port, sized.encode() + b"\r\n", huge)
    assert got == b"" or got.startswith(b"HTTP/1.1 413 "), got[:200]
    # Chunked, with no length declared: counted as it comes, refused past the limit.
    head = b"POST /add-checkpoint HTTP/1.1\r\nHost: w\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(c), c)
        for c in [huge[i : i + 8192] for i in range(0, len(huge), 8192)]
    )
    got = raw_exchange(witness.port, head, chunks + b"0\r\n\r\n")
    assert got == b"" or got.startswith(b"HTTP/1.1 413 "), got[:200]
    assert witness.stored() == before
    assert witness.listing()[ORIGIN]["size"] == 10
    assert witness.proc.poll() is None and "Traceback" not in witness.log()
    assert witness.post(log.request(10, 20)).status == 200


def _cosignature_check_from_the_spec(vkey: str, checkpoint_body: bytes, line: bytes) -> int:
    """tlog-cosignature v1.0.1, written here from the spec text alone (hashlib and
    PyNaCl): returns the timestamp when the line is a valid cosignature of the body."""
    name, key_hex, key_b64 = vkey.split("+", 2)
    key = base64.b64decode(key_b64, validate=True)
    assert len(key) == 33 and key[0] == 0x04, "Ed25519 cosignature/v1 key type 0x04"
    public = key[1:]
    key_id = hashlib.sha256(name.encode() + b"\n" + b"\x04" + public).digest()[:4]
    assert key_id.hex() == key_hex
    assert line.startswith("\u2014 ".encode()) and line.endswith(b"\n")
    line_name, sig_b64 = line[len("\u2014 ".encode()) : -1].decode().rsplit(" ", 1)
    assert line_name == name
    raw = base64.b64decode(sig_b64, validate=True)
    assert len(raw) == 4 + 8 + 64 and raw[:4] == key_id
    timestamp = int(struct.unpack(">Q", raw[4:12])[0])
    assert 0 < timestamp <= 2**63 - 1
    message = b"cosignature/v1\ntime " + str(timestamp).encode() + b"\n" + checkpoint_body
    nacl.signing.VerifyKey(public).verify(message, raw[12:])
    return timestamp


def test_cosignatures_verify_with_a_check_written_from_the_spec(
    witness: Witness, log: MemoryLog
) -> None:
    vkey = run_cli("witness", "--data", str(witness.wdir), "vkey").stdout.strip()
    before = int(time.time())
    r = witness.post(log.request(0, 33))
    assert r.status == 200
    body = Checkpoint(ORIGIN, 33, log.root(33)).body().encode()
    timestamp = _cosignature_check_from_the_spec(vkey, body, r.body)
    assert before - 1 <= timestamp <= time.time() + 1
    # The check is a real one: another body, or a flipped bit, does not verify.
    other = Checkpoint(ORIGIN, 34, log.root(34)).body().encode()
    with pytest.raises(nacl.exceptions.BadSignatureError):
        _cosignature_check_from_the_spec(vkey, other, r.body)


@pytest.mark.parametrize("workers", [1, 2])
def test_racing_clients_one_wins_one_conflicts(
    tmp_path: Path, log: MemoryLog, workers: int
) -> None:
    """Two clients submit different checkpoints from the same old size at the same
    moment, many times: the compare-and-set lets exactly one through each round."""
    w = start(init_witness(tmp_path, log), "--rate", "0", "--workers", str(workers))
    try:
        assert w.post(log.request(0, 1)).status == 200
        size, rounds = 1, 40
        barrier = threading.Barrier(2)
        conns = [w.connect(), w.connect()]
        for _ in range(rounds):
            bodies = [log.request(size, size + 1), log.request(size, size + 2)]
            replies: list[Reply | None] = [None, None]

            def race(
                i: int, bodies: list[bytes] = bodies, replies: list[Reply | None] = replies
            ) -> None:
                barrier.wait()
                replies[i] = w.post(bodies[i], conn=conns[i])

            threads = [threading.Thread(target=race, args=(i,)) for i in (0, 1)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            got = sorted((r.status, i) for i, r in enumerate(replies) if r is not None)
            assert [s for s, _ in got] == [200, 409], replies
            winner = got[0][1]
            new_size = size + 1 + winner
            loser = replies[1 - winner]
            assert loser is not None and loser.body == f"{new_size}\n".encode()
            assert loser.content_type == "text/x.tlog.size"
            size = new_size
        state = w.listing()[ORIGIN]
        assert state["size"] == size
        assert state["root"] == base64.b64encode(log.root(size)).decode()
        assert w.stored() is not None and w.stored().startswith(log.checkpoint(size))  # type: ignore[union-attr]
    finally:
        assert w.stop() == 0


def test_a_slow_client_times_out_and_others_are_served(witness: Witness, log: MemoryLog) -> None:
    body = log.request(0, 10)
    slow = socket.create_connection(("127.0.0.1", witness.port))
    slow.sendall(
        b"POST /add-checkpoint HTTP/1.1\r\nHost: w\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body[: len(body) // 2]
    )
    # Headers only, then silence: another kind of slow client.
    stalled = socket.create_connection(("127.0.0.1", witness.port))
    stalled.sendall(b"POST /add-checkpoint HTTP/1.1\r\nHost: w\r\n")
    started = time.monotonic()
    assert witness.post(body).status == 200  # served while the slow ones hang
    assert time.monotonic() - started < 1.5
    slow.settimeout(10)
    answer = b""
    while chunk := slow.recv(4096):
        answer += chunk
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408 "), answer
    assert time.monotonic() - started < 8
    slow.close()
    stalled.close()
    assert witness.post(log.request(10, 12)).status == 200
    assert witness.proc.poll() is None and "Traceback" not in witness.log()
    assert witness.listing()[ORIGIN]["size"] == 12


def test_the_rate_limit_answers_429_with_retry_after(tmp_path: Path, log: MemoryLog) -> None:
    w = start(init_witness(tmp_path, log), "--rate", "1", "--burst", "3")
    try:
        statuses = [w.post(log.request(0, 0)) for _ in range(5)]
        assert [r.status for r in statuses[:3]] == [200, 200, 200]
        limited = statuses[3]
        assert limited.status == 429 and int(limited.headers["retry-after"]) >= 1
        time.sleep(1.1)
        assert w.post(log.request(0, 0)).status == 200
    finally:
        assert w.stop() == 0


def test_a_cosigned_checkpoint_is_on_disk_before_the_answer(tmp_path: Path, log: MemoryLog) -> None:
    w = start(init_witness(tmp_path, log), "--rate", "0")
    assert w.post(log.request(0, 50)).status == 200
    w.proc.kill()  # no clean shutdown: what was answered must already be stored
    w.proc.wait()
    assert w.listing()[ORIGIN]["size"] == 50
    again = start(w.wdir, "--rate", "0")
    try:
        r = again.post(log.request(0, 60))
        assert (r.status, r.body) == (409, b"50\n")
        assert again.post(log.request(50, 60)).status == 200
    finally:
        assert again.stop() == 0


def test_sigterm_stops_cleanly(witness: Witness, log: MemoryLog) -> None:
    conn = witness.connect()
    assert witness.post(log.request(0, 3), conn=conn).status == 200  # a kept-alive connection
    assert witness.stop() == 0
    assert "Traceback" not in witness.log()


def test_a_rotated_station_key_keeps_the_state(witness: Witness, log: MemoryLog) -> None:
    assert witness.post(log.request(0, 10)).status == 200
    rotated = MemoryLog(ORIGIN, Signer.generate(ORIGIN)).grow_to(200)  # same leaves
    # Not trusted yet: 403.
    assert witness.post(rotated.request(10, 20)).status == 403
    out = run_cli("witness", "--data", str(witness.wdir), "add-log", "--vkey", rotated.vkey)
    assert f"following {ORIGIN}" in out.stdout
    # The server reads the keys per request: the new key is trusted at once,
    # from the size the witness already had.
    r = witness.post(rotated.request(0, 20))
    assert (r.status, r.body) == (409, b"10\n")
    assert witness.post(rotated.request(10, 20)).status == 200
    entry = witness.listing()[ORIGIN]
    assert entry["size"] == 20 and entry["vkeys"] == [log.vkey, rotated.vkey]


def test_witness_commands(tmp_path: Path, log: MemoryLog) -> None:
    wdir = tmp_path / "w"
    out = run_cli("witness", "init", "--data", str(wdir), "--name", WITNESS_NAME).stdout
    vkey = out.strip()
    assert re.fullmatch(r"witness\.test/w1\+[0-9a-f]{8}\+[A-Za-z0-9+/]{44}", vkey), vkey
    assert base64.b64decode(vkey.split("+", 2)[2])[0] == 0x04
    assert (wdir / "witness.key").stat().st_mode & 0o777 == 0o600
    assert run_cli("witness", "--data", str(wdir), "vkey").stdout.strip() == vkey
    again = run_cli("witness", "init", "--data", str(wdir), "--name", "x", check=False)
    assert again.returncode == 2 and "already exists" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
    # add-log: the origin is the key's name unless given; adding twice changes nothing.
    run_cli("witness", "--data", str(wdir), "add-log", "--vkey", log.vkey)
    twice = run_cli("witness", "--data", str(wdir), "add-log", "--vkey", log.vkey)
    assert "already following" in twice.stdout
    other = Signer.generate("some.name/key").verifier().vkey()
    run_cli("witness", "--data", str(wdir), "add-log", "--vkey", other, "--origin", "custom/origin")
    listing = json.loads(run_cli("witness", "--data", str(wdir), "list", "--json").stdout)
    assert [(e["origin"], e["size"], e["vkeys"]) for e in listing["logs"]] == [
        (ORIGIN, 0, [log.vkey]),
        ("custom/origin", 0, [other]),
    ]
    text = run_cli("witness", "--data", str(wdir), "list").stdout
    assert ORIGIN in text and "size 0" in text and log.vkey in text
    # Bad input: one line, exit 2.
    for args in (
        ("witness", "--data", str(wdir), "add-log", "--vkey", "not-a-key"),
        ("witness", "--data", str(tmp_path / "none"), "vkey"),
        ("witness", "--data", str(tmp_path / "none"), "serve", "--listen", "127.0.0.1:1"),
        ("witness", "--data", str(wdir), "serve", "--listen", "nope"),
    ):
        p = run_cli(*args, check=False)
        assert p.returncode == 2, (args, p.stderr)
        assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) <= 3, p.stderr


def test_serve_on_a_busy_port_says_so(tmp_path: Path, log: MemoryLog) -> None:
    wdir = init_witness(tmp_path, log)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        p = run_cli(
            "witness", "--data", str(wdir), "serve", "--listen", f"127.0.0.1:{port}", check=False
        )
    assert p.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in p.stderr, p.stderr
