"""Class folders as users keep them: each class's bin by name (public layouts, <bin>__<name>, bins.yaml,
the rules file), the refusals that name their fix, and `dataset split`'s hold-out, disjoint by content."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from edge.cli import main
from edge.formats.dataset import load_dataset
from edge.formats.images import read_image, write_jpeg
from edge.formats.labels import load_rules
from edge.system.paths import default_rules_path


def folders(root: Path, names: list[str], per_class: int = 2) -> Path:
    """Class folders of small noise images (the bins are under test here, not the pixels)."""
    rng = np.random.default_rng(len(names))
    for name in names:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            write_jpeg(root / name / f"{i}.jpg", rng.integers(0, 255, (24, 24, 3), dtype=np.uint8))
    return root


def bins_of(root: Path) -> dict[str, str]:
    dataset = load_dataset(root)
    assert not dataset.bin_problems(), dataset.bin_problems()
    return {lab.name: lab.bin for lab in dataset.labels}


def test_the_public_layouts_get_their_bins_by_class_name(tmp_path: Path):
    trashnet = folders(tmp_path / "trashnet", ["cardboard", "glass", "metal", "paper", "plastic", "trash"])
    assert bins_of(trashnet) == {**dict.fromkeys(["cardboard", "glass", "metal", "paper", "plastic"], "recyclable")} | {
        "trash": "other"
    }
    names = ["battery", "biological", "cardboard", "clothes", "glass", "metal", "paper", "plastic", "shoes", "trash"]
    v2 = bins_of(folders(tmp_path / "gcv2", names))
    assert (v2["battery"], v2["biological"], v2["shoes"], v2["trash"]) == (
        "hazardous",
        "kitchen",
        "recyclable",
        "other",
    )
    assert bins_of(folders(tmp_path / "kaggle12", ["Brown-Glass", "white_glass", "Battery"])) == {
        "Brown-Glass": "recyclable",
        "white_glass": "recyclable",
        "Battery": "hazardous",
    }
    # garbage_classify_v2's 40 classes as folders named by item, in any order: each by its own name
    seed = {lab.name: lab.bin for lab in load_rules(default_rules_path())}
    picked = sorted(seed)[::5]
    assert bins_of(folders(tmp_path / "seed40", picked)) == {name: seed[name] for name in picked}


def test_bins_yaml_folder_names_and_rules_go_by_name_never_by_order(tmp_path: Path):
    root = folders(tmp_path / "mine", ["apple_cores", "hazardous__batteries", "tins", "yoghurt_pots"])
    # listed in another order than the folders, one key spelled differently, one bin in the seed's Chinese
    (root / "bins.yaml").write_text(
        "yoghurt pots: 其他垃圾\ntins: recyclable\nApple-Cores: kitchen\n", encoding="utf-8"
    )
    assert bins_of(root) == {
        "apple_cores": "kitchen",
        "batteries": "hazardous",
        "tins": "recyclable",
        "yoghurt_pots": "other",
    }
    assert load_dataset(root).bin_sources["batteries"] == "folder name"

    # a rules file beside class folders: matched by item name, or a folder named by its index; its
    # order (battery, egg shells, cans) is not the folders' (0, cans, egg shells)
    rules = folders(tmp_path / "rules", ["易拉罐", "蛋壳", "0"])
    (rules / "garbage_classify_rule.json").write_text(
        '{"0": "有害垃圾/干电池", "1": "厨余垃圾/蛋壳", "2": "可回收物/易拉罐"}', encoding="utf-8"
    )
    dataset = load_dataset(rules)
    assert [(lab.index, lab.name, lab.bin) for lab in dataset.labels] == [
        (0, "干电池", "hazardous"),
        (1, "易拉罐", "recyclable"),
        (2, "蛋壳", "kitchen"),
    ]
    assert [(s.path.parent.name, s.label) for s in dataset.samples][::2] == [("0", 0), ("易拉罐", 1), ("蛋壳", 2)]


def test_classes_without_a_bin_are_refused_with_the_command_that_fixes_it(tmp_path: Path, capsys):
    root = folders(tmp_path / "phone", ["cans", "glass", "peels", "pizza boxes"])
    assert main(["dataset", "check", str(root)]) == 1
    out = capsys.readouterr().out
    assert re.search(r"^peels\s+-\s+2\s+none$", out, re.M), out
    assert re.search(r"^glass\s+recyclable\s+2\s+TrashNet$", out, re.M), out
    assert main(["train", "--data", str(root), "--out", str(tmp_path / "run"), "--weights", "none"]) == 2
    err = capsys.readouterr().err
    assert not (tmp_path / "run" / "model.keras").exists()
    fix = re.search(r"say where they go: (smartbin dataset bins .*?) \(BIN", err)
    assert fix, err
    command = fix.group(1).replace("=BIN", "=")
    answers = iter(["recyclable", "kitchen", "recyclable"])
    args = [a + next(answers) if a.endswith("=") else a for a in shlex.split(command)[1:]]
    assert main(args) == 0
    assert bins_of(root) == {
        "cans": "recyclable",
        "glass": "recyclable",
        "peels": "kitchen",
        "pizza boxes": "recyclable",
    }
    assert yaml.safe_load((root / "bins.yaml").read_text(encoding="utf-8"))["peels"] == "kitchen"


def test_every_class_in_one_bin_is_refused_and_force_trains_anyway(tmp_path: Path, capsys):
    from convert.training.train import TrainConfig, _load

    root = folders(tmp_path / "recycling", ["cardboard", "glass", "metal"])
    assert main(["dataset", "check", str(root), "--json"]) == 1
    assert "all 3 classes go to the bin 'recyclable'" in " ".join(
        __import__("json").loads(capsys.readouterr().out)["problems"]
    )
    with pytest.raises(Exception, match="smartbin dataset bins"):
        _load(TrainConfig(data=str(root), out=str(tmp_path / "run")))
    dataset, (train, val) = _load(TrainConfig(data=str(root), out=str(tmp_path / "run"), force=True))
    assert dataset.num_classes == 3 and len(train) + len(val) == 6


def test_a_wrong_bin_names_the_file_key_and_bins(tmp_path: Path, capsys):
    root = folders(tmp_path / "d", ["cans", "peels"])
    (root / "bins.yaml").write_text("cans: recyclable\npeels: compost\n", encoding="utf-8")
    assert main(["dataset", "check", str(root)]) == 2
    err = capsys.readouterr().err
    assert "bins.yaml: peels: unknown bin 'compost'" in err and "kitchen" in err
    assert main(["dataset", "bins", str(root), "--set", "tins=kitchen"]) == 2
    (root / "bins.yaml").unlink()
    assert main(["dataset", "bins", str(root), "--set", "tins=kitchen"]) == 2
    assert "no class 'tins'" in capsys.readouterr().err


# ---------------------------------------------------------------- split


def planted(tmp_path: Path) -> tuple[Path, list[tuple[Path, Path]]]:
    """Real photographs (scikit-image's) as class folders, with an exact copy and a near copy (smaller,
    recompressed, brighter) of some images planted under other names in the same class."""
    from tests.support.realimages import write_photo_patches

    root = write_photo_patches(tmp_path / "photos", per_class=20, side=64)
    pairs = []
    for k, folder in enumerate(sorted(p for p in root.iterdir() if p.is_dir())):
        original = folder / "3.png"
        copy = folder / f"copy_{k}.png"
        copy.write_bytes(original.read_bytes())
        image = read_image(original)
        small = cv2.resize(image, (56, 56), interpolation=cv2.INTER_AREA)
        near = folder / f"near_{k}.jpg"
        write_jpeg(near, np.clip(small.astype(np.int16) + 12, 0, 255).astype(np.uint8), quality=60)
        pairs += [(original, copy), (original, near)]
    return root, pairs


def side_of(out: Path) -> dict[str, str]:
    """image (class/file) -> train or holdout."""
    return {
        f"{p.parent.name}/{p.name}": part
        for part in ("train", "holdout")
        for p in (out / part).glob("*/*")
        if p.is_file()
    }


def test_split_keeps_copies_together_is_stratified_and_repeatable(tmp_path: Path, capsys):
    root, pairs = planted(tmp_path)
    assert main(["dataset", "split", str(root), "--out", str(tmp_path / "a"), "--holdout", "0.2"]) == 0
    said = capsys.readouterr().out
    sides = side_of(tmp_path / "a")
    assert len(sides) == 22 * 10
    for original, twin in pairs:
        key = lambda p: f"{p.parent.name}/{p.name}"  # noqa: E731
        assert sides[key(original)] == sides[key(twin)], (original, twin)
    exact, near = map(int, re.search(r"(\d+) exact and (\d+) near", said).groups())
    assert exact == 10 and near >= 10
    holdout = load_dataset(tmp_path / "a" / "holdout")
    per_class = {holdout.labels[k].name: n for k, n in holdout.class_counts().items()}
    assert len(per_class) == 10 and all(3 <= n <= 6 for n in per_class.values()), per_class  # 20 % of 22, whole items
    assert bins_of(tmp_path / "a" / "holdout") == bins_of(root)  # bins.yaml goes along

    assert main(["dataset", "split", str(root), "--out", str(tmp_path / "b"), "--holdout", "0.2"]) == 0
    assert side_of(tmp_path / "b") == sides
    assert main(["dataset", "split", str(root), "--out", str(tmp_path / "c"), "--holdout", "0.2", "--seed", "1"]) == 0
    assert side_of(tmp_path / "c") != sides


def test_split_of_the_seed_format_and_its_refusals(tmp_path: Path, capsys):
    from convert.data.synth import write_synthetic

    seed = write_synthetic(tmp_path / "seed", 4, 10, seed=0, size=32)
    assert main(["dataset", "split", str(seed), "--out", str(tmp_path / "s"), "--link"]) == 0
    train, holdout = load_dataset(tmp_path / "s" / "train"), load_dataset(tmp_path / "s" / "holdout")
    assert len(train.samples) + len(holdout.samples) == 40 and set(holdout.class_counts()) == {0, 1, 2, 3}
    assert not {s.path.name for s in train.samples} & {s.path.name for s in holdout.samples}
    assert all(s.path.is_symlink() for s in holdout.samples)
    assert main(["dataset", "split", str(seed), "--out", str(tmp_path / "s")]) == 2
    assert main(["dataset", "split", str(seed), "--out", str(tmp_path / "t"), "--holdout", "1.5"]) == 2
    assert "--holdout 1.5" in capsys.readouterr().err
