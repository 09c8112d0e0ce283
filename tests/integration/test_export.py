"""Export packages and their verification: a case exported as a BagIt bag passes the
Library of Congress validator and `sha256sum -c`, verifies with `python -m verify bag`,
and every tampering in the corpus is caught with its own message."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from ..conftest import REPO, make_clip, run_cli
from .daemon import entries, make_station
from .test_fingerprints import sha


def verify(bag: Path, vkey: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "verify", "bag", str(bag), "--vkey", vkey, *extra],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, ffmpeg: str) -> tuple[Path, Path, str]:
    tmp = tmp_path_factory.mktemp("export")
    dock = tmp / "dock"
    cold = tmp / "cold"
    conf = make_station(tmp, dock, extra=f'\n[store]\nkind = "local"\npath = "{cold}"\n')
    # SM3 beside SHA-256, as sites under the national standard configure it.
    conf.write_text(
        conf.read_text().replace(
            "verify_copy = true\n", 'verify_copy = true\nhashes = ["sha256", "sm3"]\n'
        )
    )
    slot = dock / "slot01"
    a = make_clip(ffmpeg, slot / "ABC1234_010203_20261120093000_0001.mp4", tone=300)
    b = make_clip(ffmpeg, slot / "ABC1234_010203_20261120094000_0002.mp4", tone=500)
    make_clip(ffmpeg, slot / "ABC1234_010203_20261120095000_0003.mp4", tone=700)
    # The same bytes docked again from another officer's recorder: a sighting, whose
    # labels must never stand in for the original's.
    (dock / "slot02").mkdir()
    shutil.copy(a, dock / "slot02" / "XYZ9999_090807_20261121080000_0009.mp4")
    run_cli("ingest", str(dock), "--settle-ms", "0", config=conf)
    for clip in (a, b):
        run_cli(
            "annotate", sha(clip), "--case", "2026-XZ-0042", "--category", "行政处罚", config=conf
        )
    bag = tmp / "bag"
    out = run_cli(
        "export",
        "--case",
        "2026-XZ-0042",
        "--out",
        str(bag),
        "--purpose",
        "court of Menghai county, appeal 17",
        "--operator",
        "clerk-wang",
        config=conf,
    ).stdout
    assert "exported 4 file(s)" in out, out  # two originals, two access copies
    vkey = run_cli("ledger", "vkey", config=conf).stdout.strip()
    return conf, bag, vkey


def test_bag_is_valid_for_standard_tools_and_ours(exported: tuple[Path, Path, str]) -> None:
    conf, bag, vkey = exported
    import bagit

    bagit.Bag(str(bag)).validate()  # the Library of Congress validator
    lc = subprocess.run(
        [sys.executable, "-m", "bagit", "--validate", str(bag)], capture_output=True, text=True
    )
    assert lc.returncode == 0, lc.stderr
    sm3 = (bag / "manifest-sm3.txt").read_text().splitlines()
    assert len(sm3) == 4 and all(len(x.split("  ")[0]) == 64 for x in sm3)
    for manifest in ("manifest-sha256.txt", "tagmanifest-sha256.txt"):
        s = subprocess.run(["sha256sum", "-c", manifest], cwd=bag, capture_output=True, text=True)
        assert s.returncode == 0 and "FAILED" not in s.stdout, s.stdout + s.stderr
    p = verify(bag, vkey)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "OK: bag" in p.stdout and "4 file(s)" in p.stdout
    # The same through the station's command.
    assert run_cli("verify", str(bag), "--vkey", vkey, config=conf).returncode == 0
    info = (bag / "bag-info.txt").read_text()
    assert "External-Identifier: 2026-XZ-0042" in info and "Contact-Name: clerk-wang" in info
    assert "sha256sum -c manifest-sha256.txt" in (bag / "VERIFY.txt").read_text()
    proofs = list((bag / "custody" / "entries").glob("*.tlog-proof"))
    assert len(proofs) == len(list((bag / "custody" / "entries").glob("*.entry"))) >= 6
    # The export is itself an entry, inside the checkpoint the bag carries, and it names
    # the manifest: the list of exported files is the station's.
    ex = [e for e in entries(conf) if e["type"] == "export"][-1]
    assert ex["case"] == "2026-XZ-0042" and ex["operator"] == "clerk-wang"
    assert len(ex["files"]) == 4
    assert (
        ex["manifest_sha256"]
        == hashlib.sha256((bag / "manifest-sha256.txt").read_bytes()).hexdigest()
    )
    assert "Custody-Export-Entry: " in info
    # Finding the case, and the catalog.
    found = json.loads(run_cli("find", "--case", "2026-XZ-0042", "--json", config=conf).stdout)
    assert len(found) == 2 and found[0]["officer"] == "010203" and found[0]["recorder"] == "ABC1234"
    assert json.loads(run_cli("find", "--officer", "999999", "--json", config=conf).stdout) == []


def _copy(bag: Path, tmp: Path) -> Path:
    dst = tmp / "tampered"
    shutil.copytree(bag, dst)
    return dst


def _flip(p: Path, at: int | None = None) -> None:
    data = bytearray(p.read_bytes())
    i = len(data) // 2 if at is None else at
    data[i] ^= 0x01
    p.write_bytes(bytes(data))


def _first(bag: Path, pattern: str) -> Path:
    return sorted(bag.glob(pattern))[0]


def _other_key_checkpoint(bag: Path) -> str:
    from ledger.note import Signer, sign_note

    text = (bag / "custody" / "checkpoint").read_text()
    body = text.split("\n\n", 1)[0] + "\n"
    origin = body.split("\n", 1)[0]
    return sign_note(body, [Signer.generate(origin)])


def _older_checkpoint(conf: Path) -> bytes:
    """Another genuine checkpoint of the same station (an earlier size)."""
    import sqlite3

    db = sqlite3.connect(conf.parent / "state" / "ledger.sqlite")
    try:
        rows = db.execute("SELECT note FROM checkpoints ORDER BY size").fetchall()
    finally:
        db.close()
    note = rows[len(rows) // 2][0]
    return note.encode() if isinstance(note, str) else bytes(note)


def _replace_with_manifest(bag: Path) -> None:
    """Replace an original and fix both manifests and files.tsv: standard tools then
    pass; only the signed entries can tell."""
    import hashlib

    target = _first(bag, "data/originals/*")
    old = hashlib.sha256(target.read_bytes()).hexdigest()
    new = hashlib.sha256(b"a different recording").hexdigest()
    target.write_bytes(b"a different recording")
    for name in ("manifest-sha256.txt", "custody/files.tsv"):
        p = bag / name
        p.write_text(p.read_text().replace(old, new))
    (bag / "bag-info.txt").write_text(
        "\n".join(
            ln if not ln.startswith("Payload-Oxum") else _oxum(bag)
            for ln in (bag / "bag-info.txt").read_text().splitlines()
        )
        + "\n"
    )
    lines = []
    for line in (bag / "tagmanifest-sha256.txt").read_text().splitlines():
        _, rel = line.split("  ", 1)
        lines.append(f"{hashlib.sha256((bag / rel).read_bytes()).hexdigest()}  {rel}")
    (bag / "tagmanifest-sha256.txt").write_text("\n".join(lines) + "\n")


def _oxum(bag: Path) -> str:
    files = [p for p in (bag / "data").rglob("*") if p.is_file()]
    return f"Payload-Oxum: {sum(p.stat().st_size for p in files)}.{len(files)}"


TAMPERS: dict[str, tuple[Callable[[Path, Path], object], str]] = {
    "an SM3 manifest line changed": (
        lambda bag, conf: (bag / "manifest-sm3.txt").write_text(
            "0" * 64 + (bag / "manifest-sm3.txt").read_text()[64:]
        ),
        "does not match manifest-sm3.txt|altered after the export (tag manifest mismatch)",
    ),
    "a flipped bit in an exported file": (
        lambda bag, conf: _flip(_first(bag, "data/originals/*")),
        "was altered after the export",
    ),
    "a flipped bit in an entry": (
        lambda bag, conf: _flip(_first(bag, "custody/entries/*.entry"), 30),
        "its signature does not verify|not a custody entry|not in the signed log",
    ),
    "a removed entry": (
        lambda bag, conf: _first(bag, "custody/entries/*.entry").unlink(),
        # The first entry is the station key's (every key entry travels in the bag).
        "are named but missing|an entry was removed",
    ),
    "a file added to the payload": (
        lambda bag, conf: (bag / "data" / "originals" / "extra.mp4").write_bytes(b"planted"),
        "not in the manifest (added after the export)",
    ),
    "a swapped checkpoint": (
        lambda bag, conf: (bag / "custody" / "checkpoint").write_bytes(_older_checkpoint(conf)),
        "proof is against another checkpoint",
    ),
    "a checkpoint signed by an unknown key": (
        lambda bag, conf: (bag / "custody" / "checkpoint").write_text(_other_key_checkpoint(bag)),
        "does not verify with the key",
    ),
    "a replaced file with manifests made to match": (
        lambda bag, conf: _replace_with_manifest(bag),
        "no verified entry in the bag names|no signed export entry names this manifest",
    ),
}


@pytest.mark.parametrize("case", sorted(TAMPERS))
def test_tampering_is_caught(exported: tuple[Path, Path, str], tmp_path: Path, case: str) -> None:
    conf, bag, vkey = exported
    t = _copy(bag, tmp_path)
    action, message = TAMPERS[case]
    action(t, conf)
    p = verify(t, vkey)
    assert p.returncode == 1, f"{case}: passed\n{p.stdout}"
    assert any(m in p.stdout for m in message.split("|")), f"{case}: {p.stdout}"
    assert "FAILED" in p.stdout


def _rebag(bag: Path) -> None:
    """Recompute every BagIt list from what the folder now holds, as a forger would:
    manifest-sha256.txt, manifest-sm3.txt, Payload-Oxum and the tag manifest."""
    import hashlib

    data = sorted(p for p in (bag / "data").rglob("*") if p.is_file())
    rels = [p.relative_to(bag).as_posix() for p in data]
    (bag / "manifest-sha256.txt").write_text(
        "".join(
            f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {r}\n"
            for p, r in zip(data, rels, strict=True)
        )
    )
    if (bag / "manifest-sm3.txt").exists():
        (bag / "manifest-sm3.txt").write_text(
            "".join(
                f"{hashlib.new('sm3', p.read_bytes()).hexdigest()}  {r}\n"
                for p, r in zip(data, rels, strict=True)
            )
        )
    info = bag / "bag-info.txt"
    info.write_text(
        "".join(
            (_oxum(bag) if ln.startswith("Payload-Oxum") else ln) + "\n"
            for ln in info.read_text().splitlines()
        )
    )
    tags = sorted(
        p.relative_to(bag).as_posix()
        for p in bag.rglob("*")
        if p.is_file() and not p.relative_to(bag).as_posix().startswith(("data/", "tagmanifest-"))
    )
    (bag / "tagmanifest-sha256.txt").write_text(
        "".join(f"{hashlib.sha256((bag / t).read_bytes()).hexdigest()}  {t}\n" for t in tags)
    )


def _edit(bag: Path, rel: str, old: str, new: str) -> None:
    p = bag / rel
    text = p.read_text()
    assert old in text, f"{old!r} not in {rel}"
    p.write_text(text.replace(old, new))


def _plant(bag: Path, ffmpeg: str, role: str) -> None:
    """A video the station never saw, listed in files.tsv under ``role``."""
    import hashlib

    clip = make_clip(ffmpeg, bag / "data" / "originals" / "planted.mp4", tone=900)
    sha_ = hashlib.sha256(clip.read_bytes()).hexdigest()
    row = ["data/originals/planted.mp4", sha_, str(clip.stat().st_size), role, sha_, "", ""]
    row += ["ABC1234", "010203", "", "", "", "planted.mp4"]
    with open(bag / "custody" / "files.tsv", "a") as f:
        f.write("\t".join(row) + "\n")


def _drop_original(bag: Path) -> None:
    target = _first(bag, "data/originals/*")
    target.unlink()
    tsv = bag / "custody" / "files.tsv"
    tsv.write_text(
        "".join(ln + "\n" for ln in tsv.read_text().splitlines() if target.name not in ln)
    )


def _tsv_column(bag: Path, column: str, value: str) -> None:
    tsv = bag / "custody" / "files.tsv"
    lines = tsv.read_text().splitlines()
    head = lines[0].split("\t")
    cells = lines[1].split("\t")
    cells[head.index(column)] = value
    lines[1] = "\t".join(cells)
    tsv.write_text("\n".join(lines) + "\n")


def _drop_entry(bag: Path, kind: str) -> None:
    """Remove one entry of ``kind`` (its file, its proof, its mention in files.tsv)."""
    for e in sorted((bag / "custody" / "entries").glob("*.entry")):
        if json.loads(e.read_bytes())["type"] == kind:
            e.unlink()
            e.with_suffix(".tlog-proof").unlink()
            idx = e.stem
            tsv = bag / "custody" / "files.tsv"
            rows = [ln.split("\t") for ln in tsv.read_text().splitlines()]
            for r in rows[1:]:
                r[6] = ",".join(x for x in r[6].split(",") if x != idx)
            tsv.write_text("".join("\t".join(r) + "\n" for r in rows))
            return
    raise AssertionError(f"no {kind} entry in the bag")


def _point_at_sighting(bag: Path) -> None:
    """Point an original's row at a sighting of the same bytes (docked again elsewhere)."""
    for e in sorted((bag / "custody" / "entries").glob("*.entry")):
        fields = json.loads(e.read_bytes())
        if fields["type"] == "sighting":
            tsv = bag / "custody" / "files.tsv"
            rows = [ln.split("\t") for ln in tsv.read_text().splitlines()]
            for r in rows[1:]:
                if r[1] == fields["sha256"] and r[3] == "original":
                    r[5] = e.stem
                    r[10] = fields["time"]
                    r[12] = fields["source"]["path"].rsplit("/", 1)[-1]
            tsv.write_text("".join("\t".join(r) + "\n" for r in rows))
            return
    raise AssertionError("no sighting entry in the bag")


def _swap_sidecar(bag: Path) -> None:
    side = _first(bag, "custody/sidecars/*")
    data = bytearray(side.read_bytes())
    data[len(data) // 2] ^= 1
    side.write_bytes(bytes(data))


FORGERIES: dict[str, tuple[Callable[[Path, str], object], str]] = {
    "the probe entry saying whether it is whole dropped": (
        lambda bag, ff: _drop_entry(bag, "probe"),
        "the export entry signed for",
    ),
    "an annotation entry dropped": (
        lambda bag, ff: _drop_entry(bag, "annotate"),
        "the export entry signed for",
    ),
    "an original relabelled through its sighting": (
        lambda bag, ff: _point_at_sighting(bag),
        "is a sighting entry, not the original's ingest entry",
    ),
    "a fingerprint sidecar altered": (
        lambda bag, ff: _swap_sidecar(bag),
        "not its name (altered)",
    ),
    "a non-ASCII digit in an entry list": (
        lambda bag, ff: _tsv_column(bag, "entries", "1,²"),
        "are named but missing or do not verify",
    ),
    "a planted video with role 'evidence'": (
        lambda bag, ff: _plant(bag, ff, "evidence"),
        "no verified entry in the bag names SHA-256",
    ),
    "a planted video with a blank role": (
        lambda bag, ff: _plant(bag, ff, ""),
        "no verified entry in the bag names SHA-256",
    ),
    "one of the case's originals dropped": (
        lambda bag, ff: _drop_original(bag),
        "no signed export entry names this manifest-sha256.txt",
    ),
    "the case number changed in bag-info.txt": (
        lambda bag, ff: _edit(bag, "bag-info.txt", "2026-XZ-0042", "2026-XZ-0043"),
        "External-Identifier says '2026-XZ-0043'",
    ),
    "the purpose changed in bag-info.txt": (
        lambda bag, ff: _edit(bag, "bag-info.txt", "appeal 17", "appeal 71"),
        "Internal-Sender-Description says",
    ),
    "the operator changed in bag-info.txt": (
        lambda bag, ff: _edit(bag, "bag-info.txt", "clerk-wang", "clerk-li"),
        "Contact-Name says 'clerk-li'",
    ),
    "the export time changed in bag-info.txt": (
        lambda bag, ff: _edit(
            bag, "bag-info.txt", "Custody-Export-Time: 20", "Custody-Export-Time: 19"
        ),
        "Custody-Export-Time says",
    ),
    "the officer changed in files.tsv": (
        lambda bag, ff: _tsv_column(bag, "officer", "999999"),
        "officer says '999999', the signed ingest entry says '010203'",
    ),
    "the unit changed in files.tsv": (
        lambda bag, ff: _tsv_column(bag, "unit", "530000000000"),
        "unit says '530000000000'",
    ),
    "the recorder changed in files.tsv": (
        lambda bag, ff: _tsv_column(bag, "recorder", "ZZZ9999"),
        "recorder says 'ZZZ9999'",
    ),
    "the capture time changed in files.tsv": (
        lambda bag, ff: _tsv_column(bag, "captured", "2020-01-01T00:00:00Z"),
        "captured says '2020-01-01T00:00:00Z'",
    ),
    "the recording start changed in files.tsv": (
        lambda bag, ff: _tsv_column(bag, "recorded", "2020-01-01T00:00:00Z"),
        "recorded says '2020-01-01T00:00:00Z'",
    ),
    "a recording said to be cut short in files.tsv": (
        lambda bag, ff: _tsv_column(bag, "complete", "false"),
        "complete says 'false', the signed probe entry says",
    ),
    "an access copy relabelled as an original": (
        lambda bag, ff: _tsv_column(bag, "role", "access_copy"),
        "role says 'access_copy'",
    ),
    "the case number changed in VERIFY.txt": (
        lambda bag, ff: _edit(bag, "VERIFY.txt", "2026-XZ-0042", "2026-XZ-0043"),
        "VERIFY.txt does not say what the signed export entry says",
    ),
}


@pytest.mark.parametrize("case", sorted(FORGERIES))
def test_forged_bags_fail_with_the_real_pinned_key(
    exported: tuple[Path, Path, str], tmp_path: Path, ffmpeg: str, case: str
) -> None:
    """A forger with the bag but not the station's key: every BagIt list recomputed, so
    standard tools pass; the signed export entry and ingest entries must catch it."""
    conf, bag, vkey = exported
    t = _copy(bag, tmp_path)
    action, message = FORGERIES[case]
    action(t, ffmpeg)
    _rebag(t)
    s = subprocess.run(["sha256sum", "-c", "manifest-sha256.txt"], cwd=t, capture_output=True)
    assert s.returncode == 0, "the forgery should pass the standard tools"
    for p in (verify(t, vkey), run_cli("verify", str(t), "--vkey", vkey, config=conf, check=False)):
        assert p.returncode == 1, f"{case}: passed\n{p.stdout}"
        assert message in p.stdout, f"{case}: {p.stdout}"


def test_the_verdict_names_the_key_and_the_unsigned_labels(
    exported: tuple[Path, Path, str], tmp_path: Path
) -> None:
    from ledger.note import Verifier
    from verify.bag import verify_bag

    _conf, bag, vkey = exported
    name, keyid, _ = vkey.split("+", 2)
    rep = verify_bag(bag, Verifier.parse(vkey))
    assert rep.ok and rep.trusted == f"{name} (key id {keyid}), pinned by the user"
    assert rep.export_entry >= 0
    # Bag-Software-Agent is not signed by anything: it is named as such.
    assert any(u.startswith("bag-info.txt Bag-Software-Agent") for u in rep.unsigned)
    # No key given: the bag's own key is used, and the verdict says what that proves.
    rep = verify_bag(bag, None)
    assert rep.ok and rep.trusted.endswith("carried inside the package")
    assert any("not that the station made it" in n for n in rep.notes)
    # A label added by someone else is listed as unsigned, not trusted silently.
    t = _copy(bag, tmp_path)
    with open(t / "bag-info.txt", "a") as f:
        f.write("Internal-Sender-Identifier: ruling 2026-88\n")
    _rebag(t)
    rep = verify_bag(t, Verifier.parse(vkey))
    assert rep.ok, rep.problems
    assert any("Internal-Sender-Identifier" in u for u in rep.unsigned)


def test_hostile_bag_files_do_not_hang_or_escape(
    exported: tuple[Path, Path, str], tmp_path: Path
) -> None:
    """A FIFO among the tag files, a symlink in the payload to a device, an oversized
    bag-info: each is named, none is read through, and the verifier returns."""
    import os

    _conf, bag, vkey = exported
    t = _copy(bag, tmp_path)
    os.mkfifo(t / "custody" / "pipe")
    (t / "data" / "originals" / "zero.mp4").symlink_to("/dev/zero")
    with open(t / "bag-info.txt", "a") as f:
        f.write("X-Padding: " + "x" * (2 << 20) + "\n")
    p = verify(t, vkey)
    assert p.returncode == 1, p.stdout
    assert "custody/pipe: not a regular file" in p.stdout
    assert "data/originals/zero.mp4: not a regular file" in p.stdout
    assert "bag-info.txt cannot be read: it holds" in p.stdout and "more than the" in p.stdout


def test_a_failed_export_leaves_no_partial_folder(
    exported: tuple[Path, Path, str], tmp_path: Path
) -> None:
    conf, _bag, _vkey = exported
    out = tmp_path / "bag2"
    p = run_cli("export", "--out", str(out), "--purpose", "x", "f" * 64, config=conf, check=False)
    assert p.returncode == 2 and "no captured original has this SHA-256" in p.stderr
    assert not out.exists() and not (tmp_path / "bag2.partial").exists()


def test_conflicting_checkpoint_gives_a_misbehaviour_report(
    exported: tuple[Path, Path, str], tmp_path: Path
) -> None:
    """A checkpoint of the same size with another root, signed by the station's own key
    (a fork): the verifier fails and writes both notes to a report."""
    from ledger.checkpoint import Checkpoint
    from ledger.note import Signer

    conf, bag, vkey = exported
    key = (conf.parent / "keys" / "station.key").read_text().strip()
    signer = Signer.parse(key)
    text = (bag / "custody" / "checkpoint").read_text()
    cp = Checkpoint.parse_body(text.split("\n\n", 1)[0] + "\n")
    forged = Checkpoint(cp.origin, cp.size, bytes(32))
    other = tmp_path / "other-checkpoint"
    other.write_text(forged.sign([signer]))
    report = tmp_path / "misbehaviour.txt"
    p = run_cli(
        "verify",
        str(bag),
        "--vkey",
        vkey,
        "--known",
        str(other),
        "--report",
        str(report),
        config=conf,
        check=False,
    )
    assert p.returncode == 1 and "two different logs of size" in p.stdout
    r = report.read_text()
    assert "MISBEHAVIOUR REPORT" in r and text in r and other.read_text() in r


def test_single_file_and_clip_lookup(
    exported: tuple[Path, Path, str], tmp_path: Path, ffmpeg: str
) -> None:
    conf, bag, _ = exported
    original = _first(bag, "data/originals/*")
    p = run_cli("verify", str(original), config=conf)
    assert "is in the ledger" in p.stdout and ": ingest of" in p.stdout
    stranger = tmp_path / "x.bin"
    stranger.write_bytes(b"never docked")
    q = run_cli("verify", str(stranger), config=conf, check=False)
    assert q.returncode == 1 and "is not in the ledger" in q.stdout
    cut = tmp_path / "cut.mp4"
    subprocess.run(
        [ffmpeg, "-v", "error", "-i", str(original), "-t", "1", "-c", "copy", str(cut)], check=True
    )
    c = run_cli("verify", str(cut), config=conf, check=False)
    assert "tracing it as a clip" in c.stdout and "cut from" in c.stdout, c.stdout


def test_outsider_checks_a_single_file_against_a_ledger_copy(
    exported: tuple[Path, Path, str], tmp_path: Path
) -> None:
    """With only the station's published ledger folder and its key."""
    conf, bag, vkey = exported
    ledger = tmp_path / "ledger-copy"
    shutil.copytree(conf.parent / "ledger", ledger)
    original = _first(bag, "data/originals/*")
    args = [sys.executable, "-m", "verify", "file"]
    p = subprocess.run(
        [*args, str(original), "--ledger", str(ledger), "--vkey", vkey],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert p.returncode == 0 and "is in the ledger" in p.stdout and ": ingest of" in p.stdout
    other = tmp_path / "other.bin"
    other.write_bytes(b"not docked")
    q = subprocess.run(
        [*args, str(other), "--ledger", str(ledger), "--vkey", vkey],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert q.returncode == 1 and "is named by no entry" in q.stdout
    # A ledger copy with a flipped bit in a tile proves nothing.
    tile = next(p for p in sorted(ledger.rglob("*")) if p.is_file() and "/tile/0/" in p.as_posix())
    _flip(tile, 5)
    r = subprocess.run(
        [*args, str(original), "--ledger", str(ledger), "--vkey", vkey],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert r.returncode == 1 and "does not verify" in r.stdout


def test_odd_names_duplicates_and_one_line_labels(tmp_path: Path, ffmpeg: str) -> None:
    """A file name with a tab and a line separator exports and verifies; a SHA-256 given
    twice is exported once; a purpose over two lines is refused; an interrupted export's
    folder is never deleted by the next one."""
    dock = tmp_path / "dock"
    conf = make_station(tmp_path, dock)
    odd = make_clip(ffmpeg, dock / "slot01" / "rec\twith\u2028breaks%.mp4", tone=400)
    run_cli("ingest", str(dock), "--settle-ms", "0", config=conf)
    s = sha(odd)
    vkey = run_cli("ledger", "vkey", config=conf).stdout.strip()
    bag = tmp_path / "bag"
    out = run_cli(
        "export", "--out", str(bag), "--purpose", "review", s, s.upper(), "--json", config=conf
    )
    assert json.loads(out.stdout)["files"] >= 1
    assert (
        len((bag / "manifest-sha256.txt").read_text().splitlines())
        == json.loads(out.stdout)["files"]
    )
    p = verify(bag, vkey)
    assert p.returncode == 0, p.stdout
    assert "rec%09with%E2%80%A8breaks%25.mp4" in (bag / "custody" / "files.tsv").read_text()
    bad = run_cli(
        "export",
        "--out",
        str(tmp_path / "b2"),
        "--purpose",
        "one\ntwo",
        s,
        config=conf,
        check=False,
    )
    assert bad.returncode == 2 and "line break" in bad.stderr, bad.stderr
    (tmp_path / "b3.partial").mkdir()
    (tmp_path / "b3.partial" / "keep").write_text("someone's file")
    bad = run_cli(
        "export", "--out", str(tmp_path / "b3"), "--purpose", "x", s, config=conf, check=False
    )
    assert bad.returncode == 2 and "b3.partial exists" in bad.stderr, bad.stderr
    assert (tmp_path / "b3.partial" / "keep").exists()
    # Without a key of one's own, the verifier asks for one, or for --trust-bag-key.
    no_key = subprocess.run(
        [sys.executable, "-m", "verify", "bag", str(bag)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert no_key.returncode == 2 and "--trust-bag-key" in no_key.stderr, no_key.stderr
    trusting = subprocess.run(
        [sys.executable, "-m", "verify", "bag", str(bag), "--trust-bag-key"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert trusting.returncode == 0 and "carried inside the package" in trusting.stdout
