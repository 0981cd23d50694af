"""The rollout's pure rules: which bins each stage takes, and when a stage's figures, its shadow or its field
signals fail the rule (tests/fleet/ runs them against real daemons)."""

from __future__ import annotations

import pytest

from edge.errors import SmartbinError
from edge.fleet.plan import stage_groups
from edge.fleet.rule import Rule, check_rule, judge, judge_field, judge_shadow, tally
from edge.fleet.view import Figures
from edge.wire.shadow import ShadowItem, Verdict


def test_stages_and_the_rule():
    """Which bins each stage takes, and when a stage's figures fail the rule."""
    fleet = [f"b{i}" for i in range(10)]
    assert stage_groups(fleet, ["1"]) == [["b0"], fleet[1:]]
    assert stage_groups(fleet, ["1", "50%"]) == [["b0"], fleet[1:5], fleet[5:]]
    assert stage_groups(fleet, ["1"], ["b7"]) == [["b7"], ["b0", "b1", "b2", "b3", "b4", "b5", "b6", "b8", "b9"]]
    assert stage_groups(["b0"], ["1"]) == [["b0"]]  # one bin: one stage, watched for health alone
    rule = Rule(max_confidence_drop=0.1, max_unsure_rise=0.2)
    sure, less = Figures(100, 0.9, 10, 0.1), Figures(100, 0.75, 10, 0.1)
    assert judge(sure, sure, rule) is None and judge(Figures(100, 0.85, 10, 0.25), sure, rule) is None
    assert "mean confidence" in judge(less, sure, rule)
    assert "too unsure" in judge(Figures(100, 0.9, 10, 0.4), sure, rule)
    assert judge(Figures(0, None, 0, None), sure, rule) is None  # nothing seen: the watch's own limit decides


def shadow_item(serving_bin: str, new_bin: str, label: str = "x") -> ShadowItem:
    return ShadowItem(
        event_id="e" * 32,
        ts=0.0,
        device_id="b",
        shadow="m",
        serving=Verdict(bin=serving_bin, label="y", confidence=0.9),
        candidate=Verdict(bin=new_bin, label=label, confidence=0.9),
        agree=serving_bin == new_bin,
        shadow_ms=1.0,
    )


def test_the_rules_pure_judgements():
    rule = Rule(max_flips=0.05)
    same = [shadow_item("kitchen", "kitchen")] * 19
    assert judge_shadow(tally([*same, shadow_item("other", "kitchen")], rule), rule) is None  # 1 of 20: 5 %
    two = tally([*same, shadow_item("other", "kitchen"), shadow_item("other", "kitchen")], rule)
    assert two.pairs == {"other>kitchen": 2} and "other to kitchen" in judge_shadow(two, rule)
    expected = Rule(max_flips=0.05, expect_flips=["other>kitchen"])
    assert judge_shadow(tally([*same, *[shadow_item("other", "kitchen")] * 5], expected), expected) is None
    new_class = Rule(expect_labels=["cafe cup"])
    flips = tally([*same, *[shadow_item("other", "recyclable", "cafe cup")] * 5], new_class)
    assert flips.expected == 5 and judge_shadow(flips, new_class) is None

    field = Rule(min_items=20, max_bin_shift=0.15, max_correction_rise=0.05)
    old = Figures(100, 0.9, 40, 0.1, {"kitchen": 20, "other": 20}, 1)
    assert judge_field(Figures(100, 0.9, 40, 0.1, {"kitchen": 18, "other": 22}, 1), old, field) is None
    shifted = judge_field(Figures(100, 0.9, 40, 0.1, {"kitchen": 32, "other": 8}, 1), old, field)
    assert "20% of items to other, the old 50%" in shifted
    assert "corrected" in judge_field(Figures(100, 0.9, 40, 0.1, {"kitchen": 20, "other": 20}, 6), old, field)
    few = Figures(100, 0.9, 10, 0.1, {"kitchen": 10}, 5)
    assert judge_field(few, old, field) is None  # too few items to mean something

    for bad in (Rule(watch_s=float("nan")), Rule(max_flips=-0.1), Rule(watch_s=0), Rule(expect_flips=["a>b"])):
        with pytest.raises(SmartbinError):
            check_rule(bad)
