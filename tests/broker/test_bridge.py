"""A site broker bridged to a central one (mosquitto's bridge, as users run them): the bins and their actuator
on the site's broker, the workstation on the centre's. The central broker is killed mid-run: the site goes on
sorting (the actuator moves), the bridge queues what the centre missed, and once it is back every decision
reaches the centre, the fleet view there lists the bin and a command from there is answered."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from edge.cli import main
from edge.tools.localbroker import LocalBroker
from tests.support import (
    actuator_config,
    every_decision_arrived,
    poll,
    start_actuator,
    start_daemon,
    stop_daemon_and_actuator,
    write_config,
)
from tests.support.mqtt_client import Subscriber, answered, unique_decisions

pytestmark = pytest.mark.slow


def bridged_site(tmp_path: Path, central: LocalBroker) -> LocalBroker:
    """A site broker whose bridge carries every smartbin topic both ways, its session kept across outages."""
    bridge = "\n".join(
        (
            "connection central",
            f"address 127.0.0.1:{central.port}",
            "topic smartbin/# both 1",
            "cleansession false",
            "remote_clientid site-1-bridge",
            "restart_timeout 1 2",
        )
    )
    return LocalBroker(workdir=tmp_path / "site", extra_config=bridge).start()


def test_the_centre_dies_mid_run_and_the_site_loses_nothing(tmp_path: Path, bundle_dir: Path, clip_factory, capsys):
    # the centre writes its sessions to disk at each change: a power cut there keeps the watcher's subscription
    saved = "autosave_interval 1\nautosave_on_changes true"
    central = LocalBroker(workdir=tmp_path / "central", extra_config=saved).start()
    site = bridged_site(tmp_path, central)
    clip, _ = clip_factory(items=4)
    daemon_config = write_config(
        tmp_path / "daemon.yaml", bundle_dir, f"file://{clip}?loop=1&realtime=1", site.port, mqtt__metrics_interval_s=1
    )
    config = actuator_config(tmp_path, site.port, "pins", max_age_s=3.0)
    data = yaml.safe_load(config.read_text())
    data["mqtt"]["metrics_interval_s"] = 1
    config.write_text(yaml.safe_dump(data))
    watcher = Subscriber(central.port, "smartbin/test-bin/#", client_id="centre-watcher", persistent=True)
    on_site = Subscriber(site.port, "smartbin/test-bin/actuator/ack")
    log = tmp_path / "actuator.log"
    actuator = start_actuator(config, log)
    daemon = start_daemon(daemon_config)
    try:
        assert poll(lambda: len(unique_decisions(watcher.on("decision"))) >= 2, 120), "nothing crossed the bridge"
        central.process.kill()  # a power cut at the centre
        central.process.wait(10)
        killed = time.monotonic()
        moves = lambda: [m for m in on_site.on("actuator/ack") if m.at > killed and m.json()["ok"]]  # noqa: E731
        assert poll(lambda: len(moves()) >= 2, 120), ("the site stopped sorting", log.read_text()[-3000:])
        central.start()
        watcher_back = lambda: watcher.client.is_connected()  # noqa: E731
        assert poll(watcher_back, 60)
        capsys.readouterr()
        assert main(["fleet", "list", "--broker", f"127.0.0.1:{central.port}"]) == 0
        assert "test-bin: online" in capsys.readouterr().out
        watcher.publish("smartbin/test-bin/command", json.dumps({"id": "from-the-centre", "action": "ping"}))
        assert answered(watcher, "from-the-centre")["ok"]
    finally:
        code, err = stop_daemon_and_actuator(daemon, actuator)
    assert code == 0, err[-2000:]
    received, made = every_decision_arrived(watcher, tmp_path)
    assert received == made  # those of the outage came through the bridge
    watcher.close()
    on_site.close()
    site.close()
    central.close()
