"""`custody audit` on a real station with a cold folder: a clean audit, resuming samples,
and what it finds when objects, the mirrored ledger or a deletion are not as they
should be."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from custody import config as cfg
from custody.station import open_ledger

from ..conftest import make_clip, run_cli
from .daemon import entries, make_station
from .test_fingerprints import sha


def audit(conf: Path, *args: str) -> tuple[int, dict[str, Any]]:
    p = run_cli("audit", "--json", *args, config=conf, check=False)
    assert p.returncode in (0, 1), p.stderr
    return p.returncode, json.loads(p.stdout)


def where(root: Path, s: str) -> Path:
    return root / "objects" / "sha256" / s[:2] / s[2:4] / s


def flip(p: Path, at: int | None = None) -> None:
    p.chmod(0o644)
    data = bytearray(p.read_bytes())
    i = len(data) // 2 if at is None else at
    data[i] ^= 0x01
    p.write_bytes(bytes(data))


def test_audit_finds_what_is_wrong(tmp_path: Path, ffmpeg: str) -> None:
    dock = tmp_path / "dock"
    cold = tmp_path / "cold"
    conf = make_station(tmp_path, dock, extra=f'\n[store]\nkind = "local"\npath = "{cold}"\n')
    slot = dock / "slot01"
    clips = [make_clip(ffmpeg, slot / f"{n}.mp4", tone=t) for n, t in (("A", 300), ("B", 400))]
    run_cli("ingest", str(dock), "--settle-ms", "0", config=conf)
    sa, sb = sha(clips[0]), sha(clips[1])

    rc, s = audit(conf, "--full")
    assert rc == 0 and s["ok"], s
    assert s["ledger_ok"] and s["cold_ledger_ok"]
    # Two originals, two access copies, packet sidecars and a poster (the two clips show
    # the same picture at one second: one object): all on both sides.
    assert s["population"] == 7 and s["results"].get("cold_ok", 0) == s["population"]
    report = Path(s["report"])
    assert "everything holds" in (report / "report.md").read_text()
    table = pq.read_table(report / "objects.parquet").to_pylist()
    assert {r["status"] for r in table} == {"ok"} and len(table) == 2 * s["population"]
    fix = [e for e in entries(conf) if e["type"] == "fixity"][-1]
    assert fix["ok"] is True and fix["mode"] == "full"

    # Samples continue where the last one stopped, and cover everything in turn.
    seen: set[str] = set()
    n = s["population"]
    for _ in range(n // 2):
        _, s2 = audit(conf, "--sample", "2")
        t = pq.read_table(Path(s2["report"]) / "objects.parquet").to_pylist()
        batch = {r["sha256"] for r in t}
        assert len(batch) == 2 and not batch & seen, "a sample repeats before all were seen"
        seen |= batch
    assert len(seen) == 2 * (n // 2)
    # The audits' own entries are not mirrored yet: a lagging mirror is not a problem.
    rc, s = audit(conf, "--full")
    assert rc == 0 and s["cold_ledger_ok"], s

    # Damage: a bit in A's cold copy, B's dock copy gone, a bit in the mirrored ledger.
    flip(where(cold, sa))
    where(conf.parent / "store", sb).unlink()
    bundles = [p for p in (cold / "ledger").rglob("*") if "/tile/entries/" in p.as_posix()]
    flip(next(p for p in sorted(bundles) if p.is_file()), 40)
    rc, s = audit(conf, "--full")
    assert rc == 1 and not s["ok"]
    text = "\n".join(s["problems"])
    assert f"cold copy of {sa} (original): altered" in text, text
    assert f"dock copy of {sb} (original): missing" in text, text
    assert not s["cold_ledger_ok"] and "cold-store ledger:" in text
    assert "PROBLEMS FOUND" in (Path(s["report"]) / "report.md").read_text()
    assert [e for e in entries(conf) if e["type"] == "fixity"][-1]["ok"] is False


def test_audit_flags_a_deletion_its_rule_did_not_allow(tmp_path: Path, ffmpeg: str) -> None:
    """A `delete` entry written before its due date (a bug, or someone with the key)
    is named by the audit."""
    dock = tmp_path / "dock"
    conf = make_station(tmp_path, dock)
    clip = make_clip(ffmpeg, dock / "slot01" / "A.mp4")
    run_cli("ingest", str(dock), "--settle-ms", "0", config=conf)
    s = sha(clip)
    c = cfg.load(conf)
    with open_ledger(c) as ledger:
        ledger.append(
            "delete",
            {"sha256": s, "rule": "ordinary", "keep_days": 180, "due": "2099-01-01T00:00:00Z"},
        )
        ledger.integrate()
    rc, out = audit(conf, "--full")
    assert rc == 1
    assert any("before its rule allowed" in p for p in out["problems"]), out["problems"]
