"""The Last Will says what the bin was when it went: its model, health and pause state. MQTT fixes the will at
connect, so a will set once at start would still name the model of before an update, months later. The
publisher renews it (a clean reconnect: a clean DISCONNECT never fires the old will) when what it says has
changed, at most once every MIN_INTERVAL_S, so a flapping health cannot make a bin reconnect in a loop."""

from __future__ import annotations

import time

MIN_INTERVAL_S = 60.0
SAID = ("model", "health", "paused", "backend", "mqtt_protocol")  # what a will says that can change while it runs


class Will:
    """What the will in force says, and whether a new one is due."""

    def __init__(self, min_interval_s: float = MIN_INTERVAL_S):
        self.min_interval_s = min_interval_s
        self._said: dict | None = None
        self._set_at = float("-inf")

    def set(self, status: dict) -> None:
        """The will just set (at a connect)."""
        self._said = {key: status.get(key) for key in SAID}
        self._set_at = time.monotonic()

    def due(self, status: dict) -> bool:
        """Whether ``status`` (the offline status as it would be now) says something else than the will in force,
        and the last renewal is far enough behind."""
        if self._said is None or {key: status.get(key) for key in SAID} == self._said:
            return False
        return time.monotonic() - self._set_at >= self.min_interval_s
