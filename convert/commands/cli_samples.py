"""The `smartbin` subcommands about images already taken: embeddings of a dataset, and pulling a device's
samples (ranked by novelty when asked). Their arguments are declared in convert/commands/cli.py."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from edge.web.reader import page_access


def quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def cmd_features(args: argparse.Namespace) -> int:
    quiet_tensorflow()
    import tempfile

    import numpy as np

    from convert.training.features import FeatureCache, embeddings
    from convert.training.novelty import run_model
    from edge.formats.dataset import load_dataset

    model, size, _ = run_model(args.run)
    dataset = load_dataset(args.data[0] if len(args.data) == 1 else args.data)
    with tempfile.TemporaryDirectory(prefix="smartbin-features-") as tmp:
        vectors = embeddings(FeatureCache(args.feature_cache or tmp, model, size, 32), dataset.samples)
    with open(args.out, "wb") as fh:
        np.savez(
            fh,
            paths=np.array([str(s.path) for s in dataset.samples]),
            labels=np.array([dataset.labels[s.label].name for s in dataset.samples]),
            features=vectors.astype(np.float32),
        )
    print(f"{len(vectors)} embeddings of {vectors.shape[1]} dimensions (L2-normalised) -> {args.out}")
    return 0


def _rank_unreviewed(run: str, folder: Path, cache: str | None) -> None:
    """Write ``folder/novelty.json``: the unreviewed samples, farthest from the training images first."""
    from convert.data.pull import NOVELTY_FILE
    from convert.training.novelty import rank
    from edge.formats.dataset import load_dataset

    unreviewed = load_dataset(folder)
    labels = [unreviewed.labels[s.label].name for s in unreviewed.samples]
    rows = rank(run, folder, [s.path for s in unreviewed.samples], labels, cache)
    print(f"ranked by distance to the training images, most novel first: {folder / NOVELTY_FILE}")
    for row in rows[:5]:
        print(f"  {row['image']}  {row['distance']:.3f}  (the model said {row['label']})")


def cmd_samples_pull(args: argparse.Namespace) -> int:
    from convert.data.pull import pull

    if args.source.startswith(("http://", "https://")):  # the release before's way: one more release
        print(
            f"smartbin samples pull URL goes in the next release: `smartbin samples fetch {args.source} --out "
            f"FOLDER` reads a bin's page, then `smartbin samples pull FOLDER --out {args.out}`",
            file=sys.stderr,
        )
        from convert.data.fetch import fetch

        with tempfile.TemporaryDirectory(prefix="smartbin-pull-") as tmp:
            counts = pull(fetch(args.source, Path(tmp) / "samples", page_access(args)), args.out)
    else:
        counts = pull(args.source, args.out)
    new = counts["new_labels"]
    print(
        f"{counts['reviewed']} corrected sample(s) -> {args.out}, {counts['unreviewed']} unreviewed -> "
        f"{Path(args.out) / 'unreviewed'}, {counts['not_items']} answered 'not an item' left out"
        + (
            f"; new label(s) {', '.join(new)}: bins from the samples folder's bins.yaml (smartbin review), else other"
            if new
            else ""
        )
    )
    print(f"train with: smartbin train --data <your dataset> --data {args.out} ...")
    if args.rank_with and counts["unreviewed"]:
        quiet_tensorflow()
        from convert.data.pull import UNREVIEWED

        _rank_unreviewed(args.rank_with, Path(args.out) / UNREVIEWED, args.feature_cache)
    return 0
