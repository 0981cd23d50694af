"""How old a decision is when the flap would move, with no clock shared between hosts.

The daemon and the broker each measure part of the age by their own clock: the daemon sends a decision
with the seconds it has existed so far (a user property, from its monotonic clock while it runs), and with
a Message Expiry Interval that the broker counts down while it holds the message (MQTT 5 says it must
forward the remaining interval). The actuator adds the two, and its own monotonic wait before the move.
No wall clock is compared across hosts, so a bin whose actuator runs 30 s ahead or an hour behind still
moves for fresh decisions and never for stale ones.

Over MQTT 3.1.1 neither travels (no user properties, no expiry). There the actuator learns how far the daemon's
clock is from its own (``ClockOffset``) from the daemon's periodic messages, each stamped with the daemon's
clock: receive time - sent time is the offset plus that message's delay, so the smallest over a window is the
offset plus the fastest delay. A decision's age is then now - its ts - that smallest: too young by at most the
fastest message's delay (milliseconds on a LAN), whatever the two clocks say. A decision that arrives before the
first such message (a restart's backlog) waits for one.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

AGE_PROPERTY = "smartbin-age-s"  # user property: seconds since the decision was made, when it was sent
# Far beyond any delivery worth making, so no broker discards a decision for it: only counted down.
EXPIRY_S = 30 * 24 * 3600
BROKER_ROUNDING_S = 1.0  # the most a broker's whole-second countdown can leave out of its part
OFFSET_WINDOW_S = 300.0  # the periodic messages the clock offset is learnt from (metrics: every 10 s)


def sent_properties(age_s: float) -> Properties:
    """The MQTT 5 properties a decision is published with."""
    properties = Properties(PacketTypes.PUBLISH)
    properties.MessageExpiryInterval = EXPIRY_S
    properties.UserProperty = [(AGE_PROPERTY, f"{max(0.0, age_s):.3f}")]
    return properties


def age_on_arrival(properties: Properties | None) -> float | None:
    """The decision's age when it reached this client (daemon's part + broker's part, in seconds), or None
    when the message does not carry both (MQTT 3.1.1, another publisher): then only clocks can tell.

    The broker counts its part in whole seconds of its clock (mosquitto: the expiry second it stored minus
    the second it sends in), so a wait of 1.25 s can come out as 1 and one of 0.9 s as 0: up to a second
    short. BROKER_ROUNDING_S is added so that a decision is judged older, never younger, than it is (the
    field day once moved the flap for a decision 2.18 s old, judged 1.93 s, against a max_age_s of 2)."""
    if properties is None:
        return None
    sent = dict(getattr(properties, "UserProperty", None) or []).get(AGE_PROPERTY)
    remaining = getattr(properties, "MessageExpiryInterval", None)
    if sent is None or remaining is None:
        return None
    try:
        age = float(sent)
    except ValueError:
        return None
    if age != age or age < 0:
        return None
    return age + max(0, EXPIRY_S - int(remaining)) + BROKER_ROUNDING_S


class ClockOffset:
    """The daemon's clock against this host's, learnt from messages stamped by the daemon as it sends them.

    The smallest receive - sent of the last OFFSET_WINDOW_S is the offset plus the fastest delay. A clock
    stepped meanwhile errs on the safe side: this host's set forward (or the daemon's back) makes decisions look
    older until the window has moved past it, and the other way round the smallest follows at once."""

    def __init__(
        self,
        window_s: float = OFFSET_WINDOW_S,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        self.window_s, self.clock, self.monotonic = window_s, clock, monotonic
        self._seen: deque[tuple[float, float]] = deque()  # (monotonic arrival, receive - sent)
        self.learnt = threading.Event()  # set at the first message

    def observe(self, sent: float) -> None:
        """A message the daemon stamped ``sent`` (its clock) as it sent it arrived now (not a retained one: it
        was sent long before it arrives)."""
        self._seen.append((self.monotonic(), self.clock() - sent))
        self._forget()
        self.learnt.set()

    def _forget(self) -> None:
        horizon = self.monotonic() - self.window_s
        while self._seen and self._seen[0][0] < horizon:
            self._seen.popleft()

    def offset(self) -> float | None:
        """The daemon's clock subtracted from this host's, plus the fastest delay; None before any message."""
        self._forget()
        return min((d for _, d in self._seen), default=None)
