"""A new item taught (`smartbin head train`) goes out as its head alone (`fleet rollout --head-only`) through
the rollout's stages to a fleet of real daemons serving the bundle in two parts: each bin runs it in the shadow,
then serves it, on the backbone it has loaded; a rollout stopped while its canary is watched puts it back, as
with any bundle (issue 52)."""

from __future__ import annotations

import json
import re
import shutil
import signal
from pathlib import Path

import pytest

from convert.training.teach import teach
from tests.support import poll
from tests.support.fleet import rollout, running_fleet, serving, wait_switched
from tests.support.teach import NEW, answered_samples, new_item

pytestmark = pytest.mark.slow


def test_a_taught_head_rolls_out_in_stages_on_the_loaded_backbones(
    tmp_path: Path, split_bundle_dir: Path, dataset_dir: Path, broker, clip_factory
):
    clip, _ = clip_factory(items=4)
    served = Path(shutil.copytree(split_bundle_dir, tmp_path / "serving"))
    answered_samples(tmp_path / "answers", served, new_item(20, seed=1))
    taught = teach(tmp_path / "answers", served, dataset_dir, tmp_path / "taught", tmp_path / "cache").bundle
    name = json.loads((taught / "manifest.json").read_text())["name"]
    folder_prefix = re.sub(r"[^A-Za-z0-9_.-]", "_", name)  # its folder in the bins' model store
    with running_fleet(tmp_path / "bins", served, clip, broker.port, ("bin-a", "bin-b")) as fleet:
        before = {m.topic.split("/")[1]: m.json()["folder"] for m in fleet.sub.on("model")}
        # stopped by the user while its canary is watched: the canary is put back, as with any bundle
        started: list = []

        def interrupt_the_watch() -> None:
            wait_switched(fleet.sub, "bin-a", folder_prefix)
            started[0].send_signal(signal.SIGINT)

        code, report, output = rollout(broker, tmp_path, taught, "--canaries", "bin-a", "--watch", "600",
                                       "--head-only", meanwhile=interrupt_the_watch, started=started)  # fmt: skip
        assert code == 1 and report["reason"] == "interrupted by SIGINT", output
        assert report["rolled_back"] == {"bin-a": f"back on {before['bin-a']}"}, output
        assert poll(lambda: serving(fleet.sub) == before, 30), serving(fleet.sub)

        code, report, output = rollout(broker, tmp_path, taught, "--stages", "1", "--head-only")
        assert code == 0 and report["completed"], output
        assert [s["devices"] for s in report["stages"]] == [["bin-a"], ["bin-b"]], report
        models = lambda: {m.topic.split("/")[1]: m.json() for m in fleet.sub.on("model")}  # noqa: E731 - the last
        assert poll(lambda: {m["name"] for m in models().values()} == {name}, 60), models()
        assert all(m["head"]["shared_backbone"] for m in models().values()), models()
        assert NEW in name
