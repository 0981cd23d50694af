"""`make samples-link`: are samples sent over MQTT (``samples.over_mqtt``) in the way of decisions on a bin's
narrow uplink? The real daemon behind a paced relay (a cellular router's uplink), keeping every decision's
frame, run twice in one go: samples over MQTT off, then on. Prints, side by side, the decisions heard by a
workstation subscriber and their latency (decision made to heard, one host's clock), the samples the broker
acknowledged and their bytes, and the ratio of the p99 latencies. Exits 1 when a decision was lost.

    python tests/scenarios/samples_link.py --bundle BUNDLE [--seconds 60] [--kbit 1000]
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from edge.storage.counters import Counters  # noqa: E402
from edge.tools.localbroker import LocalBroker  # noqa: E402
from tests.scenarios.fuzz import tail  # noqa: E402
from tests.support import ROOT, write_config  # noqa: E402
from tests.support.servers.slow_link import NarrowLink  # noqa: E402

CAMERA = "synthetic://?items=0&fps=15&width=640&height=480&empty=12&present=8"  # an item every 1.3 s


def heard(port: int, topics: list[str]) -> tuple[mqtt.Client, list[tuple[float, str, bytes]]]:
    """A workstation's subscriber on the broker itself: (wall time heard, topic, payload) of each message."""
    got: list[tuple[float, str, bytes]] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.on_connect = lambda c, u, f, rc, p: [c.subscribe(t, qos=1) for t in topics]
    client.on_message = lambda c, u, m: got.append((time.time(), m.topic, m.payload))
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client, got


def one_run(work: Path, bundle: Path, broker_port: int, kbit: float, seconds: float, over_mqtt: bool) -> dict:
    """The daemon for ``seconds`` through a fresh link at ``kbit``: its decisions' latencies and the samples."""
    work.mkdir()
    link = NarrowLink(broker_port, kbit)
    config = write_config(
        work / "bin.yaml", bundle, CAMERA, link.port, device_id=work.name,
        samples__confident_fraction=1.0, samples__over_mqtt=over_mqtt, mqtt__metrics_interval_s=5,
    )  # fmt: skip
    client, got = heard(broker_port, [f"smartbin/{work.name}/decision", f"smartbin/{work.name}/sample"])
    log = work / "daemon.log"
    with log.open("w") as err:
        process = subprocess.Popen([sys.executable, "-m", "edge", "--config", str(config)], cwd=ROOT, stderr=err)
    try:
        time.sleep(seconds)
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(60)
        time.sleep(2)  # the last acknowledged ones on their way to the subscriber
        client.disconnect()
        client.loop_stop()
        link.close()
    if code != 0:
        raise SystemExit(f"the daemon exited with {code}:\n{tail(log)}")
    decisions: dict[str, float] = {}
    samples: dict[str, int] = {}  # sample id -> bytes on the wire, over its parts
    for _, topic, payload in got:
        if topic.endswith("/sample"):
            part = json.loads(payload)
            samples[part["sample_id"]] = samples.get(part["sample_id"], 0) + len(payload)
    for at, topic, payload in got:
        if topic.endswith("/decision"):
            decision = json.loads(payload)
            decisions.setdefault(decision["event_id"], at - decision["ts"])
    made = Counters(work / "counters.sqlite").summary()["total"]["items"]
    return {"made": made, "latency": np.array(list(decisions.values())), "samples": samples}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--seconds", type=float, default=60, help="each run's length")
    parser.add_argument("--kbit", type=float, default=1000, help="the uplink's speed, each way")
    args = parser.parse_args()
    bundle = Path(args.bundle).resolve()
    with (
        tempfile.TemporaryDirectory(prefix="smartbin-samples-link-") as tmp,
        LocalBroker(workdir=Path(tmp) / "broker") as broker,
    ):
        runs = {
            mode: one_run(Path(tmp) / f"bin-{mode}", bundle, broker.port, args.kbit, args.seconds, mode == "on")
            for mode in ("off", "on")
        }
    print(f"a {args.kbit:.0f} kbit/s link, {args.seconds:.0f} s each, every decision's frame kept")
    print(f"{'samples over MQTT':<28}{'off':>12}{'on':>12}")
    rows = {
        "decisions made / heard": lambda r: f"{r['made']}/{len(r['latency'])}",
        "latency p50": lambda r: f"{np.percentile(r['latency'], 50) * 1000:.0f} ms",
        "latency p90": lambda r: f"{np.percentile(r['latency'], 90) * 1000:.0f} ms",
        "latency p99": lambda r: f"{np.percentile(r['latency'], 99) * 1000:.0f} ms",
        "latency max": lambda r: f"{r['latency'].max() * 1000:.0f} ms",
        "samples heard": lambda r: str(len(r["samples"])),
        "a sample on the wire": lambda r: (
            f"{np.mean(list(r['samples'].values())) / 1000:.0f} kB" if r["samples"] else "-"
        ),
    }
    for name, cell in rows.items():
        print(f"{name:<28}{cell(runs['off']):>12}{cell(runs['on']):>12}")
    p99 = {mode: np.percentile(run["latency"], 99) for mode, run in runs.items()}
    print(f"p99 with samples / without: {p99['on'] / p99['off']:.2f}x")
    lost = [mode for mode, run in runs.items() if len(run["latency"]) < run["made"]]
    if lost:
        print(f"decisions lost with samples over MQTT {', '.join(lost)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
