"""Retention through time: real captures, a real ledger and a real cold-store folder;
the sweeper runs in-process with an injected clock (the store's clock moves with it).
People's commands (annotate, hold, release, plan, apply) go through the CLI."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from archive.local import LocalFolderStore
from custody import config as cfg
from custody.retain import index_db, make_sweeper
from custody.station import open_ledger
from retention.plan import DAY
from retention.sweep import SweepResult

from ..conftest import make_clip, run_cli
from .daemon import entries, make_station
from .test_fingerprints import sha

POLICY = """
[[rules]]
name = "case"
match = { case = true }
keep = "permanent"
local_days = 30

[[rules]]
name = "ordinary"
keep_days = 180
local_days = 10
tiers = [{ after_days = 30, class = "COLD" }]
"""


def sweep_at(conf_path: Path, at: float, **kw: Any) -> SweepResult:
    conf = cfg.load(conf_path)
    assert conf.store is not None and conf.store.path is not None
    clock: Callable[[], float] = lambda: at  # noqa: E731
    store = LocalFolderStore(conf.store.path, clock=lambda: datetime.fromtimestamp(at, UTC))
    with open_ledger(conf) as ledger:
        db = index_db(ledger)
        try:
            res = make_sweeper(conf, ledger, db, clock=clock, store=store).sweep(**kw)
            ledger.integrate()
        finally:
            db.close()
    return res


def of(conf: Path, ty: str) -> list[dict[str, Any]]:
    return [e for e in entries(conf) if e["type"] == ty]


def test_rules_through_time(tmp_path: Path, ffmpeg: str) -> None:
    dock = tmp_path / "dock"
    cold = tmp_path / "cold"
    conf = make_station(
        tmp_path, dock, extra=f'\n[store]\nkind = "local"\npath = "{cold}"\nretain_days = 1\n'
    )
    slot = dock / "slot01"
    a = make_clip(ffmpeg, slot / "A.mp4", tone=300)
    b = make_clip(ffmpeg, slot / "B.mp4", tone=400)
    c = make_clip(ffmpeg, slot / "C.mp4", tone=500)
    sa, sb, sc = sha(a), sha(b), sha(c)
    run_cli("ingest", str(dock), "--settle-ms", "0", config=conf)
    assert len([e for e in of(conf, "store") if e["role"] == "original"]) == 3
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    # No policy is in force after init: nothing would ever be deleted.
    assert "no policy applied" in run_cli("status", config=conf).stdout
    run_cli("retention", "apply", "--policy", str(policy), config=conf)
    assert of(conf, "policy")[-1]["source"] == str(policy)

    run_cli("annotate", sb, "--case", "2026-XZ-0042", "--category", "行政处罚", config=conf)
    ann = of(conf, "annotate")[-1]
    assert ann["category"] == "administrative_penalty" and ann["cases_added"] == ["2026-XZ-0042"]
    held = run_cli("hold", sc, "--reason", "complaint under review", config=conf)
    assert "hold recorded as entry" in held.stdout
    local = conf.parent / "store" / "objects" / "sha256"

    now = time.time()
    # Day 40: dock copies evicted (each confirmed in the cold store), A and C moved to COLD.
    r = sweep_at(conf, now + 40 * DAY)
    assert not r.refused and not r.failed, r
    tiers = of(conf, "tier")
    assert sorted(t["sha256"] for t in tiers if t["action"] == "evict_local") == sorted(
        [sa, sb, sc]
    )
    moved = {t["sha256"]: t for t in tiers if t["action"] == "storage_class"}
    assert set(moved) == {sa, sc} and moved[sa]["to"] == "COLD" and moved[sa]["rule"] == "ordinary"
    for s in (sa, sb, sc):
        assert not (local / s[:2] / s[2:4] / s).exists()
        assert (cold / "objects" / "sha256" / s[:2] / s[2:4] / s).exists()
    # Locks were extended to each rule's need (the station's default was 1 day).
    locks = {e["sha256"]: e for e in of(conf, "lock")}
    assert set(locks) == {sa, sb, sc}
    assert of(conf, "legal_hold")[-1]["sha256"] == sc and of(conf, "legal_hold")[-1]["on"]

    # The plan at day 200 says what will happen, and why C waits.
    p = json.loads(
        run_cli("retention", "plan", "--as-of", _day(now, 200), "--json", config=conf).stdout
    )
    dels = {x["sha256"]: x for x in p["actions"] if x["kind"] == "delete"}
    assert set(dels) == {sa, sc} and dels[sa]["blocked"] == "" and "held" in dels[sc]["blocked"]
    assert (
        "BLOCKED: held"
        in run_cli("retention", "plan", "--as-of", _day(now, 200), config=conf).stdout
    )

    # Day 200: A is deleted by its rule; B (case) and C (held) stay. (The jump from day
    # 40 is confirmed, as a person would after the station was off that long.)
    assert "moved 160 days" in sweep_at(conf, now + 200 * DAY).clock
    assert of(conf, "delete") == []
    r = sweep_at(conf, now + 200 * DAY, accept_clock=True)
    assert not r.refused and not r.failed, r
    d = originals_deleted(conf)
    assert [x["sha256"] for x in d] == [sa]
    assert d[0]["rule"] == "ordinary" and d[0]["cold"] == "deleted" and d[0]["keep_days"] == 180
    assert not (cold / "objects" / "sha256" / sa[:2] / sa[2:4] / sa).exists()
    assert (cold / "objects" / "sha256" / sc[:2] / sc[2:4] / sc).exists()
    # The ledger keeps the hash of what was deleted, and its proof.
    assert any(e["type"] == "ingest" and e["sha256"] == sa for e in entries(conf))
    # A's access copy went with it; the poster, the same picture as B's, stays for B.
    copies = derived(conf)
    gone = [x for x in of(conf, "delete") if x.get("role") == "derivative"]
    assert [x["sha256"] for x in gone] == [copies[(sa, "access_copy")]]
    assert gone[0]["of"] == [sa] and gone[0]["cold"] == "deleted"
    for g in gone:
        h = g["sha256"]
        assert not (cold / "objects" / "sha256" / h[:2] / h[2:4] / h).exists()
    poster = copies[(sa, "poster")]
    assert poster == copies[(sb, "poster")]
    assert (cold / "objects" / "sha256" / poster[:2] / poster[2:4] / poster).exists()

    # Released: C goes at the next sweep; its legal hold is cleared first.
    run_cli("release", sc, "--reason", "complaint closed", config=conf)
    assert of(conf, "legal_hold")[-1]["on"] is False
    r = sweep_at(conf, now + 201 * DAY)
    assert [x["sha256"] for x in originals_deleted(conf)] == [sa, sc]
    assert not (cold / "objects" / "sha256" / sc[:2] / sc[2:4] / sc).exists()
    # B is linked to a case: kept permanently, whatever the date.
    sweep_at(conf, now + 205 * DAY)
    assert sb not in [x["sha256"] for x in of(conf, "delete")]
    assert (cold / "objects" / "sha256" / poster[:2] / poster[2:4] / poster).exists()

    # Clock safety: behind the ledger, or a jump since the last sweep, holds deletions back.
    behind = sweep_at(conf, now - 3 * DAY)
    assert "behind" in behind.clock
    jump = sweep_at(conf, now + 900 * DAY)
    assert "moved 695 days since the last sweep" in jump.clock
    ok = sweep_at(conf, now + 900 * DAY, accept_clock=True)
    assert ok.clock == ""
    # Rebuilding the index from the ledger keeps the sweeps' memory of the clock.
    run_cli("reindex", config=conf)
    assert "moved 100 days since the last sweep" in sweep_at(conf, now + 1000 * DAY).clock


def originals_deleted(conf: Path) -> list[dict[str, Any]]:
    return [x for x in of(conf, "delete") if x.get("role") != "derivative"]


def derived(conf: Path) -> dict[tuple[str, str], str]:
    return {
        (e["sha256"], e["kind"]): e["output"]["sha256"]
        for e in of(conf, "derive")
        if e.get("output")
    }


def _day(now: float, days: int) -> str:
    return datetime.fromtimestamp(now + days * DAY, UTC).strftime("%Y-%m-%d")


def test_a_policy_that_deletes_earlier_needs_confirmation(tmp_path: Path, ffmpeg: str) -> None:
    dock = tmp_path / "dock"
    conf = make_station(tmp_path, dock)
    slot = dock / "slot01"
    clips = [make_clip(ffmpeg, slot / f"{n}.mp4", tone=t) for n, t in (("A", 300), ("B", 400))]
    run_cli("ingest", str(dock), "--settle-ms", "0", config=conf)
    # The default policy init wrote, applied as a site would.
    run_cli("retention", "apply", "--policy", str(conf.parent / "retention.toml"), config=conf)
    run_cli("annotate", sha(clips[1]), "--important", config=conf)
    # A site drops the "important" rule by mistake: B would be deleted after 180 days.
    new = tmp_path / "new.toml"
    new.write_text(
        '[[rules]]\nname = "case"\nmatch = { case = true }\nkeep = "permanent"\n'
        '[[rules]]\nname = "ordinary"\nkeep_days = 180\n'
    )
    out = run_cli("retention", "plan", "--policy", str(new), config=conf).stdout
    assert "deleted EARLIER: 1" in out and "rule important -> ordinary: 1" in out, out
    assert "--confirm 1" in out
    refused = run_cli("retention", "apply", "--policy", str(new), config=conf, check=False)
    assert refused.returncode == 2 and "deletes 1 item(s) earlier" in refused.stderr
    wrong = run_cli(
        "retention", "apply", "--policy", str(new), "--confirm", "3", config=conf, check=False
    )
    assert wrong.returncode == 2
    assert len(of(conf, "policy")) == 1, "nothing applied but the default"
    run_cli("retention", "apply", "--policy", str(new), "--confirm", "1", config=conf)
    pe = of(conf, "policy")[-1]
    assert pe["deleted_earlier"] == 1 and pe["source"] == str(new)
    # A policy under the floor is refused outright.
    low = tmp_path / "low.toml"
    low.write_text('[[rules]]\nname = "d"\nkeep_days = 30\n')
    bad = run_cli("retention", "apply", "--policy", str(low), config=conf, check=False)
    assert bad.returncode == 2 and "under the floor" in bad.stderr
    # Annotating something that is not a captured original: a clear error.
    nope = run_cli("annotate", "f" * 64, "--important", config=conf, check=False)
    assert nope.returncode == 2 and "no captured original" in nope.stderr


def test_against_seaweedfs_locks_holds_and_a_refused_delete(
    tmp_path: Path, ffmpeg: str, seaweed: Any
) -> None:
    import uuid

    from .daemon import s3_store_conf

    bucket = seaweed.bucket(f"ret-{uuid.uuid4().hex[:12]}")
    dock = tmp_path / "dock"
    # Uploads are locked 1 day; the station's policy wants 180 days (or permanent).
    conf = make_station(
        tmp_path, dock, extra=s3_store_conf(seaweed.endpoint, bucket, retain_days=1)
    )
    slot = dock / "slot01"
    a = make_clip(ffmpeg, slot / "A.mp4", tone=300)
    b = make_clip(ffmpeg, slot / "B.mp4", tone=600)
    sa, sb = sha(a), sha(b)
    run_cli("ingest", str(dock), "--settle-ms", "0", config=conf)
    run_cli("retention", "apply", "--policy", str(conf.parent / "retention.toml"), config=conf)
    s3 = seaweed.client()

    def head(s: str) -> dict[str, Any]:
        key = f"objects/sha256/{s[:2]}/{s[2:4]}/{s}"
        return dict(s3.head_object(Bucket=bucket, Key=key))

    day = head(sa)["ObjectLockRetainUntilDate"]
    assert (day - datetime.now(UTC)).days < 2
    # Marked important: kept permanently, so the store's lock is extended (30 years).
    out = run_cli("annotate", sa, "--important", "--reason", "use of force", config=conf).stdout
    assert "lock" in out and "rule 'important': kept permanent" in out, out
    until = head(sa)["ObjectLockRetainUntilDate"]
    assert (until - datetime.now(UTC)).days > 29 * 365
    lock = of(conf, "lock")[-1]
    assert lock["sha256"] == sa and lock["mode"] == "COMPLIANCE"
    assert lock["retain_until"].startswith(str(until.year))
    # A hold sets the store's legal hold; a release clears it.
    run_cli("hold", sb, "--reason", "court order 17", config=conf)
    assert head(sb).get("ObjectLockLegalHoldStatus") == "ON"
    run_cli("release", sb, "--reason", "order lifted", config=conf)
    assert head(sb).get("ObjectLockLegalHoldStatus") != "ON"

    # B's lock was extended to its 180 days by the first sweep. With a clock that says
    # 200 days have passed, the sweep believes the lock is over and tries; the store,
    # whose clock says otherwise, refuses, and the sweep says so and records nothing.
    conf_obj = cfg.load(conf)
    at = time.time() + 200 * DAY
    with open_ledger(conf_obj) as ledger:
        db = index_db(ledger)
        try:
            sw = make_sweeper(conf_obj, ledger, db, clock=lambda: at)
            res = sw.sweep(accept_clock=True)
        finally:
            db.close()
    assert [r for r in res.refused if sb[:16] in r], res
    assert "refused the delete" in res.refused[0] and "locked (COMPLIANCE)" in res.refused[0]
    assert of(conf, "delete") == []
    assert head(sb)["ContentLength"] > 0
    # The plan still lists it as due, not done.
    p = json.loads(
        run_cli("retention", "plan", "--as-of", _day(at, 0), "--json", config=conf).stdout
    )
    assert [x["sha256"] for x in p["actions"] if x["kind"] == "delete"] == [sb]
    # The bucket's copy of the ledger verifies from the bucket alone.
    v = run_cli(
        "verify",
        f"s3://{bucket}",
        "--endpoint-url",
        seaweed.endpoint,
        "--vkey",
        str(conf.parent / "keys" / "station.vkey"),
        config=conf,
    )
    assert "OK" in v.stdout, v.stdout


def test_deleted_footage_docked_again_is_captured_anew(tmp_path: Path, ffmpeg: str) -> None:
    """Footage deleted by its rule, docked again from a recorder that still holds it (a
    second card, a recorder never wiped): it is not a sighting of something gone, and
    the recorder's file is not released on the strength of the deleted copy. It is
    captured anew, stored again, given its copies again, then released."""
    import shutil

    dock = tmp_path / "dock"
    cold = tmp_path / "cold"
    conf = make_station(
        tmp_path,
        dock,
        extra=f'\n[store]\nkind = "local"\npath = "{cold}"\nretain_days = 1\n',
        release="after_replication",
    )
    clip = make_clip(ffmpeg, tmp_path / "made" / "A.mp4")
    s = sha(clip)
    (dock / "slot01").mkdir(parents=True)
    shutil.copy(clip, dock / "slot01" / "A.mp4")
    run_cli("ingest", str(dock), "--settle-ms", "0", config=conf)
    assert not (dock / "slot01" / "A.mp4").exists(), "released after replication"
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    run_cli("retention", "apply", "--policy", str(policy), config=conf)
    sweep_at(conf, time.time() + 200 * DAY)
    deleted = originals_deleted(conf)
    assert [x["sha256"] for x in deleted] == [s]
    copies_before = len(of(conf, "derive"))
    assert not (cold / "objects" / "sha256" / s[:2] / s[2:4] / s).exists()

    shutil.copy(clip, dock / "slot01" / "A-again.mp4")
    run_cli("ingest", str(dock), "--settle-ms", "0", config=conf)
    ingests = [e for e in of(conf, "ingest") if e["sha256"] == s]
    assert len(ingests) == 2 and isinstance(ingests[1]["after_deletion_entry"], int)
    assert not any(e["type"] == "sighting" for e in entries(conf))
    stores = [e for e in of(conf, "store") if e["sha256"] == s]
    assert len(stores) == 2, "stored again"
    assert (cold / "objects" / "sha256" / s[:2] / s[2:4] / s).exists()
    assert not (dock / "slot01" / "A-again.mp4").exists(), "released once stored again"
    assert [e["type"] for e in entries(conf)].count("wipe") == 2
    assert len(of(conf, "derive")) > copies_before, "copies made again"
    # The retention index takes the new capture: not deleted, on the dock and in the store.
    found = json.loads(run_cli("find", "--sha", s[:12], "--json", config=conf).stdout)
    assert len(found) == 1 and found[0]["deleted_entry"] is None
    assert found[0]["store_entry"] is not None and found[0]["local"]
    # And an audit finds everything in place.
    rc = run_cli("audit", "--full", "--json", config=conf, check=False)
    got = json.loads(rc.stdout)
    assert not [p for p in got["problems"] if "missing" in p or "altered" in p], got["problems"]


def test_an_unlocked_store_gets_no_lock_requests(tmp_path: Path, ffmpeg: str) -> None:
    """A site that stores without object lock (lock_mode = "none"): annotations and
    sweeps do not try to extend locks the store does not keep."""
    dock = tmp_path / "dock"
    cold = tmp_path / "cold"
    conf = make_station(
        tmp_path, dock, extra=f'\n[store]\nkind = "local"\npath = "{cold}"\nlock_mode = "none"\n'
    )
    clip = make_clip(ffmpeg, dock / "slot01" / "A.mp4")
    run_cli("ingest", str(dock), "--settle-ms", "0", config=conf)
    run_cli("retention", "apply", "--policy", str(conf.parent / "retention.toml"), config=conf)
    out = run_cli("annotate", sha(clip), "--important", config=conf).stdout
    assert "not done now" not in out and "lock" not in out, out
    r = sweep_at(conf, time.time() + 40 * DAY)
    assert not r.failed and not r.refused, r
    assert of(conf, "lock") == []
