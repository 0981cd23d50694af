"""`make teach-minute`: how long teaching the bins a new item takes (issue 52), measured side by side in one run.

    python tests/scenarios/teach_minute.py --bundle SPLIT_BUNDLE --data DATASET --holdout HOLDOUT --new NEW_ITEM

A bin serving ``--bundle`` (a bundle in two parts) keeps samples of an item it does not know (the pictures in
``--new``, through its own engine: the JPEG and the backbone's features, as the daemon writes them), and a person
answers 20 of them at the review station. Then, timed: `smartbin head train` with the training set's features
not yet cached and again cached (from the last answer to a gated head), the archive of the head alone against
the whole bundle's, and the time a bin takes from the update command to serving the new head (its Serving, the
daemon's own update path: download, verify, unpack, acceptance test, switch). Prints the new item's recall on the
pictures it was not taught on, and the old classes' bin accuracy on the hold-out, before and after.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from convert.training.teach import teach  # noqa: E402
from edge.classifier import Classifier  # noqa: E402
from edge.fleet.gate import hold_out  # noqa: E402
from edge.formats.archive import pack  # noqa: E402
from edge.formats.images import read_image  # noqa: E402
from edge.vision.preprocess import prepare  # noqa: E402
from tests.support.teach import answered_samples  # noqa: E402

TAUGHT = 20


def pictures(folder: Path, size: int) -> np.ndarray:
    """The new item's pictures at the model's input size, as the bin's camera path prepares them."""
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    return np.stack([prepare(read_image(p), size, size) for p in files])


def serve_update(bundle: Path, taught: Path, work: Path) -> float:
    """Seconds from the archive on disk to a bin serving it, through the daemon's own update path."""
    from edge.models.heads import on_serving_backbone
    from edge.models.store import ModelStore
    from edge.models.update import acceptance_test

    archive = work / "head.tar"
    digest = pack(taught, archive, head_only=True)
    serving = Classifier(bundle, backend="litert", variant="int8")
    started = time.perf_counter()
    store = ModelStore(work / "store", 3)
    folder = store.add(archive, digest, 1 << 31, None, "int8", serving.bundle)
    classifier = on_serving_backbone(folder, serving, 3)
    acceptance_test(classifier)
    return time.perf_counter() - started


def canary_serving(bundle: Path, taught: Path, work: Path, name: str) -> float:
    """Seconds from `smartbin fleet rollout --head-only` started to a real daemon (the first stage's canary, on
    ``bundle``, a synthetic camera) serving the taught head, over a local mosquitto; the shadow runs 3 items."""
    import json
    import subprocess

    from edge.tools.localbroker import LocalBroker
    from tests.support import ROOT, poll, write_config
    from tests.support.mqtt_client import Subscriber

    with LocalBroker(workdir=work / "broker") as broker:
        config = write_config(work / "bin.yaml", bundle.resolve(), "synthetic://?items=0&fps=10&empty=6&present=6",
                              broker.port, model__variant="int8", model__backend="litert")  # fmt: skip
        sub = Subscriber(broker.port, "smartbin/+/model")
        daemon = subprocess.Popen([sys.executable, "-m", "edge", "--config", str(config)], cwd=ROOT,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        names = lambda: [json.loads(m.payload)["name"] for m in sub.on("model")]  # noqa: E731
        try:
            assert poll(names, 120), "the bin did not start"
            command = [sys.executable, "-m", "edge.cli", "fleet", "rollout", str(taught), "--head-only",
                       "--broker", f"127.0.0.1:{broker.port}", "--serve", "127.0.0.1:0", "--stages", "1",
                       "--shadow-items", "3", "--watch", "2", "--min-frames", "5", "--expect-labels", name]  # fmt: skip
            started = time.perf_counter()
            rollout = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            new_name = json.loads((taught / "manifest.json").read_text())["name"]
            served = poll(lambda: new_name in names(), 300)
            seconds = time.perf_counter() - started
            rollout.wait(300)
        finally:
            daemon.terminate()
            daemon.wait(30)
            sub.close()
    if not served:
        raise SystemExit("the canary did not switch to the taught head")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name in ("--bundle", "--data", "--holdout", "--new"):
        parser.add_argument(name, required=True)
    args = parser.parse_args()
    bundle, data, holdout = Path(args.bundle), Path(args.data), Path(args.holdout)
    with tempfile.TemporaryDirectory(prefix="smartbin-teach-") as tmp:
        work = Path(tmp)
        size = Classifier(bundle, backend="litert", variant="int8").height
        new = pictures(Path(args.new), size)
        answered_samples(work / "answers", bundle, new[:TAUGHT])
        cold = teach(work / "answers", bundle, data, work / "cold", work / "cache")
        started = time.perf_counter()
        warm = teach(work / "answers", bundle, data, work / "warm", work / "cache")
        gate = hold_out(warm.bundle, bundle, holdout, "int8")
        gated_s = time.perf_counter() - started
        serve_s = serve_update(bundle, warm.bundle, work)
        canary_s = canary_serving(bundle, warm.bundle, work, cold.added[0])
        head_bytes = (work / "head.tar").stat().st_size
        pack(warm.bundle, work / "whole.tar", variants=["int8"])
        whole_bytes = (work / "whole.tar").stat().st_size
        classifier = Classifier(warm.bundle, backend="litert", variant="int8")
        seen = [classifier.engine.infer(image[None])[0].argmax() for image in new[TAUGHT:]]
        recall = float(np.mean([classifier.labels[i].name == cold.added[0] for i in seen]))
    print(f"teaching {cold.added[0]!r} from {TAUGHT} answers, {sum(warm.examples.values())} training examples")
    print(f"{'':44}{'features not cached':>22}{'cached':>12}")
    print(f"{'training images through the backbone':<44}{cold.computed:>22}{warm.computed:>12}")
    print(f"{'features, s':<44}{cold.seconds['features']:>22.1f}{warm.seconds['features']:>12.1f}")
    print(f"{'head training, s':<44}{cold.seconds['train']:>22.1f}{warm.seconds['train']:>12.1f}")
    print(f"answers -> gated head (cached, with the hold-out gate): {gated_s:.1f} s (goal 60 s, with the rollout)")
    print(f"bytes to a bin: head alone {head_bytes / 1e6:.1f} MB, whole bundle {whole_bytes / 1e6:.1f} MB")
    print(f"a bin from the archive to serving the head: {serve_s:.2f} s (no backbone loaded, no engine built)")
    print(f"rollout started -> the canary serving it (3 items in its shadow first): {canary_s:.1f} s")
    print(f"answers -> gated head -> the canary serving it: {gated_s + canary_s:.1f} s (goal 60 s)")
    print(f"new item recall on {len(seen)} pictures not taught on: {recall:.0%}")
    print(gate.line() + (f"; refused: {gate.refusal}" if gate.refusal else "; passed"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
