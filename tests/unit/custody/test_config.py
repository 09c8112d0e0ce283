"""Configuration parsing: every key validated, every error names the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from custody.config import load, parse
from custody.errors import ConfigError

FULL = """
data_dir = "data"
origin = "custody.example/menghai/dock-01"

[ledger]
checkpoint_interval_ms = 250

[capture]
settle_ms = 2000
hashes = ["sha256", "sm3"]
release = "after_capture"
min_free_mb = 2048

[[docks]]
path = "/srv/dock"
name = "front-desk"
exclude = ["*.tmp"]
identity_command = ["/usr/local/bin/vendor-id", "{recorder}"]
[[docks.patterns]]
vendor = "gat947"
regex = '^(?P<serial>[A-Z0-9]{7})_(?P<officer>[0-9]{6})_(?P<start>[0-9]{14})'
[docks.recorders.slot01]
serial = "ABC1234"
officer = "010203"
unit = "530822000000"

[store]
kind = "s3"
bucket = "evidence"
endpoint_url = "http://127.0.0.1:8333"
"""


def test_full_config(tmp_path: Path) -> None:
    p = tmp_path / "custody.toml"
    p.write_text(FULL)
    c = load(p)
    assert c.data_dir == tmp_path / "data"
    assert c.ledger.checkpoint_interval_ms == 250
    assert c.capture.sm3 and c.capture.release == "after_capture" and c.capture.settle_ms == 2000
    (dock,) = c.docks
    assert dock.label == "front-desk" and dock.exclude == ("*.tmp",)
    assert dock.patterns[0].regex.match("ABC1234_010203_20261125083000")
    assert dock.recorders["slot01"].officer == "010203"
    assert (
        c.store is not None
        and c.store.s3 is not None
        and c.store.s3.bucket == "evidence"
        and c.store.replication.lock_mode == "COMPLIANCE"
    )


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ('[capture]\nrelease = "soon"\n', "capture.release"),
        ('[capture]\nhashes = ["md5"]\n', "capture.hashes"),
        ("[capture]\nsettle_ms = -1\n", "capture.settle_ms"),
        ('[capture]\nverify_copy = "yes"\n', "capture.verify_copy"),
        (
            '[[docks]]\npath = "/d"\n[[docks.patterns]]\nvendor = "v"\nregex = "(unclosed"\n',
            "docks[0].patterns[0].regex",
        ),
        (
            '[[docks]]\npath = "/d"\n[[docks.patterns]]\nvendor = "v"\nregex = "(?P<badge>x)"\n',
            "docks[0].patterns[0].regex",
        ),
        ('[[docks]]\npath = "/d"\ncolour = "red"\n', "docks[0].colour"),
        (
            '[[docks]]\npath = "/d"\n[docks.recorders.s1]\nofficer = 10203\n',
            "docks[0].recorders.s1.officer",
        ),
        ('[[docks]]\npath = "/a/x"\n[[docks]]\npath = "/b/x"\n', "docks"),
        ('[[docks]]\npath = ""\n', "docks[0].path"),  # the config's folder holds the data
        ('[[docks]]\npath = "d/store"\n', "docks[0].path"),
        ('[store]\nkind = "s3"\nbucket = "ab"\n', "store.bucket"),
        ('[store]\nkind = "s3"\nbucket = "abc"\nchecksums = "always"\n', "store.checksums"),
        ('[store]\nkind = "s3"\nbucket = "abc"\npart_size_mb = 1\n', "store.part_size_mb"),
        ('[store]\nkind = "s3"\nbucket = "abc"\naccess_key_id = "k"\n', "store.secret_access_key"),
        ('[store]\nkind = "s3"\nbucket = "abc"\nverify_tls = 1\n', "store.verify_tls"),
        ('[store]\nkind = "local"\npath = "/c"\nlock_mode = "strict"\n', "store.lock_mode"),
        ('[capture]\nrelease = "after_replication"\n', "capture.release"),
        ('[media]\naccess_copies = "some"\n', "media.access_copies"),
        ("[media]\ncrf = 70\n", "media.crf"),
        ('[media]\npreset = "placebo2"\n', "media.preset"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, extra: str, key: str) -> None:
    text = 'data_dir = "d"\norigin = "o/x"\n' + extra
    import tomllib

    with pytest.raises(ConfigError) as e:
        parse(tmp_path / "c.toml", tomllib.loads(text))
    assert f"key '{key}'" in str(e.value)
    assert "\n" not in str(e.value)


def test_release_defaults_follow_the_cold_store(tmp_path: Path) -> None:
    import tomllib

    base = 'data_dir = "d"\norigin = "o/x"\n'
    without = parse(tmp_path / "c.toml", tomllib.loads(base))
    assert without.capture.release == "never"
    with_store = parse(
        tmp_path / "c.toml", tomllib.loads(base + '[store]\nkind = "local"\npath = "/cold"\n')
    )
    assert with_store.capture.release == "after_replication"
    assert with_store.store is not None and with_store.store.replication.retain_days == 180
    chosen = parse(
        tmp_path / "c.toml",
        tomllib.loads(
            base + '[capture]\nrelease = "never"\n[store]\nkind = "local"\npath = "/cold"\n'
        ),
    )
    assert chosen.capture.release == "never"
    s3 = parse(
        tmp_path / "c.toml",
        tomllib.loads(
            base + '[store]\nkind = "s3"\nbucket = "evidence"\nprefix = "unit7"\n'
            'verify_tls = "/etc/ssl/county-ca.pem"\nchecksums = "when_supported"\n'
        ),
    )
    assert s3.store is not None
    assert s3.store.s3 is not None
    assert s3.store.s3.prefix == "unit7/" and s3.store.s3.verify_tls == "/etc/ssl/county-ca.pem"
