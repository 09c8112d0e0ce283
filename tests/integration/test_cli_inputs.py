"""Bad input to the command line and the verifiers: one line, the right exit code, no
traceback and no hang; and output to a reader that leaves early."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from ..conftest import REPO, run_cli


@dataclass(frozen=True)
class Kit:
    """A station with a few entries, and what an outsider is handed to check."""

    conf: Path
    ledger: Path
    vkey: str
    entry: Path
    proof: Path
    bag: Path
    conflict: Path  # a checkpoint of the bag's size signed by the station's key, other root
    tmp: Path


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Kit:
    from ledger.checkpoint import Checkpoint
    from ledger.note import Signer

    tmp = tmp_path_factory.mktemp("inputs")
    data = tmp / "station"
    run_cli("init", "--data", str(data), "--origin", "custody.test/unit/dock-01")
    conf = data / "custody.toml"
    dock = tmp / "dock" / "slot01"
    dock.mkdir(parents=True)
    doc = dock / "ABC1234_010203_20261120093000_0001.txt"
    doc.write_text("statement of the officer\n")
    run_cli("ingest", str(dock.parent), "--settle-ms", "0", config=conf)
    run_cli("note", "seal intact", config=conf)
    vkey = run_cli("ledger", "vkey", config=conf).stdout.strip()
    entry = tmp / "entry"
    entry.write_text(run_cli("ledger", "entry", "--index", "1", config=conf).stdout)
    proof = tmp / "proof"
    proof.write_text(run_cli("ledger", "proof", "--index", "1", config=conf).stdout)
    bag = tmp / "bag"
    sha = hashlib.sha256(doc.read_bytes()).hexdigest()
    run_cli("export", sha, "--out", str(bag), "--purpose", "test", config=conf)
    signer = Signer.parse((data / "keys" / "station.key").read_text().strip())
    text = (bag / "custody" / "checkpoint").read_text()
    cp = Checkpoint.parse_body(text.split("\n\n", 1)[0] + "\n")
    conflict = tmp / "forked-checkpoint"
    conflict.write_text(Checkpoint(cp.origin, cp.size, bytes(32)).sign([signer]))
    return Kit(conf, data / "ledger", vkey, entry, proof, bag, conflict, tmp)


def _fifo(kit: Kit, name: str) -> str:
    p = kit.tmp / name
    if not p.exists():
        os.mkfifo(p)
    return str(p)


def _loop(kit: Kit) -> str:
    """A symlink to itself: unreadable (ELOOP) even for root."""
    p = kit.tmp / "loop"
    if not os.path.lexists(p):
        p.symlink_to(p)
    return str(p)


def _file(kit: Kit, name: str, data: bytes) -> str:
    p = kit.tmp / name
    p.write_bytes(data)
    return str(p)


def _ledger_with(kit: Kit, name: str, swap: str, make: Callable[[Path], None]) -> str:
    """A copy of the ledger folder with ``swap`` (a relative path) replaced by ``make``."""
    import shutil

    root = kit.tmp / name
    if not root.exists():
        shutil.copytree(kit.ledger, root)
        target = root / swap
        target.chmod(0o644)
        target.unlink()
        make(target)
    return str(root)


def _proof_with_index(kit: Kit, name: str, index: str) -> str:
    lines = kit.proof.read_text().split("\n")
    i = next(n for n, ln in enumerate(lines) if ln.startswith("index "))
    lines[i] = f"index {index}"
    return _file(kit, name, "\n".join(lines).encode())


Case = tuple[Callable[[Kit], list[str]], int, str]

# `python -m verify ...`: (argv, exit code, text that must be in its output)
VERIFY: dict[str, Case] = {
    "entry is a folder": (
        lambda k: ["proof", str(k.tmp), str(k.proof), "--vkey", k.vkey],
        2,
        "is a folder",
    ),
    "entry is a FIFO": (
        lambda k: ["proof", _fifo(k, "f1"), str(k.proof), "--vkey", k.vkey],
        2,
        "not a regular file",
    ),
    "entry is /dev/zero": (
        lambda k: ["proof", "/dev/zero", str(k.proof), "--vkey", k.vkey],
        2,
        "not a regular file",
    ),
    "entry is unreadable": (
        lambda k: ["proof", _loop(k), str(k.proof), "--vkey", k.vkey],
        2,
        "cannot read entry",
    ),
    "proof is a FIFO": (
        lambda k: ["proof", str(k.entry), _fifo(k, "f2"), "--vkey", k.vkey],
        2,
        "not a regular file",
    ),
    "proof is not UTF-8": (
        lambda k: ["proof", str(k.entry), _file(k, "latin", b"\xff\xfe"), "--vkey", k.vkey],
        2,
        "not UTF-8",
    ),
    "proof index is huge": (
        lambda k: ["proof", str(k.entry), _proof_with_index(k, "p1", "9" * 40), "--vkey", k.vkey],
        1,
        "FAILED proof",
    ),
    "proof index is not a number": (
        lambda k: ["proof", str(k.entry), _proof_with_index(k, "p2", "one"), "--vkey", k.vkey],
        1,
        "no valid 'index <n>' line",
    ),
    "vkey file is not UTF-8": (
        lambda k: ["ledger", str(k.ledger), "--vkey", _file(k, "vk", b"\xc3\x28key")],
        2,
        "not UTF-8",
    ),
    "vkey is a FIFO": (
        lambda k: ["ledger", str(k.ledger), "--vkey", _fifo(k, "f3")],
        2,
        "not a regular file",
    ),
    "vkey file is huge": (
        lambda k: ["ledger", str(k.ledger), "--vkey", _file(k, "big", b"a" * 100_000)],
        2,
        "more than",
    ),
    "ledger is a file": (
        lambda k: ["ledger", str(k.entry), "--vkey", k.vkey],
        2,
        "is not a folder",
    ),
    "known checkpoint is a FIFO": (
        lambda k: ["ledger", str(k.ledger), "--vkey", k.vkey, "--known", _fifo(k, "f4")],
        2,
        "not a regular file",
    ),
    "known checkpoint is a folder": (
        lambda k: ["ledger", str(k.ledger), "--vkey", k.vkey, "--known", str(k.tmp)],
        2,
        "is a folder",
    ),
    "ledger checkpoint is a FIFO": (
        lambda k: [
            "ledger",
            _ledger_with(k, "l1", "checkpoint", lambda p: os.mkfifo(p)),
            "--vkey",
            k.vkey,
        ],
        2,
        "not a regular file",
    ),
    "a tile is a FIFO": (
        lambda k: [
            "ledger",
            _ledger_with(k, "l2", "tile/entries/000.p/3", lambda p: os.mkfifo(p)),
            "--vkey",
            k.vkey,
        ],
        1,
        "cannot be read: it is not a regular file",
    ),
    "a tile is a folder": (
        lambda k: [
            "ledger",
            _ledger_with(k, "l3", "tile/entries/000.p/3", lambda p: p.mkdir()),
            "--vkey",
            k.vkey,
        ],
        1,
        "cannot be read: it is a folder",
    ),
    "file is a FIFO": (
        lambda k: ["file", _fifo(k, "f5"), "--ledger", str(k.ledger), "--vkey", k.vkey],
        2,
        "not a regular file",
    ),
    "file is a folder": (
        lambda k: ["file", str(k.tmp), "--ledger", str(k.ledger), "--vkey", k.vkey],
        2,
        "is a folder",
    ),
    "bag is a file": (
        lambda k: ["bag", str(k.entry), "--vkey", k.vkey],
        2,
        "is not a folder",
    ),
    "bag known checkpoint is a FIFO": (
        lambda k: ["bag", str(k.bag), "--vkey", k.vkey, "--known", _fifo(k, "f6")],
        2,
        "not a regular file",
    ),
    "report path cannot be written": (
        lambda k: [
            "bag",
            str(k.bag),
            "--vkey",
            k.vkey,
            "--known",
            str(k.conflict),
            "--report",
            str(k.tmp / "no-such-folder" / "report.txt"),
        ],
        1,
        "MISBEHAVIOUR REPORT",
    ),
}


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("CUSTODY_CONFIG", None)
    # A FIFO must be refused, not waited on: a hang fails the test through the timeout.
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=60)


@pytest.mark.parametrize("case", sorted(VERIFY))
def test_verifier_inputs(kit: Kit, case: str) -> None:
    argv, code, text = VERIFY[case]
    p = _run([sys.executable, "-m", "verify", *argv(kit)])
    out = p.stdout + p.stderr
    assert "Traceback" not in out, f"{case}:\n{out}"
    assert p.returncode == code, f"{case}: exit {p.returncode}\n{out}"
    assert text in out, f"{case}:\n{out}"
    if code == 2:
        assert len(p.stderr.strip().splitlines()) == 1, f"{case}: not one line\n{p.stderr}"


def test_unwritable_report_prints_the_evidence_first(kit: Kit) -> None:
    bad = kit.tmp / "no-such-folder" / "report.txt"
    args = ["--known", str(kit.conflict), "--report", str(bad)]
    for cmd in (
        [sys.executable, "-m", "verify", "bag", str(kit.bag), "--vkey", kit.vkey, *args],
        [sys.executable, "-m", "custody", "-c", str(kit.conf), "verify", str(kit.bag), *args],
    ):
        p = _run(cmd)
        assert p.returncode == 1, p.stdout + p.stderr
        assert "MISBEHAVIOUR REPORT" in p.stdout and kit.conflict.read_text() in p.stdout
        assert "could not be written" in p.stderr and "Traceback" not in p.stderr


# `custody ...` with bad input: (argv, exit code, text in the output)
CUSTODY: dict[str, Case] = {
    "verify a FIFO": (lambda k: ["verify", _fifo(k, "c1")], 2, "not a bag, a ledger folder"),
    "verify with a non-UTF-8 vkey file": (
        lambda k: ["verify", str(k.bag), "--vkey", _file(k, "vk2", b"\xff")],
        2,
        "not UTF-8",
    ),
    "verify with a FIFO vkey": (
        lambda k: ["verify", str(k.bag), "--vkey", _fifo(k, "c2")],
        2,
        "not a regular file",
    ),
    "verify a bag with a FIFO known checkpoint": (
        lambda k: ["verify", str(k.bag), "--known", _fifo(k, "c3")],
        2,
        "not a regular file",
    ),
    "ledger verify with a FIFO known checkpoint": (
        lambda k: ["ledger", "verify", "--known", _fifo(k, "c4")],
        2,
        "not a regular file",
    ),
    "ledger verify with a non-UTF-8 vkey file": (
        lambda k: ["ledger", "verify", "--vkey", _file(k, "vk3", b"\xfe")],
        2,
        "not UTF-8",
    ),
    "ledger entry with a huge index": (
        lambda k: ["ledger", "entry", "--index", "9" * 30],
        2,
        "outside 0..",
    ),
    "ledger proof with a non-numeric index": (
        lambda k: ["ledger", "proof", "--index", "seven"],
        2,
        "not a whole number",
    ),
    "note from /dev/zero": (
        lambda k: ["note", "--file", "/dev/zero"],
        2,
        "holds more than 64 KiB",
    ),
    "note from a folder": (lambda k: ["note", "--file", str(k.tmp)], 2, "is a folder"),
    "note from a huge file": (
        lambda k: ["note", "--file", _file(k, "huge.txt", b"note\n" * 20_000)],
        2,
        "holds more than 64 KiB",
    ),
}


@pytest.mark.parametrize("case", sorted(CUSTODY))
def test_custody_inputs(kit: Kit, case: str) -> None:
    argv, code, text = CUSTODY[case]
    p = _run([sys.executable, "-m", "custody", "-c", str(kit.conf), *argv(kit)])
    out = p.stdout + p.stderr
    assert "Traceback" not in out, f"{case}:\n{out}"
    assert p.returncode == code, f"{case}: exit {p.returncode}\n{out}"
    assert text in out, f"{case}:\n{out}"
    # One line; argparse's own refusals come with the usage line above it.
    lines = [ln for ln in p.stderr.strip().splitlines() if not ln.startswith("usage:")]
    assert len(lines) == 1, f"{case}: not one line\n{p.stderr}"


def test_note_on_a_full_disk_says_enospc(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: mounts a 2 MiB tmpfs to fill")
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], check=True)
    try:
        run_cli("init", "--data", str(mnt / "st"), "--origin", "custody.test/unit/dock-01")
        with open(mnt / "filler", "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        p = run_cli("note", "a remark", config=mnt / "st" / "custody.toml", check=False)
        assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
        assert len(p.stderr.strip().splitlines()) == 1, p.stderr
        assert "no space left on device (ENOSPC)" in p.stderr, p.stderr
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


READERS = [
    ["status"],
    ["status", "--json"],
    ["ledger", "checkpoint"],
    ["ledger", "entry", "--index", "0"],
    ["ledger", "verify"],
    ["find"],
    ["ledger", "consistency", "--old-size", "1", "--json"],
]


@pytest.mark.parametrize("argv", READERS, ids=" ".join)
def test_a_reader_that_leaves_early_costs_no_error(kit: Kit, argv: list[str]) -> None:
    """`custody status | head -1`, made certain: the pipe's reader is gone before we write."""
    r, w = os.pipe()
    os.close(r)
    try:
        env = dict(os.environ)
        env.pop("CUSTODY_CONFIG", None)
        p = subprocess.run(
            [sys.executable, "-m", "custody", "-c", str(kit.conf), *argv],
            stdout=w,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            timeout=60,
        )
    finally:
        os.close(w)
    for noise in ("Broken pipe", "BrokenPipeError", "Exception ignored", "Traceback"):
        assert noise not in p.stderr, p.stderr
    assert p.returncode == 0, p.stderr


def test_status_shows_the_daemons_problems_and_halt(kit: Kit) -> None:
    state = kit.conf.parent / "state" / "daemon.json"
    doc = {
        "pid": os.getpid(),  # alive: this test's own process
        "started": 0,
        "updated": 0,
        "paused": "",
        "waiting": 0,
        "copying": [],
        "problems": [
            "/dock/slot01/" + "x" * 300 + ": path longer than the kernel limit, not captured",
            "/dock/slot02: unreadable (Permission denied), retried every scan",
        ],
        "problems_total": 5,
        "halted": None,
    }
    try:
        state.write_text(json.dumps(doc))
        p = run_cli("status", config=kit.conf)
        assert "PROBLEMS: 5" in p.stdout and "longer than the kernel limit" in p.stdout
        assert "slot02: unreadable" in p.stdout and "HALTED" not in p.stdout
        js = json.loads(run_cli("status", "--json", config=kit.conf).stdout)
        assert js["problems_total"] == 5 and len(js["problems"]) == 2 and js["halted"] is None
        # Halted: said first, in JSON too, exit 1; and still said once the daemon is gone.
        doc["halted"] = "tile/0/000 does not match the signed checkpoint"
        for pid in (os.getpid(), 2**22 + 1):
            doc["pid"] = pid
            state.write_text(json.dumps(doc))
            p = run_cli("status", config=kit.conf, check=False)
            assert p.returncode == 1, p.stdout + p.stderr
            second = p.stdout.splitlines()[1]
            assert second.startswith("HALTED:") and "does not match" in second
            q = run_cli("status", "--json", config=kit.conf, check=False)
            assert q.returncode == 1 and "does not match" in json.loads(q.stdout)["halted"]
    finally:
        state.unlink(missing_ok=True)


def test_every_reporting_command_speaks_json(kit: Kit, tmp_path: Path) -> None:
    sha = hashlib.sha256(
        (kit.tmp / "dock" / "slot01" / "ABC1234_010203_20261120093000_0001.txt").read_bytes()
    ).hexdigest()
    policy = str(kit.conf.parent / "retention.toml")
    doc = str(kit.tmp / "dock" / "slot01" / "ABC1234_010203_20261120093000_0001.txt")
    # (argv, exit code): each prints exactly one JSON document on stdout.
    commands: list[tuple[list[str], int]] = [
        (["init", "--data", str(tmp_path / "second")], 0),
        (["note", "handed to the court clerk"], 0),
        (["status"], 0),
        (["ingest", str(kit.tmp / "dock"), "--settle-ms", "0"], 0),
        (["ledger", "consistency", "--old-size", "1"], 0),
        (["ledger", "verify"], 0),
        (["annotate", sha, "--important"], 0),
        (["hold", sha, "--reason", "appeal"], 0),
        (["release", sha, "--reason", "appeal decided"], 0),
        (["retention", "apply", "--policy", policy], 0),
        (["retention", "plan"], 0),
        (["retention", "sweep", "--dry-run"], 0),
        (["find"], 0),
        (["export", sha, "--out", str(tmp_path / "bag"), "--purpose", "test"], 0),
        (["audit"], 0),
        (["verify", str(kit.bag)], 0),
        (["verify", doc], 0),
        (["derive", sha], 2),  # not a video: said in the JSON too
        (["fingerprint", "--frames", sha], 2),
    ]
    for argv, code in commands:
        p = run_cli(*argv, "--json", config=kit.conf, check=False)
        assert p.returncode == code, f"{argv}: exit {p.returncode}\n{p.stdout}{p.stderr}"
        assert len(p.stdout.strip().splitlines()) == 1, f"{argv}:\n{p.stdout}"
        json.loads(p.stdout)
    note = json.loads(run_cli("note", "seal 2", "--json", config=kit.conf).stdout)
    assert note["entries"] and note["checkpoint_size"] >= note["entries"][-1] + 1
    for argv in (
        ["proof", str(kit.entry), str(kit.proof), "--vkey", kit.vkey],
        ["file", doc, "--ledger", str(kit.ledger), "--vkey", kit.vkey],
        ["ledger", str(kit.ledger), "--vkey", kit.vkey],
        ["bag", str(kit.bag), "--vkey", kit.vkey],
    ):
        p = _run([sys.executable, "-m", "verify", *argv, "--json"])
        assert p.returncode == 0 and json.loads(p.stdout)["ok"] is True, argv


def test_retention_plan_says_dates_not_epoch_seconds(tmp_path: Path) -> None:
    import re
    import time

    cold = tmp_path / "cold"
    data = tmp_path / "station"
    run_cli("init", "--data", str(data), "--origin", "custody.test/unit/dock-01")
    conf = data / "custody.toml"
    conf.write_text(
        conf.read_text() + f'\n[store]\nkind = "local"\npath = "{cold}"\nretain_days = 400\n'
    )
    dock = tmp_path / "dock" / "slot01"
    dock.mkdir(parents=True)
    (dock / "ABC1234_010203_20261120093000_0001.txt").write_text("statement\n")
    run_cli("ingest", str(dock.parent), "--settle-ms", "0", config=conf)
    policy = tmp_path / "policy.toml"
    policy.write_text('[[rules]]\nname = "ordinary"\nkeep_days = 180\n')
    run_cli("retention", "apply", "--policy", str(policy), config=conf)
    as_of = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 420 * 86400))
    # Listed once the lock has run out (the store refuses earlier), with what held it.
    text = run_cli("retention", "plan", "--as-of", as_of, config=conf).stdout
    assert "BLOCKED: store lock until " in text, text
    assert not re.search(r"\b\d{9,}\b", text), text  # no epoch seconds anywhere
    until = re.search(r"store lock until (\d{4}-\d\d-\d\d)", text)
    assert until is not None
    js = json.loads(run_cli("retention", "plan", "--as-of", as_of, "--json", config=conf).stdout)
    (delete,) = [a for a in js["actions"] if a["kind"] == "delete"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d", delete["date"])
    assert delete["until"] == until.group(1) and until.group(1) in delete["blocked"]


def _on_a_terminal(cmd: list[str]) -> tuple[int, str]:
    """Run with stderr on a pseudo-terminal (as a person at a console sees it)."""
    import pty

    master, slave = pty.openpty()
    env = dict(os.environ)
    env.pop("CUSTODY_CONFIG", None)
    try:
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=slave, env=env, cwd=REPO)
        os.close(slave)
        seen = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
        rc = p.wait(timeout=120)
    finally:
        os.close(master)
    return rc, seen.decode(errors="replace")


def test_progress_on_a_terminal_only(kit: Kit, tmp_path: Path) -> None:
    sha = hashlib.sha256(
        (kit.tmp / "dock" / "slot01" / "ABC1234_010203_20261120093000_0001.txt").read_bytes()
    ).hexdigest()
    custody = [sys.executable, "-m", "custody", "-c", str(kit.conf)]
    bag = ["--out", str(tmp_path / "b1"), "--purpose", "t"]
    outsider = [sys.executable, "-m", "verify", "ledger", str(kit.ledger), "--vkey", kit.vkey]
    cases = [
        ([*custody, "ledger", "verify"], "verifying"),
        ([*custody, "verify", str(kit.ledger)], "verifying"),
        ([*custody, "audit", "--full"], "auditing:"),
        ([*custody, "export", sha, *bag], "exporting"),
        ([*custody, "reindex"], "reindexing"),
        (outsider, "verifying"),
    ]
    for cmd, word in cases:
        rc, err = _on_a_terminal(cmd)
        assert rc == 0 and word in err, f"{cmd}: {rc}\n{err}"
        quiet = _run([c.replace("/b1", "/b2") for c in cmd])
        assert quiet.returncode == 0 and word not in quiet.stderr, f"{cmd}:\n{quiet.stderr}"
