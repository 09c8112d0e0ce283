"""Dates given on the command line: a day without a zone is the station's local day."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from custody.cli_common import parse_date


@pytest.fixture
def beijing() -> Iterator[None]:
    old = os.environ.get("TZ")
    os.environ["TZ"] = "Asia/Shanghai"
    time.tzset()
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = old
        time.tzset()


def test_a_plain_day_is_the_local_day(beijing: None) -> None:
    # 2026-11-25 00:00 in Beijing is 2026-11-24 16:00 UTC.
    assert parse_date("2026-11-25") == 1795536000
    assert parse_date("2026-11-25") == parse_date("2026-11-25T00:00:00+08:00")
    assert parse_date("2026-11-25T00:00:00Z") - parse_date("2026-11-25") == 8 * 3600
