"""The capture thread: keeps only the newest frame, reconnects with backoff, reports health.

Inference never waits on a backlog: it asks for the newest frame, and frames that are
skipped are grabbed but never decoded.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from edge.sources.base import Frame, FrameSource, SourceError

log = logging.getLogger(__name__)

FROZEN_TOLERANCE = 0.5  # mean absolute difference (grey levels, 32 x 24 thumbnails) below which two pictures match


@dataclass
class Health:
    state: str = "starting"  # starting | ok | reconnecting | ended
    error: str | None = None
    reconnects: int = 0
    frames: int = 0
    grabbed: int = 0


class Capture:
    """Runs a FrameSource in its own thread. ``next_frame`` returns the newest frame."""

    def __init__(
        self,
        factory: Callable[[], FrameSource],
        frozen_after_s: float = 10.0,
        backoff_s: tuple[float, float] = (0.5, 10.0),
    ):
        self.factory = factory
        self.frozen_after_s = frozen_after_s
        self.backoff_s = backoff_s
        self.health = Health()
        self.source: FrameSource | None = None
        self._cond = threading.Condition()
        self._frame: Frame | None = None
        self._last_id = 0
        self._demand = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)
        self._last_change = time.monotonic()
        self._last_thumb: np.ndarray | None = None
        self._last_stamp: float | None = None

    # ------------------------------------------------------------ consumer side
    def start(self) -> Capture:
        self._thread.start()
        return self

    def stop(self, timeout: float = 3.0) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(timeout)

    def next_frame(self, after_id: int = -1, timeout: float = 1.0) -> Frame | None:
        """The newest frame with an id above ``after_id``; None on timeout or when the source ended."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._demand = True
            self._cond.notify_all()
            while self._frame is None or self._frame.frame_id <= after_id:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.health.state == "ended" or self._stop.is_set():
                    return None
                self._cond.wait(remaining)
            return self._frame

    @property
    def ended(self) -> bool:
        return self.health.state == "ended"

    # ------------------------------------------------------------ capture thread
    def _set_state(self, state: str, error: str | None = None) -> None:
        if state != self.health.state:
            log.log(
                logging.INFO if state == "ok" else logging.WARNING, "camera %s%s", state, f": {error}" if error else ""
            )
        self.health.state, self.health.error = state, error

    def _run(self) -> None:
        delay = self.backoff_s[0]
        while not self._stop.is_set():
            try:
                self.source = self.factory()
                self.source.open()
                log.info("camera open: %s", self.source.describe())
                self._set_state("ok")
                delay = self.backoff_s[0]
                if not self._loop(self.source):  # a finite source reached its end
                    self._set_state("ended")
                    with self._cond:
                        self._cond.notify_all()
                    return
            except SourceError as exc:
                self.health.reconnects += 1
                self._set_state("reconnecting", str(exc))
            except Exception as exc:  # a driver bug must not kill capture for good
                log.exception("camera thread error")
                self.health.reconnects += 1
                self._set_state("reconnecting", f"{type(exc).__name__}: {exc}")
            finally:
                if self.source is not None:
                    try:
                        self.source.close()
                    except Exception:  # closing a dead device may fail too; nothing to do
                        log.debug("close failed", exc_info=True)
            self._stop.wait(delay)
            delay = min(delay * 2, self.backoff_s[1])

    def _loop(self, source: FrameSource) -> bool:
        """Grab until stopped (True) or the source ends (False). Frame ids keep rising across reconnects."""
        while not self._stop.is_set():
            if not source.live:
                with self._cond:  # a replay makes a frame only when one is wanted
                    while not self._demand and not self._stop.is_set():
                        self._cond.wait(0.5)
            if not source.grab():
                return False
            self.health.grabbed += 1
            with self._cond:
                wanted = self._demand
            if not wanted:
                continue  # skipped: grabbed, never decoded
            now_wall, now_mono = time.time(), time.monotonic()
            image = source.retrieve()
            self._check_frozen(image, now_mono)
            with self._cond:
                self._last_id += 1
                self._frame = Frame(image, self._last_id, now_wall, now_mono)
                self._demand = False
                self.health.frames += 1
                self._cond.notify_all()
        return True

    def _check_frozen(self, image: np.ndarray, now: float) -> None:
        """The same picture over and over, from a source whose own clock stands still too, counts as a
        failure (live cameras only).

        Pixels alone cannot tell a frozen camera from a still scene: a still H.264/JPEG stream of an empty
        bin decodes to the very same frame each time. What differs is the source's clock: a stream whose
        timestamps advance is delivering new frames of a still scene; a driver repeating one buffer has
        its timestamp stand still, or none. Sensor noise keeps live pictures apart by more than the
        tolerance, so "the same" allows FROZEN_TOLERANCE for a lossy re-encode of one buffer."""
        if not self.frozen_after_s or not self.source.live:
            return
        thumb = cv2.resize(image, (32, 24), interpolation=cv2.INTER_AREA).astype(np.float32)
        stamp = self.source.timestamp_ms()
        same = (
            self._last_thumb is not None
            and thumb.shape == self._last_thumb.shape
            and float(np.abs(thumb - self._last_thumb).mean()) < FROZEN_TOLERANCE
        )
        advancing = stamp is not None and stamp != self._last_stamp
        self._last_stamp = stamp
        if not same or advancing:
            self._last_thumb = thumb
            self._last_change = now
        elif now - self._last_change > self.frozen_after_s:
            self._last_thumb = None
            raise SourceError(
                f"{self.source.uri}: camera frozen (the same picture, and no new frame from the device, for "
                f"{now - self._last_change:.0f} s); reopening"
            )
