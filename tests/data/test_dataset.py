"""The seed dataset format both ways, and every `dataset check` error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from convert.data.sampling import check_dataset, stratified_split
from convert.data.synth import write_synthetic
from edge.cli import main
from edge.errors import DatasetError
from edge.formats.dataset import load_dataset
from edge.formats.images import read_image, write_jpeg
from edge.formats.labels import BINS, load_rules
from edge.system.paths import default_rules_path


def test_default_rules_are_the_40_classes():
    labels = load_rules(default_rules_path())
    assert len(labels) == 40
    counts = {b: sum(lab.bin == b for lab in labels) for b in BINS}
    assert counts == {"other": 6, "kitchen": 8, "recyclable": 23, "hazardous": 3}
    assert labels[0].name == "一次性快餐盒"


def test_synth_writes_seed_format_and_reads_back(tmp_path: Path):
    write_synthetic(tmp_path, num_classes=5, per_class=3, seed=1, size=48)
    assert (tmp_path / "img_0.txt").read_text(encoding="utf-8").strip() == "img_0.jpg, 0"
    rules = json.loads((tmp_path / "garbage_classify_rule.json").read_text(encoding="utf-8"))
    assert len(rules) == 5 and rules["0"].startswith("其他垃圾/")
    dataset = load_dataset(tmp_path)
    assert dataset.num_classes == 5 and len(dataset.samples) == 15
    assert sorted(dataset.class_counts().values()) == [3] * 5
    assert {lab.bin for lab in dataset.labels} == set(BINS)  # spread over every bin
    assert read_image(dataset.samples[0].path).shape == (48, 48, 3)


def test_the_seeds_nested_layout_is_loaded(tmp_path: Path, capsys):
    """garbage_classify/ holds the rules, its train_data_v2/ the images and label files (the seed's README)."""
    flat = write_synthetic(tmp_path / "flat", num_classes=4, per_class=3, seed=2, size=32)
    root = tmp_path / "garbage_classify"
    (root / "train_data_v2").mkdir(parents=True)
    (flat / "garbage_classify_rule.json").rename(root / "garbage_classify_rule.json")
    for item in flat.iterdir():
        item.rename(root / "train_data_v2" / item.name)
    rules = json.loads((root / "garbage_classify_rule.json").read_text(encoding="utf-8"))
    dataset = load_dataset(root)
    assert len(dataset.samples) == 12 and dataset.num_classes == 4
    assert all(s.path.parent.name == "train_data_v2" for s in dataset.samples)
    assert [lab.name for lab in dataset.labels] == [rules[str(i)].split("/", 1)[1] for i in range(4)]
    assert main(["dataset", "check", str(root)]) == 0
    assert "12 usable images, 0 problems, 4 classes" in capsys.readouterr().out


def test_synth_is_deterministic_per_seed(tmp_path: Path):
    a, b, c = (write_synthetic(tmp_path / n, 3, 2, seed=s, size=32) for n, s in (("a", 7), ("b", 7), ("c", 8)))
    assert (a / "img_4.jpg").read_bytes() == (b / "img_4.jpg").read_bytes()
    assert (a / "img_4.jpg").read_bytes() != (c / "img_4.jpg").read_bytes()


def test_class_folders_are_accepted(tmp_path: Path):
    rng = np.random.default_rng(0)
    for name in ("cans", "peels"):
        (tmp_path / name).mkdir()
        for i in range(3):
            write_jpeg(tmp_path / name / f"{i}.jpg", rng.integers(0, 255, (20, 20, 3), dtype=np.uint8))
    dataset = load_dataset(tmp_path)
    assert [lab.name for lab in dataset.labels] == ["cans", "peels"]
    assert len(dataset.samples) == 6 and dataset.samples[-1].label == 1


def test_stratified_split_is_9_to_1_per_class_and_fixed(tmp_path: Path):
    write_synthetic(tmp_path, 3, 20, size=16)
    samples = load_dataset(tmp_path).samples
    train, val = stratified_split(samples)
    assert len(val) == 6 and len(train) == 54
    assert sorted(s.label for s in val) == [0, 0, 1, 1, 2, 2]
    assert stratified_split(samples) == (train, val)
    assert not {s.path for s in train} & {s.path for s in val}


@pytest.fixture()
def broken(tmp_path: Path) -> Path:
    write_synthetic(tmp_path, 3, 3, size=24)
    (tmp_path / "img_0.jpg").unlink()  # missing image
    (tmp_path / "img_1.jpg").write_bytes(b"not a jpeg at all")  # unreadable image
    (tmp_path / "img_2.txt").write_text("img_2.jpg; 2\n", encoding="utf-8")  # does not parse
    (tmp_path / "img_3.txt").write_text("img_3.jpg, seven\n", encoding="utf-8")  # not an integer
    (tmp_path / "img_4.txt").write_text("img_4.jpg, 9\n", encoding="utf-8")  # out of range
    (tmp_path / "img_5.txt").write_text("img_6.jpg, 0\n", encoding="utf-8")  # duplicate name
    data = (tmp_path / "img_7.jpg").read_bytes()
    (tmp_path / "img_7.jpg").write_bytes(data[: len(data) // 2])  # truncated JPEG
    return tmp_path


def test_check_reports_every_broken_item(broken: Path):
    report = check_dataset(broken)
    text = "\n".join(report.problems)
    assert "img_0.txt: image 'img_0.jpg' is missing" in text
    assert "img_1.jpg: not a readable image" in text
    assert "img_2.txt: expected one line '<image>, <label index>'" in text
    assert "img_3.txt: label 'seven' is not an integer" in text
    assert "img_4.txt: label 9 out of range of garbage_classify_rule.json (0..2)" in text
    assert "duplicate image name 'img_6.jpg'" in text
    assert "img_7.jpg: truncated JPEG" in text
    assert len(report.problems) == 7
    assert len(report.dataset.samples) == 2


def test_check_cli_exit_codes_and_balance(broken: Path, tmp_path_factory, capsys):
    assert main(["dataset", "check", str(broken)]) == 1
    out = capsys.readouterr().out
    assert "7 problems" in out and "per bin:" in out
    good = write_synthetic(tmp_path_factory.mktemp("good"), 4, 2, size=24)
    assert main(["dataset", "check", str(good), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["images"] == 8
    assert report["per_bin"] == {"other": 2, "kitchen": 2, "recyclable": 2, "hazardous": 2}


def test_missing_dataset_and_bad_rules_are_one_line_errors(tmp_path: Path, capsys):
    assert main(["dataset", "check", str(tmp_path / "nope")]) == 2
    assert "dataset folder not found" in capsys.readouterr().err
    write_synthetic(tmp_path, 2, 1, size=16)
    (tmp_path / "garbage_classify_rule.json").write_text('{"0": "trash/x", "1": "other/y"}', encoding="utf-8")
    with pytest.raises(DatasetError, match="unknown bin 'trash'"):
        load_dataset(tmp_path)


def test_sample_keeps_the_format_and_each_class_share(tmp_path: Path, capsys):
    """The seed's sample.py, stratified: the seed's format (label files beside the images, the rules) and
    class folders of real photographs (scikit-image's), copied or linked."""
    from tests.support.realimages import write_photo_patches

    seed = tmp_path / "train_data_v2"
    write_synthetic(seed, num_classes=4, per_class=30, seed=0, size=32)
    photos = write_photo_patches(tmp_path / "photos", per_class=12, side=32)
    (photos / "brick").joinpath("extra.png").write_bytes((photos / "brick" / "0.png").read_bytes())  # 13 bricks
    assert main(["dataset", "sample", str(seed), "--out", str(tmp_path / "s1"), "--n", "30"]) == 0
    assert "30 images copied" in capsys.readouterr().out
    small = load_dataset(tmp_path / "s1")
    assert len(small.samples) == 30 and sorted(small.class_counts().values()) == [7, 7, 8, 8]
    assert [lab.name for lab in small.labels] == [lab.name for lab in load_dataset(seed).labels]
    assert all(not s.path.is_symlink() and read_image(s.path).shape == (32, 32, 3) for s in small.samples)

    assert main(["dataset", "sample", str(photos), "--out", str(tmp_path / "s2"), "--n", "61", "--link"]) == 0
    linked = load_dataset(tmp_path / "s2")
    counts = {linked.labels[k].name: v for k, v in linked.class_counts().items()}
    assert sum(counts.values()) == 61 and counts["brick"] == 7 and set(counts.values()) == {6, 7}
    assert all(s.path.is_symlink() and s.path.resolve().parent.parent == photos.resolve() for s in linked.samples)
    # the same seed draws the same images; a full folder and too many images are refused in one line
    assert main(["dataset", "sample", str(seed), "--out", str(tmp_path / "s3"), "--n", "30"]) == 0
    assert sorted(p.name for p in (tmp_path / "s1").iterdir()) == sorted(p.name for p in (tmp_path / "s3").iterdir())
    assert main(["dataset", "sample", str(seed), "--out", str(tmp_path / "s1"), "--n", "5"]) == 2
    assert main(["dataset", "sample", str(seed), "--out", str(tmp_path / "s4"), "--n", "500"]) == 2
    assert "--n 500: choose 1 to 120" in capsys.readouterr().err
