"""Over MQTT 3.1.1 (a broker without user properties or message expiry, as RabbitMQ's plugin in Debian 12) a
decision carries no age: the actuator learns how far the daemon's clock is from its own from the daemon's
metrics (edge/broker/freshness.py's ClockOffset) and judges each decision by it. The daemon is the real
process, speaking 3.1.1 with its metrics every second; the actuator is the real process with its wall clock
30 s ahead or behind (the one fake: a second host's clock, tests/support/fakes.py). By the two clocks alone,
every fresh decision would be 30 s old or 30 s in the future; a restart's backlog 30 s younger than it is."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from tests.support import ROOT, actuator_config, finish, poll, start_actuator, start_daemon, write_config
from tests.support.fakes import fakes_path
from tests.support.mqtt_client import Subscriber
from tests.support.servers.rabbitmq import RabbitNode, rabbitmq_missing

pytestmark = pytest.mark.slow
MAX_AGE_S = 3.0


def moved(acks: list[dict]) -> list[dict]:
    return [a for a in acks if a["ok"] and not a["duplicate"]]


@contextmanager
def broker_of(kind: str, tmp_path: Path, mosquitto) -> Iterator[tuple[int, str]]:
    """(port, mqtt.protocol): mosquitto pinned to 3.1.1, or a RabbitMQ node left on auto as a user leaves it
    (RabbitMQ 3.10 drops an MQTT 5 CONNECT; the daemon and the actuator fall back)."""
    if kind == "mosquitto":
        yield mosquitto.port, "3.1.1"
        return
    missing = rabbitmq_missing()
    if missing:
        pytest.skip(missing)
    with RabbitNode() as node:
        yield node.mqtt_port, "auto"


@pytest.mark.parametrize("kind, skew", [("mosquitto", 30.0), ("mosquitto", -30.0), ("rabbitmq", -30.0)])
def test_over_mqtt_311_the_actuator_judges_ages_by_the_daemons_clock_it_learnt(
    tmp_path: Path, bundle_dir: Path, broker, clip_factory, kind: str, skew: float
):
    with broker_of(kind, tmp_path, broker) as (port, protocol):
        judged_by_the_learnt_offset(tmp_path, bundle_dir, clip_factory, port, protocol, skew)


def judged_by_the_learnt_offset(tmp_path, bundle_dir, clip_factory, port: int, protocol: str, skew: float) -> None:
    clip, _ = clip_factory(items=4)
    uri = f"file://{clip}?loop=1&realtime=1"
    daemon_config = write_config(
        tmp_path / "daemon.yaml", bundle_dir, uri, port, mqtt__protocol=protocol, mqtt__metrics_interval_s=1
    )
    config = actuator_config(tmp_path, port, "pins", max_age_s=MAX_AGE_S)
    data = yaml.safe_load(config.read_text())
    data["mqtt"].update(protocol=protocol, metrics_interval_s=1)
    config.write_text(yaml.safe_dump(data))
    clock_off = {"PYTHONPATH": f"{fakes_path(tmp_path / 'fakes')}:{ROOT}", "SMARTBIN_FAKE_CLOCK_OFFSET_S": str(skew)}
    sub = Subscriber(port, "smartbin/test-bin/#")
    acks = lambda: [m.json() for m in sub.on("actuator/ack")]  # noqa: E731
    log = tmp_path / "actuator.log"
    actuator = start_actuator(config, log, clock_off)
    daemon = start_daemon(daemon_config)
    try:
        assert poll(lambda: len(moved(acks())) >= 3, 90), (acks(), log.read_text()[-3000:])
        fresh = acks()
        assert all(a["age_from"] == "learnt_offset" for a in fresh), fresh
        # too young by at most the fastest metrics message's delay (a quick move: a little below 0); clocks: ±30
        assert all(-0.5 <= a["age_s"] <= MAX_AGE_S for a in moved(fresh)), [a["age_s"] for a in fresh]

        # the actuator is down while items fall in; the broker keeps them (its persistent session)
        actuator.terminate()
        assert actuator.wait(20) == 0
        down = time.monotonic()
        time.sleep(MAX_AGE_S + 4)
        # stale whatever happens next: made while it was down, more than max_age_s before it is back
        old = time.monotonic() - MAX_AGE_S - 0.5
        backlog = {m.json()["event_id"] for m in sub.on("test-bin/decision") if down < m.at < old}
        assert backlog, "no decision while the actuator was down"
        actuator = start_actuator(config, log, clock_off)
        judged = lambda: {a["event_id"]: a for a in acks() if a["event_id"] in backlog}  # noqa: E731
        assert poll(lambda: len(judged()) == len(backlog), 60), (judged(), log.read_text()[-3000:])
        assert all(a["stale"] and not a["ok"] and a["age_from"] == "learnt_offset" for a in judged().values()), judged()
        assert all(a["age_s"] > MAX_AGE_S for a in judged().values()), judged()
        since = len(moved(acks()))
        assert poll(lambda: len(moved(acks())) > since, 60), "no move after the restart"  # fresh ones move again
    finally:
        actuator.terminate()
        actuator.wait(20)
        daemon.terminate()
        code, err = finish(daemon)
        sub.close()
    assert code == 0, err[-2000:]
    assert "Traceback" not in log.read_text()
