"""The CI share of `make field-day` (half its periods): a compressed first month of a bin with the real
daemon, the real actuator process, mosquitto and an ffmpeg network camera."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.scenarios.field_day import run_day

pytestmark = pytest.mark.slow


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg serves the camera (.ci/run installs it)")
def test_a_compressed_field_day_moves_only_for_fresh_decisions_and_loses_none(bundle_dir: Path, tmp_path: Path):
    report, run = run_day(bundle_dir, 0.5, tmp_path)
    print("\n" + report.summary())
    assert report.stale_moves == 0 and report.decisions_lost == 0, report.summary() + "\n" + run.tails()
    assert report.decisions_published == report.decisions_made > 0
    assert report.delivered_after_outage >= 1  # made while the broker was down, sent when it was back
    assert report.acknowledged_stale >= 1  # the actuator's backlog after its restart: refused, not moved
    assert report.flap_moves == report.acknowledged_fresh >= 1
    assert report.relearns >= 2  # the light and the bag
    assert report.refused_by_broker >= 1 and report.fresh_refused_as_stale == 0  # refused, kept, delivered
    assert report.retained_answered >= 2 and report.retained_carried_out == 0  # at each start, never acted on
    states = [state for _, state in report.health]
    assert "camera_lost" in states and "ok" in states[states.index("camera_lost") :], report.health
