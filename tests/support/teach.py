"""A new item taught to the bins (issue 52), as the tests make it: pictures of a class the model never saw, and
the samples a bin keeps of them (the JPEG, the JSON with the serving backbone's features, as the daemon writes
them), answered at the review station with a new label given a bin."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from edge.classifier import Classifier
from edge.formats.bundle import Bundle
from edge.formats.classbins import write_bins
from edge.formats.images import write_jpeg
from edge.sources.scene import render_sample
from edge.wire.features import Features
from edge.wire.payloads import Correction, Sample, top_k
from tests.support import CLASSES, IMG_SIZE

NEW = "café cup"


def new_item(count: int, seed: int) -> np.ndarray:
    """Pictures of an item of a class the model was not trained on (another shape and hue)."""
    rng = np.random.default_rng(seed)
    return np.stack([render_sample(CLASSES, CLASSES + 1, IMG_SIZE, rng) for _ in range(count)])


def answered_samples(
    folder: Path, bundle: Path, images: np.ndarray, answered: bool = True, variant: str = "int8"
) -> None:
    """The samples a bin keeps of those pictures (the JPEG, its JSON with the serving backbone's features, as
    the daemon writes them), answered at the review station as the new item, which is given a bin."""
    folder.mkdir(parents=True)
    classifier = Classifier(bundle, variant=variant)  # the bins' engine: int8 on LiteRT, onnx on a Jetson
    backbone = Bundle.open(bundle).manifest.variants[variant].sha256
    for n, image in enumerate(images):
        sample_id = f"{1796600000000 + n:015d}-{n:012x}"
        guess = classifier.classify(image)  # the bin's own label for it, a class it knows
        features = Features.of(guess.features, backbone, variant)
        answer = Correction(label=NEW, ts=time.time(), verdict="item", by="review") if answered else None
        sample = Sample(event_id=f"{n:032x}", ts=time.time(), features=features, correction=answer,
                        label=guess.label.name, label_index=guess.label.index, bin=guess.bin,
                        confidence=round(guess.confidence, 4), top_k=top_k(guess))  # fmt: skip
        write_jpeg(folder / f"{sample_id}.jpg", image)
        (folder / f"{sample_id}.json").write_text(sample.model_dump_json())
    if answered:  # else the person answers at the page, and gives the new item its bin there
        write_bins(folder, {NEW: "recyclable"})


def clip_with_new_item(path: Path, order: list[int], seed: int = 3) -> Path:
    """A clip of items dropped into an empty bin one after the other (as clip_factory's), class CLASSES being
    the new item, drawn as ``new_item`` draws it."""
    import cv2

    from edge.sources.scene import add_noise, draw_item, empty_floor

    rng = np.random.default_rng(seed)
    floor = empty_floor(240, 320, seed)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 20, (320, 240))
    for cls in [*order, None]:
        for _ in range(6):
            writer.write(cv2.cvtColor(add_noise(floor, rng, 3.0), cv2.COLOR_RGB2BGR))
        if cls is not None:
            layer = floor.copy()
            draw_item(layer, cls, CLASSES + 1 if cls == CLASSES else CLASSES, rng)
            for _ in range(8):
                writer.write(cv2.cvtColor(add_noise(layer, rng, 3.0), cv2.COLOR_RGB2BGR))
    writer.release()
    return path
