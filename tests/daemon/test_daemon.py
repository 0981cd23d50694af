"""The daemon as a real subprocess: real bundle, clip source, real mosquitto, independent subscriber."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import cv2
import jsonschema
import numpy as np
import pytest

from tests.support import ROOT, empty_bin_source, finish, schema, start_daemon, write_config
from tests.support.mqtt_client import Subscriber, answered, unique_decisions

pytestmark = pytest.mark.slow


def test_end_to_end_one_decision_per_item(tmp_path: Path, bundle_dir: Path, broker, clip_factory):
    clip, schedule = clip_factory(items=4)
    config = write_config(tmp_path / "config.yaml", bundle_dir, f"file://{clip}?realtime=1", broker.port)
    sub = Subscriber(broker.port)
    code, err = finish(start_daemon(config))
    time.sleep(0.3)
    sub.close()
    assert code == 0, err[-2000:]

    statuses = [m.json() for m in sub.on("status")]
    assert statuses[0]["state"] == "online" and statuses[-1]["state"] == "offline"
    for status in statuses:
        jsonschema.validate(status, schema("status"))

    classifications = sub.on("classification")
    assert classifications, "no classification arrived"
    for m in classifications:
        assert m.qos == 0
        jsonschema.validate(m.json(), schema("classification"))

    decisions = unique_decisions(sub.on("decision"))
    for d in decisions:
        jsonschema.validate(d, schema("decision"))
    assert len(decisions) == len(schedule), (decisions, schedule)
    matches = sum(d["label_index"] == c for d, c in zip(decisions, schedule))
    assert matches >= len(schedule) - 1, ([d["label_index"] for d in decisions], schedule)
    assert all(m.qos == 1 for m in sub.on("decision"))

    metrics = sub.on("metrics")
    assert metrics, "no metrics arrived"
    for m in metrics:
        jsonschema.validate(m.json(), schema("metrics"))
    assert max(m.json()["frames_classified"] for m in metrics) > 0
    assert err.count(" decision ") == len(decisions)  # one log line per decision

    outbox = sqlite3.connect(tmp_path / "outbox.sqlite")
    assert outbox.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 0  # all acknowledged
    assert outbox.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_commands_answered_and_sigterm_leaves_offline_retained(
    tmp_path: Path, bundle_dir: Path, broker, clip_factory, bundle_copy: Path
):
    clip, _ = clip_factory(items=4)
    config = write_config(tmp_path / "config.yaml", bundle_dir, f"file://{clip}?loop=1&realtime=1", broker.port)
    sub = Subscriber(broker.port)
    daemon = start_daemon(config)
    try:
        assert sub.wait_for("status", where=lambda m: m.json()["state"] == "online"), "daemon never came online"
        assert sub.wait_for("classification"), "no classifications"
        base = "smartbin/test-bin/command"
        broken = bundle_copy
        (broken / "int8.tflite").write_bytes(b"\0" * 100)
        sent = [
            {"id": 1, "action": "ping"},
            {"id": 2, "action": "status"},
            {"id": 3, "action": "pause"},
            {"id": 4, "action": "resume"},
            {"id": 5, "action": "set_threshold", "value": 0.7},
            {"id": 6, "action": "snapshot"},
            {"id": 7, "action": "reload_model", "bundle": str(broken)},
            {"id": 8, "action": "self_destruct"},
            {"id": 9, "action": "set_threshold", "value": "high"},
            {"id": 10, "action": "reload_model"},
        ]
        for command in sent:
            sub.publish(base, json.dumps(command))
        for raw in (b"{not json", b"\xff\xfe\x00binary", b"[1, 2]", b"x" * 10000):
            sub.publish(base, raw)
        results = sub.wait_for("command/result", count=len(sent) + 4)
        assert len(results) == len(sent) + 4
        by_id = {m.json()["id"]: m.json() for m in results if m.json()["id"] is not None}
        for m in results:
            jsonschema.validate(m.json(), schema("command_result"))
        validator = jsonschema.Draft202012Validator(schema("command"))
        # what the bin answered ok, the schema allows; what it refused (8, 9), the schema refuses too
        assert {c["id"] for c in sent if validator.is_valid(c)} == {i for i in range(1, 11) if i not in (8, 9)}
        assert by_id[1]["result"] == {"pong": True}
        assert by_id[2]["result"]["state"] == "online"
        assert by_id[3]["result"] == {"paused": True} and by_id[4]["result"] == {"paused": False}
        assert by_id[5]["result"] == {"min_confidence": 0.7}
        snapshot, snapshot_schema = sub.wait_for("snapshot")[0].payload, schema("snapshot")
        assert snapshot_schema["contentMediaType"] == "image/jpeg" and snapshot[:2] == b"\xff\xd8"
        image = cv2.imdecode(np.frombuffer(snapshot, np.uint8), cv2.IMREAD_COLOR)
        assert by_id[6]["ok"] and by_id[6]["result"]["bytes"] == len(snapshot) and image is not None
        assert not by_id[7]["ok"] and "still serving the old model" in by_id[7]["error"]
        assert "int8.tflite" in by_id[7]["error"]
        assert "unknown action 'self_destruct'" in by_id[8]["error"]
        assert "between 0 and 1" in by_id[9]["error"]
        assert by_id[10]["ok"]  # reload of the configured bundle
        errors = [m.json()["error"] for m in results if m.json()["id"] is None]
        assert sorted(errors) == sorted(
            [
                "payload is not valid JSON",
                "payload is not UTF-8 text",
                'payload must be a JSON object like {"id": 1, "action": "ping"}',
                "payload too large (10000 bytes, limit 4096)",
            ]
        )
        before = len(sub.on("classification"))
        assert sub.wait_for("classification", count=before + 5), "classification stopped after bad commands"
        assert daemon.poll() is None
    finally:
        daemon.send_signal(signal.SIGTERM)
        code, err = finish(daemon, timeout=15)  # it stops by itself within the unit's TimeoutStopSec (15 s)
    assert code == 0, err[-2000:]
    sub.close()
    late = Subscriber(broker.port, "smartbin/test-bin/status")  # a newcomer sees the retained state
    retained = late.wait_for("status")
    late.close()
    assert retained and retained[0].retain and retained[0].json()["state"] == "offline"


def test_decisions_made_while_the_broker_is_down_arrive_later_in_order(
    tmp_path: Path, bundle_dir: Path, broker, clip_factory
):
    clip, schedule = clip_factory(items=3, seed=11)
    broker.stop()
    config = write_config(tmp_path / "config.yaml", bundle_dir, f"file://{clip}", broker.port)
    code, err = finish(start_daemon(config))
    assert code == 0, err[-2000:]
    assert "stay in the outbox" in err
    stored = sqlite3.connect(tmp_path / "outbox.sqlite").execute("SELECT payload FROM outbox ORDER BY id").fetchall()
    assert len(stored) == len(schedule)
    expected = [json.loads(p)["event_id"] for (p,) in stored]

    broker.start()
    sub = Subscriber(broker.port)
    config = write_config(tmp_path / "config.yaml", bundle_dir, empty_bin_source(tmp_path / "empty"), broker.port)
    code, err = finish(start_daemon(config))
    assert code == 0, err[-2000:]
    decisions = sub.wait_decisions(len(expected))
    sub.close()
    assert [d["event_id"] for d in decisions] == expected
    assert sqlite3.connect(tmp_path / "outbox.sqlite").execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 0


def test_falls_back_to_mqtt_311_with_the_embedded_broker(tmp_path: Path, bundle_dir: Path, clip_factory):
    """amqtt (the demo's fallback broker) speaks only 3.1.1 and never answers an MQTT 5 CONNECT."""
    from edge.tools.localbroker import LocalBroker

    clip, schedule = clip_factory(items=3, seed=11)
    with LocalBroker(workdir=tmp_path / "amqtt", prefer="amqtt") as broker:
        uri = f"file://{clip}?realtime=1&loop=1"
        config = write_config(tmp_path / "config.yaml", bundle_dir, uri, broker.port)
        sub = Subscriber(broker.port)
        process = start_daemon(config)
        decisions = sub.wait_decisions(len(schedule), timeout=40)
        metrics = sub.wait_for("test-bin/metrics")
        process.send_signal(signal.SIGTERM)
        code, err = finish(process)
        sub.close()
    assert code == 0, err[-1500:]
    assert len(decisions) >= len(schedule)  # they came through a broker that speaks only 3.1.1
    # and the bin says so: over 3.1.1 the actuator must trust the clocks
    assert {m.json().get("mqtt_protocol") for m in sub.on("test-bin/status")} == {"3.1.1"}
    assert metrics and metrics[-1].json()["mqtt_protocol"] == "3.1.1"


def test_sighup_applies_each_changed_section_or_refuses_the_whole_reload(
    tmp_path: Path, bundle_dir: Path, broker, clip_factory
):
    """By behaviour: a new threshold changes the decisions, a new source's frames arrive; a change that
    cannot apply live (device_id) and a broken file are refused, leaving everything as it was."""
    import cv2
    import numpy as np
    import yaml

    from edge.formats.images import write_jpeg

    clip, _ = clip_factory(items=4)
    config = write_config(
        tmp_path / "config.yaml",
        bundle_dir,
        f"file://{clip}?loop=1&realtime=1",
        broker.port,
        mqtt__home_assistant={"enabled": True, "discovery_prefix": "homeassistant"},
    )
    ha = Subscriber(broker.port, "homeassistant/#")
    sub = Subscriber(broker.port, "#")
    # what an earlier release left retained (one config per entity): cleared, or Home Assistant keeps both
    retired = "homeassistant/sensor/smartbin_test-bin/last_bin/config"
    sub.publish(retired, json.dumps({"name": "last bin"}), retain=True)
    process = start_daemon(config)

    def reload(change) -> None:
        data = yaml.safe_load(config.read_text())
        change(data)
        config.write_text(yaml.safe_dump(data))
        process.send_signal(signal.SIGHUP)

    def statuses() -> list[dict]:
        return [m.json() for m in sub.on("test-bin/status")]

    try:
        assert sub.wait_for("classification"), "daemon did not start"
        device_config = lambda m: m.topic == "homeassistant/device/test-bin/config"  # noqa: E731
        assert ha.wait_for("config", where=device_config), "no discovery at the first connect"
        # Home Assistant restarting says "online" on its status topic: the bin announces itself again
        ha.publish("homeassistant/status", "online")
        again = ha.wait_for("config", count=2, where=device_config)
        assert len(again) >= 2, "no discovery after Home Assistant's birth message"

        # 1. decision.min_confidence 1.0: the decisions that follow go to the default bin
        before = len(statuses())
        reload(lambda d: d["decision"].update(min_confidence=1.0))
        assert sub.wait_for("test-bin/status", count=before + 1), "no status after the reload"
        since = time.time()
        found = sub.wait_for("decision", count=2, timeout=60, where=lambda m: m.json()["ts"] > since)
        assert len(found) >= 2 and all(m.json()["reason"] == "low_confidence" for m in found)

        # 2. refused: device_id cannot change live, and a broken file; classification and topics go on
        before = len(statuses())
        reload(lambda d: d.update(device_id="renamed-bin"))
        time.sleep(1)
        config.write_text("device_id: [broken\n")
        process.send_signal(signal.SIGHUP)
        since = time.time()
        found = sub.wait_for("test-bin/classification", count=3, where=lambda m: m.json()["ts"] > since)
        assert len(found) >= 3, "stopped classifying after a refused reload"
        found = sub.wait_for("decision", count=1, timeout=60, where=lambda m: m.json()["ts"] > since)
        assert found and found[0].json()["reason"] == "low_confidence"  # the threshold of step 1 still holds
        assert len(statuses()) == before and not sub.on("renamed-bin/status")

        # 3. a new source: its frames are the ones classified, and the status says which source runs
        still = tmp_path / "still"
        still.mkdir()
        write_jpeg(still / "0.jpg", np.full((120, 160, 3), (200, 30, 30), np.uint8))
        write_config(config, bundle_dir, f"dir://{still}?loop=1", broker.port)
        before = len(statuses())
        process.send_signal(signal.SIGHUP)
        # mqtt changed too (the rewritten file drops home_assistant): the old client says "offline" as
        # it goes, and commands reach the new one once it is "online"
        # (on a loaded machine the old client may still publish an online status of its own first: the reload's
        # is the one that names the new source)
        new_uri = f"dir://{still}?loop=1"
        online = sub.wait_for(
            "test-bin/status",
            where=lambda m: (
                m in sub.on("test-bin/status")[before:]
                and m.json()["state"] == "online"
                and m.json()["source"]["uri"] == new_uri
            ),
        )
        seen = [(m.json()["state"], m.json()["source"]["uri"]) for m in sub.on("test-bin/status")[before:]]
        assert online, f"no online status naming the new source after the reload: {seen}"
        sub.publish("smartbin/test-bin/command", json.dumps({"id": "snap", "action": "snapshot"}))
        assert answered(sub, "snap")["ok"]
        jpeg = sub.wait_for("snapshot")[-1].payload
        rgb = cv2.cvtColor(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        assert rgb.shape == (120, 160, 3) and np.abs(rgb.mean(axis=(0, 1)) - (200, 30, 30)).max() < 8
        assert process.poll() is None
    finally:
        process.send_signal(signal.SIGTERM)
        code, err = finish(process)
        ha.close()
        sub.close()
    assert code == 0, err[-2000:]
    assert "reload refused, keeping the running configuration: device_id cannot change while running" in err
    assert "not valid YAML" in err
    # one device-based discovery message (Home Assistant's documented keys: dev, o, cmps with p and unique_id)
    assert {m.topic for m in ha.on("config") if m.payload} - {retired} == {"homeassistant/device/test-bin/config"}
    late = Subscriber(broker.port, "homeassistant/#")  # Home Assistant starting later still finds the bin
    retained = late.wait_for("config", count=1)
    late.close()
    assert [m.topic for m in retained] == ["homeassistant/device/test-bin/config"] and retained[0].retain
    device = retained[0].json()
    shared = {"availability_topic", "availability_template", "payload_available", "payload_not_available", "qos"}
    assert set(device) == {"dev", "o", "cmps"} | shared and device["o"]["name"] == "smartbin"
    cmps = device["cmps"]
    assert all(c["p"] in ("sensor", "binary_sensor", "event") and c["unique_id"] for c in cmps.values())
    assert len({c["unique_id"] for c in cmps.values()}) == len(cmps)
    # items today fall back to 0 at midnight: total_increasing (a reset), not measurement
    today = cmps["items_today_kitchen"]
    assert today["state_topic"] == "smartbin/test-bin/metrics" and today["state_class"] == "total_increasing"
    # the protocol in use, as a diagnostic read from the status (the one before the reload: MQTT 5 here)
    protocol = cmps["mqtt_protocol"]
    assert protocol["state_topic"] == "smartbin/test-bin/status" and protocol["entity_category"] == "diagnostic"
    assert protocol["value_template"] == "{{ value_json.mqtt_protocol }}" and statuses()[0]["mqtt_protocol"] == "5"
    assert "counts.today.per_bin.kitchen" in today["value_template"]
    sorted_item = cmps["item_sorted"]  # an event per sorted item, its type the bin
    assert sorted_item["p"] == "event" and sorted_item["state_topic"] == "smartbin/test-bin/decision"
    assert set(sorted_item["event_types"]) == {"recyclable", "kitchen", "hazardous", "other"}
    assert '"event_type": "{{ value_json.bin }}"' in sorted_item["value_template"]
    last_bin = cmps["last_bin"]
    assert last_bin["state_topic"] == "smartbin/test-bin/decision" and "value_json.bin" in last_bin["value_template"]


def test_set_threshold_changes_the_decisions_that_follow(tmp_path: Path, bundle_dir: Path, broker, clip_factory):
    clip, _ = clip_factory(items=4)
    config = write_config(tmp_path / "config.yaml", bundle_dir, f"file://{clip}?loop=1&realtime=1", broker.port)
    sub = Subscriber(broker.port)
    process = start_daemon(config)
    try:
        assert sub.wait_for("classification"), "daemon did not start"
        after = {}
        for threshold in (1.0, 0.0):
            sub.publish(
                "smartbin/test-bin/command",
                json.dumps({"id": f"t{threshold}", "action": "set_threshold", "value": threshold}),
            )
            since = answered(sub, f"t{threshold}")["ts"]
            found = sub.wait_for("decision", count=3, timeout=60, where=lambda m, since=since: m.json()["ts"] > since)
            after[threshold] = unique_decisions(found)
            assert len(after[threshold]) >= 3, f"too few decisions after set_threshold {threshold}"
    finally:
        process.send_signal(signal.SIGTERM)
        code, err = finish(process)
        sub.close()
    assert code == 0, err[-2000:]
    # Each decision follows the threshold in force: a vote at 0, the default bin below 1 (int8 tops out < 1).
    assert all(d["reason"] == "vote" and d["label_index"] >= 0 for d in after[0.0])
    for d in after[1.0]:
        assert (d["reason"] == "vote") == (d["confidence"] >= 1.0)
    assert any(d["reason"] == "low_confidence" and d["bin"] == "other" and d["label"] == "unknown" for d in after[1.0])


def test_reload_model_swaps_labels_and_input_size_and_a_failed_swap_keeps_serving(
    tmp_path: Path, bundle_dir: Path, other_bundle_dir: Path, broker, clip_factory
):
    import shutil

    from edge.formats.bundle import Bundle, sha256_file
    from tests.support import OTHER_LABELS

    other_names = {v.split("/", 1)[1] for v in OTHER_LABELS.values()}
    # A bundle whose manifest matches its file, but the file is no model: it passes verify and fails to load.
    unloadable = Path(shutil.copytree(other_bundle_dir, tmp_path / "unloadable"))
    (unloadable / "int8.tflite").write_bytes(b"TFL3" + b"\0" * 4096)
    manifest = json.loads((unloadable / "manifest.json").read_text())
    manifest["variants"]["int8"].update(sha256=sha256_file(unloadable / "int8.tflite"), size=4100)
    (unloadable / "manifest.json").write_text(json.dumps(manifest))
    Bundle.open(unloadable).verify()

    clip, _ = clip_factory(items=4)
    config = write_config(tmp_path / "config.yaml", bundle_dir, f"file://{clip}?loop=1&realtime=1", broker.port)
    sub = Subscriber(broker.port)
    process = start_daemon(config)
    topic = "smartbin/test-bin/command"
    try:
        assert sub.wait_for("classification"), "daemon did not start"
        sub.publish(topic, json.dumps({"id": "swap", "action": "reload_model", "bundle": str(other_bundle_dir)}))
        swap = answered(sub, "swap")
        assert swap["ok"], swap
        assert swap["result"]["model"]["name"] == "other-model"
        after_swap = sub.wait_for("classification", count=5, where=lambda m: m.json()["ts"] > swap["ts"])
        assert len(after_swap) >= 5 and {m.json()["label"] for m in after_swap} <= other_names
        assert all(m.json()["label_index"] < 3 for m in after_swap)

        sub.publish(topic, json.dumps({"id": "bad", "action": "reload_model", "bundle": str(unloadable)}))
        bad = answered(sub, "bad")
        assert not bad["ok"] and "still serving the old model" in bad["error"] and "int8.tflite" in bad["error"]
        after_bad = sub.wait_for("classification", count=5, where=lambda m: m.json()["ts"] > bad["ts"])
        assert len(after_bad) >= 5 and {m.json()["label"] for m in after_bad} <= other_names
        sub.publish(topic, json.dumps({"id": "st", "action": "status"}))
        assert answered(sub, "st")["result"]["model"]["name"] == "other-model"
        assert process.poll() is None
    finally:
        process.send_signal(signal.SIGTERM)
        code, err = finish(process)
        sub.close()
    assert code == 0, err[-2000:]


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and unshare (a UTS namespace)")
def test_two_bins_left_on_the_default_id_both_stay_connected(tmp_path: Path, bundle_dir: Path, broker):
    """Two daemons without a device_id, on machines named kitchen and garage (a hostname each, in its own
    UTS namespace), against one broker: two topics, each bin connected once and staying so."""
    sub = Subscriber(broker.port)
    processes = []
    for name in ("kitchen", "garage"):
        work = tmp_path / name
        work.mkdir()
        config = write_config(work / "config.yaml", bundle_dir, "synthetic://?fps=10", broker.port, device_id=None)
        shell = 'hostname "$1" && exec "$2" -m edge --config "$3"'
        command = ["unshare", "--uts", "sh", "-c", shell, "sh", name, sys.executable, str(config)]
        processes.append(subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True))
    try:
        for name in ("kitchen", "garage"):
            metrics = sub.wait_for(f"{name}/metrics", count=10, timeout=60)
            assert len(metrics) >= 10, f"{name}: {len(metrics)} metrics"
            assert {m.json()["broker_connects"] for m in metrics} == {1}, name  # never kicked off and back
        assert {m.topic.split("/")[1] for m in sub.on("status")} == {"kitchen", "garage"}
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        errors = [finish(process)[1] for process in processes]
        sub.close()
    assert all(p.returncode == 0 for p in processes), [e[-1500:] for e in errors]
