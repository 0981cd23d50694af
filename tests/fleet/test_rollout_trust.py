"""Rollouts that cannot put a wrong model on the fleet, run as a user runs `smartbin fleet rollout` against real
daemons on a real broker.

The wrong model is the one a retraining on mislabelled answers gives: two classes of different bins named the
wrong way round (their labels swapped in the manifest). It is exactly as sure as the serving model and passes
every check a bin makes (its files, its acceptance set's top-1), so confidence alone lets it through; the
canaries' shadow and the hold-out gate must not. Then each way a rollout can be interrupted, a second
workstation, and a rollout that died.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from tests.support import poll
from tests.support.fleet import (
    bundle_copy,
    rollout,
    running_fleet,
    serving,
    shadows_sent,
    updates_sent,
    wait_switched,
)

pytestmark = pytest.mark.slow
BINS = ("bin-a", "bin-b", "bin-c")
# bin-a switched and watched for longer than any test waits: the rollout ends only when it is interrupted
CANARY_WATCHED = ("--canaries", "bin-a", "--watch", "600", "--shadow-items", "0")


def swapped(bundle: Path, dest: Path) -> Path:
    """The bundle with its first two classes (other and kitchen) named the wrong way round: as sure, and wrong."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    first, second = manifest["labels"][0], manifest["labels"][1]
    assert first["bin"] != second["bin"]
    for key in ("name", "bin"):
        first[key], second[key] = second[key], first[key]
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    return bundle


@pytest.fixture()
def fleet(tmp_path: Path, bundle_dir: Path, broker, clip_factory):
    """Three daemons on v1, all online with their model retained."""
    clip, _ = clip_factory(items=4, seed=11)
    v1 = bundle_copy(bundle_dir, tmp_path / "v1", "fleet-v1", "2026-01-01T00:00:00+00:00")
    with running_fleet(tmp_path / "bins", v1, clip, broker.port, BINS) as fleet:
        fleet.v1 = v1
        yield fleet


def release(bundle_dir: Path, tmp_path: Path, name: str, month: int) -> Path:
    return bundle_copy(bundle_dir, tmp_path / name, f"fleet-{name}", f"2026-{month:02d}-01T00:00:00+00:00")


def test_a_sure_but_wrong_model_stops_in_its_canarys_shadow_and_at_the_hold_out_gate(
    tmp_path, fleet, broker, bundle_dir, dataset_dir
):
    sub = fleet.sub
    before = serving(sub)
    wrong = swapped(release(bundle_dir, tmp_path, "wrong", 6), tmp_path)

    # the hold-out gate refuses it before anything is sent
    code, report, output = rollout(
        broker, tmp_path, wrong, "--holdout", str(dataset_dir), "--baseline", str(fleet.v1), "--stages", "1,100%"
    )
    assert code != 0 and "hold-out gate" in output and "points fewer" in output, output
    assert not shadows_sent(sub, "wrong") and not updates_sent(sub, "wrong")

    # without the gate, its canary runs it in the shadow: it would send items to another bin, so it stops there
    code, report, output = rollout(broker, tmp_path, wrong, "--canaries", "bin-b", "--stages", "1,100%")
    assert code == 1, output
    stage = report["stages"][0]
    assert stage["devices"] == ["bin-b"] and "in the shadow" in stage["reason"], report
    shadow = stage["shadow"]
    assert shadow["items"] >= 5 and shadow["pairs"], shadow
    assert set(shadow["pairs"]) <= {"other>kitchen", "kitchen>other"}, shadow  # only the swapped classes move
    assert shadows_sent(sub, "wrong") == {"bin-b"} and not updates_sent(sub, "wrong")  # no flap moved by it
    assert serving(sub) == before
    models = lambda: [m.json() for m in sub.on("model") if m.topic.split("/")[1] == "bin-b"]  # noqa: E731
    assert poll(lambda: (models()[-1].get("shadow") or {}).get("stopped"), 30), models()[-1]
    # the example event_ids name decisions bin-b really made (and kept as samples)
    decided = {m.json()["event_id"] for m in sub.on("decision") if m.topic.split("/")[1] == "bin-b"}
    examples = [e for found in shadow["examples"].values() for e in found]
    assert examples and set(examples) <= decided

    # with --force the gate lets the user through, and the shadow still stops it; the record is gone after it
    code, report, output = rollout(
        broker, tmp_path, wrong, "--holdout", str(dataset_dir), "--baseline", str(fleet.v1), "--force"
    )
    assert code == 1 and "rolled out anyway" in output and "in the shadow" in report["reason"], output

    # a good model (the same classes, named right) passes its canary's shadow and reaches every bin
    good = release(bundle_dir, tmp_path, "good", 7)
    code, report, output = rollout(broker, tmp_path, good, "--holdout", str(dataset_dir), "--baseline", str(fleet.v1))
    assert code == 0, output
    first = report["stages"][0]
    assert first["shadow"]["items"] >= 5 and first["shadow"]["pairs"] == {}, first
    assert poll(lambda: all(f.startswith("fleet-good") for f in serving(sub).values()), 30), serving(sub)


@pytest.mark.parametrize("how", ["SIGINT ignored at start", "SIGTERM", "SIGHUP"])
def test_every_interruption_puts_the_canary_back(tmp_path, fleet, broker, bundle_dir, how):
    sub = fleet.sub
    before = serving(sub)
    held: list = []
    v2 = release(bundle_dir, tmp_path, "v2", 6)

    def interrupt() -> None:
        wait_switched(sub, "bin-a", "fleet-v2")
        held[0].send_signal(signal.SIGINT if how.startswith("SIGINT") else getattr(signal, how))

    code, report, output = rollout(
        broker,
        tmp_path,
        v2,
        *CANARY_WATCHED,
        meanwhile=interrupt,
        started=held,
        sigint_ignored=how.startswith("SIGINT"),
    )
    signal_name = "SIGINT" if how.startswith("SIGINT") else how
    assert code == 1 and report["reason"] == f"interrupted by {signal_name}", output
    assert report["rolled_back"] == {"bin-a": f"back on {before['bin-a']}"}, output
    assert set(updates_sent(sub, "v2")) == {"bin-a"}
    assert poll(lambda: serving(sub) == before, 30), serving(sub)


@pytest.mark.parametrize("then", ["undo", "resume"])
def test_one_rollout_at_a_time_and_a_dead_one_is_found_then_undone_or_finished(
    tmp_path, fleet, broker, bundle_dir, then
):
    sub = fleet.sub
    before = serving(sub)
    held: list = []
    v2, v3 = release(bundle_dir, tmp_path, "v2", 6), release(bundle_dir, tmp_path, "v3", 7)
    outputs = {}

    def second_workstation_then_kill() -> None:
        wait_switched(sub, "bin-a", "fleet-v2")
        # another rollout meanwhile (any workstation: the lock is on the broker) is refused, naming the holder
        code, _, output = rollout(broker, tmp_path, v3, "--canaries", "bin-c")
        outputs["second"] = (code, output)
        held[0].kill()  # power cut on the workstation: no chance to put anything back

    code, report, output = rollout(
        broker,
        tmp_path,
        v2,
        *CANARY_WATCHED,
        meanwhile=second_workstation_then_kill,
        started=held,
    )
    code2, output2 = outputs["second"]
    assert code2 != 0 and "another rollout holds the fleet" in output2, output2
    assert not updates_sent(sub, "v3") and not shadows_sent(sub, "v3")
    assert serving(sub)["bin-a"].startswith("fleet-v2")  # left there by the dead rollout

    # the next rollout finds the dead one's record and says how to go on; nothing is sent
    code, _, output = rollout(broker, tmp_path, v3, "--canaries", "bin-c")
    assert code != 0 and "unfinished rollout" in output and "--undo" in output, output
    assert not updates_sent(sub, "v3")

    if then == "undo":
        code, _, output = rollout(broker, tmp_path, None, "--undo")
        assert code == 0, output
        assert poll(lambda: serving(sub) == before, 30), serving(sub)
    else:  # finished: bin-a keeps what the dead rollout gave it (not sent again), the others follow in stages
        canary_sent = updates_sent(sub, "v2")["bin-a"]
        code, _, output = rollout(broker, tmp_path, v2, "--resume", "--canaries", "bin-a", "--shadow-items", "0")
        assert code == 0, output
        assert set(updates_sent(sub, "v2")) == set(BINS) and updates_sent(sub, "v2")["bin-a"] == canary_sent
        assert poll(lambda: all(serving(sub)[b].startswith("fleet-v2") for b in BINS), 30), serving(sub)
    # the record is cleared: a new rollout starts
    code, report, output = rollout(broker, tmp_path, v3, "--canaries", "bin-c", "--shadow-items", "0")
    assert code == 0, output


def test_a_rollout_that_a_bin_could_not_roll_back_does_not_start(tmp_path, fleet, broker, bundle_dir):
    """bin-b is told to load only signed bundles (a reload adds its key) while it serves an unsigned one: if the
    release failed there, it would refuse to go back. The rollout says so before it sends anything."""
    import yaml

    from edge.formats.signing import generate_key

    public = generate_key(tmp_path / "fleet.pem")
    config = fleet.config("bin-b")
    data = yaml.safe_load(config.read_text())
    data["updates"]["public_key"] = public
    config.write_text(yaml.safe_dump(data))
    fleet.processes["bin-b"].send_signal(signal.SIGHUP)
    found = fleet.sub.wait_for("bin-b/model", where=lambda m: m.json()["verifies"])
    assert found and found[-1].json()["signed"] is False
    code, _, output = rollout(broker, tmp_path, release(bundle_dir, tmp_path, "v2", 6), "--shadow-items", "0")
    assert code != 0 and "bin-b loads only signed bundles" in output and "would refuse to go back" in output, output
    assert not updates_sent(fleet.sub, "v2") and not shadows_sent(fleet.sub, "v2")


def test_the_gate_measures_against_the_model_a_bin_serves_fetched_from_its_page(
    tmp_path, broker, bundle_dir, dataset_dir, monkeypatch
):
    """`--baseline http://bin:8080`: the hold-out gate fetches the model the bin serves from its status page
    (only the variant it runs, behind the page's password) instead of needing a copy on the workstation."""
    import signal as signals

    from tests.support.mqtt_client import Subscriber
    from tests.support.statuspage import start, wait_http

    monkeypatch.setenv("SMARTBIN_WEB_PASSWORD", "pw-for-test")
    process, port = start(tmp_path, bundle_dir, broker.port, {"password_env": "SMARTBIN_WEB_PASSWORD"})
    sub = Subscriber(broker.port, "smartbin/#")
    page = f"http://127.0.0.1:{port}"
    wrong = swapped(release(bundle_dir, tmp_path, "wrong", 6), tmp_path)
    gate = ("--holdout", str(dataset_dir), "--baseline", page, "--stages", "1,100%")
    try:
        wait_http(port)
        assert sub.wait_for("test-bin/status"), "the bin never said it was online"
        code, _, output = rollout(broker, tmp_path, wrong, *gate)
        assert code != 0 and "HTTP 401" in output and "--page-password-env" in output, output
        code, _, output = rollout(broker, tmp_path, wrong, *gate, "--page-password-env", "SMARTBIN_WEB_PASSWORD")
        assert code != 0 and "hold-out gate" in output and "points fewer" in output, output
        assert not updates_sent(sub, "wrong") and not shadows_sent(sub, "wrong")
    finally:
        sub.close()
        process.send_signal(signals.SIGTERM)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0 and "Traceback" not in err, err[-2000:]
