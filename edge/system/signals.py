"""Signals that set a threading.Event, without the deadlock a plain ``event.set`` handler can hit.

Python runs a signal handler in the main thread between two bytecodes, possibly while that thread holds
the event's own lock (inside ``wait()``, as it starts or ends, or inside ``clear()``): ``event.set()``
there waits for that lock forever. A SIGTERM sent just as the restart back-off began its wait hung the
daemon that way. The handler hands the ``set`` to a short-lived thread, which takes the lock as soon as
the main thread lets go of it.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable


def set_on(
    event: threading.Event, *signals: signal.Signals, noted: Callable[[signal.Signals], None] | None = None
) -> None:
    """Set ``event`` when one of ``signals`` arrives (from the main thread, the only one that may install
    handlers; elsewhere nothing is installed); ``noted`` hears which one first (it must not block)."""
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum: int, _frame) -> None:
        if noted is not None:
            noted(signal.Signals(signum))
        threading.Thread(target=event.set, name=f"signal-{signum}", daemon=True).start()

    for signum in signals:
        signal.signal(signum, handler)
