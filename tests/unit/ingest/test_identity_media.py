"""Recorder identity from filenames, the site's table and a command; media sniffing."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from ingest.identity import IdentityResolver
from ingest.media import is_media, sniff
from ingest.settings import DockSettings, FilenamePattern, RecorderInfo

PATTERN = FilenamePattern(
    "gat947", re.compile(r"^(?P<serial>[A-Z0-9]{7})_(?P<officer>\d{6})_(?P<start>\d{14})")
)


def test_filename_pattern_and_table() -> None:
    dock = DockSettings(
        path=Path("/srv/dock"),
        patterns=(PATTERN,),
        recorders={
            "slot02": RecorderInfo(unit="530822000000"),
            "ZZZ9999": RecorderInfo(officer="777777"),
        },
    )
    r = IdentityResolver(dock)
    a = r.resolve("slot02", "/srv/dock/slot02", "ABC1234_010203_20261125083000_0001.MP4", 1)
    assert (a.serial, a.officer, a.unit) == ("ABC1234", "010203", "530822000000")
    assert a.claimed_start == "2026-11-25T08:30:00"
    assert a.payload()["identified_by"] == ["filename:gat947", "table"]
    b = r.resolve("slot09", "/srv/dock/slot09", "ZZZ9999_000001_20261125083000.MP4", 1)
    assert b.officer == "777777"  # the site's table overrides what the file name claims
    c = r.resolve("slot09", "/srv/dock/slot09", "IMG_0001.JPG", 1)
    assert c.payload() == {"identified_by": ["unknown"]}


def test_identity_command(tmp_path: Path) -> None:
    tool = tmp_path / "vendor-id"
    tool.write_text(
        f"#!{sys.executable}\nimport json, sys\n"
        "print(json.dumps({'serial': 'CMD0001', 'officer': '123456', 'path': sys.argv[1]}))\n"
    )
    tool.chmod(0o755)
    dock = DockSettings(path=tmp_path, identity_command=(str(tool), "{recorder}"))
    r = IdentityResolver(dock)
    i = r.resolve("slot01", str(tmp_path / "slot01"), "x.mp4", 5)
    assert (i.serial, i.officer) == ("CMD0001", "123456")
    assert "command" in i.sources
    # The next recorder in the same slot: after a mount change the command is asked again.
    tool.write_text(
        f"#!{sys.executable}\nimport json\nprint(json.dumps({{'serial': 'CMD0002'}}))\n"
    )
    assert r.resolve("slot01", str(tmp_path / "slot01"), "x.mp4", 5).serial == "CMD0001"
    r.forget()
    assert r.resolve("slot01", str(tmp_path / "slot01"), "x.mp4", 5).serial == "CMD0002"
    bad = tmp_path / "broken"
    bad.write_text("#!/bin/sh\necho not json\n")
    bad.chmod(0o755)
    r2 = IdentityResolver(DockSettings(path=tmp_path, identity_command=(str(bad),)))
    assert r2.resolve("s", "s", "x", 1).serial == ""
    assert json.dumps(r2.resolve("s", "s", "x", 1).payload())


def test_sniff() -> None:
    assert sniff(b"\x00\x00\x00\x18ftypmp42\x00\x00", "a.bin") == "video/mp4"
    assert sniff(b"\x00\x00\x00\x14ftypqt  ", "a.mov") == "video/quicktime"
    assert sniff(b"RIFF\x00\x00\x00\x00AVI LIST", "a.avi") == "video/x-msvideo"
    assert sniff(b"RIFF\x00\x00\x00\x00WAVEfmt ", "a.wav") == "audio/wav"
    assert sniff(b"\xff\xd8\xff\xe0", "a.jpg") == "image/jpeg"
    assert sniff(b"", "empty.MP4") == "video/x-unknown"
    assert sniff(b"$GPGGA", "t.nmea") == "text/plain"
    assert sniff(b"\x01\x02", "blob") == "application/octet-stream"
    assert is_media("video/mp4") and is_media("audio/wav") and not is_media("image/jpeg")


MARKED = FilenamePattern(
    "gat947",
    re.compile(
        r"^(?P<serial>[A-Z0-9]{7})_(?P<officer>\d{6})_(?P<start>\d{14})"
        r"(?:_(?P<category>[A-Z]{4}))?(?P<important>_IMP)?"
    ),
)


def test_name_marks_important_and_category_and_fixes_the_start() -> None:
    dock = DockSettings(
        path=Path("/srv/dock"),
        patterns=(MARKED,),
        category_map={"XZCF": "administrative_penalty"},
        timezone="Asia/Shanghai",
    )
    r = IdentityResolver(dock)
    a = r.resolve("s", "/srv/dock/s", "ABC1234_010203_20261125083000_XZCF_IMP.MP4", 1)
    assert a.payload() == {
        "serial": "ABC1234",
        "officer": "010203",
        "claimed_start": "2026-11-25T08:30:00",
        "claimed_start_offset": "+08:00",
        "important": True,
        "category": "administrative_penalty",
        "identified_by": ["filename:gat947"],
    }
    # No suffix, an unknown code: the name says nothing about either.
    b = r.resolve("s", "/srv/dock/s", "ABC1234_010203_20261125083000_ZZZZ.MP4", 1)
    assert not b.important and b.category == "" and "important" not in b.payload()
    # A zone with summer time: the offset is the one in force at the recorded moment.
    ny_dock = DockSettings(path=Path("/d"), patterns=(MARKED,), timezone="America/New_York")
    ny = IdentityResolver(ny_dock)
    summer = ny.resolve("s", "/d/s", "ABC1234_010203_20260701120000.MP4", 1)
    winter = ny.resolve("s", "/d/s", "ABC1234_010203_20261201120000.MP4", 1)
    assert (summer.claimed_start_offset, winter.claimed_start_offset) == ("-04:00", "-05:00")
    # A start the format cannot read is kept as written, with no offset claimed.
    odd = FilenamePattern("odd", re.compile(r"^(?P<start>\d{14})"), "%d%m%Y%H%M%S")
    c = IdentityResolver(DockSettings(path=Path("/d"), patterns=(odd,))).resolve(
        "s", "/d/s", "99999999999999.MP4", 1
    )
    assert c.claimed_start == "99999999999999" and "claimed_start_offset" not in c.payload()
