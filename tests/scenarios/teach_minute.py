"""`make teach-minute`: how long teaching the bins a new item takes (issue 52), measured side by side in one run.

    python tests/scenarios/teach_minute.py --bundle SPLIT_BUNDLE --run ITS_RUN --data DATASET --holdout HOLDOUT \
        --new NEW_ITEM

A bin serving ``--bundle`` (a bundle in two parts, converted from ``--run``) keeps samples of an item it does not
know (the pictures in ``--new``, through its own engine: the JPEG and the backbone's features, as the daemon writes
them), and a person answers 20 of them at the review station. Then, timed: `smartbin head train` with the training
set's features not yet cached and again cached (from the last answer to a gated head), and the rollout until a
real daemon, the canary, serves it. Against it, side by side, the same item taught the way there was before head
updates: `smartbin samples pull`, `train` with the run's recipe and an epoch fine-tuning the backbone's last
stage, `convert`, the hold-out gate. For both: the bytes a bin downloads, the time it takes from the archive to
serving it (the daemon's own update path), the new item's recall on the pictures it was not taught on, the old
classes' bin accuracy on the hold-out, and how often the int8 variant agrees with float32 there.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from convert.training.teach import teach  # noqa: E402
from edge.benchmark.accuracy import evaluate_bundle  # noqa: E402
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


def serve_update(bundle: Path, candidate: Path, work: Path, head_only: bool) -> tuple[float, int]:
    """Seconds from the archive on disk to a bin serving it, through the daemon's own update path (a head on
    the loaded backbone, or a whole bundle loaded), and the archive's bytes."""
    from edge.models.heads import on_serving_backbone
    from edge.models.store import ModelStore
    from edge.models.update import acceptance_test

    archive = work / f"{candidate.name}.tar"
    digest = pack(candidate, archive, head_only=head_only, variants=None if head_only else ["int8"])
    serving = Classifier(bundle, backend="litert", variant="int8")
    started = time.perf_counter()
    store = ModelStore(work / f"store-{candidate.name}", 3)
    folder = store.add(archive, digest, 1 << 31, None, "int8", serving.bundle)
    classifier = (
        on_serving_backbone(folder, serving, 3) if head_only else Classifier(folder, backend="litert", variant="int8")
    )
    acceptance_test(classifier)
    return time.perf_counter() - started, archive.stat().st_size


def smartbin(*args: str | Path) -> None:
    """A workstation command as the user types it; its output goes to the log, a failure ends the run."""
    import subprocess

    from tests.support import ROOT

    command = [sys.executable, "-m", "edge.cli", *map(str, args)]
    done = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout[-3000:]}")


def full_fine_tune(answers: Path, run: Path, bundle: Path, holdout: Path, work: Path) -> tuple[Path, float]:
    """The way to teach an item without a head update: the answers pulled as a dataset, the model trained again
    with the recipe of the serving bundle's run (``run``'s train_config.json, its feature cache too) on the
    training set and them, with an epoch fine-tuning the backbone's last stage, converted and gated on the
    hold-out. The new bundle, and seconds from the answers to it gated."""
    recipe = json.loads((run / "train_config.json").read_text())
    started = time.perf_counter()
    smartbin("samples", "pull", answers, "--out", work / "pulled")
    smartbin("train", "--data", recipe["data"], "--data", work / "pulled", "--out", work / "full-run",
             "--weights", recipe["weights"], "--img-size", recipe["img_size"], "--epochs", recipe["epochs"],
             "--val-fraction", recipe["val_fraction"], "--feature-cache", recipe["feature_cache"],
             "--feature-passes", recipe["feature_passes"], "--fine-tune-epochs", 1)  # fmt: skip
    smartbin("convert", work / "full-run", "--out", work / "full", "--variants", "float32,int8", "--no-probes")
    hold_out(work / "full", bundle, holdout, "int8")
    return work / "full", time.perf_counter() - started


def scores(bundle: Path, holdout: Path, unseen: np.ndarray, name: str) -> dict[str, float]:
    """The new item's recall on pictures it was not taught on, the old classes' bin accuracy on the hold-out (the
    int8 variant, as the bins run it), and how often int8 agrees with float32 there."""
    figures = evaluate_bundle(bundle, holdout, variants=["float32", "int8"])["variants"]["int8"]
    classifier = Classifier(bundle, backend="litert", variant="int8")
    seen = np.concatenate([classifier.engine.infer(x[None]) for x in unseen]).argmax(1)
    recall = float(np.mean([classifier.labels[i].name == name for i in seen]))
    return {"recall": recall, "bin_accuracy": figures["bin_accuracy"], "agreement": figures["agreement"]}


def canary_serving(bundle: Path, taught: Path, work: Path, name: str) -> float:
    """Seconds from `smartbin fleet rollout --head-only` started to a real daemon (the first stage's canary, on
    ``bundle``, a synthetic camera) serving the taught head, over a local mosquitto; the shadow runs 3 items."""
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
    for name in ("--bundle", "--run", "--data", "--holdout", "--new"):
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
        warm = teach(work / "answers", bundle, data, work / "head", work / "cache")
        gate = hold_out(warm.bundle, bundle, holdout, "int8")
        gated_s = time.perf_counter() - started
        canary_s = canary_serving(bundle, warm.bundle, work, cold.added[0])
        full, full_s = full_fine_tune(work / "answers", Path(args.run), bundle, holdout, work)
        served = {
            kind: serve_update(bundle, b, work, kind == "head") for kind, b in (("head", warm.bundle), ("full", full))
        }
        head, whole = (scores(b, holdout, new[TAUGHT:], cold.added[0]) for b in (warm.bundle, full))
    print(f"teaching {cold.added[0]!r} from {TAUGHT} answers, {sum(warm.examples.values())} training examples")
    print(f"{'head only, features':<44}{'not cached':>14}{'cached':>12}")
    print(f"{'training images through the backbone':<44}{cold.computed:>14}{warm.computed:>12}")
    print(f"{'features, s':<44}{cold.seconds['features']:>14.1f}{warm.seconds['features']:>12.1f}")
    print(f"{'head training, s':<44}{cold.seconds['train']:>14.1f}{warm.seconds['train']:>12.1f}")
    print(f"\n{'':52}{'head only':>14}{'full fine-tune':>16}")
    unseen = f"new item recall ({len(new) - TAUGHT} pictures not taught on)"
    rows = [
        ("answers -> gated on the hold-out, s", gated_s, full_s, ".1f"),
        ("bytes to a bin, MB", served["head"][1] / 1e6, served["full"][1] / 1e6, ".1f"),
        ("a bin from the archive to serving it, s", served["head"][0], served["full"][0], ".2f"),
        (unseen, head["recall"], whole["recall"], ".0%"),
        ("old classes' bin accuracy (hold-out, int8)", head["bin_accuracy"], whole["bin_accuracy"], ".1%"),
        ("int8 agrees with float32 (hold-out)", head["agreement"], whole["agreement"], ".1%"),
    ]
    for name, a, b, form in rows:
        print(f"{name:<52}{a:>14{form}}{b:>16{form}}")
    ratio = head["recall"] / whole["recall"] if whole["recall"] else float("nan")
    points = (head["bin_accuracy"] - whole["bin_accuracy"]) * 100
    print(f"\nhead-only recall / full fine-tune's: {ratio:.2f} (goal >= 0.90); old classes' bin accuracy: "
          f"{points:+.1f} points against the full fine-tune's (goal within 1)")  # fmt: skip
    print(f"rollout started -> the canary serving the head (3 items in its shadow first): {canary_s:.1f} s")
    print(f"answers -> gated head -> the canary serving it: {gated_s + canary_s:.1f} s (goal 60 s)")
    print(gate.line() + (f"; refused: {gate.refusal}" if gate.refusal else "; passed"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
