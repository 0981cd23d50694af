"""The restart back-off against the unit's own start limit: a fault that recurs on the first item after every
start (each start reaches its first frame, so "a good start" cannot reset the count) backs off further each
time, and systemd never sees StartLimitBurst starts within StartLimitIntervalSec. The limit and RestartSec are
read from the shipped unit; time is the back-off's own clock, stepped as the restarts would step it."""

from __future__ import annotations

import configparser

from edge.system.backoff import WINDOW_S, RestartBackoff, delay_after
from edge.system.notify import Notifier
from tests.support import ROOT

FIRST_ITEM_S = 15.0  # from a start to the fault: loading the model, the first frames, the first item


def unit_values() -> tuple[int, float, float]:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read(ROOT / "systemd" / "smartbin-edge.service")
    return (
        int(unit["Unit"]["StartLimitBurst"]),
        float(unit["Unit"]["StartLimitIntervalSec"]),
        float(unit["Service"]["RestartSec"]),
    )


def test_a_fault_on_the_first_item_never_reaches_the_units_start_limit(tmp_path):
    burst, interval, restart_s = unit_values()
    now = [0.0]
    backoff = RestartBackoff(tmp_path / ".start-failures", Notifier(), clock=lambda: now[0])
    starts = []
    for _ in range(40):  # a few hours of a bin that fails on every first item
        starts.append(now[0])
        now[0] += FIRST_ITEM_S
        now[0] += delay_after(backoff.record()) + restart_s
    crowded = [t for t in starts if sum(1 for u in starts if t <= u < t + interval) >= burst]
    assert crowded == [], f"{burst} starts within {interval:.0f} s from t={crowded[0]:.0f} s"
    assert backoff.failures() >= 5  # and it waits the longest from then on


def test_the_count_forgets_what_the_window_left_behind_and_survives_a_clock_set_back(tmp_path):
    now = [10_000.0]
    backoff = RestartBackoff(tmp_path / ".start-failures", Notifier(), clock=lambda: now[0])
    assert [backoff.record() for _ in range(3)] == [1, 2, 3]
    now[0] -= 600  # the next boot's clock, set back (a Pi without a real-time clock)
    assert backoff.failures() == 3
    now[0] += 600 + WINDOW_S  # a long good run: the next fault waits the shortest time again
    assert backoff.failures() == 0 and backoff.record() == 1
    (tmp_path / ".start-failures").write_text("garbage")  # a file cut short by a power cut
    assert backoff.failures() == 0
