"""The disclosure schedule says a broken state file in one line, not a traceback."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from custody.config import DiscloseSettings
from custody.disclose_schedule import scheduled
from ledger.log import Ledger
from ledger.note import Signer

ORIGIN = "custody.test/schedule/dock-01"


def test_a_state_file_that_is_not_json_is_one_error_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "disclose.json").write_bytes(b"{not json")
    built: list[Any] = []

    def build(period: str, out: Path, operator: str) -> Any:
        built.append(period)
        raise AssertionError("nothing may be built on a state file it cannot read")

    settings = DiscloseSettings(schedule="monthly", out=tmp_path / "www")
    log = logging.getLogger("custody.test.schedule")
    with Ledger(tmp_path / "ledger", state, ORIGIN, Signer.generate(ORIGIN)) as led:
        led.append("note", {"text": "installed"})
        led.integrate()
        with caplog.at_level(logging.INFO, logger=log.name):
            scheduled(
                settings,
                state,
                led,
                build,
                log,
                clock=lambda: 4_102_444_800.0,  # 2100: every month since install is due
            )
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is None, caplog.text
    assert "disclose.json" in errors[0].getMessage() and "move it away" in errors[0].getMessage()
    assert built == []  # nothing published on a state it cannot read
