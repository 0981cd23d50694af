"""The Last Will says what the bin was when it went: its model, health and pause state. MQTT fixes the will at
connect, so a will set once at start would still name the model of before an update, months later. The
publisher renews it (a clean reconnect: a clean DISCONNECT never fires the old will) when what it says has
changed, at most once every MIN_INTERVAL_S, so a flapping health cannot make a bin reconnect in a loop."""

from __future__ import annotations

import time
from collections.abc import Callable

MIN_INTERVAL_S = 60.0
CHECK_EVERY_S = 1.0  # how often the status is compared with the will (building it is not free)
SAID = ("model", "health", "paused", "backend", "mqtt_protocol")  # what a will says that can change while it runs


class Will:
    """What the will in force says, and whether a new one is due."""

    def __init__(self, min_interval_s: float = MIN_INTERVAL_S):
        self.min_interval_s = min_interval_s
        self._said: dict | None = None
        self._set_at = float("-inf")
        self._next_check = float("-inf")

    def set(self, status: dict) -> None:
        """The will just set (at a connect)."""
        self._said = {key: status.get(key) for key in SAID}
        self._set_at = time.monotonic()

    def due(self, status: Callable[[], dict]) -> bool:
        """Whether the offline status as it would be now (``status``, built only once the last renewal is far
        enough behind, and at most every CHECK_EVERY_S: the daemon's loop asks at every frame) says something
        else than the will in force."""
        now = time.monotonic()
        if self._said is None or now - self._set_at < self.min_interval_s or now < self._next_check:
            return False
        self._next_check = now + CHECK_EVERY_S
        return {key: status().get(key) for key in SAID} != self._said
