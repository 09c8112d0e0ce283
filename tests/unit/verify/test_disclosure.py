"""`python -m verify disclosure`: a publication (公示) built here by hand to the contract
(docs/disclosure-format.md) with real keys, a real Merkle tree and real cosignatures,
then altered one way at a time. Every alteration fails with a line naming the file."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ledger.checkpoint import Checkpoint
from ledger.cosignature import Cosigner, add_signature_lines
from ledger.entry import make_entry
from ledger.note import Signer
from ledger.policy import parse_policy
from ledger.proof import TlogProof
from ledger.tree import inclusion_proof, leaf_hash, root_of
from verify.__main__ import main
from verify.disclosure import (
    FROM_PUBLICATION,
    MAX_FILE,
    parse_manifest,
    safe_path,
    verify_disclosure,
)

ORIGIN = "custody.test/menghai/dock-01"
PUBLISHER = Signer(ORIGIN, bytes(range(32)))
IMPOSTOR = Signer(ORIGIN, bytes(range(1, 33)))
W1 = Cosigner("witness.test/a", bytes(range(2, 34)))
W2 = Cosigner("witness.test/b", bytes(range(3, 35)))
T = "2027-01-03T02:00:00Z"
WITNESSED = 5  # the log's size at its latest witnessed checkpoint (logs/01)
AT = 6  # the disclose entry's index; the publisher's checkpoint is of size 8


class ListReader:
    """Stored hashes of a tree held in memory (for `inclusion_proof`)."""

    def __init__(self, hashes: Sequence[bytes]) -> None:
        self.hashes = list(hashes)

    def stored_hash(self, level: int, index: int) -> bytes:
        n = 1 << level
        return root_of(self.hashes[index * n : (index + 1) * n])


@dataclass
class Build:
    """How to make the publication; each field is one way to make it wrong."""

    entry_type: str = "disclose"
    extra_manifest: tuple[str, ...] = ()  # lines added to MANIFEST before it is signed
    log_signer: Signer = PUBLISHER  # who signs logs/01/checkpoint
    proof_signer: Signer = PUBLISHER  # who signs the checkpoint in the tlog-proof
    proof_index: int = AT
    json_size: int = WITNESSED  # what data.json says logs[0]'s size is
    cosigners: tuple[Cosigner, ...] = (W1,)
    witnesses: tuple[Cosigner, ...] = (W1, W2)
    policy_txt: str | None = None
    entry_payload: dict[str, Any] = field(default_factory=dict)


def _note(i: int) -> bytes:
    return make_entry(PUBLISHER, ORIGIN, "note", {"n": i}, T)


def _checkpoint(leaves: Sequence[bytes], signer: Signer) -> str:
    return Checkpoint(ORIGIN, len(leaves), root_of([leaf_hash(x) for x in leaves])).sign([signer])


def data_json(size: int) -> dict[str, Any]:
    cats = ["licensing", "administrative_penalty", "coercive_measure"]
    cats += ["expropriation", "inspection", "other"]
    figures = ["recordings", "hours", "cases", "evidence", "deletions", "holds", "exports"]
    zero: dict[str, Any] = {f: 0 for f in figures} | {"hours": "0.0"}
    return {
        "format": "custody-disclosure/v1",
        "period": "2026",
        "scope": "station",
        "publisher": "勐海县公安局",
        "origin": ORIGIN,
        "generated": T,
        "timezone": "Asia/Shanghai",
        "threshold": 5,
        "months": [f"2026-{m:02d}" for m in range(1, 13)],
        "categories": [{"key": c, "zh": c, "en": c} for c in cats],
        "units": [{"code": "", "name": "未标明单位 unit not recorded"}],
        "figures": figures,
        "rows": [{"unit": "", "category": c, "month": "2026"} | zero for c in cats],
        "totals": [{"category": "", "month": "2026"} | zero],
        "audits": [],
        "logs": [
            {
                "origin": ORIGIN,
                "size": size,
                "checkpoint": "logs/01/checkpoint",
                "vkey": "logs/01/vkey",
                "cosignatures": 1,
            }
        ],
        "witnesses": [W1.verifier().vkey(), W2.verifier().vkey()],
        "sizes": {ORIGIN: size},
    }


def publish(root: Path, b: Build | None = None) -> Path:
    """Write a station's publication for 2026 into ``root`` (which must not exist)."""
    b = b or Build()
    files: dict[str, bytes] = {
        "index.html": "<!doctype html><title>执法记录 2026</title>\n".encode(),
        "style.css": b"body { font-family: sans-serif }\n",
        "data.json": json.dumps(data_json(b.json_size), ensure_ascii=False).encode(),
        "data.csv": b"unit,category,month,recordings\n,licensing,2026,0\n",
        "audits.csv": b"month,audits,objects_checked,failures\n",
        "publisher.vkey": PUBLISHER.verifier().vkey().encode() + b"\n",
        "witnesses.txt": "".join(w.verifier().vkey() + "\n" for w in b.witnesses).encode(),
        "logs/01/vkey": PUBLISHER.verifier().vkey().encode() + b"\n",
    }
    if b.policy_txt is not None:
        files["policy.txt"] = b.policy_txt.encode()
    leaves = [_note(i) for i in range(AT)]
    # logs/01: the log's latest witnessed checkpoint (before the disclose entry).
    cp = _checkpoint(leaves[:WITNESSED], b.log_signer)
    body = Checkpoint(ORIGIN, WITNESSED, root_of([leaf_hash(x) for x in leaves[:WITNESSED]]))
    lines = [c.cosign(body.body(), 1798934400).line() for c in b.cosigners]
    files["logs/01/checkpoint"] = add_signature_lines(cp, lines).encode()
    lines_out = [f"{hashlib.sha256(files[p]).hexdigest()}  {p}\n" for p in sorted(files)]
    manifest = "".join(sorted(lines_out + list(b.extra_manifest), key=lambda x: x[66:]))
    payload = {
        "period": "2026",
        "scope": "station",
        "manifest_sha256": hashlib.sha256(manifest.encode()).hexdigest(),
        "files": len(files) + len(b.extra_manifest),
        "threshold": 5,
        "timezone": "Asia/Shanghai",
        "logs": 1,
        "operator": "root",
    } | b.entry_payload
    entry = make_entry(PUBLISHER, ORIGIN, b.entry_type, payload, T)
    leaves += [entry, _note(99)]
    hashes = [leaf_hash(x) for x in leaves]
    proof = TlogProof(
        b.proof_index,
        tuple(inclusion_proof(ListReader(hashes), b.proof_index, len(leaves))),
        _checkpoint(leaves, b.proof_signer),
    )
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    (root / "MANIFEST").write_text(manifest)
    (root / "disclose.entry").write_bytes(entry)
    (root / "disclose.tlog-proof").write_text(proof.format())
    return root


ALL_FILES = [
    "index.html",
    "style.css",
    "data.json",
    "data.csv",
    "audits.csv",
    "publisher.vkey",
    "witnesses.txt",
    "logs/01/vkey",
    "logs/01/checkpoint",
    "MANIFEST",
    "disclose.entry",
    "disclose.tlog-proof",
]


def verdict(
    capsys: pytest.CaptureFixture[str], root: Path, *args: str
) -> tuple[int, str, list[str]]:
    """`python -m verify disclosure ROOT ARGS` in this process: the exit code, what it
    printed, and its FAILED lines."""
    rc = main(["disclosure", str(root), *args])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return (
        rc,
        out + err,
        [ln[len("FAILED ") :] for ln in out.splitlines() if ln.startswith("FAILED ")],
    )


def pinned() -> list[str]:
    return ["--vkey", PUBLISHER.verifier().vkey()]


def fails_naming(capsys: pytest.CaptureFixture[str], root: Path, name: str, *args: str) -> str:
    """The publication fails (exit 1) with a line that begins with ``name``."""
    rc, out, failed = verdict(capsys, root, *(args or pinned()))
    assert rc == 1, out
    named = [p for p in failed if p.startswith(name)]
    assert named, f"no failure names {name}:\n{out}"
    assert all("\n" not in p for p in failed)
    return named[0]


def test_a_good_publication_passes_with_the_pinned_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = publish(tmp_path / "pub")
    rc, out, failed = verdict(capsys, root, *pinned())
    assert rc == 0 and not failed, out
    assert f"trusted: {ORIGIN} (key id {PUBLISHER.verifier().key_id.hex()}), pinned by" in out
    assert "period 2026 (station), published by 勐海县公安局" in out
    assert f"number {AT} of {T}, in the publisher's checkpoint of size 8" in out
    assert "files: 9 of 9 in MANIFEST hash right" in out
    assert "logs/01: " + ORIGIN + ", checkpoint size 5" in out
    assert "cosignatures 1 valid of 1 (against 2 witness key(s) in witnesses.txt)" in out
    assert out.rstrip().splitlines()[-1].startswith("OK: publication")


def test_without_a_key_the_publications_own_key_is_used_and_said(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = publish(tmp_path / "pub")
    rc, out, _ = verdict(capsys, root)
    assert rc == 0, out
    assert FROM_PUBLICATION in out and "not who published it" in out
    rc, out, _ = verdict(capsys, root, "--json")
    got = json.loads(out)
    assert got["ok"] is True and got["trusted_keys"][0]["source"] == FROM_PUBLICATION
    assert got["entry_index"] == AT and got["checkpoint_size"] == 8 and got["files"] == 9
    assert got["logs"][0]["size"] == WITNESSED and got["logs"][0]["cosignatures_valid"] == 1
    assert got["period"] == "2026" and got["publisher"] == "勐海县公安局"


@pytest.mark.parametrize("rel", ALL_FILES)
def test_one_changed_byte_in_any_file_fails_naming_it(
    rel: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = publish(tmp_path / "pub")
    data = bytearray((root / rel).read_bytes())
    data[len(data) // 2] ^= 0x01
    (root / rel).write_bytes(bytes(data))
    fails_naming(capsys, root, rel)
    # Trusting the publication's own key does not hide it either; --json lists it too.
    rc, out, _ = verdict(capsys, root, "--json")
    got = json.loads(out)
    assert rc == 1 and any(p.startswith(rel) for p in got["problems"]), got


@pytest.mark.parametrize("rel", ALL_FILES)
def test_a_removed_file_fails_naming_it(
    rel: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = publish(tmp_path / "pub")
    (root / rel).unlink()
    fails_naming(capsys, root, rel)


@pytest.mark.parametrize("rel", ["notes.txt", "logs/01/extra", "logs/02/checkpoint", ".hidden"])
def test_an_added_file_fails_naming_it(
    rel: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = publish(tmp_path / "pub")
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_text("added later\n")
    assert "added after publication" in fails_naming(capsys, root, rel)


def test_an_added_folder_and_links_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = publish(tmp_path / "pub")
    (root / "empty").mkdir()
    assert "a folder MANIFEST lists no file in" in fails_naming(capsys, root, "empty/")
    (root / "empty").rmdir()
    # A listed file swapped for a link to a copy of itself: same bytes, still refused.
    copy = tmp_path / "copy.css"
    copy.write_bytes((root / "style.css").read_bytes())
    (root / "style.css").unlink()
    (root / "style.css").symlink_to(copy)
    assert "symbolic link" in fails_naming(capsys, root, "style.css")
    (root / "style.css").unlink()
    (root / "style.css").write_bytes(copy.read_bytes())
    (root / "more").symlink_to(tmp_path)
    assert "symbolic link" in fails_naming(capsys, root, "more")


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("../outside.txt", "'..'"),
        ("logs/../../x", "'..'"),
        ("/etc/passwd", "absolute"),
        ("logs\\01\\x", "backslash"),
        ("logs//x", "empty"),
    ],
)
def test_a_signed_manifest_line_outside_the_folder_is_refused(
    path: str, why: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = f"{hashlib.sha256(b'x').hexdigest()}  {path}\n"
    root = publish(tmp_path / "pub", Build(extra_manifest=(line,)))
    (tmp_path / "outside.txt").write_bytes(b"x")
    problem = fails_naming(capsys, root, "MANIFEST line")
    assert why in problem and "refused" in problem


def test_a_wrong_key_pinned_fails_on_the_entry_and_the_proof(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = publish(tmp_path / "pub")
    args = ("--vkey", IMPOSTOR.verifier().vkey())
    assert "does not verify with the trusted key" in fails_naming(
        capsys, root, "disclose.entry", *args
    )
    assert "not the trusted key's" in fails_naming(capsys, root, "disclose.tlog-proof", *args)
    _, out, _ = verdict(capsys, root, *args)
    assert "publisher.vkey names" in out  # the carried key differs from the pinned one


def test_an_entry_of_another_type_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = publish(tmp_path / "pub", Build(entry_type="export"))
    assert "'export' entry, not a 'disclose' entry" in fails_naming(capsys, root, "disclose.entry")


def test_a_proof_for_another_index_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = publish(tmp_path / "pub", Build(proof_index=AT - 1))
    problem = fails_naming(capsys, root, "disclose.tlog-proof")
    assert f"not at index {AT - 1}" in problem


def test_a_proof_checkpoint_signed_by_another_key_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = publish(tmp_path / "pub", Build(proof_signer=IMPOSTOR))
    assert "not the trusted key's" in fails_naming(capsys, root, "disclose.tlog-proof")


def test_a_log_checkpoint_signed_by_another_key_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = publish(tmp_path / "pub", Build(log_signer=IMPOSTOR))
    problem = fails_naming(capsys, root, "logs/01/checkpoint")
    assert "not signed by logs/01/vkey" in problem


def test_data_json_must_name_each_log_at_its_checkpoint_size(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = publish(tmp_path / "pub", Build(json_size=WITNESSED + 1))
    problem = fails_naming(capsys, root, "data.json logs[0]")
    assert f"size {WITNESSED + 1}, but logs/01/checkpoint is of size {WITNESSED}" in problem


def test_a_signed_entry_that_does_not_match_the_manifest_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = publish(tmp_path / "pub", Build(entry_payload={"manifest_sha256": "0" * 64}))
    assert "the signed disclose.entry names" in fails_naming(capsys, root, "MANIFEST")
    root = publish(tmp_path / "pub2", Build(entry_payload={"period": "2025"}))
    assert "the signed disclose.entry says '2025'" in fails_naming(capsys, root, "data.json")


def test_a_bad_cosignature_by_a_listed_witness_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # W2's line made over another body: the key is listed, the line does not verify.
    root = publish(tmp_path / "pub", Build(cosigners=(W1,)))
    cp = (root / "logs/01/checkpoint").read_text()
    forged = W2.cosign("another\n1\n" + "A" * 43 + "=\n", 1798934400).line()
    (root / "logs/01/checkpoint").write_text(cp + forged)
    # (The checkpoint is also no longer what MANIFEST lists: both are said.)
    rc, out, failed = verdict(capsys, root, *pinned())
    assert rc == 1
    assert any(
        p.startswith("logs/01/checkpoint: the cosignature by witness witness.test/b")
        and "does not verify" in p
        for p in failed
    ), out


def test_a_policy_quorum_is_judged_on_each_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = publish(tmp_path / "pub")
    one = tmp_path / "one.txt"
    one.write_text(f"witness a {W1.verifier().vkey()}\nquorum a\n")
    rc, out, _ = verdict(capsys, root, *pinned(), "--policy", str(one))
    assert rc == 0 and "policy quorum met" in out, out
    both = tmp_path / "both.txt"
    both.write_text(
        f"witness a {W1.verifier().vkey()}\nwitness b {W2.verifier().vkey()}\n"
        "group g all a b\nquorum g\n"
    )
    problem = fails_naming(capsys, root, "logs/01/checkpoint", *pinned(), "--policy", str(both))
    assert "quorum is not met" in problem
    assert parse_policy(both.read_text())  # the policy itself is well formed


def test_garbage_and_huge_files_are_lines_not_tracebacks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = publish(tmp_path / "pub")
    junk = bytes(range(256)) * 4
    for rel in ("disclose.entry", "disclose.tlog-proof", "logs/01/vkey", "data.json"):
        (root / rel).write_bytes(junk)
    (root / "MANIFEST").write_bytes(b"\xff\xfe" + junk)
    rc, out, failed = verdict(capsys, root)
    assert rc == 1 and failed
    for rel in ("MANIFEST", "disclose.entry", "disclose.tlog-proof", "logs/01/vkey", "data.json"):
        assert any(p.startswith(rel) for p in failed), (rel, out)
    # A listed file grown to more than a published file may hold (sparse: no disk used),
    # and one swapped for a pipe: each a line, nothing read for ever.
    root = publish(tmp_path / "pub2")
    with open(root / "data.csv", "r+b") as f:
        f.truncate(MAX_FILE + 1)
    (root / "audits.csv").unlink()
    os.mkfifo(root / "audits.csv")
    with open(root / "disclose.tlog-proof", "r+b") as f:
        f.truncate(1 << 40)
    assert "more than" in fails_naming(capsys, root, "data.csv")
    assert "not a regular file" in fails_naming(capsys, root, "audits.csv")
    assert "more than" in fails_naming(capsys, root, "disclose.tlog-proof")


def test_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["disclosure", str(tmp_path / "nothing")]) == 2
    root = publish(tmp_path / "pub")
    assert main(["disclosure", str(root), "--vkey", "not a key"]) == 2
    assert main(["disclosure", str(root), "--policy", str(tmp_path / "none.txt")]) == 2
    err = capsys.readouterr().err
    assert err.count("verify: error:") == 3 and "Traceback" not in err


def test_manifest_lines_and_paths() -> None:
    h = "a" * 64
    man, problems = parse_manifest(f"{h}  a.txt\n{h}  b/c.txt\n".encode())
    assert man == {"a.txt": h, "b/c.txt": h} and not problems
    _, problems = parse_manifest(f"{h}  b\n{h}  a\n{h.upper()}  c\n{h} d\n{h}  b\n".encode())
    assert [p.split(":")[0] for p in problems] == [f"MANIFEST line {n}" for n in (2, 3, 4, 5)]
    _, problems = parse_manifest(f"{h}  MANIFEST\n{h}  x".encode())
    assert len(problems) == 2
    assert safe_path("logs/01/checkpoint") == ""
    for bad in ("", "/a", "a/../b", "a\\b", "./a", "a/", "a\nb"):
        assert safe_path(bad), bad


def test_the_checker_is_the_one_verify_disclosure_runs(tmp_path: Path) -> None:
    rep = verify_disclosure(publish(tmp_path / "pub"), PUBLISHER.verifier())
    assert rep.ok, rep.lines()
    assert rep.entry_index == AT and rep.listed == 9 and len(rep.logs) == 1


def test_nothing_is_read_through_a_linked_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # logs/ swapped for a link to an identical copy elsewhere: the bytes are the same,
    # the folder is not the publication's, and nothing is read through the link.
    root = publish(tmp_path / "pub")
    os.rename(root / "logs", tmp_path / "elsewhere")
    (root / "logs").symlink_to(tmp_path / "elsewhere")
    rc, out, failed = verdict(capsys, root, *pinned())
    assert rc == 1
    assert "logs: a symbolic link (refused)" in failed, out
    assert "logs/01/checkpoint: not read, logs is a symbolic link" in failed, out


def test_a_log_folder_data_json_does_not_list_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = publish(tmp_path / "pub")
    (root / "logs" / "001").mkdir()
    (root / "logs" / "001" / "vkey").write_text(PUBLISHER.verifier().vkey() + "\n")
    problem = fails_naming(capsys, root, "logs/001:")
    assert "a log folder data.json does not list (it lists 1)" in problem
