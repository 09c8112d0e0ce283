"""A real station's publication (公示) checks with `custody verify DIR`, and altering any
one published file makes it fail with that file named.

A station docks real recordings (ffmpeg's lavfi sources), they are annotated, then
`custody disclose --out DIR --period 2026` writes the publication. `custody verify
DIR` checks it with the station's own key; `python -m verify disclosure` checks it
with the key pinned; and on a machine with no station the publication's own key is
used and the verdict says so."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import REPO, make_clip, run_cli
from .daemon import make_station
from .test_fingerprints import sha

PERIOD = "2026"
EXPECTED = {
    "index.html",
    "style.css",
    "data.json",
    "data.csv",
    "audits.csv",
    "logs/01/checkpoint",
    "logs/01/vkey",
    "witnesses.txt",
    "publisher.vkey",
    "MANIFEST",
    "disclose.entry",
    "disclose.tlog-proof",
}


def published_files(root: Path) -> list[str]:
    return sorted(
        p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() or p.is_symlink()
    )


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory, ffmpeg: str) -> tuple[Path, Path, str]:
    """(config, publication folder, the station's verifier key)."""
    tmp = tmp_path_factory.mktemp("disclose")
    dock = tmp / "dock"
    conf = make_station(tmp, dock)
    slot = dock / "slot01"
    a = make_clip(ffmpeg, slot / "ABC1234_010203_20261120093000_0001.mp4", tone=300)
    make_clip(ffmpeg, slot / "ABC1234_010203_20261120094000_0002.mp4", tone=500)
    run_cli("ingest", str(dock), "--settle-ms", "0", config=conf)
    run_cli("annotate", sha(a), "--case", "2026-XZ-0042", "--category", "行政处罚", config=conf)
    out = tmp / "pub"
    res = run_cli(
        "disclose",
        "--out",
        str(out),
        "--period",
        PERIOD,
        "--operator",
        "clerk",
        "--json",
        config=conf,
    )
    doc = json.loads(res.stdout)
    assert doc["period"] == PERIOD and doc["files"] == 9, doc
    vkey = run_cli("ledger", "vkey", config=conf).stdout.strip()
    return conf, out, vkey


def verify(root: Path, *args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    p = run_cli("verify", str(root), *args, config=config, check=False)
    assert "Traceback" not in p.stdout + p.stderr, p.stderr
    return p


def failed(p: subprocess.CompletedProcess[str]) -> list[str]:
    return [ln[len("FAILED ") :] for ln in p.stdout.splitlines() if ln.startswith("FAILED ")]


def test_the_publication_verifies_with_the_stations_key(
    published: tuple[Path, Path, str],
) -> None:
    conf, root, vkey = published
    assert set(published_files(root)) == EXPECTED
    p = verify(root, config=conf)
    assert p.returncode == 0, p.stdout + p.stderr
    assert f"the station's own key (config {conf})" in p.stdout
    assert f"period {PERIOD} (station)" in p.stdout
    assert "files: 9 of 9 in MANIFEST hash right" in p.stdout
    assert "logs/01: custody.test/capture/dock-01, checkpoint size" in p.stdout
    # The same with the key pinned, by the verifier a court runs (python -m verify).
    v = subprocess.run(
        [sys.executable, "-m", "verify", "disclosure", str(root), "--vkey", vkey, "--json"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert v.returncode == 0, v.stdout + v.stderr
    got = json.loads(v.stdout)
    assert got["ok"] and got["period"] == PERIOD and got["files"] == 9
    assert got["trusted_keys"][0]["vkey"] == vkey
    entry = json.loads((root / "disclose.entry").read_bytes())
    assert got["entry_index"] is not None and entry["type"] == "disclose"
    assert got["checkpoint_size"] > got["entry_index"]


def test_without_a_station_the_publications_own_key_is_used_and_said(
    published: tuple[Path, Path, str], tmp_path: Path
) -> None:
    _, root, _ = published
    # A citizen's machine: no -c, no $CUSTODY_CONFIG (run_cli removes it), no station
    # config at the default path (a test machine has none there).
    assert not Path("/etc/custody/custody.toml").exists()
    p = verify(root)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "carried inside the publication (publisher.vkey)" in p.stdout
    assert "compare it with the key the agency publishes elsewhere" in p.stdout


def test_on_another_station_the_publications_own_key_is_used_and_said(
    published: tuple[Path, Path, str], tmp_path: Path
) -> None:
    """Another station's (or the county's) publication checked on a station: that
    station's own key is not the publisher's, so the carried key is used, and said."""
    _, root, _ = published
    run_cli("init", "--data", str(tmp_path / "other"), "--origin", "custody.test/other/dock-09")
    p = verify(root, config=tmp_path / "other" / "custody.toml")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "carried inside the publication (publisher.vkey)" in p.stdout


@pytest.mark.parametrize("rel", sorted(EXPECTED))
def test_altering_any_published_file_fails_naming_it(
    rel: str, published: tuple[Path, Path, str], tmp_path: Path
) -> None:
    conf, root, _ = published
    copy = tmp_path / "pub"
    shutil.copytree(root, copy)
    data = bytearray((copy / rel).read_bytes())
    if data:
        data[len(data) // 2] ^= 0x01
    else:  # witnesses.txt of a station with no witness policy is empty
        data += b"\n"
    (copy / rel).write_bytes(bytes(data))
    for config in (conf, None):  # the station's key, and the publication's own
        p = verify(copy, config=config)
        assert p.returncode == 1, (rel, p.stdout, p.stderr)
        assert any(f.startswith(rel) for f in failed(p)), (rel, p.stdout)


def test_an_added_or_removed_file_fails_naming_it(
    published: tuple[Path, Path, str], tmp_path: Path
) -> None:
    conf, root, _ = published
    copy = tmp_path / "pub"
    shutil.copytree(root, copy)
    (copy / "extra.html").write_text("<p>added</p>\n")
    p = verify(copy, config=conf)
    assert p.returncode == 1 and any(f.startswith("extra.html") for f in failed(p)), p.stdout
    os.unlink(copy / "extra.html")
    os.unlink(copy / "audits.csv")
    p = verify(copy, config=conf)
    assert p.returncode == 1 and any(f.startswith("audits.csv") for f in failed(p)), p.stdout


def test_a_witnessed_stations_publication_shows_its_cosignatures_and_quorum(
    tmp_path: Path,
) -> None:
    """Two real witness servers cosign the station's checkpoints: the published log
    checkpoint carries both cosignatures, counted valid against witnesses.txt, and the
    station's policy (checked with --policy) finds its quorum met."""
    from .test_witnessed_station import setup

    conf, ws, _, _ = setup(tmp_path)
    out = tmp_path / "pub"
    try:
        # The first publication's entry is cosigned as it is signed; the second one
        # carries that cosigned checkpoint as the log's latest witnessed one.
        run_cli("disclose", "--out", str(tmp_path / "first"), "--period", PERIOD, config=conf)
        run_cli("disclose", "--out", str(out), "--period", PERIOD, config=conf)
    finally:
        for w in ws:
            w.stop()
    assert (out / "policy.txt").is_file()
    p = verify(out, "--policy", str(out / "policy.txt"), config=conf)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "cosignatures 2 valid of 2 (against 2 witness key(s) in witnesses.txt)" in p.stdout
    assert "policy quorum met (all of (w1, w2))" in p.stdout
    assert "note: data.json logs[0]" not in p.stdout  # the writer counted the same two
    # A witness key in witnesses.txt swapped for another: that cosignature no longer
    # counts (and the file is no longer the published one).
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    keys = (copy / "witnesses.txt").read_text().splitlines()
    (copy / "witnesses.txt").write_text(keys[0] + "\n")
    p = verify(copy, config=conf)
    assert p.returncode == 1 and "cosignatures 1 valid of 2" in p.stdout, p.stdout
    assert any(f.startswith("witnesses.txt") for f in failed(p)), p.stdout
