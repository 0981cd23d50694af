"""`make cluster-scale`: a city's fleet on a three-node RabbitMQ cluster with a node killed mid-run; prints the
decisions lost (goal 0), the decision latency and the time the reconnect storm takes to settle (a benchmark:
nothing here is asserted against a time).

    python tests/scenarios/cluster_scale.py [--bins 1000] [--seconds 60] [--rate 0.1]

Each simulated bin is the daemon's own publisher and outbox with scripted decisions (edge/tools/fleetsim.py),
speaking MQTT 3.1.1 as a fleet on RabbitMQ 3.x is configured;
bin i connects to node i % 3 with the other two in ``mqtt.brokers``, in worker processes of at most 250 bins
(paho waits on select(): ~300 clients a process). The collector, on the third node, de-duplicates on event_id
as a real subscriber does. The first node is killed (SIGKILL) at a third of the run: its bins fail over, and
what they decided meanwhile goes from their outboxes. Latency is from a decision's ``ts`` to its arrival (one
host, one clock), so the killed node's bins carry the outage in the high percentiles. Exits 1 when a decision
is lost.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from edge.config import MqttConfig  # noqa: E402
from edge.stats import percentiles  # noqa: E402
from edge.tools.fleetsim import Collector, SimulatedBin, drive  # noqa: E402
from tests.support.servers.rabbitmq import RabbitCluster, rabbitmq_missing  # noqa: E402

PER_WORKER = 250


def node_config(ports: list[int], index: int) -> MqttConfig:
    """Bin ``index``'s broker settings: its node first, the others after."""
    mine = index % len(ports)
    others = [f"127.0.0.1:{port}" for i, port in enumerate(ports) if i != mine]
    # pinned to 3.1.1, as a fleet on RabbitMQ 3.x is configured (the fallback from auto: test_rabbitmq_cluster.py)
    return MqttConfig(host="127.0.0.1", port=ports[mine], brokers=others, protocol="3.1.1", metrics_interval_s=3600)


def worker(first: int, count: int, ports: list[int], seconds: float, rate: float) -> dict:
    """``count`` bins from ``first`` on; what they sent, and (wall clock) when all of them were connected again
    after the last time one was not."""
    fleet = [SimulatedBin(i, node_config(ports, i)) for i in range(first, first + count)]
    for simulated in fleet:
        simulated.publisher.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not all(b.publisher.connected.is_set() for b in fleet):
        for simulated in fleet:
            simulated.publisher.maintain()  # RabbitMQ drops an MQTT 5 CONNECT: the fallback is made here
        time.sleep(0.2)
    state = {"down": False, "settled_at": None, "first_down_at": None}

    def tick() -> None:
        down = not all(b.publisher.connected.is_set() for b in fleet)
        if down and state["first_down_at"] is None:
            state["first_down_at"] = time.time()
        if state["down"] and not down:
            state["settled_at"] = time.time()
        state["down"] = down

    print(json.dumps({"ready": True}), flush=True)
    drive(fleet, seconds, rate, tick)
    left = sum(simulated.publisher.stop(timeout=15) for simulated in fleet)
    return {"sent": sum(b.sent for b in fleet), "left": left, **state}


def run(bins: int, seconds: float, rate: float) -> int:
    with RabbitCluster(3) as cluster:
        ports = [node.mqtt_port for node in cluster.nodes]
        collector = Collector(MqttConfig(host="127.0.0.1", port=ports[2]))
        workers = []
        for first in range(0, bins, PER_WORKER):
            count = min(PER_WORKER, bins - first)
            args = ["--worker", str(first), str(count), "--ports", ",".join(map(str, ports))]
            args += ["--seconds", str(seconds), "--rate", str(rate)]
            workers.append(subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True))
        started = time.time()
        for process in workers:  # every bin connected, then the clock of the run starts
            process.stdout.readline()
        connected_s = time.time() - started
        time.sleep(seconds / 3)
        killed_at = time.time()
        cluster.kill(cluster.nodes[0])
        reports = [json.loads(process.communicate()[0].strip().splitlines()[-1]) for process in workers]
        sent = sum(r["sent"] for r in reports)
        collector.wait_for(sent, 60)
        collector.close()
    settled = [r["settled_at"] for r in reports if r["settled_at"]]
    lost = sent - len(collector.received)
    latency = percentiles(collector.latencies, digits=1)
    print(f"{bins} bins on a 3-node RabbitMQ cluster, {rate} decisions/s each, {seconds:g} s, node 1 killed")
    print(f"all connected after       {connected_s:.1f} s")
    print(f"decisions sent            {sent}")
    print(f"received (unique)         {len(collector.received)}  (duplicates removed {collector.duplicates})")
    print(f"lost                      {lost}")
    print(f"left in outboxes          {sum(r['left'] for r in reports)}")
    print(f"latency ms p50/p90/p99    {latency['p50']} / {latency['p90']} / {latency['p99']}")
    print(f"reconnect storm settled   {max(settled) - killed_at:.1f} s after the kill" if settled else "no bin lost it")
    return 1 if lost else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bins", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=0.1, help="decisions a second per bin")
    parser.add_argument("--worker", nargs=2, type=int, metavar=("FIRST", "COUNT"), help=argparse.SUPPRESS)
    parser.add_argument("--ports", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        ports = [int(p) for p in args.ports.split(",")]
        print(json.dumps(worker(*args.worker, ports, args.seconds, args.rate)), flush=True)
        return 0
    missing = rabbitmq_missing()
    if missing:
        print(f"cluster-scale {missing}", file=sys.stderr)
        return 2
    return run(args.bins, args.seconds, args.rate)


if __name__ == "__main__":
    sys.exit(main())
