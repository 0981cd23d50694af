"""The restart back-off under a real systemd, with the unit's own start limit (StartLimitBurst=5 in
StartLimitIntervalSec=300) and RestartSec=5 as shipped: a bin whose accelerator resets on the first items
after every start (faked at ONNX Runtime's TensorRT provider, the one hardware boundary) is started again and
again for longer than the limit's window, and systemd never gives up on it. Each start waits longer than the
one before (STATUS says how long); the old back-off, reset by each start's first frame, restarted every
~45 s and reached the limit after about three minutes (tests/system/test_backoff.py counts both on paper).

A module of its own: its container boots beside test_real_systemd.py's, and its five minutes are mostly
waiting, so a parallel run is hardly longer."""

from __future__ import annotations

import re
import time

import pytest

from tests.support.container import Container
from tests.support.fakes import fakes_path
from tests.support.realsystemd import EDGE, restart, show, write_config

pytestmark = pytest.mark.real_systemd

# Sorts after the module's timers.conf (RestartSec=1): the shipped RestartSec=5 again, and the device reset.
CRASH = """[Service]
RestartSec=5
Environment=PYTHONPATH=/srv/fakes SMARTBIN_FAKE_TENSORRT_BUILD_S=0 SMARTBIN_FAKE_TENSORRT_RESETS_AFTER=5
"""
WINDOW_S, BURST = 300, 5  # the shipped unit's StartLimitIntervalSec and StartLimitBurst (test_systemd checks)


def test_a_crash_on_every_first_item_never_reaches_the_units_start_limit(machine: Container):
    unit = machine.path(f"/etc/systemd/system/{EDGE}")
    assert (
        f"StartLimitIntervalSec={WINDOW_S}\n" in unit.read_text() and f"StartLimitBurst={BURST}\n" in unit.read_text()
    )
    machine.sh("/opt/smartbin/venv/bin/pip install --quiet --no-index --find-links /wheels onnxruntime")
    fakes_path(machine.path("/srv/fakes"))
    machine.path(f"/etc/systemd/system/{EDGE}.d/zz-first-item-crash.conf").write_text(CRASH)
    machine.sh("systemctl daemon-reload")
    write_config(machine, {**machine.config, "model": {**machine.config["model"], "variant": "onnx"}})
    machine.path("/var/lib/smartbin/models/.start-failures").unlink(missing_ok=True)

    running = show(machine)["MainPID"]  # the daemon the restart stops: not one of the starts counted
    restart(machine, "--no-block")
    began = time.monotonic()
    starts: dict[str, float] = {}  # main PID -> when it was first seen
    waits: dict[str, int] = {}  # main PID -> the back-off it announced (the last seen: its own, not the text before)
    states = set()
    while time.monotonic() - began < WINDOW_S + 10:  # past the window that a fifth start would have to fall in
        state = show(machine)
        states.add((state["ActiveState"], state["Result"]))
        assert state["ActiveState"] != "failed", f"systemd gave up after {len(starts)} starts: {state}"
        if state["MainPID"] not in ("0", "", running) and state["MainPID"] not in starts:
            starts[state["MainPID"]] = time.monotonic() - began
        announced = re.search(r"restarting in (\d+) s", state["StatusText"])
        if announced and state["MainPID"] in starts:
            waits[state["MainPID"]] = int(announced[1])
        time.sleep(1)
    times = sorted(starts.values())
    crowded = [t for t in times if sum(1 for u in times if t <= u < t + WINDOW_S) >= BURST]
    assert crowded == [], f"{BURST} starts within {WINDOW_S} s: {times}"
    # the fault recurred after every start and each wait was longer than the one before
    announced = [waits.get(pid) for pid in sorted(starts, key=starts.get)]
    assert len(times) >= 4 and announced[:3] == [30, 60, 120], (starts, waits, states)
    assert ("failed", "start-limit-hit") not in states
