"""`smartbin fleet rollout` against real daemons on a real broker, run as a user runs it.

Three bins (the daemon as a subprocess each, a looping clip as camera) serve v1. A good v2 goes first to one
canary, which is watched against the two others, then to the rest. Then v3, a model that passes every check a
bin makes (its files, its acceptance set: the same top-1) but is far less sure of what it sees, as a retrained
model that lost its calibration is: it reaches its named canary, fails the comparison, and the canary is put
back on v2 while the two others never receive it. Then a good v4 whose canary crashes while watched: the bin
comes back on v2 by itself and the rollout stops there.
"""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import pytest

from tests.support import poll
from tests.support.fleet import bundle_copy, rollout, running_fleet, serving, updates_sent, wait_switched

pytestmark = pytest.mark.slow
BINS = ("bin-a", "bin-b", "bin-c")


@pytest.fixture(scope="module")
def unsure_bundle(tmp_path_factory, run_dir: Path, bundle_dir: Path) -> Path:
    """The run's model with its last layer's logits divided by 6: the same top-1 everywhere, much less sure."""
    from convert.training.model import load_model
    from edge.cli import main

    tmp = tmp_path_factory.mktemp("unsure")
    run = Path(shutil.copytree(run_dir, tmp / "run"))
    model = load_model(run / "model.keras")
    last = model.layers[-1]  # the softmax head
    assert last.get_config()["activation"] == "softmax"
    last.set_weights([w / 6 for w in last.get_weights()])
    model.save(run / "model.keras")
    out = tmp / "bundle"
    convert = ["convert", str(run), "--out", str(out), "--variants", "int8", "--no-probes", "--calib-samples", "50"]
    assert main([*convert, "--allow-accuracy-drop"]) == 0
    return bundle_copy(out, tmp / "v3", "fleet-v3", "2026-09-01T00:00:00+00:00")


@pytest.fixture()
def fleet(tmp_path: Path, bundle_dir: Path, broker, clip_factory):
    """Three daemons on v1, all online with their model retained."""
    clip, _ = clip_factory(items=4, seed=11)
    v1 = bundle_copy(bundle_dir, tmp_path / "v1", "fleet-v1", "2026-01-01T00:00:00+00:00")
    with running_fleet(tmp_path / "bins", v1, clip, broker.port, BINS) as fleet:
        yield fleet


def test_a_good_bundle_reaches_every_bin_in_stages_and_a_bad_one_stops_at_its_canary(
    tmp_path, fleet, broker, bundle_dir, unsure_bundle
):
    sub = fleet.sub
    v2 = bundle_copy(bundle_dir, tmp_path / "v2", "fleet-v2", "2026-06-01T00:00:00+00:00")

    def deliver_the_update_again() -> None:
        # what QoS 1 does when the bin's acknowledgement was lost: the same command (same id) once more
        wait_switched(sub, "bin-a", "fleet-v2")
        command = next(m for m in sub.on("bin-a/command") if m.json().get("action") == "update_model")
        sub.publish(command.topic, command.payload, qos=1)

    code, report, output = rollout(broker, tmp_path, v2, "--stages", "1", meanwhile=deliver_the_update_again)
    assert code == 0, output
    again = sub.wait_for("bin-a/command/result", where=lambda m: m.json().get("repeated"))
    assert again and not again[0].json()["ok"]  # refused as carried out already, and not counted as a failure
    assert report["completed"] and [s["devices"] for s in report["stages"]] == [["bin-a"], ["bin-b", "bin-c"]]
    first = report["stages"][0]
    assert first["passed"] and first["watched_s"] >= 3 and first["new"]["frames"] >= 20 and first["old"]["frames"] >= 20
    v2_folders = poll(lambda: set(serving(sub).values()) if len(set(serving(sub).values())) == 1 else None, 30)
    assert v2_folders and next(iter(v2_folders)).startswith("fleet-v2"), serving(sub)
    # in stages: the others were sent the update only after the canary had switched and been watched
    sent = updates_sent(sub, "v2")
    canary_switched = min(
        m.at
        for m in sub.on("command/result")
        if m.topic.split("/")[1] == "bin-a" and (m.json().get("result") or {}).get("done")
    )
    assert set(sent) == set(BINS) and min(sent["bin-b"], sent["bin-c"]) >= canary_switched + 3

    # its shadow would stop it too (its unsure items go to the default bin); here the watch's rule is the one tried
    code, report, output = rollout(broker, tmp_path, unsure_bundle, "--canaries", "bin-b", "--shadow-items", "0")
    assert code == 1, output
    assert not report["completed"] and len(report["stages"]) == 1 and report["stages"][0]["devices"] == ["bin-b"]
    assert "mean confidence" in report["stages"][0]["reason"], report
    new, old = report["stages"][0]["new"], report["stages"][0]["old"]
    assert old["mean_confidence"] - new["mean_confidence"] > 0.10
    assert report["rolled_back"] == {"bin-b": f"back on {next(iter(v2_folders))}"}
    assert set(updates_sent(sub, "v3")) == {"bin-b"}  # the others never saw it
    assert poll(lambda: serving(sub)["bin-b"] == next(iter(v2_folders)), 30), serving(sub)
    assert set(serving(sub).values()) == v2_folders

    # a good bundle whose canary crashes while it is watched: the bin comes back on v2 by itself (its health
    # window), the rollout stops there, waits for it, and sends it nothing more; the others never see v4
    v4 = bundle_copy(bundle_dir, tmp_path / "v4", "fleet-v4", "2026-10-01T00:00:00+00:00")

    def crash_the_canary() -> None:
        wait_switched(sub, "bin-c", "fleet-v4")
        fleet.kill("bin-c")
        fleet.start("bin-c")  # as systemd would

    code, report, output = rollout(broker, tmp_path, v4, "--canaries", "bin-c", meanwhile=crash_the_canary)
    assert code == 1, output
    reason = report["stages"][0]["reason"]  # which it saw first depends on how fast the bin restarts
    assert "bin-c went offline" in reason or "bin-c left the new model by itself" in reason, report
    assert report["rolled_back"] == {"bin-c": f"back on {next(iter(v2_folders))} by itself"}, output
    assert set(updates_sent(sub, "v4")) == {"bin-c"}
    assert not [m for m in sub.on("command") if m.json().get("action") == "reload_model" and "bin-c" in m.topic]
    assert poll(lambda: set(serving(sub).values()) == v2_folders, 30), serving(sub)

    # stopped by the user (Ctrl-C) while its canary is watched: the canary is put back, nothing else moves
    process_holder = []

    def interrupt_the_watch() -> None:
        wait_switched(sub, "bin-a", "fleet-v5")
        process_holder[0].send_signal(signal.SIGINT)

    v5 = bundle_copy(bundle_dir, tmp_path / "v5", "fleet-v5", "2026-11-01T00:00:00+00:00")
    code, report, output = rollout(
        broker,
        tmp_path,
        v5,
        "--canaries",
        "bin-a",
        "--watch",
        "600",
        meanwhile=interrupt_the_watch,
        started=process_holder,
    )
    assert code == 1 and report["reason"] == "interrupted by SIGINT", output
    assert report["rolled_back"] == {"bin-a": f"back on {next(iter(v2_folders))}"}, output
    assert set(updates_sent(sub, "v5")) == {"bin-a"}
    assert poll(lambda: set(serving(sub).values()) == v2_folders, 30), serving(sub)
