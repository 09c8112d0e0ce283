"""Retention rules and the plan, pure: parsing, first match, the floor, schedules,
blocked actions and policy comparison."""

from __future__ import annotations

import pytest

from retention.plan import DAY, State, actions_for, compare, plan, schedule
from retention.policy import (
    DEFAULT_POLICY,
    Facts,
    PolicyError,
    category_key,
    load_policy,
)

T0 = 1_800_000_000


def facts(sha: str = "a" * 64, **kw: object) -> Facts:
    return Facts(sha, T0, **kw)  # type: ignore[arg-type]


def test_default_policy_follows_the_police_rule() -> None:
    p = load_policy(DEFAULT_POLICY)
    assert p.floor_days == 180
    assert p.rule_for(facts()).name == "ordinary"
    assert schedule(p, facts()).delete_at == T0 + 180 * DAY
    assert schedule(p, facts(cases=("X-1",))).delete_at is None
    assert schedule(p, facts(important=True)).delete_at is None
    assert schedule(p, facts(important=True)).lock_until == T0 + 30 * 365 * DAY


def test_first_match_wins_and_matches_all_facts() -> None:
    p = load_policy(
        """
[groups]
traffic = ["ABC1234"]
[[rules]]
name = "traffic-video"
match = { group = "traffic", media = "video/*" }
keep_days = 365
[[rules]]
name = "penalty"
match = { category = ["行政处罚"], unit = "530822000000" }
keep_days = 1095
[[rules]]
name = "default"
keep_days = 200
"""
    )
    assert p.rule_for(facts(recorder="ABC1234", media_type="video/mp4")).name == "traffic-video"
    assert p.rule_for(facts(recorder="ABC1234", media_type="audio/wav")).name == "default"
    pen = facts(category="administrative_penalty", unit="530822000000")
    assert p.rule_for(pen).name == "penalty"
    assert p.rule_for(facts(category="administrative_penalty", unit="1")).name == "default"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[rules]]\nname = "d"\nkeep_days = 30\n', "under the floor of 180 days"),
        ('[[rules]]\nname = "c"\nmatch = { case = true }\nkeep = "permanent"\n', "last rule"),
        ('[[rules]]\nname = "d"\nkeep_days = 200\nkeep = "permanent"\n', "one of them"),
        ('[[rules]]\nname = "d"\nkeep = "forever"\n', "can only be"),
        ('[[rules]]\nname = "d"\nkeep_days = 200\ncolour = 1\n', "unknown key 'colour'"),
        (
            '[[rules]]\nname = "x"\nmatch = { category = "parking" }\nkeep_days = 200\n'
            '[[rules]]\nname = "d"\nkeep_days = 200\n',
            "unknown category",
        ),
        (
            '[[rules]]\nname = "x"\nmatch = { group = "g" }\nkeep_days = 200\n'
            '[[rules]]\nname = "d"\nkeep_days = 200\n',
            "no group 'g'",
        ),
        (
            '[[rules]]\nname = "d"\nkeep_days = 200\n'
            'tiers = [{ after_days = 90, class = "A" }, { after_days = 30, class = "B" }]\n',
            "must increase",
        ),
        (
            '[[rules]]\nname = "a"\nkeep_days = 200\n[[rules]]\nname = "d"\nkeep_days = 200\n',
            "rules after it never apply",
        ),
        ("floor_days = 0\n", "floor_days"),
        ("rules = [\n", "not valid TOML"),
    ],
)
def test_bad_policies_are_refused_with_the_rule_named(text: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        load_policy(text)


def test_categories_by_key_or_term() -> None:
    assert category_key("行政检查") == "inspection" == category_key("inspection")
    with pytest.raises(PolicyError, match="行政许可"):
        category_key("parking")


POLICY = load_policy(
    """
[[rules]]
name = "case"
match = { case = true }
keep = "permanent"
local_days = 30
[[rules]]
name = "ordinary"
keep_days = 180
local_days = 10
tiers = [{ after_days = 30, class = "GLACIER" }, { after_days = 400, class = "DEEP" }]
"""
)


def test_actions_in_order_and_what_blocks_them() -> None:
    st = State(facts(), replicated=True, storage_class="STANDARD", retain_until=T0 + DAY)
    kinds = [(a.kind, (a.due - T0) // DAY, a.detail) for a in actions_for(POLICY, st)]
    # A lock extension to the deletion date; the tier after deletion is dropped.
    assert kinds == [
        ("lock", 0, str(T0 + 180 * DAY)),
        ("evict_local", 10, ""),
        ("tier", 30, "GLACIER"),
        ("delete", 180, ""),
    ]
    # Not yet in the cold store: no eviction can happen, no tier move is planned.
    cold_less = State(facts(), replicated=False)
    acts = {a.kind: a for a in actions_for(POLICY, cold_less)}
    assert acts["evict_local"].blocked.startswith("no confirmed copy")
    assert "tier" not in acts
    held = State(facts(), held=("hold entry 7 (court order)",), replicated=True)
    assert [a.blocked for a in actions_for(POLICY, held) if a.kind == "delete"] == [
        "held: hold entry 7 (court order)"
    ]
    locked = State(facts(), replicated=True, retain_until=T0 + 365 * DAY)
    d = next(a for a in actions_for(POLICY, locked) if a.kind == "delete")
    assert d.blocked == f"store lock until {T0 + 365 * DAY}"
    # Due only once the lock ends.
    assert not [a for a in plan(POLICY, [locked], T0 + 200 * DAY) if a.kind == "delete"]
    assert [a for a in plan(POLICY, [locked], T0 + 366 * DAY) if a.kind == "delete"]
    done = State(facts(), deleted=True)
    assert actions_for(POLICY, done) == []


def test_plan_lists_what_is_due_by_a_date() -> None:
    sts = [
        State(facts("a" * 64), replicated=True, storage_class="STANDARD"),
        State(facts("b" * 64, cases=("K-9",)), replicated=True),
        State(facts("c" * 64), replicated=True, storage_class="GLACIER", local=False),
    ]
    got = [(a.kind, a.sha256[0]) for a in plan(POLICY, sts, T0 + 200 * DAY)]
    assert got == [
        ("evict_local", "a"),
        ("evict_local", "b"),
        ("tier", "a"),
        ("delete", "a"),
        ("delete", "c"),
    ]


def test_compare_names_what_a_new_policy_deletes_earlier() -> None:
    shorter = load_policy(
        """
[[rules]]
name = "ordinary"
keep_days = 180
"""
    )
    sts = [
        State(facts("a" * 64)),
        State(facts("b" * 64, cases=("K-9",))),
        State(facts("c" * 64), deleted=True),
    ]
    c = compare(POLICY, shorter, sts)
    assert c.items == 2
    assert [s for s, _, _ in c.deleted_earlier] == ["b" * 64]
    assert c.rule_changes == {("case", "ordinary"): 1}
    back = compare(shorter, POLICY, sts)
    assert back.deleted_earlier == [] and back.deleted_later == 1
