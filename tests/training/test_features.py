"""A frozen backbone's features computed once (convert/training/features.py) on real photographs: the head trained
on them reaches what training through the backbone reaches, a second run computes nothing again, a grown
dataset computes only its new images, and each augmentation pass is its own, repeatable."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge.cli import main

SIZE = 32


@pytest.fixture(scope="module")
def setting(tmp_path_factory) -> tuple[Path, Path]:
    from convert.training.model import write_stand_in_weights
    from tests.support.realimages import write_photo_patches

    tmp = tmp_path_factory.mktemp("features")
    data = write_photo_patches(tmp / "photos", per_class=24, side=SIZE)
    return data, write_stand_in_weights(tmp / "backbone.weights.h5", SIZE, "resnet-mini")


def _train(data: Path, weights: Path, out: Path, *extra: str) -> dict:
    command = ["train", "--data", str(data), "--out", str(out), "--weights", str(weights), "--backbone", "resnet-mini"]
    command += [
        "--img-size",
        str(SIZE),
        "--epochs",
        "4",
        "--val-fraction",
        "0.25",
        "--bn-batches",
        "0",
    ]  # the heads alone
    assert main([*command, *extra]) == 0
    return json.loads((out / "report.json").read_text())


def test_the_head_on_cached_features_learns_what_training_through_the_backbone_learns(setting, tmp_path: Path):
    data, weights = setting
    cache = tmp_path / "cache"
    plain = _train(data, weights, tmp_path / "plain")
    cached = _train(data, weights, tmp_path / "cached", "--feature-cache", str(cache))
    speed = {
        p["phase"]: p["images_per_s"]
        for p in json.loads((tmp_path / "cached" / "throughput.json").read_text())["phases"]
    }
    through = json.loads((tmp_path / "plain" / "throughput.json").read_text())["phases"][0]["images_per_s"]
    print(
        f"validation top-1: through the backbone {plain['top1']:.1%}, on cached features {cached['top1']:.1%}; "
        f"head {through:.0f} images/s through the backbone, {speed['head on cached features']:.0f} on features "
        f"({speed['features']:.0f} images/s to compute them once)"
    )
    assert set(speed) == {"features", "head on cached features"}
    assert abs(plain["top1"] - cached["top1"]) <= 0.15  # the tolerance: 9 of the 60 held-out images
    assert cached["top1"] > 0.3  # it learned (chance is 0.1)
    files = sorted(cache.rglob("*.npz"))
    assert len(files) == 5  # four augmentation passes and the validation's centre crop, under one backbone key
    stamps = {f: f.stat().st_mtime_ns for f in files}
    _train(data, weights, tmp_path / "again", "--feature-cache", str(cache), "--epochs", "2")
    assert {f: f.stat().st_mtime_ns for f in cache.rglob("*.npz")} == stamps  # nothing computed again


def test_passes_are_repeatable_and_a_grown_dataset_computes_only_its_new_images(setting, tmp_path: Path):
    from convert.training.features import FeatureCache
    from convert.training.model import build_model
    from edge.formats.dataset import load_dataset

    data, weights = setting
    model, _ = build_model(10, SIZE, "resnet-mini", str(weights))
    samples = load_dataset(data).samples
    first = FeatureCache(tmp_path, model, SIZE, 16)
    a = first.features(samples[:40], 0)
    assert first.computed == 40 and first.reused == 0
    again = FeatureCache(tmp_path, model, SIZE, 16)
    assert np.array_equal(again.features(samples[:40], 0), a) and again.computed == 0
    grown = again.features(samples[:50], 0)
    assert again.computed == 10 and np.array_equal(grown[:40], a)
    other_pass = again.features(samples[:40], 1)
    assert not np.allclose(other_pass, a)  # another augmentation of the same images
    centre = again.features(samples[:40], None)
    assert np.array_equal(centre, FeatureCache(tmp_path, model, SIZE, 16).features(samples[:40], None))
    other_backbone, _ = build_model(10, SIZE, "resnet-mini", None)
    assert FeatureCache(tmp_path, other_backbone, SIZE, 16).folder != first.folder  # never another's features


def test_embeddings_and_the_most_novel_pulled_samples_first(run_dir: Path, dataset_dir: Path, tmp_path: Path, capsys):
    """`smartbin features` writes normalised embeddings; `samples pull --rank-with` puts the field samples
    least like the training images first: real photographs (scikit-image's) before copies of training
    images."""
    import cv2

    from edge.formats.dataset import load_dataset
    from tests.support.realimages import write_photo_patches

    out = tmp_path / "emb.npz"
    assert main(["features", str(run_dir), "--data", str(dataset_dir), "--out", str(out)]) == 0
    with np.load(out) as saved:
        assert len(saved["features"]) == len(load_dataset(dataset_dir).samples) == len(saved["paths"])
        assert np.allclose(np.linalg.norm(saved["features"], axis=1), 1, atol=1e-5)
    # a device's sample folder: four copies of training images, four real photographs it never saw
    samples, photos = tmp_path / "samples", write_photo_patches(tmp_path / "photos", per_class=1, side=80)
    samples.mkdir()
    seen = [s.path for s in load_dataset(dataset_dir).samples[:4]]
    novel = sorted(photos.rglob("*.png"))[:4]
    for i, image in enumerate(seen + novel):
        cv2.imwrite(str(samples / f"s{i}.jpg"), cv2.imread(str(image)))
        meta = {"event_id": f"{i:032x}", "ts": 1790000000.0 + i, "label": "glass", "bin": "recyclable"}
        (samples / f"s{i}.json").write_text(json.dumps({**meta, "confidence": 0.5}))  # as a bin writes one
    pulled = tmp_path / "pulled"
    assert main(["samples", "pull", str(samples), "--out", str(pulled), "--rank-with", str(run_dir)]) == 0
    assert "most novel first" in capsys.readouterr().out
    ranked = json.loads((pulled / "unreviewed" / "novelty.json").read_text())
    field = {r["image"]: r["source"] for r in json.loads((pulled / "unreviewed" / "field_samples.json").read_text())}
    order = [int(field[r["image"]][1:]) for r in ranked]
    assert sorted(order[:4]) == [4, 5, 6, 7], ranked  # the photographs first
    assert [r["distance"] for r in ranked] == sorted((r["distance"] for r in ranked), reverse=True)
    assert max(r["distance"] for r in ranked[4:]) < 0.05  # a training image (re-encoded) is almost where it was
