"""Latency figures: one percentile helper for the daemon's metrics, the bench and the fleet simulator."""

from __future__ import annotations

import bisect
import itertools
import threading
from collections import deque
from collections.abc import Iterable

import numpy as np

QUANTILES = (50, 90, 99)


def percentiles(values: Iterable[float], digits: int | None = None) -> dict[str, float]:
    """``{"p50", "p90", "p99"}`` of the values ({} when there are none), rounded to ``digits`` if given."""
    a = np.asarray(list(values), dtype=np.float64)
    if a.size == 0:
        return {}
    figures = {f"p{q}": float(v) for q, v in zip(QUANTILES, np.percentile(a, QUANTILES))}
    return {k: round(v, digits) for k, v in figures.items()} if digits is not None else figures


def summary(values: Iterable[float]) -> dict[str, float]:
    """min, p50, p90, p99, max, mean and std of a non-empty sample."""
    a = np.asarray(list(values), dtype=np.float64)
    return {
        "min": float(a.min()),
        **percentiles(a),
        "max": float(a.max()),
        "mean": float(a.mean()),
        "std": float(a.std()),
    }


class Window:
    """The newest ``maxlen`` values of a series one thread appends to and others read (MQTT callbacks, web
    requests): reads take a copy under a lock, so a reader never walks a deque while it changes."""

    def __init__(self, maxlen: int):
        self._values: deque[float] = deque(maxlen=maxlen)
        self._lock = threading.Lock()

    def append(self, value: float) -> None:
        with self._lock:
            self._values.append(value)

    def values(self) -> list[float]:
        with self._lock:
            return list(self._values)


# Prometheus-style latency buckets, in seconds: a 4-core ARM board's inference (tens of ms) to a stalled frame
BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Histogram:
    """Counts of every value since the start per bucket (``le`` bounds, seconds) and their sum: what a
    Prometheus histogram exports, so a dashboard computes any quantile over any range across scrapes."""

    def __init__(self, bounds: tuple[float, ...] = BUCKETS_S):
        self.bounds = bounds
        self._counts = [0] * (len(bounds) + 1)  # the last: above every bound (+Inf)
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        index = bisect.bisect_left(self.bounds, value)  # the first bound >= value; len(bounds): +Inf
        with self._lock:
            self._counts[index] += 1
            self._sum += value

    def cumulative(self) -> tuple[list[tuple[str, int]], float]:
        """([(le, values <= le), ..., ("+Inf", all)], sum), as prometheus_client's HistogramMetricFamily takes."""
        with self._lock:
            counts, total = list(self._counts), self._sum
        return list(zip([*map(str, self.bounds), "+Inf"], itertools.accumulate(counts))), total
