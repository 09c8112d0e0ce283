"""[disclose] keeps public files apart from evidence: never in a dock, the ledger, the
store or the catalog, and never a bucket prefix that holds (or is held by) evidence."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from custody.config import parse
from custody.errors import ConfigError
from hub.config import parse_hub

STATION = """
data_dir = "/var/lib/custody"
origin = "custody.example/menghai/dock-01"
[[docks]]
path = "/srv/dock"
[store]
kind = "s3"
bucket = "evidence"
prefix = "dock-01/"
endpoint_url = "http://127.0.0.1:8333"
"""


def station(extra: str) -> None:
    parse(Path("/etc/custody/custody.toml"), tomllib.loads(STATION + extra))


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ('[disclose]\nout = "/srv/dock/public"\n', "disclose.out"),
        ('[disclose]\nout = "/srv"\n', "disclose.out"),  # it would hold the dock
        ('[disclose]\nout = "/var/lib/custody/ledger/pub"\n', "disclose.out"),
        ('[disclose]\nout = "/var/lib/custody/store/pub"\n', "disclose.out"),
        (
            '[disclose.store]\nkind = "s3"\nbucket = "evidence"\n'
            'endpoint_url = "http://127.0.0.1:8333"\n',  # prefix "" holds dock-01/
            "disclose.store",
        ),
        (
            '[disclose.store]\nkind = "s3"\nbucket = "evidence"\nprefix = "dock-01/public/"\n'
            'endpoint_url = "http://127.0.0.1:8333"\n',
            "disclose.store",
        ),
    ],
)
def test_a_public_place_among_the_evidence_is_refused(extra: str, key: str) -> None:
    with pytest.raises(ConfigError) as e:
        station(extra)
    assert f"'{key}" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize(
    "extra",
    [
        '[disclose]\nout = "/srv/www/disclosure"\n',
        '[disclose]\nout = "/var/lib/custody/state/public"\n',
        '[disclose.store]\nkind = "s3"\nbucket = "public"\nendpoint_url = "http://127.0.0.1:8333"\n',
        '[disclose.store]\nkind = "s3"\nbucket = "evidence"\nprefix = "public/"\n'
        'endpoint_url = "http://127.0.0.1:8333"\n',
    ],
)
def test_a_place_of_its_own_is_taken(extra: str) -> None:
    station(extra)


HUB = """
data_dir = "/var/lib/custody-hub"
name = "witness.example/county-hub"
[catalog]
warehouse = "{warehouse}"
"""


def test_the_hubs_publication_stays_out_of_its_warehouse_and_ledger() -> None:
    def hub(warehouse: str, extra: str) -> None:
        parse_hub(Path("/etc/hub.toml"), tomllib.loads(HUB.format(warehouse=warehouse) + extra))

    for out in ("/var/lib/custody-hub/warehouse/pub", "/var/lib/custody-hub/ledger/x"):
        with pytest.raises(ConfigError, match=r"disclose\.out"):
            hub("file:///var/lib/custody-hub/warehouse", f'[disclose]\nout = "{out}"\n')
    public = '[disclose.store]\nkind = "s3"\nbucket = "county"\nprefix = "public/"\n'
    with pytest.raises(ConfigError, match=r"disclose\.store\.bucket"):
        hub("s3://county/warehouse", public)
    hub("s3://county-catalog/warehouse", public)
    hub("file:///var/lib/custody-hub/warehouse", '[disclose]\nout = "/srv/www/county"\n')
