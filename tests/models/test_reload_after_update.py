"""A SIGHUP after an over-the-air update: a change under ``model:`` other than the bundle keeps the update
serving (with the new settings); a new ``model.bundle`` serves that folder and the model store records it,
so that ``…/model``, the store and what classifies name one and the same model."""

from __future__ import annotations

import json
import shutil
import signal
import time
from pathlib import Path

import pytest
import yaml

from tests.support.updates import OTHER_NAMES, outcome, start_and_update, stop

pytestmark = pytest.mark.slow


def _reload(config: Path, process, change) -> float:
    data = yaml.safe_load(config.read_text())
    change(data["model"])
    config.write_text(yaml.safe_dump(data))
    sent = time.monotonic()  # as the subscriber stamps a message's arrival
    process.send_signal(signal.SIGHUP)
    return sent


def _model_after(sub, sent: float) -> tuple[dict, float]:
    """The first …/model published after the SIGHUP, and when it came."""
    found = sub.wait_for("test-bin/model", where=lambda m: m.at > sent)
    assert found, "no …/model after the reload"
    return found[0].json(), found[0].at


def test_a_reload_after_an_update_keeps_the_update_unless_the_bundle_changes(
    tmp_path, v1, v2, web, broker, clip_factory
):
    config, sub, process, digest = start_and_update(tmp_path, v1, v2, web, broker, clip_factory, window=0)
    update = f"other-model-{digest[:12]}"
    state = lambda: json.loads((tmp_path / "models" / "state.json").read_text())  # noqa: E731
    try:
        assert outcome(sub, "up")["ok"]
        assert state()["current"] == update

        # 1. top_k 3 -> 1: the update still serves, with one label per classification
        sent = _reload(config, process, lambda model: model.update(top_k=1))
        model, at = _model_after(sub, sent)
        assert model["folder"] == update and model["sha256"] == digest
        found = sub.wait_for("classification", count=4, where=lambda m: m.at > at)[-3:]  # as below
        assert len(found) == 3 and all(len(m.json()["top_k"]) == 1 for m in found)
        assert {m.json()["label"] for m in found} <= OTHER_NAMES
        assert state()["current"] == update

        # 2. model.bundle names another folder: it serves, and the store says so
        chosen = shutil.copytree(v1, tmp_path / "chosen")
        sent = _reload(config, process, lambda model: model.update(bundle=str(chosen)))
        model, at = _model_after(sub, sent)
        assert model["folder"] == "chosen" and model["previous"] == update
        assert model["last_change"]["event"] == "switched" and "model.bundle" in model["last_change"]["reason"]
        # a frame the old model was classifying as the reload came may be published after the model message
        found = sub.wait_for("classification", count=4, where=lambda m: m.at > at)[-3:]
        assert len(found) == 3 and not {m.json()["label"] for m in found} & OTHER_NAMES
    finally:
        err = stop(process)
        sub.close()
    assert process.returncode == 0, err[-2000:]
    assert state()["current"] == str(chosen.resolve()) and state()["previous"] == update
