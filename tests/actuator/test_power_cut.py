"""A power cut on a bin without a real-time clock: the decisions left in the daemon's outbox go out after the
next boot, and the host's clock, set back at boot, makes them look brand new. They never move a flap: each row
records the boot it was stored in (edge/system/boot.py; the test gives the two boots their ids, since a
machine cannot be rebooted inside a test run), the publisher sends a row of an earlier boot marked as such,
and the real actuator acknowledges it as stale. The next decision, made after the boot, moves the flap; over
MQTT 5 and over 3.1.1, where only the clocks would be left to judge."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest

from edge.system.boot import ENV, boot_id
from tests.support import actuator_config, poll, start_actuator, stop_all
from tests.support.mqtt_client import Subscriber

pytestmark = pytest.mark.slow
BEFORE, AFTER = "a" * 32, "b" * 32


def _boot(monkeypatch, value: str) -> None:
    monkeypatch.setenv(ENV, value)
    boot_id.cache_clear()


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_decisions_from_before_a_power_cut_never_move_a_flap(tmp_path: Path, monkeypatch, protocol: str):
    from edge.broker.publisher import Publisher
    from edge.config import MqttConfig
    from edge.storage.outbox import Outbox
    from edge.tools.localbroker import LocalBroker, free_port

    def decision(bin_name: str, ts: float) -> dict:
        return {"event_id": uuid.uuid4().hex, "ts": ts, "bin": bin_name, "label": "x", "device_id": "test-bin"}

    # before the cut: three decisions stored, the broker out of reach; stamped a little ahead, as the clock
    # set back at the next boot will show them: as fresh as can be, by any clock
    _boot(monkeypatch, BEFORE)
    outbox = Outbox(tmp_path / "outbox.sqlite")
    before = [decision("recyclable", time.time() + 2) for _ in range(3)]
    for d in before:
        outbox.add(d["event_id"], "smartbin/test-bin/decision", d, d["ts"])
    outbox.close()

    _boot(monkeypatch, AFTER)  # the power comes back
    port = free_port()
    config = actuator_config(tmp_path, port, "pins", max_age_s=60.0)
    broker = LocalBroker(port=port, workdir=tmp_path / "broker").start()
    sub = Subscriber(port, "smartbin/test-bin/#")
    acks = lambda: {m.json()["event_id"]: m.json() for m in sub.on("actuator/ack")}  # noqa: E731
    actuator = start_actuator(config, tmp_path / "actuator.log")
    probe = lambda: sub.publish("smartbin/test-bin/decision", json.dumps({"event_id": "probe"})) or acks()  # noqa: E731
    assert poll(probe, 30), (tmp_path / "actuator.log").read_text()[-3000:]
    outbox = Outbox(tmp_path / "outbox.sqlite")
    publisher = Publisher(
        MqttConfig(host="127.0.0.1", port=port, protocol=protocol), "smartbin/test-bin", "test-bin", outbox,
        lambda *_: None, lambda state: {"state": state}, reconnect_delay_s=(0.1, 0.5),
    )  # fmt: skip
    publisher.start()
    try:
        assert poll(lambda: all(d["event_id"] in acks() for d in before), 30, tick=publisher.maintain), acks()
        after = decision("kitchen", time.time())
        publisher.publish_decision(after)
        assert poll(lambda: after["event_id"] in acks(), 20, tick=publisher.maintain)
    finally:
        stop_all(publisher, actuator, sub, broker)
    got = acks()
    for d in before:  # delivered (nothing lost: the counts and the review see them), never moved
        assert not got[d["event_id"]]["ok"] and got[d["event_id"]]["stale"], got[d["event_id"]]
        assert "before the bin's host last started" in got[d["event_id"]]["error"]
    sent = {m.json()["event_id"]: m.json() for m in sub.on("test-bin/decision") if m.json().get("bin")}
    assert all(sent[d["event_id"]]["earlier_boot"] for d in before) and "earlier_boot" not in sent[after["event_id"]]
    assert got[after["event_id"]]["ok"] and not got[after["event_id"]]["stale"]
