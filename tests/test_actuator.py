"""The actuator with gpiozero's mock pins and a real broker: a decision moves the right pin exactly once."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest

from edge.config import load_config
from tests.conftest import write_config
from tests.mqtt_client import Subscriber


@pytest.fixture()
def mock_pins(monkeypatch):
    from gpiozero import Device
    from gpiozero.pins.mock import MockFactory, MockPWMPin

    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "mock")
    Device.pin_factory = MockFactory(pin_class=MockPWMPin)
    yield Device.pin_factory
    Device.pin_factory.reset()
    Device.pin_factory = None


def actuator_config(tmp_path: Path, port: int, mode: str) -> Path:
    path = write_config(tmp_path / "config.yaml", tmp_path / "no-bundle", "synthetic://", port)
    import yaml

    data = yaml.safe_load(path.read_text())
    data["actuator"].update(mode=mode, hold_s=0.05, state_path=str(tmp_path / "actuator.sqlite"))
    path.write_text(yaml.safe_dump(data))
    return path


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
    from edge.service.actuator import Actuator

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
    from edge.service.actuator import Actuator

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
    # neutral (1.5 ms of 20 ms), kitchen's -30° (1.333 ms), neutral again; the last state is close().
    values = [round(s.state, 4) for s in servo.states]
    assert values[1:-1] == [0.075, round((1.5 - 1 / 6) / 20, 4), 0.075], values
