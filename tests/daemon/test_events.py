"""The loop's events (edge/daemon/events.py): the daemon's parts post what the loop must act on, and the
loop acts in one place, before the next frame. A new model that fails inside its health window (a
TensorRT device that resets, faked at ONNX Runtime's provider) is rolled back by the frame that saw it
fail; the vote takes the old model's labels after that frame, never in the middle of it, and the page's
"classify now" goes through the same health window instead of around it."""

from __future__ import annotations

import time
from pathlib import Path

from skimage import data

from edge.config import load_config
from edge.daemon.daemon import Daemon
from edge.models.build import load_classifier
from edge.models.events import Answered, ModelChanged, Switched
from edge.models.update import Prepared, UpdateRequest
from edge.sources import Frame
from edge.web.page import ClassifyRequest
from tests.support import write_config
from tests.support.fakes import install_slow_tensorrt

PORT = 1  # nothing listens there: these daemons are never started, so they never connect


def trial_daemon(tmp_path: Path, serving: Path, update: Path, monkeypatch, resets_after: int) -> Daemon:
    """A daemon serving ``serving`` (TFLite), switched to ``update`` on the fake TensorRT whose device resets
    after ``resets_after`` runs (loading it is one), inside a ten-minute health window; the switch's events handled."""
    install_slow_tensorrt(0, monkeypatch, resets_after=resets_after)
    window = {"updates__health_window_s": 600, "presence__mode": "always"}
    config = load_config(write_config(tmp_path / "bin.yaml", serving, "file:///none.mp4", PORT, **window))
    daemon = Daemon(config)
    gpu = load_config(
        write_config(tmp_path / "gpu.yaml", update, "file:///none.mp4", PORT, model__backend="onnxruntime", **window)
    )
    new = load_classifier(gpu, update)
    daemon.models.apply_update(Prepared(UpdateRequest("up", "http://bins/v2.tar", None), update, new, "test"))
    daemon.handle_events()
    assert names(daemon) == [label.name for label in new.labels]
    return daemon


def names(daemon: Daemon) -> list[str]:
    """The labels the vote counts in."""
    return [label.name for label in daemon.pipeline.decider.labels]


def frame(n: int) -> Frame:
    return Frame(data.astronaut(), n, time.time(), time.monotonic())


def test_a_rollback_inside_a_frame_relabels_the_vote_before_the_next_frame_not_during_it(
    tmp_path, other_bundle_dir, bundle_copy, monkeypatch
):
    daemon = trial_daemon(tmp_path, other_bundle_dir, bundle_copy, monkeypatch, resets_after=2)
    new_names = names(daemon)
    old_names = [label.name for label in daemon.models.previous.labels]
    assert old_names != new_names
    outcomes = [daemon.pipeline.process(frame(1))]
    while outcomes[-1] is not None and len(outcomes) < 10:
        assert outcomes[-1].prediction is None or outcomes[-1].prediction.label.name in new_names
        outcomes.append(daemon.pipeline.process(frame(len(outcomes) + 1)))
    assert outcomes[-1] is None, "the device reset and nothing was rolled back"
    # the frame that failed ended with the vote it began with; the switch back waits in the queue
    assert names(daemon) == new_names
    waiting = list(daemon.events.drain())
    assert [type(e) for e in waiting] == [Switched, ModelChanged]
    for event in waiting:
        daemon.events.post(event)
    daemon.handle_events()
    assert names(daemon) == old_names
    after = daemon.pipeline.process(frame(9))
    assert after is not None and after.prediction.label.name in old_names
    assert daemon.models.store.state().outcome["event"] == "rolled_back"


def test_classify_now_goes_through_the_health_window(tmp_path, other_bundle_dir, bundle_copy, monkeypatch):
    daemon = trial_daemon(tmp_path, other_bundle_dir, bundle_copy, monkeypatch, resets_after=1)
    daemon.camera.last_frame = frame(1)
    request = ClassifyRequest()
    daemon.events.classify_now(request)
    daemon.handle_events()
    assert request.done.is_set() and "rolled back" in request.result["error"]
    assert daemon.models.store.state().outcome["event"] == "rolled_back"
    again = ClassifyRequest()
    daemon.events.classify_now(again)
    daemon.handle_events()  # the old model's labels, on the same frame
    old_names = names(daemon)
    assert again.result["label"] in old_names and again.result["frame_id"] == 1


def test_commands_are_answered_through_the_queue(tmp_path, other_bundle_dir, bundle_copy, monkeypatch):
    daemon = trial_daemon(tmp_path, other_bundle_dir, bundle_copy, monkeypatch, resets_after=100)
    daemon.commands.submit(b'{"id": "p", "action": "ping"}')
    daemon.commands.submit(b'{"id": "r", "action": "ping"}', retained=True)
    daemon.commands.handle(daemon)
    answers = [e for e in daemon.events.drain() if isinstance(e, Answered)]
    assert [(a.command_id, a.error is None) for a in answers] == [("r", False), ("p", True)]
