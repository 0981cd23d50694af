"""The hold-out gate's rule: how many points of bin accuracy a new bundle may lose against the bins' one
(tests/fleet/ measures real bundles on held-out images)."""

from __future__ import annotations

from edge.fleet.gate import MAX_DROP_POINTS, Gate, Side


def side(bin_accuracy: float) -> Side:
    return Side(bundle="b", variant="int8", top1=bin_accuracy, bin_accuracy=bin_accuracy, images=200)


def test_a_bundle_may_lose_at_most_the_allowed_points():
    assert MAX_DROP_POINTS == 1.0
    assert Gate(side(0.90), side(0.90)).refusal is None
    assert Gate(side(0.895), side(0.90)).refusal is None  # half a point
    assert Gate(side(0.95), side(0.90)).drop < 0 and Gate(side(0.95), side(0.90)).refusal is None  # a gain
    refused = Gate(side(0.85), side(0.90)).refusal
    assert refused and "85.0%" in refused and "90.0%" in refused and "5.0 points fewer" in refused


def test_the_allowed_drop_is_the_gates_own():
    assert Gate(side(0.85), side(0.90), max_drop=10).refusal is None
    assert Gate(side(0.90), side(0.90), max_drop=0).refusal is None
