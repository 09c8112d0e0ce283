"""The disclosure rules file: defaults, one line naming each bad key, unit names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from disclose.rules import DEFAULT_THRESHOLD, Rules, RulesError, load_rules, parse_rules


def test_defaults_without_a_file_or_keys() -> None:
    r = Rules()
    assert (r.threshold, r.timezone, r.publisher, dict(r.units)) == (5, "Asia/Shanghai", "", {})
    assert DEFAULT_THRESHOLD == 5
    assert load_rules(None) == r
    assert parse_rules({}) == r


def test_a_full_file_is_read(tmp_path: Path) -> None:
    p = tmp_path / "disclose.toml"
    p.write_text(
        'threshold = 3\ntimezone = "Europe/Berlin"\npublisher = "  勐海县公安局 "\n'
        '[units]\n"530822000000" = "勐海县公安局交通警察大队"\n',
        encoding="utf-8",
    )
    r = load_rules(p)
    assert (r.threshold, r.timezone, r.publisher) == (3, "Europe/Berlin", "勐海县公安局")
    assert dict(r.units) == {"530822000000": "勐海县公安局交通警察大队"}


def test_units_map_codes_to_public_names_and_others_show_their_code() -> None:
    r = parse_rules({"units": {"530822000000": "交警大队", "530822111111": " 治安大队 "}})
    assert r.unit_name("530822000000") == "交警大队"
    assert r.unit_name("530822111111") == "治安大队"  # trimmed
    assert r.unit_name("530822999999") == "530822999999"
    assert r.unit_name("") == ""
    with pytest.raises(TypeError):
        r.units["x"] = "y"  # type: ignore[index]


def _error(doc: dict[str, Any]) -> str:
    with pytest.raises(RulesError) as e:
        parse_rules(doc, "disclose.toml")
    msg = str(e.value)
    assert "\n" not in msg and "\r" not in msg, msg
    assert msg.startswith("disclose.toml"), msg
    return msg


@pytest.mark.parametrize(
    ("doc", "names"),
    [
        ({"threshold": 1}, ("threshold", "1")),
        ({"threshold": 0}, ("threshold",)),
        ({"threshold": "5"}, ("threshold", "'5'")),
        ({"threshold": True}, ("threshold",)),
        ({"threshold": 5.0}, ("threshold",)),
        ({"threshold": 1001}, ("threshold",)),
        ({"thresold": 5}, ("thresold",)),
        ({"timezone": "Asia/Shanghia"}, ("timezone", "Asia/Shanghia")),
        ({"timezone": 8}, ("timezone",)),
        ({"timezone": "../../etc/passwd"}, ("timezone",)),
        ({"publisher": ["a"]}, ("publisher",)),
        ({"publisher": "勐海县\n公安局"}, ("publisher",)),
        ({"units": "530822000000"}, ("units",)),
        ({"units": {"530822000000": "交警\n大队"}}, ("units.530822000000",)),
        ({"units": {"530822000000": "交警\u2028大队"}}, ("units.530822000000",)),
        ({"units": {"530822000000": ""}}, ("units.530822000000",)),
        ({"units": {"530822000000": 7}}, ("units.530822000000",)),
        ({"units": {"530822000000": "x" * 201}}, ("units.530822000000",)),
    ],
)
def test_each_bad_key_is_one_line_naming_it(doc: dict[str, Any], names: tuple[str, ...]) -> None:
    msg = _error(doc)
    for n in names:
        assert n in msg, msg


def test_thresholds_at_the_edges_are_taken() -> None:
    assert parse_rules({"threshold": 2}).threshold == 2
    assert parse_rules({"threshold": 1000}).threshold == 1000


def test_a_file_that_cannot_be_read_or_parsed_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(RulesError) as e:
        load_rules(missing)
    assert str(missing) in str(e.value) and "\n" not in str(e.value)
    bad = tmp_path / "bad.toml"
    bad.write_text("threshold = \n")
    with pytest.raises(RulesError) as e:
        load_rules(bad)
    assert str(bad) in str(e.value) and "\n" not in str(e.value)
    wrong = tmp_path / "wrong.toml"
    wrong.write_text("threshold = 1\n")
    with pytest.raises(RulesError) as e:
        load_rules(wrong)
    assert str(wrong) in str(e.value) and "threshold" in str(e.value)
