"""Teaching a new item from the review station (issue 52): the bins serve a bundle in two parts; twenty samples
of an item they do not know are answered on the page's API with a new label, which is given a bin; the page's
"teach" job trains a new head (`smartbin head train`) and compares it on the hold-out, and its rollout sends
the head alone through the stages to two real daemons, which serve it on the backbone they have loaded and sort
the new item into its bin."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support import CLASSES, poll
from tests.support.fleet import running_fleet
from tests.support.review import request, reviewing
from tests.support.teach import NEW, answered_samples, clip_with_new_item, new_item

pytestmark = pytest.mark.slow


def test_a_new_item_taught_from_the_page_reaches_the_canary_then_every_bin(
    tmp_path: Path, split_bundle_dir: Path, dataset_dir: Path, broker
):
    clip = clip_with_new_item(tmp_path / "clip.avi", [0, CLASSES, 1, CLASSES, 2, CLASSES, 3])
    served = Path(shutil.copytree(split_bundle_dir, tmp_path / "serving"))
    folder = tmp_path / "inbox"
    answered_samples(folder, served, new_item(20, seed=1), answered=False)
    options = ["--train-data", str(dataset_dir), "--holdout", str(dataset_dir), "--baseline", str(served)]
    options += ["--broker", f"127.0.0.1:{broker.port}", "--serve", "127.0.0.1:0"]
    with reviewing(folder, *options) as url, running_fleet(tmp_path / "bins", served, clip, broker.port,
                                                          ("bin-a", "bin-b")) as fleet:  # fmt: skip
        ids = [item["id"] for item in request(url + "api/items")[1]["items"]]
        assert len(ids) == 20
        assert request(url + "api/answer", {"ids": ids, "verdict": "item", "label": NEW})[0] == 200
        assert request(url + "api/bins", {"label": NEW, "bin": "recyclable"})[0] == 200
        assert request(url + "api/training")[1]["teach"] is True
        code, job = request(url + "api/training", {"kind": "head"})
        assert code == 200 and job["kind"] == "head", job
        latest = lambda: request(url + "api/training")[1]["jobs"][0]  # noqa: E731
        assert poll(lambda: latest()["state"] != "running", 300), latest()
        assert latest()["state"] == "done" and not latest()["comparison"]["refusal"], latest()
        rule = {"stages": "1", "watch": 3, "min_frames": 20, "shadow_items": 5}
        assert request(url + "api/rollout", rule)[0] == 200
        rollout = lambda: request(url + "api/fleet")[1]["rollout"] or {}  # noqa: E731
        assert poll(lambda: rollout().get("state") not in (None, "running"), 300), rollout()
        assert rollout()["state"] == "completed", rollout()
        models = lambda: {m.topic.split("/")[1]: m.json() for m in fleet.sub.on("model")}  # noqa: E731
        assert poll(lambda: all(NEW in m["name"] for m in models().values()), 60), models()
        assert all(m["head"]["shared_backbone"] for m in models().values()), models()
        assert [s["devices"] for s in rollout()["report"]["stages"]] == [["bin-a"], ["bin-b"]]
        # and each bin now sorts the new item, which its camera keeps seeing, into the bin it was given
        sorted_new = lambda: {m.topic.split("/")[1] for m in fleet.sub.on("decision")  # noqa: E731
                              if m.json()["label"] == NEW and m.json()["bin"] == "recyclable"}  # fmt: skip
        assert poll(lambda: sorted_new() == {"bin-a", "bin-b"}, 120), sorted_new()
