"""The actuator with gpiozero's mock pins and a real broker: a decision moves the right pin exactly once."""

from __future__ import annotations

import json
import time
import uuid

import jsonschema
import pytest

from edge.config import load_config
from tests.support import ROOT, actuator_config
from tests.support.mqtt_client import Subscriber


@pytest.fixture()
def mock_pins(monkeypatch):
    from gpiozero import Device
    from gpiozero.pins.mock import MockFactory, MockPWMPin

    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "mock")
    Device.pin_factory = MockFactory(pin_class=MockPWMPin)
    yield Device.pin_factory
    Device.pin_factory.reset()
    Device.pin_factory = None


ACK_SCHEMA = json.loads((ROOT / "edge" / "schemas" / "actuator_ack.json").read_text(encoding="utf-8"))


def decision(bin_name: str, event_id: str | None = None) -> str:
    return json.dumps(
        {
            "event_id": event_id or uuid.uuid4().hex,
            "ts": time.time(),
            "bin": bin_name,
            "label": "x",
            "label_index": 0,
            "confidence": 0.9,
            "votes": 5,
            "frames": 5,
            "reason": "vote",
            "device_id": "test-bin",
        }
    )


def highs(pin) -> int:
    """How many times a mock pin went high."""
    return sum(1 for a, b in zip(pin.states, pin.states[1:]) if not a.state and b.state)


def test_pins_move_exactly_once_even_when_redelivered_and_after_restart(tmp_path, broker, mock_pins):
    from edge.actuator.actuator import Actuator

    config = load_config(actuator_config(tmp_path, broker.port, "pins"))
    sub = Subscriber(broker.port, "smartbin/test-bin/actuator/#")
    actuator = Actuator(config).start()
    assert actuator.ready.wait(5)
    event = uuid.uuid4().hex
    for _ in range(3):  # the broker re-delivers; the bin must not move three times
        sub.publish("smartbin/test-bin/decision", decision("recyclable", event))
    sub.publish("smartbin/test-bin/decision", decision("hazardous"))
    acks = sub.wait_for("ack", count=4)
    actuator.stop()
    pins = {b: mock_pins.pin(p) for b, p in config.actuator.pins.items()}
    assert highs(pins["recyclable"]) == 1 and highs(pins["hazardous"]) == 1
    assert highs(pins["other"]) == 0 and highs(pins["kitchen"]) == 0
    assert not pins["recyclable"].state  # back to neutral
    assert sorted(a.json()["duplicate"] for a in acks) == [False, False, True, True]

    again = Actuator(config).start()  # restart: the seen-events record survives
    assert again.ready.wait(5)
    sub.publish("smartbin/test-bin/decision", decision("recyclable", event))
    assert sub.wait_for("ack", count=5, where=lambda m: True)
    again.stop()
    sub.close()
    assert highs(pins["recyclable"]) == 1


def test_servo_angles_and_refusals(tmp_path, broker, mock_pins):
    from edge.actuator.actuator import Actuator

    config = load_config(actuator_config(tmp_path, broker.port, "servo"))
    sub = Subscriber(broker.port, "smartbin/test-bin/actuator/#")
    actuator = Actuator(config).start()
    assert actuator.ready.wait(5)
    for payload in (decision("compost"), "{broken", json.dumps({"bin": "other"}), decision("kitchen")):
        sub.publish("smartbin/test-bin/decision", payload)
    acks = [a.json() for a in sub.wait_for("ack", count=4)]
    actuator.stop()
    sub.close()
    errors = sorted(a["error"] for a in acks if not a["ok"])
    assert errors == [
        "decision without an event_id",
        "not a JSON decision",
        "unknown bin 'compost' (allowed: other, kitchen, recyclable, hazardous)",
    ]
    assert actuator.moves == 1
    servo = mock_pins.pin(config.actuator.servo_pin)
    # neutral (1.5 ms of 20 ms), kitchen's -30° (1.5 - 1/3 ms: 0.5..2.5 ms spans a hobby servo's -90..90°),
    # neutral again; the last state is close().
    values = [round(s.state, 4) for s in servo.states]
    assert values[1:-1] == [0.075, round((1.5 - 1 / 3) / 20, 4), 0.075], values
    for ack in acks:
        jsonschema.validate(ack, ACK_SCHEMA)


def test_the_servo_reaches_its_full_travel_with_the_configured_pulses(tmp_path, broker, mock_pins):
    """-90° and +90° are 0.5 ms and 2.5 ms pulses by default (gpiozero's own 1-2 ms give about ±45°),
    and the config's pulse widths are what the pin gets."""
    from edge.actuator.movers import ServoMover

    config = load_config(actuator_config(tmp_path, broker.port, "servo")).actuator
    config = config.model_copy(
        update={"angles": {"other": -90.0, "kitchen": 90.0, "recyclable": 0.0, "hazardous": 45.0}}
    )
    for low, high in ((0.5, 2.5), (0.6, 2.4)):
        mover = ServoMover(config.model_copy(update={"min_pulse_width_ms": low, "max_pulse_width_ms": high}))
        pin = mock_pins.pin(config.servo_pin)
        mover.servo.angle = -90
        assert round(pin.state * 20, 4) == low
        mover.servo.angle = 90
        assert round(pin.state * 20, 4) == high
        mover.close()


def test_decisions_older_than_max_age_never_move_the_flap(tmp_path, broker, mock_pins):
    """The actuator is down while items fall in: when it is back, the broker delivers the backlog of its
    persistent session, each acknowledged stale and none moved; the next fresh decision moves at once."""
    from edge.actuator.actuator import Actuator

    # 3 s: a fresh decision reaches the flap well within it on any machine; the backlog waits longer
    config = load_config(actuator_config(tmp_path, broker.port, "pins", max_age_s=3))
    sub = Subscriber(broker.port, "smartbin/test-bin/actuator/#")
    actuator = Actuator(config).start()
    assert actuator.ready.wait(5)
    actuator.stop()  # the session stays on the broker
    backlog = [uuid.uuid4().hex for _ in range(10)]
    for event in backlog:
        sub.publish("smartbin/test-bin/decision", decision("recyclable", event))
    time.sleep(3.1)  # longer than max_age_s: these items are gone (a lower bound, whatever the machine)
    again = Actuator(config).start()
    acks = sub.wait_for("ack", count=10)
    fresh = uuid.uuid4().hex
    sub.publish("smartbin/test-bin/decision", decision("kitchen", fresh))
    acks = sub.wait_for("ack", count=11)
    again.stop()
    sub.close()
    by_event = {a.json()["event_id"]: a.json() for a in acks}
    assert all(by_event[e]["stale"] and not by_event[e]["ok"] and "stale" in by_event[e]["error"] for e in backlog)
    assert by_event[fresh]["ok"] and not by_event[fresh]["stale"]
    pins = {b: mock_pins.pin(p) for b, p in config.actuator.pins.items()}
    assert highs(pins["recyclable"]) == 0 and highs(pins["kitchen"]) == 1
    for ack in by_event.values():
        jsonschema.validate(ack, ACK_SCHEMA)


def test_a_burst_never_blocks_the_network_thread(tmp_path, broker, mock_pins):
    """150 decisions at once against a queue of 100 and a flap that holds 50 ms: every one is answered
    (moved, stale or refused as busy), so paho's thread never waited on a full queue."""
    from edge.actuator.actuator import JOB_QUEUE, Actuator

    config = load_config(actuator_config(tmp_path, broker.port, "pins", max_age_s=60))
    sub = Subscriber(broker.port, "smartbin/test-bin/actuator/#")
    actuator = Actuator(config).start()
    assert actuator.ready.wait(5)
    for _ in range(JOB_QUEUE + 50):  # all at once, not each waiting for its PUBACK: a burst on any machine
        sub.client.publish("smartbin/test-bin/decision", decision("other"), qos=1)
    busy = sub.wait_for("ack", count=10, where=lambda m: "busy" in m.json().get("error", ""))
    assert busy, "a full queue refused nothing"
    actuator.stop()
    sub.close()


def test_sighup_reloads_and_a_failed_start_waits_in_the_process(tmp_path, broker):
    """The real actuator process: a state file it cannot open is retried in the process (no exit for systemd's
    start limit to count); SIGHUP retries at once once it is fixed, and later reloads a changed config,
    where it used to end the process (and systemd counts SIGHUP as a clean exit: no restart)."""
    import os
    import signal
    import subprocess
    import sys

    import yaml

    from tests.support import poll

    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the state's folder should be")
    config = actuator_config(tmp_path, broker.port, "pins", state_path=str(blocked / "actuator.sqlite"))
    sub = Subscriber(broker.port, "smartbin/test-bin/actuator/#")
    log = tmp_path / "actuator.log"
    env = {**os.environ, "GPIOZERO_PIN_FACTORY": "mock"}
    with log.open("w") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "edge.cli", "actuator", "--config", str(config)], cwd=ROOT, stderr=err, env=env
        )
    acked = lambda event: any(a.json().get("event_id") == event for a in sub.on("ack"))  # noqa: E731
    try:
        assert poll(lambda: "cannot start" in log.read_text(), 30), log.read_text()[-2000:]
        assert process.poll() is None  # waiting to try again, not exited
        blocked.unlink()
        blocked.mkdir()
        process.send_signal(signal.SIGHUP)
        first = uuid.uuid4().hex
        sent = lambda event: sub.publish("smartbin/test-bin/decision", decision("kitchen", event)) or acked(event)  # noqa: E731
        assert poll(lambda: sent(first), 30), log.read_text()[-2000:]

        data = yaml.safe_load(config.read_text())
        data["actuator"]["max_age_s"] = 0.0001  # from now on every decision is stale: the reload took
        config.write_text(yaml.safe_dump(data))
        process.send_signal(signal.SIGHUP)

        def stale_once_reloaded() -> bool:
            event = uuid.uuid4().hex
            sub.publish("smartbin/test-bin/decision", decision("kitchen", event))
            answered = poll(lambda: [a.json() for a in sub.on("ack") if a.json().get("event_id") == event], 10)
            return bool(answered) and answered[0]["stale"]

        assert poll(stale_once_reloaded, 30), log.read_text()[-2000:]
        assert process.poll() is None
        first_ack = [a.json() for a in sub.on("ack") if a.json().get("event_id") == first][0]
        assert first_ack["ok"] and not first_ack["stale"]
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0, log.read_text()[-2000:]
        sub.close()


def test_each_actuator_mode_has_its_mover():
    from typing import get_args

    from edge.actuator.movers import MOVERS
    from edge.config import ActuatorConfig

    assert set(MOVERS) == set(get_args(ActuatorConfig.model_fields["mode"].annotation))
