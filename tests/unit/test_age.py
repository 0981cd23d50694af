"""A decision's age without shared clocks, and when it is too old to move a flap (tests/actuator/ runs the
actuator against a real daemon, broker and clocks set apart)."""

from __future__ import annotations

import time

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.actuator.actuator import Job, stale_because
from edge.broker.freshness import BROKER_ROUNDING_S, EXPIRY_S, ClockOffset, age_on_arrival, sent_properties


def forwarded(age_s: float, held_s: int) -> Properties:
    """What a broker forwards after holding the message ``held_s`` whole seconds: the expiry counted down."""
    sent = sent_properties(age_s)
    received = Properties(PacketTypes.PUBLISH)
    received.UserProperty = sent.UserProperty
    received.MessageExpiryInterval = sent.MessageExpiryInterval - held_s
    return received


def test_the_age_adds_the_daemons_part_and_the_brokers_and_is_never_judged_younger():
    assert age_on_arrival(forwarded(1.5, 0)) == 1.5 + BROKER_ROUNDING_S
    assert age_on_arrival(forwarded(0.25, 7)) == 0.25 + 7 + BROKER_ROUNDING_S
    assert age_on_arrival(forwarded(-3.0, 0)) == BROKER_ROUNDING_S  # a clock stepped back sends 0, not less
    assert age_on_arrival(None) is None  # MQTT 3.1.1: only the clocks can tell
    no_age = Properties(PacketTypes.PUBLISH)
    no_age.MessageExpiryInterval = EXPIRY_S
    assert age_on_arrival(no_age) is None  # another publisher's message
    bad = forwarded(1.0, 0)
    bad.UserProperty = [("smartbin-age-s", "nan")]
    assert age_on_arrival(bad) is None


def test_a_job_ages_by_the_monotonic_clock_after_arrival_and_by_the_wall_clock_without_an_age():
    arrived = time.monotonic() - 4.0  # waited behind other moves for 4 s
    assert 5.9 < Job("e", "kitchen", 0.0, arrival_age=2.0, arrived=arrived).age() < 7.0
    assert 9.9 < Job("e", "kitchen", time.time() - 10, arrival_age=None, arrived=arrived).age() < 11.0


def test_stale_is_too_old_too_far_ahead_or_from_before_the_boot():
    assert stale_because(1.9, 2.0, False) is None and stale_because(-1.9, 2.0, False) is None
    assert "more than actuator.max_age_s" in stale_because(2.5, 2.0, False)
    assert "in the future" in stale_because(-2.5, 2.0, False)
    assert "before the bin's host last started" in stale_because(0.1, 2.0, True)  # fresh by every clock


def test_the_clock_offset_is_the_smallest_receive_minus_sent_of_its_window():
    now, mono = [1000.0], [0.0]
    offset = ClockOffset(window_s=300, clock=lambda: now[0], monotonic=lambda: mono[0])
    assert offset.offset() is None and not offset.learnt.is_set()
    for delay in (0.050, 0.004, 0.020):  # the daemon 30 s behind this host; each message its own delay
        offset.observe(now[0] - 30 - delay)
        mono[0] += 10
    assert offset.learnt.is_set() and abs(offset.offset() - 30.004) < 1e-9
    # a decision stamped 2 s ago by the daemon's clock: 2 s old, less the fastest delay (never 32)
    assert abs((now[0] - (now[0] - 30 - 2)) - offset.offset() - 1.996) < 1e-9
    mono[0] += 300  # the window moves past them: what is older is forgotten
    offset.observe(now[0] - 29.0 - 0.010)  # the daemon's clock stepped 1 s forward meanwhile
    assert abs(offset.offset() - 29.010) < 1e-9
