"""A bin serving a bundle in two parts keeps, in each sample's JSON, the features its head read on the kept
frame (issue 52: a head is trained on them at the workstation, without a pass of the backbone over the frames);
an answer given at the review station keeps them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from convert.review.store import ReviewStore
from edge.formats.bundle import Bundle
from edge.wire.payloads import Sample
from tests.support.review import kept_samples

pytestmark = pytest.mark.slow


def test_each_sample_keeps_the_features_its_head_read(tmp_path: Path, split_bundle_dir: Path, broker, clip_factory):
    clip, _ = clip_factory(items=4)
    folder = kept_samples(tmp_path, split_bundle_dir, broker.port, clip)
    bundle = Bundle.open(split_bundle_dir)
    head = bundle.head()
    samples = {path.stem: Sample.model_validate_json(path.read_bytes()) for path in folder.glob("*.json")}
    for sample_id, sample in samples.items():
        assert sample.features is not None, sample_id
        assert sample.features.backbone == bundle.manifest.variants[sample.model["variant"]].sha256
        values = sample.features.values()
        assert values.shape == (head.features,) and np.isfinite(values).all()
        # the deciding frame's own prediction, made again from what was kept (float16: the same best class)
        assert int(head.apply(values[None])[0].argmax()) == sample.top_k[0].label_index, sample_id
    answered = sorted(samples)[0]
    ReviewStore(folder).answer([answered], "item", "café cup")
    again = Sample.model_validate_json((folder / f"{answered}.json").read_bytes())
    assert again.correction.label == "café cup" and again.features == samples[answered].features
