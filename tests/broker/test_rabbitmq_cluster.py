"""A city's fleet on a clustered broker: three RabbitMQ nodes (Debian's rabbitmq-server and its MQTT plugin,
MQTT 3.1.1), the real daemon and actuator on one node with the others in ``mqtt.brokers``, the watchers on
another. The bins' node is killed mid-run, as a power cut: the daemon and the actuator go on through the
other nodes, no decision or sample is lost, no flap moves for a stale one, and the fleet view still lists the
bin.

Measured on this cluster (docs/deployment.md, "A clustered broker"): a retained message reaches only a
subscription without wildcards, and only from the node it was published on; while a client's node is down, the
other nodes refuse its client id (its subscription queue lives on the dead node), hence a client id per address
of ``mqtt.brokers``.

Also here, so that one worker runs them one after the other (each starts three Erlang VMs; side by side on two
cores they starved the rest of the suite): a rollout across the cluster from the command line and from the
review station, and `make cluster-scale`, small."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from edge.cli import main
from edge.storage.outbox import Outbox
from edge.storage.sample_queue import SampleQueue
from tests.support import (
    ROOT,
    actuator_config,
    every_decision_arrived,
    poll,
    start_actuator,
    start_daemon,
    stop_daemon_and_actuator,
    write_config,
)
from tests.support.fleet import Fleet, bundle_copy, rollout, serving
from tests.support.mqtt_client import Subscriber
from tests.support.review import request, reviewing
from tests.support.servers.rabbitmq import RabbitCluster, rabbitmq_missing

pytestmark = pytest.mark.slow
MAX_AGE_S = 3.0


def moved(acks: list[dict]) -> list[dict]:
    return [a for a in acks if a["ok"] and not a["duplicate"]]


def test_a_node_killed_mid_run_loses_no_decision_and_moves_no_flap_late(
    tmp_path: Path, bundle_dir: Path, clip_factory, capsys
):
    missing = rabbitmq_missing()
    if missing:
        pytest.skip(missing)
    with RabbitCluster(3) as cluster:
        home, other, watch = cluster.nodes
        others = [f"127.0.0.1:{node.mqtt_port}" for node in (other, watch)]
        clip, _ = clip_factory(items=4)
        daemon_config = write_config(
            tmp_path / "daemon.yaml", bundle_dir, f"file://{clip}?loop=1&realtime=1", home.mqtt_port,
            mqtt__brokers=others, mqtt__metrics_interval_s=1, samples__over_mqtt=True, decision__min_confidence=1.0,
        )  # fmt: skip
        # the workstation's collecting session, on the node it reaches: the samples flow while the node dies
        inbox = tmp_path / "inbox"
        fetch = ["samples", "fetch", "--broker", f"127.0.0.1:{watch.mqtt_port}", "--out", str(inbox), "--idle", "2"]
        assert main([*fetch, "--client-id", "ws-1"]) == 0
        config = actuator_config(tmp_path, home.mqtt_port, "pins", max_age_s=MAX_AGE_S)
        data = yaml.safe_load(config.read_text())
        data["mqtt"].update(brokers=others, metrics_interval_s=1)
        config.write_text(yaml.safe_dump(data))
        sub = Subscriber(watch.mqtt_port, "smartbin/test-bin/#", client_id="watcher", persistent=True)
        acks = lambda: [m.json() for m in sub.on("actuator/ack")]  # noqa: E731
        log = tmp_path / "actuator.log"
        actuator = start_actuator(config, log)
        daemon = start_daemon(daemon_config)
        try:
            assert poll(lambda: len(moved(acks())) >= 2, 120), (acks(), log.read_text()[-3000:])
            cluster.kill(home)
            killed = time.monotonic()
            after = lambda: [m for m in sub.on("actuator/ack") if m.at > killed and m.json()["ok"]]  # noqa: E731
            assert poll(lambda: len(after()) >= 3, 120), ("no move after the node died", log.read_text()[-3000:])

            # the workstation, on the node it reaches: the bin is listed (it answers the view's roll call)
            capsys.readouterr()
            assert main(["fleet", "list", "--broker", f"127.0.0.1:{watch.mqtt_port}"]) == 0
            assert "test-bin: online" in capsys.readouterr().out
        finally:
            code, err = stop_daemon_and_actuator(daemon, actuator)
        assert code == 0, err[-2000:]
        # every decision the bin made reached the watcher, through the outbox where the node died under it
        received, made = every_decision_arrived(sub, tmp_path)
        assert received == made
        # and every sample the bin kept is in the review folder, or still queued on the bin for its next start
        assert main([*fetch, "--client-id", "ws-1"]) == 0
        queue = SampleQueue(Outbox(tmp_path / "outbox.sqlite"))
        unsent = {name for _, name in queue.pending(0, 10_000)}
        kept = {path.stem for path in (tmp_path / "samples").glob("*.json")}
        assert kept and {path.stem for path in inbox.glob("*.json")} | unsent == kept
        sub.close()
    fresh = moved(acks())
    assert fresh and all(a["age_s"] <= MAX_AGE_S for a in fresh), [a["age_s"] for a in fresh]
    assert "Traceback" not in log.read_text()


def test_the_fleet_commands_and_the_review_station_roll_out_to_bins_on_other_nodes(
    tmp_path: Path, bundle_dir: Path, dataset_dir: Path, clip_factory
):
    """The bins on two nodes; `smartbin fleet rollout` on the third, then the review station there: its page
    lists both bins and rolls out the bundle its last training made (a job a station restarted after it ended
    keeps, as the page would have left it)."""
    missing = rabbitmq_missing()
    if missing:
        pytest.skip(missing)
    clip, _ = clip_factory(items=4)
    v1 = bundle_copy(bundle_dir, tmp_path / "v1", "cluster-v1", "2026-01-01T00:00:00+00:00")
    v2 = bundle_copy(bundle_dir, tmp_path / "v2", "cluster-v2", "2026-06-01T00:00:00+00:00")
    v3 = bundle_copy(bundle_dir, tmp_path / "v3", "cluster-v3", "2026-09-01T00:00:00+00:00")
    job = tmp_path / "training" / "job-20260901-000000"
    job.mkdir(parents=True)
    (job / "state.json").write_text(json.dumps({"id": job.name, "state": "done", "step": "compare", "bundle": str(v3)}))
    with RabbitCluster(3) as cluster:
        first, second, workstation = cluster.nodes
        fleets = [
            Fleet(tmp_path / "a", v1, clip, first.mqtt_port, ("bin-a",)),
            Fleet(tmp_path / "b", v1, clip, second.mqtt_port, ("bin-b",)),
        ]
        try:
            watch = fleets[0].sub
            assert poll(lambda: len(serving(watch)) == 2, 90), serving(watch)  # both, heard across the nodes
            code, report, output = rollout(SimpleNamespace(port=workstation.mqtt_port), tmp_path, v2, "--stages", "1")
            assert code == 0, output
            assert report["completed"] and [s["devices"] for s in report["stages"]] == [["bin-a"], ["bin-b"]], report
            assert poll(lambda: {f[:10] for f in serving(watch).values()} == {"cluster-v2"}, 60), serving(watch)

            (samples := tmp_path / "samples").mkdir()
            options = ["--train-data", str(dataset_dir), "--holdout", str(dataset_dir), "--baseline", str(v2)]
            options += ["--work", str(tmp_path / "training"), "--serve", "127.0.0.1:0"]
            with reviewing(samples, *options, "--broker", f"127.0.0.1:{workstation.mqtt_port}") as url:
                page = lambda: request(url + "api/fleet")[1]  # noqa: E731
                listed = lambda: {d["device"]: d["model"] for d in page()["devices"]}  # noqa: E731
                assert poll(lambda: set(listed()) == {"bin-a", "bin-b"}, 30), page()
                rule = {"stages": "1", "watch": 3, "min_frames": 20, "shadow_items": 5}
                assert request(url + "api/rollout", rule) == (200, {"started": job.name})
                done = lambda: (page()["rollout"] or {}).get("state") not in (None, "running")  # noqa: E731
                assert poll(done, 300), page()["rollout"]
                assert page()["rollout"]["state"] == "completed", page()["rollout"]
                assert poll(lambda: {f[:10] for f in listed().values()} == {"cluster-v3"}, 60), listed()
            assert {f[:10] for f in serving(watch).values()} == {"cluster-v3"}
        finally:
            for fleet in fleets:
                fleet.stop()


def test_a_small_fleet_loses_no_decision_when_a_node_dies():
    missing = rabbitmq_missing()
    if missing:
        pytest.skip(missing)
    command = ["make", "--no-print-directory", "cluster-scale", f"BIN={Path(sys.executable).parent}"]
    command += ["SCALE_BINS=12", "SCALE_SECONDS=24"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    sent = int(re.search(r"decisions sent +(\d+)", done.stdout).group(1))
    assert sent > 0 and re.search(r"\nlost +0\n", done.stdout), done.stdout
    assert re.search(r"reconnect storm settled +\d+\.\d s after the kill", done.stdout), done.stdout
