"""The daemon's parts on their own, without a broker or a daemon: the camera part and the pipeline
(presence -> classify -> vote, no I/O) on a real clip and a real bundle."""

from __future__ import annotations

from pathlib import Path

from edge.classifier import Classifier
from edge.config import load_config
from edge.daemon.camera import Camera
from edge.daemon.pipeline import Pipeline
from edge.models.build import make_presence
from tests.support import write_config


def run_clip(tmp_path: Path, bundle: Path, clip: Path, **vote) -> tuple[list, Pipeline]:
    config = load_config(write_config(tmp_path / "bin.yaml", bundle, f"file://{clip}?realtime=1", 1))
    classifier = Classifier(bundle, threads=1)
    pipeline = Pipeline(classifier.classify, classifier.labels, make_presence(config), config.decision.settings())
    for key, value in vote.items():
        setattr(pipeline.decider.config, key, value)
    camera = Camera(config)
    camera.start()
    decisions = []
    try:
        while True:
            frame = camera.next_frame(timeout=2)
            if frame is None:
                if camera.ended:
                    break
                continue
            outcome = pipeline.process(frame)
            if outcome is not None and outcome.decision is not None:
                decisions.append(outcome.decision)
    finally:
        camera.stop()
    return decisions, pipeline


def test_the_pipeline_makes_one_decision_per_item_of_a_clip(tmp_path, bundle_dir, clip_factory):
    clip, schedule = clip_factory(items=4, seed=3)
    decisions, pipeline = run_clip(tmp_path, bundle_dir, clip)
    assert len(decisions) == len(schedule)
    assert sum(d.label_index == want for d, want in zip(decisions, schedule)) >= len(schedule) - 1
    # only frames with an item in view were classified, each timed
    assert 0 < pipeline.classified < len(pipeline.timings.stages["decide"].values())
    assert set(pipeline.timings.percentiles()) >= {"infer", "decide", "wait"}


def test_a_threshold_no_vote_reaches_sends_every_item_to_the_default_bin(tmp_path, bundle_dir, clip_factory):
    clip, schedule = clip_factory(items=4, seed=3)
    decisions, _ = run_clip(tmp_path, bundle_dir, clip, min_confidence=1.01)
    assert len(decisions) == len(schedule)
    assert {(d.reason, d.bin, d.label) for d in decisions} == {("low_confidence", "other", "unknown")}
