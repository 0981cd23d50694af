"""A rollout across a three-node RabbitMQ cluster (MQTT 3.1.1, retained messages only for subscriptions without
wildcards and only on the node that took them): the bins on two nodes, the workstation on the third. The
rollout hears every bin through its roll call, sends the update through the cluster, watches the canary and
finishes, each bin then serving the new model."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.support import poll
from tests.support.fleet import Fleet, bundle_copy, rollout, serving
from tests.support.servers.rabbitmq import RabbitCluster, rabbitmq_missing

pytestmark = pytest.mark.slow


def test_a_rollout_reaches_bins_on_other_nodes(tmp_path: Path, bundle_dir: Path, clip_factory):
    missing = rabbitmq_missing()
    if missing:
        pytest.skip(missing)
    clip, _ = clip_factory(items=4)
    v1 = bundle_copy(bundle_dir, tmp_path / "v1", "cluster-v1", "2026-01-01T00:00:00+00:00")
    v2 = bundle_copy(bundle_dir, tmp_path / "v2", "cluster-v2", "2026-06-01T00:00:00+00:00")
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
        finally:
            for fleet in fleets:
                fleet.stop()
