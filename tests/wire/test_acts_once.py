"""What brokers really do to commands and decisions: retained commands, re-delivered ids, and a PUBACK that
refuses (an ACL whose user name and the bin's device_id drifted apart). Real mosquitto, real daemon."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from tests.support import finish, poll, start_daemon, write_config
from tests.support.mqtt_client import Subscriber, answered

pytestmark = pytest.mark.slow
COMMAND = "smartbin/test-bin/command"


def ask(sub: Subscriber, command_id: str, action: str, **params) -> dict:
    sub.publish(COMMAND, json.dumps({"id": command_id, "action": action, **params}))
    return answered(sub, command_id)


def test_a_retained_command_never_acts_and_an_id_acts_once(tmp_path: Path, bundle_dir: Path, broker, clip_factory):
    """An operator's tool left `pause` retained: the bin answers that it did not act on it, at every start,
    and stays unpaused after a later `resume`; a re-sent id is answered, not carried out again."""
    clip, _ = clip_factory(items=2)
    config = write_config(tmp_path / "config.yaml", bundle_dir, f"file://{clip}?loop=1&realtime=1", broker.port)
    sub = Subscriber(broker.port)
    sub.publish(COMMAND, json.dumps({"id": "tool-1", "action": "pause"}), retain=True)
    for start in range(2):  # the retained message is there again at the second start
        daemon = start_daemon(config)
        try:
            refused = answered(sub, "tool-1")
            assert not refused["ok"] and "retained" in refused["error"], refused
            assert ask(sub, f"status-{start}", "status")["result"]["paused"] is False
            if start == 0:
                assert ask(sub, "pause-1", "pause")["result"] == {"paused": True}
                sub.messages.clear()
                again = ask(sub, "pause-1", "pause")  # a re-delivery of the same command
                assert not again["ok"] and "already carried out" in again["error"]
                assert ask(sub, "resume-1", "resume")["result"] == {"paused": False}
                assert ask(sub, "status-again", "status")["result"]["paused"] is False
                assert ask(sub, "status-again", "status")["ok"]  # asking twice is harmless: answered twice
            sub.messages.clear()
        finally:
            daemon.send_signal(signal.SIGTERM)
            code, err = finish(daemon, timeout=30)
        assert code == 0, err[-2000:]
    sub.close()


def acl(path: Path, decisions: bool) -> None:
    """Anonymous clients (lines before any `user`): everything under smartbin/, decisions only if allowed."""
    lines = ["topic read smartbin/#", "topic write smartbin/+/status", "topic write smartbin/+/command"]
    lines += ["topic write smartbin/+/decision"] if decisions else []
    path.write_text("\n".join(lines) + "\n")


def test_a_refused_decision_stays_in_the_outbox_until_the_broker_accepts_it(tmp_path: Path):
    """MQTT 5: mosquitto answers a publish its ACL denies with PUBACK 0x87. The decision is kept, counted and
    its reason shown; once the ACL is fixed (mosquitto re-reads it on SIGHUP) it is delivered, once."""
    from edge.broker.publisher import Publisher
    from edge.config import MqttConfig
    from edge.storage.outbox import Outbox
    from edge.tools.localbroker import LocalBroker

    rules = tmp_path / "acl"
    acl(rules, decisions=False)
    with LocalBroker(workdir=tmp_path / "broker", extra_config=f"acl_file {rules}\n") as broker:
        outbox = Outbox(tmp_path / "outbox.sqlite")
        config = MqttConfig(host="127.0.0.1", port=broker.port, protocol="5")
        publisher = Publisher(
            config, "smartbin/test-bin", "test-bin", outbox, lambda *_: None, lambda state: {"state": state},
            refused_retry_s=0.5,
        )  # fmt: skip
        sub = Subscriber(broker.port, "smartbin/test-bin/decision")
        publisher.start()
        try:
            assert publisher.connected.wait(10)
            publisher.publish_decision({"event_id": "e-1", "ts": time.time(), "bin": "recyclable"})
            assert poll(lambda: publisher.refused >= 2, 20, tick=publisher.maintain), "no refusal seen"
            assert outbox.depth() == 1 and "Not authorized" in (publisher.refusal or ""), publisher.refusal
            assert sub.on("decision") == []
            acl(rules, decisions=True)
            broker.process.send_signal(signal.SIGHUP)  # mosquitto re-reads its ACL file
            assert poll(lambda: outbox.depth() == 0, 20, tick=publisher.maintain), publisher.refusal
            assert [m.json()["event_id"] for m in sub.wait_for("decision")] == ["e-1"]
            assert publisher.refusal is None and publisher.refused >= 2
        finally:
            publisher.stop(timeout=1)
            sub.close()
