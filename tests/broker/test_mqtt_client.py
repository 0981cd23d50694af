"""The one MQTT client factory: what every client of ours gets, checked on a real connection."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections import Counter

from edge.broker.client import make_client
from edge.config import MqttConfig
from tests.support import poll


def test_clients_send_without_nagles_delay(broker):
    """Under inference load, Nagle's algorithm held each small publish for the broker's delayed ACK (+15 ms)."""
    client = make_client(MqttConfig(host="127.0.0.1", port=broker.port), "nodelay-test")
    connected = threading.Event()
    client.on_connect = lambda *a: connected.set()
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        assert connected.wait(10)
        assert client.socket().getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        client.disconnect()
        client.loop_stop()


def publisher(port: int, protocol: str = "auto", device: str = "pub-test", on_command=lambda *_: None):
    """The daemon's publisher alone (in-memory outbox), reconnecting fast: a test restarts its broker often."""
    from edge.broker.publisher import Publisher
    from edge.storage.outbox import Outbox

    config = MqttConfig(host="127.0.0.1", port=port, protocol=protocol)
    return Publisher(
        config, f"smartbin/{device}", device, Outbox(":memory:"), on_command, lambda state: {"state": state},
        reconnect_delay_s=(0.05, 0.2),
    )  # fmt: skip


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_broker_down_at_boot_does_not_downgrade_the_protocol(tmp_path):
    """protocol auto: a broker that is unreachable for longer than the MQTT 5 answer timeout is no
    reason to speak 3.1.1 for good; when it comes up, MQTT 5 it is."""
    from edge.broker.connection import V5_ANSWER_TIMEOUT_S
    from edge.tools.localbroker import LocalBroker, free_port

    port = free_port()
    pub = publisher(port)
    pub.start()
    try:
        time.sleep(V5_ANSWER_TIMEOUT_S + 1)
        for _ in range(10):
            pub.maintain()  # the daemon's loop calls it every turn
        assert pub.protocol == "5" and not pub.connected.is_set()
        with LocalBroker(port=port, workdir=tmp_path / "broker"):
            assert poll(pub.connected.is_set, 30, pub.maintain), "never connected"
            assert pub.protocol == "5"
    finally:
        pub.stop(timeout=0.5)


def test_no_descriptor_leaks_across_a_hundred_broker_restarts(tmp_path):
    from edge.tools.localbroker import LocalBroker

    broker = LocalBroker(workdir=tmp_path / "broker", persistence=False).start()
    pub = publisher(broker.port)
    pub.start()
    counts = []
    try:
        for restart in range(100):
            assert poll(pub.connected.is_set, 30, pub.maintain), f"no reconnect after restart {restart}"
            counts.append(open_descriptors())
            broker.stop()
            assert poll(lambda: not pub.connected.is_set(), 30, pub.maintain)
            broker.start()
        assert poll(pub.connected.is_set, 30, pub.maintain)
        counts.append(open_descriptors())
    finally:
        pub.stop(timeout=0.5)
        broker.close()
    assert pub.connects == 101 and pub.protocol == "5"
    # a leak grows with the restarts; one socket half-way through a reconnect when sampled does not
    assert max(counts[-10:]) <= counts[0], f"descriptors after each reconnect: {counts}"


def test_an_exception_in_a_callback_does_not_end_the_network_thread(broker):
    """A command the daemon's code fails on (a bug, an input nobody foresaw) is logged by paho and the next
    one still arrives, decisions still go out: the exception used to end paho's thread, and with it every
    later message and reconnect, without a word."""
    from tests.support.mqtt_client import Subscriber

    seen: list[bytes] = []

    def on_command(payload: bytes, retained: bool) -> None:
        seen.append(payload)
        if payload == b"boom":
            raise RuntimeError("a bug in a command handler")

    pub = publisher(broker.port, on_command=on_command)
    sub = Subscriber(broker.port, "smartbin/pub-test/decision")
    pub.start()
    try:
        assert poll(pub.connected.is_set, 30, pub.maintain)
        assert poll(lambda: sub.publish("smartbin/pub-test/command", "boom") or seen, 10)
        sub.publish("smartbin/pub-test/command", "after")
        assert poll(lambda: b"after" in seen, 10, pub.maintain), seen
        pub.publish_decision({"event_id": "e1", "bin": "other", "ts": time.time()})
        assert poll(lambda: sub.on("decision"), 10, pub.maintain)
    finally:
        pub.stop(timeout=0.5)
        sub.close()


def test_a_slow_first_connack_is_no_reason_to_give_up_mqtt_5(tmp_path):
    """protocol auto: the broker's first answer comes later than the MQTT 5 answer timeout (a power cut, every
    bin of a site reconnecting over TLS at once: here a relay that holds each first answer byte). The publisher
    falls back to 3.1.1 to get the decisions out, and at the next reconnect, with the link fast again, speaks
    MQTT 5 again: the actuator's clock-free freshness depends on it."""
    from edge.broker.connection import V5_ANSWER_TIMEOUT_S
    from edge.tools.localbroker import LocalBroker
    from tests.support.servers.slow_link import SlowLink

    broker = LocalBroker(workdir=tmp_path / "broker").start()
    link = SlowLink(broker.port, V5_ANSWER_TIMEOUT_S + 1)
    pub = publisher(link.port)
    pub.start()
    try:
        assert poll(pub.connected.is_set, 60, pub.maintain), "never connected through the slow link"
        assert pub.protocol == "3.1.1"  # what got the decisions out meanwhile
        link.delay_s = 0.0  # the rush is over
        broker.stop()
        assert poll(lambda: not pub.connected.is_set(), 30, pub.maintain)
        broker.start()
        assert poll(lambda: pub.connected.is_set() and pub.protocol == "5", 60, pub.maintain), pub.protocol
    finally:
        pub.stop(timeout=0.5)
        link.close()
        broker.close()


def test_a_guessed_fallback_tries_mqtt_5_again_while_connected_without_looking_offline(tmp_path):
    """The slow first answer that made the publisher guess 3.1.1 is gone, and nothing drops the connection (no
    reconnect to try MQTT 5 at): it tries MQTT 5 again by itself, with a clean goodbye, so the bin never looks
    offline to its watchers: no Last Will, neither at the goodbye nor from the first attempt it abandoned."""
    from edge.broker.connection import V5_ANSWER_TIMEOUT_S
    from edge.tools.localbroker import LocalBroker
    from tests.support.mqtt_client import Subscriber
    from tests.support.servers.slow_link import SlowLink

    with LocalBroker(workdir=tmp_path / "broker") as broker:
        link = SlowLink(broker.port, V5_ANSWER_TIMEOUT_S + 1)
        watcher = Subscriber(broker.port, "smartbin/pub-test/status")
        pub = publisher(link.port)
        pub.start()
        try:
            assert poll(pub.connected.is_set, 60, pub.maintain), "never connected through the slow link"
            assert pub.protocol == "3.1.1"
            link.delay_s = 0.0
            assert poll(lambda: pub.connected.is_set() and pub.protocol == "5", 60, pub.maintain), pub.protocol
            # online on 3.1.1, online again on 5; a will from the abandoned first attempt or the goodbye would be
            # among them (the abandoned attempt's session was open on the broker: its answer was only slow)
            assert poll(lambda: len(watcher.on("status")) >= 2, 10)
            time.sleep(1)
            sent = [(m.json()["state"], m.json().get("mqtt_protocol")) for m in watcher.on("status")]
            assert sent == [("online", "3.1.1"), ("online", "5")]
        finally:
            pub.stop(timeout=0.5)
            link.close()
            watcher.close()


def test_each_decision_goes_once_a_connection_when_its_acknowledgement_was_lost(tmp_path):
    """The link goes one-way while decisions are in flight (the broker has them, its PUBACKs never arrive), then
    drops. At the reconnect each decision goes again once, from the outbox with its age now, not a second time
    from paho's own queue with the age it had before the outage."""
    from edge.tools.localbroker import LocalBroker
    from tests.support.mqtt_client import Subscriber
    from tests.support.servers.slow_link import SlowLink

    broker = LocalBroker(workdir=tmp_path / "broker").start()
    link = SlowLink(broker.port, 0.0)
    sub = Subscriber(broker.port, "smartbin/pub-test/decision")
    pub = publisher(link.port, protocol="5")
    pub.start()
    decisions = [{"event_id": f"{i:032x}", "ts": time.time(), "bin": "recyclable"} for i in range(3)]
    copies = lambda: Counter(m.json()["event_id"] for m in sub.on("decision"))  # noqa: E731
    try:
        assert poll(pub.connected.is_set, 30, pub.maintain)
        link.answers.clear()  # the broker's answers stop coming back
        for decision in decisions:
            pub.publish_decision(decision)
        assert poll(lambda: len(copies()) == 3, 20, pub.maintain), copies()  # the broker has each once
        link.cut()
        link.answers.set()
        assert poll(lambda: pub.outbox.depth() == 0, 60, pub.maintain), "never acknowledged after the reconnect"
        assert pub.connects == 2
        time.sleep(1)  # room for a third copy to arrive, were one sent
        assert copies() == {d["event_id"]: 2 for d in decisions}  # one a connection
    finally:
        pub.stop(timeout=0.5)
        sub.close()
        link.close()
        broker.close()


def test_the_last_will_says_what_the_bin_is_now_not_what_it_was_at_start(tmp_path):
    """The bin switches model after it connected; then its link dies (no clean goodbye). The offline status the
    broker sends for it names the model it served when it went, not the one of its first connect."""
    from edge.broker.publisher import Publisher
    from edge.storage.outbox import Outbox
    from edge.tools.localbroker import LocalBroker
    from tests.support.mqtt_client import Subscriber
    from tests.support.servers.slow_link import SlowLink

    broker = LocalBroker(workdir=tmp_path / "broker").start()
    link = SlowLink(broker.port, 0.0)
    sub = Subscriber(broker.port, "smartbin/pub-test/status")
    now = {"model": {"name": "r1"}, "health": "ok", "paused": False}
    status = lambda state: {"state": state, **now}  # noqa: E731
    pub = Publisher(
        MqttConfig(host="127.0.0.1", port=link.port), "smartbin/pub-test", "pub-test", Outbox(":memory:"),
        lambda *_: None, status, reconnect_delay_s=(0.05, 0.2), will_interval_s=0,
    )  # fmt: skip
    pub.start()
    try:
        assert poll(pub.connected.is_set, 30, pub.maintain)
        now["model"] = {"name": "r2"}  # an update switched it
        assert poll(lambda: pub.connects == 2 and pub.connected.is_set(), 30, pub.maintain), "the will was not renewed"
        online = [m.json() for m in sub.on("status") if m.json()["state"] == "online"]
        assert online[-1]["model"] == {"name": "r2"}
        link.cut()  # the link dies: the broker sends the will
        offline = sub.wait_for("status", where=lambda m: m.json()["state"] == "offline")
        assert offline and offline[0].json()["model"] == {"name": "r2"}, [m.json() for m in sub.on("status")]
        assert [m.json()["state"] for m in sub.on("status")].count("offline") == 1  # the renewal itself sent none
    finally:
        pub.stop(timeout=0.5)
        sub.close()
        link.close()
        broker.close()
