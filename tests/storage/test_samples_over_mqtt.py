"""A bin with no listening port (behind a NAT, a cellular router) sends its kept samples over its own MQTT
connection, and `smartbin samples fetch --broker` collects them: through a broker outage, a collector that is
away, a restart of the bin and hostile messages on the topic, nothing is lost and nothing lands outside the
review folder."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from convert.data.answers_back import SENT_FILE
from convert.review.store import ReviewStore
from edge.cli import main
from edge.storage.outbox import Outbox
from edge.storage.sample_queue import SampleQueue
from edge.wire.payloads import Sample
from tests.support import ROOT, empty_bin_source, poll, write_config
from tests.support.mqtt_client import Subscriber


def kept(folder: Path) -> set[str]:
    """The samples whole in ``folder`` (a JSON makes one)."""
    return {path.stem for path in folder.glob("*.json")}


def sample_figure(sub: Subscriber, name: str, unknown: int) -> int:
    """One of the sample figures of the bin's last metrics (``unknown`` before the first)."""
    metrics = sub.on("metrics")
    return (metrics[-1].json().get("samples") or {}).get(name, unknown) if metrics else unknown


def sent(sub: Subscriber) -> int:
    """Samples the broker has acknowledged, this run of the bin."""
    return sample_figure(sub, "sent", 0)


def unsent(sub: Subscriber) -> int:
    return sample_figure(sub, "unsent", -1)


def run_bin(config: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "edge", "--config", str(config)], cwd=ROOT, stderr=subprocess.PIPE, text=True
    )


def stop_bin(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err[-2000:]


@pytest.mark.slow
def test_samples_reach_the_review_folder_through_the_broker_across_an_outage_and_a_restart(
    tmp_path: Path, bundle_dir: Path, clip_factory, capsys
):
    from edge.tools.localbroker import LocalBroker

    broker = LocalBroker(workdir=tmp_path / "broker").start()
    inbox = tmp_path / "inbox"
    fetch = ["samples", "fetch", "--broker", f"127.0.0.1:{broker.port}", "--out", str(inbox), "--idle", "1"]
    fetch += ["--client-id", "workstation-1"]
    assert main(fetch) == 0  # the first fetch makes the collecting session: the broker keeps samples for it
    assert kept(inbox) == set()
    clip, _ = clip_factory(items=4)
    uri = f"file://{clip}?loop=1&realtime=1"
    overrides = {"decision__min_confidence": 1.0, "web__enabled": False, "samples__over_mqtt": True}
    config = write_config(tmp_path / "config.yaml", bundle_dir, uri, broker.port, **overrides)
    samples = tmp_path / "samples"
    sub = Subscriber(broker.port)
    process = run_bin(config)
    try:
        assert poll(lambda: sent(sub) >= 2, 60), "no sample went over MQTT"
        broker.stop()  # an outage while the bin runs: it keeps sorting and keeping samples
        at_stop = len(kept(samples))
        assert poll(lambda: len(kept(samples)) >= at_stop + 2, 60), "no sample kept during the outage"
        broker.start()
        during = len(kept(samples))
        assert poll(lambda: sent(sub) >= during, 90), (sent(sub), during)  # the outage's samples too
        broker.stop()  # a second one, and the bin is stopped before it ends
        at_stop = len(kept(samples))
        assert poll(lambda: len(kept(samples)) >= at_stop + 2, 60), "no sample kept during the second outage"
    finally:
        stop_bin(process)
        sub.close()
    broker.start()
    queue = SampleQueue(Outbox(tmp_path / "outbox.sqlite"))
    assert queue.depth() >= 2  # what the bin could not send: kept for its next start
    queue.db.close()
    # the bin's next start (an empty bin in front of the camera: no new samples) sends them
    idle = write_config(tmp_path / "config.yaml", bundle_dir, empty_bin_source(tmp_path / "empty") + "?loop=1",
                        broker.port, **overrides)  # fmt: skip
    sub = Subscriber(broker.port)
    process = run_bin(idle)
    try:
        assert poll(lambda: unsent(sub) == 0, 60), "the queue was not sent after a restart"
        hostile = Subscriber(broker.port, "nothing/#")
        for payload in (
            b"not json",
            json.dumps({"sample_id": "../../escaped", "sample": {"event_id": "e", "ts": 1}, "jpeg": "/9j/4AAQ"}),
            json.dumps({"sample_id": "000000000000001-abc", "sample": {"event_id": "e", "ts": 1}, "jpeg": "aGk="}),
            # in parts, as bins send them: beyond its count, a name that is a path, whole but not a sample
            json.dumps({"sample_id": "000000000000002-abc", "part": 2, "parts": 2, "data": "{"}),
            json.dumps({"sample_id": "../../escaped", "part": 0, "parts": 2, "data": "{"}),
            json.dumps({"sample_id": "000000000000003-abc", "part": 0, "parts": 1, "data": '{"sample_id":"x"}'}),
        ):
            hostile.publish("smartbin/evil/sample", payload)
        hostile.close()
        capsys.readouterr()
        assert main(fetch) == 0
        said = capsys.readouterr().err
        assert said.count("refused: smartbin/evil/sample") == 5 and "and 1 more refused" in said, said
        assert kept(inbox) == kept(samples), "the review folder and the bin differ"
        for name in kept(samples):
            for suffix in (".jpg", ".json"):
                assert (inbox / f"{name}{suffix}").read_bytes() == (samples / f"{name}{suffix}").read_bytes(), name
        assert [p.name for p in tmp_path.rglob("*escaped*")] == []
        assert {p.suffix for p in inbox.iterdir()} == {".jpg", ".json"}

        # an answer given at the review station goes back to its bin with the next fetch, once
        answered = sorted(kept(inbox))[0]
        ReviewStore(inbox).answer([answered], "item", "café cup")
        assert main(fetch) == 0
        on_bin = Sample.model_validate_json((samples / f"{answered}.json").read_bytes())
        assert on_bin.correction is not None and on_bin.correction.label == "café cup"
        assert poll(lambda: corrections(sub) == {"café cup": 1}, 30), corrections(sub)
        assert main(fetch) == 0
        assert answered in json.loads((inbox / SENT_FILE).read_text(encoding="utf-8"))
    finally:
        stop_bin(process)
        sub.close()
    broker.close()


def corrections(sub: Subscriber) -> dict:
    """The corrections per label the bin's last metrics count."""
    metrics = sub.on("metrics")
    return metrics[-1].json()["counts"]["total"]["corrections"] if metrics else {}
