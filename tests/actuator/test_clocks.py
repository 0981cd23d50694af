"""Two hosts, two clocks: the daemon's wall clock an hour ahead of or behind the actuator's. Fresh decisions
move the flap, stale ones never do: a backlog the broker kept while the actuator was down, and one the
daemon's outbox kept while the broker was down. The decisions are sent by the daemon's own publisher, stamped
by a clock an hour off (all a daemon's wall clock puts into a decision is its ``ts``); the actuator is the
real process on this host's clock, and judges their age from what the daemon and the broker counted
(edge/broker/freshness.py), never by comparing the two clocks. (libfaketime on the actuator was tried: it
makes Python's time.sleep fail with EINVAL, or timed waits hang, in the very process under test.)"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest

from tests.support import actuator_config, poll, start_actuator, stop_all
from tests.support.mqtt_client import Subscriber

pytestmark = pytest.mark.slow
MAX_AGE_S = 3.0  # a fresh decision reaches the flap well within it on any machine; the backlogs wait longer


@pytest.mark.parametrize("skew", [3600.0, -3600.0])
def test_the_flap_moves_for_fresh_decisions_whatever_the_two_clocks_say(tmp_path: Path, skew: float):
    def decision(bin_name: str) -> dict:  # made now, stamped by the daemon's clock
        return {"event_id": uuid.uuid4().hex, "ts": time.time() + skew, "bin": bin_name, "label": "x"}

    from edge.broker.publisher import Publisher
    from edge.config import MqttConfig
    from edge.storage.outbox import Outbox
    from edge.tools.localbroker import LocalBroker, free_port

    port = free_port()
    config = actuator_config(tmp_path, port, "pins", max_age_s=MAX_AGE_S)
    broker = LocalBroker(port=port, workdir=tmp_path / "broker").start()
    outbox = Outbox(tmp_path / "outbox.sqlite")
    publisher = Publisher(
        MqttConfig(host="127.0.0.1", port=port, protocol="5"), "smartbin/test-bin", "test-bin", outbox,
        lambda *_: None, lambda state: {"state": state}, reconnect_delay_s=(0.1, 0.5),
    )  # fmt: skip
    # a session the broker keeps: no acknowledgement is missed while the broker restarts
    sub = Subscriber(port, "smartbin/test-bin/actuator/ack", client_id=f"acks-{uuid.uuid4().hex}", persistent=True)
    acks = lambda: {m.json()["event_id"]: m.json() for m in sub.on("actuator/ack")}  # noqa: E731
    actuator = start_actuator(config, tmp_path / "actuator.log")
    publisher.start()
    try:
        assert publisher.connected.wait(10)
        # ready once it answers: a decision without a bin is refused (acknowledged, nothing moved)
        probe = lambda: sub.publish("smartbin/test-bin/decision", json.dumps({"event_id": "probe"})) or acks()  # noqa: E731
        assert poll(probe, 30), (tmp_path / "actuator.log").read_text()[-3000:]

        fresh = [decision(b) for b in ("recyclable", "kitchen", "hazardous")]
        for d in fresh:
            publisher.publish_decision(d)
        assert poll(lambda: all(d["event_id"] in acks() for d in fresh), 20, tick=publisher.maintain)

        # the broker keeps decisions for the actuator while it is down; it is back after they went stale
        actuator.terminate()
        actuator.wait(20)
        kept_by_broker = [decision("recyclable") for _ in range(3)]
        for d in kept_by_broker:
            publisher.publish_decision(d)
        assert poll(lambda: outbox.depth() == 0, 20, tick=publisher.maintain)
        time.sleep(MAX_AGE_S + 1)  # a lower bound on their age, whatever the machine
        actuator = start_actuator(config, tmp_path / "actuator.log")
        assert poll(lambda: all(d["event_id"] in acks() for d in kept_by_broker), 30)

        # the daemon's outbox keeps decisions while the broker is down; they go out after they went stale
        broker.stop()
        assert poll(lambda: not publisher.connected.is_set(), 10)
        kept_by_outbox = [decision("recyclable") for _ in range(3)]
        for d in kept_by_outbox:
            publisher.publish_decision(d)
        time.sleep(MAX_AGE_S + 1)
        broker.start()
        assert poll(lambda: all(d["event_id"] in acks() for d in kept_by_outbox), 60, tick=publisher.maintain)
        after = decision("other")  # and the next fresh one moves again
        publisher.publish_decision(after)
        assert poll(lambda: after["event_id"] in acks(), 20, tick=publisher.maintain)
    finally:
        stop_all(publisher, actuator, sub, broker)
    got = acks()
    moved = [e for e, a in got.items() if e and a["ok"]]
    stale = [e for e, a in got.items() if e and a["stale"]]
    print(f"\ndaemon's clock {skew:+.0f} s off: {len(moved)} moved (fresh), {len(stale)} stale (kept backlogs)")
    assert all(got[d["event_id"]]["ok"] and not got[d["event_id"]]["stale"] for d in [*fresh, after])
    assert all(got[d["event_id"]]["stale"] for d in [*kept_by_broker, *kept_by_outbox])
