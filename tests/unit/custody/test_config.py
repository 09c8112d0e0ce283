"""Configuration parsing: every key validated, every error names the key."""

from __future__ import annotations

import os
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


BASE = 'data_dir = "data"\norigin = "custody.example/unit/dock-01"\n'


def _listen(value: str) -> bytes:
    return (BASE + f'[metrics]\nlisten = "{value}"\n').encode()


# A config a person (or an attacker with write access to /etc) could leave behind:
# each is refused with one line naming the file (and the key, where there is one),
# exit 2, never a traceback and never a hang.
HOSTILE: list[tuple[str, bytes, str]] = [
    ("nul byte", (BASE + "\0\n").encode(), "NUL byte (line 3)"),
    ("nul escape", (BASE + '[[docks]]\npath = "/srv/a\\u0000b"\n').encode(), "'docks[0].path'"),
    ("nul data_dir", b'data_dir = "d\\u0000"\norigin = "o/x"\n', "'data_dir'"),
    ("nul store", (BASE + '[store]\nkind = "local"\npath = "c\\u0000"\n').encode(), "'store.path'"),
    ("nul ffmpeg", (BASE + '[media]\nffmpeg = "f\\u0000"\n').encode(), "'media.ffmpeg'"),
    ("latin-1", BASE.encode() + b"# caf\xe9\n", "not UTF-8 text: byte 0xe9 on line 3"),
    ("port 0", _listen("127.0.0.1:0"), "'metrics.listen'"),
    ("port 70000", _listen("127.0.0.1:70000"), "'metrics.listen'"),
    ("port word", _listen("127.0.0.1:http"), "'metrics.listen'"),
    ("port ²", _listen("127.0.0.1:\u00b2"), "'metrics.listen'"),
    (
        "port ٣٣",
        _listen("127.0.0.1:\u0663\u0663"),
        "'metrics.listen'",
    ),
    ("v6 bare", _listen("::1:9108"), "'metrics.listen'"),
    ("v6 no port", _listen("[::1]"), "'metrics.listen'"),
    ("v6 zone", _listen("[::1%lo]:9108"), "'metrics.listen'"),
    ("v6 outside", _listen("[::]:9108"), "'metrics.listen'"),
    ("all hosts", _listen("0.0.0.0:9108"), "'metrics.listen'"),
    (
        "endpoint port",
        (BASE + '[store]\nkind = "s3"\nbucket = "abc"\nendpoint_url = "http://h:70000"\n').encode(),
        "'store.endpoint_url'",
    ),
    ("deep", (BASE + "x = " + "[" * 3000 + "]" * 3000 + "\n").encode(), "nested too deeply"),
    (
        "bucket",
        (BASE + '[store]\nkind = "s3"\nbucket = "my evidence"\n').encode(),
        "'store.bucket'",
    ),
    (
        "region",
        (BASE + '[store]\nkind = "s3"\nbucket = "abc"\nregion = "us east/1"\n').encode(),
        "'store.region'",
    ),
    ("huge int", (BASE + "[capture]\nsettle_ms = 99999999999999999999999\n").encode(), "settle_ms"),
    ("inf", (BASE + "[capture]\nsettle_ms = inf\n").encode(), "'capture.settle_ms'"),
    ("long path", ('data_dir = "' + "a" * 300 + '"\norigin = "o/x"\n').encode(), "'data_dir'"),
    (
        "time format",
        (
            BASE + '[[docks]]\npath = "/srv/d"\n[[docks.patterns]]\nvendor = "v"\nregex = "x"\n'
            'time_format = "%"\n'
        ).encode(),
        "'docks[0].patterns[0].time_format'",
    ),
    ("newline key", (BASE + '"a\\nb" = 1\n').encode(), "'a\\x0ab'"),
    ("large", BASE.encode() + b"#" * (2 << 20) + b"\n", "larger than"),
]


@pytest.mark.parametrize(("what", "content", "says"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_config_is_one_clean_line(
    tmp_path: Path, what: str, content: bytes, says: str
) -> None:
    from tests.conftest import run_cli

    conf = tmp_path / "custody.toml"
    conf.write_bytes(content)
    p = run_cli("status", config=conf, check=False)
    assert p.returncode == 2, (what, p.stderr)
    assert "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert str(conf) in lines[0] and says in lines[0], lines[0]


@pytest.mark.parametrize("kind", ["fifo", "device", "folder"])
def test_config_that_is_not_a_file_never_hangs(tmp_path: Path, kind: str) -> None:
    from tests.conftest import run_cli

    conf = tmp_path / "custody.toml"
    if kind == "fifo":
        os.mkfifo(conf)  # nobody writes: reading it would wait for ever
    elif kind == "folder":
        conf.mkdir()
    else:
        conf = Path("/dev/zero")  # endless
    p = run_cli("status", config=conf, check=False)  # run_cli times out after 120 s
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and str(conf) in p.stderr


@pytest.mark.parametrize(
    "listen", ["127.0.0.1:9108", "localhost:9108", "[::1]:9108", "127.0.0.2:1", "[::1]:65535"]
)
def test_metrics_listen_on_loopback_is_accepted(tmp_path: Path, listen: str) -> None:
    import tomllib

    text = BASE + f'[metrics]\nlisten = "{listen}"\n'
    assert parse(tmp_path / "c.toml", tomllib.loads(text)).metrics_listen == listen


def test_name_marks_in_the_dock_table(tmp_path: Path) -> None:
    import tomllib

    dock = (
        '[[docks]]\npath = "/srv/d"\ntimezone = "Asia/Shanghai"\n'
        'category_map = { XZCF = "行政处罚", JC = "inspection" }\n'
        '[[docks.patterns]]\nvendor = "v"\n'
        "regex = '^(?P<start>[0-9]{14})(?:_(?P<category>[A-Z]+))?(?P<important>_IMP)?'\n"
    )
    (d,) = parse(tmp_path / "c.toml", tomllib.loads(BASE + dock)).docks
    assert d.timezone == "Asia/Shanghai"
    assert d.category_map["XZCF"] == "administrative_penalty"
    assert d.category_map["JC"] == "inspection"
    # A category's own key and Chinese term need no entry.
    assert d.category_map["行政强制"] == d.category_map["coercive_measure"] == "coercive_measure"
    for bad, key in (
        ('category_map = { XZCF = "fines" }', "docks[0].category_map.XZCF"),
        ("category_map = { XZCF = 3 }", "docks[0].category_map.XZCF"),
        ('timezone = "Mars/Olympus"', "docks[0].timezone"),
        ('timezone = "../../etc/passwd"', "docks[0].timezone"),
    ):
        text = BASE + f'[[docks]]\npath = "/srv/d"\n{bad}\n'
        with pytest.raises(ConfigError) as e:
            parse(tmp_path / "c.toml", tomllib.loads(text))
        assert f"key '{key}'" in str(e.value), str(e.value)
