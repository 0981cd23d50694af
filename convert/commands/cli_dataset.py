"""`smartbin dataset ...`: make, sample, split and check a dataset, and say which bin each class goes to.

No TensorFlow here: these run anywhere the package is installed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from edge.cli import add_command as _add
from edge.errors import SmartbinError


def cmd_dataset_synth(args: argparse.Namespace) -> int:
    from convert.data.synth import write_synthetic

    out = write_synthetic(args.out, args.classes, args.per_class, args.seed, args.size)
    print(f"wrote {args.classes * args.per_class} images of {args.classes} classes to {out}")
    return 0


def _print_bins(dataset, counts: dict[str, int] | None = None) -> None:
    """The class -> bin table, with where each bin came from."""
    width = max(len(lab.name) for lab in dataset.labels)
    print(f"{'class':<{width}}  {'bin':<10}  {'images':>6}  bin from")
    for lab in dataset.labels:
        bin_name = "-" if lab.name in dataset.unmapped else lab.bin
        images = "" if counts is None else str(counts.get(lab.name, 0))
        print(f"{lab.name:<{width}}  {bin_name:<10}  {images:>6}  {dataset.bin_sources.get(lab.name, '')}")


def cmd_dataset_check(args: argparse.Namespace) -> int:
    from convert.data.pull import field_summary
    from convert.data.sampling import check_dataset

    report = check_dataset(args.dir)
    if args.json:
        print(report.to_json())
        return 0 if report.ok else 1
    per_class, per_bin = report.balance()
    _print_bins(report.dataset, per_class)
    for problem in report.problems:
        print(f"problem: {problem}")
    print(
        f"{len(report.dataset.samples)} usable images, {len(report.problems)} problems, "
        f"{report.dataset.num_classes} classes"
    )
    print("per bin: " + ", ".join(f"{b} {n}" for b, n in per_bin.items()))
    field = field_summary(Path(args.dir))
    if field:
        print(field)
    return 0 if report.ok else 1


def cmd_dataset_bins(args: argparse.Namespace) -> int:
    from edge.formats.classbins import write_bins
    from edge.formats.dataset import is_seed_format, load_dataset

    root = Path(args.dir)
    if args.set:
        if is_seed_format(root):
            raise SmartbinError(f"{root}: the seed's format takes its bins from garbage_classify_rule.json")
        pairs = [item.partition("=") for item in args.set]
        if bad := [name for name, eq, value in pairs if not eq or not name or not value]:
            raise SmartbinError(f"--set {bad[0]!r}: expected CLASS=BIN, e.g. --set cans=recyclable")
        names = {lab.name for lab in load_dataset(root).labels}
        if unknown := [name for name, _, _ in pairs if name not in names]:
            raise SmartbinError(f"--set: no class {unknown[0]!r} in {root} (classes: {', '.join(sorted(names))})")
        print(f"wrote {write_bins(root, {name: value for name, _, value in pairs})}")
    dataset = load_dataset(root)
    _print_bins(dataset)
    problems = dataset.bin_problems()
    for problem in problems:
        print(f"problem: {problem}")
    return 1 if problems else 0


def cmd_dataset_sample(args: argparse.Namespace) -> int:
    from convert.data.sampling import sample_dataset

    counts = sample_dataset(args.dir, args.out, args.n, args.seed, args.link)
    how = "linked" if args.link else "copied"
    print(f"{sum(counts.values())} images {how} to {args.out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


def cmd_dataset_split(args: argparse.Namespace) -> int:
    from convert.data.holdout import split_dataset

    result = split_dataset(args.dir, args.out, args.holdout, args.seed, args.link, args.near)
    print(
        f"{result.train} images to {Path(args.out) / 'train'}, {result.holdout} to {Path(args.out) / 'holdout'}; "
        f"{result.exact} exact and {result.near} near duplicates kept on one side"
        + (f"; {result.conflicts} images are in two classes (fix their labels)" if result.conflicts else "")
    )
    return 0


def add_dataset_commands(sub: argparse._SubParsersAction) -> None:
    """dataset synth/sample/split/check/bins."""
    dataset = sub.add_parser("dataset", help="make or check a dataset", description="Make or check a dataset.")
    dsub = dataset.add_subparsers(dest="dataset_command", metavar="ACTION", required=True)
    p = _add(dsub, "synth", cmd_dataset_synth, "write a synthetic dataset in the garbage_classify_v2 format")
    p.add_argument("--out", required=True, help="folder to write")
    p.add_argument("--classes", type=int, default=6, help="number of classes (1-40, default 6)")
    p.add_argument("--per-class", type=int, default=30, help="images per class (default 30)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=128, help="image side in pixels (default 128)")
    p = _add(dsub, "sample", cmd_dataset_sample, "draw N images of a dataset, each class keeping its share")
    p.add_argument("dir", help="the full dataset (the seed's format or class folders)")
    p.add_argument("--out", required=True, help="new folder for the sample, in the same format")
    p.add_argument("--n", type=int, required=True, help="images to draw, e.g. 3000 of garbage_classify_v2's 15,000")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--link", action="store_true", help="symbolic links to the images instead of copies")
    p = _add(
        dsub, "split", cmd_dataset_split, "a stratified hold-out that shares no image (nor near copy) with training"
    )
    p.add_argument("dir", help="the dataset (the seed's format or class folders)")
    p.add_argument("--out", required=True, help="new folder: OUT/train and OUT/holdout, in the same format")
    p.add_argument("--holdout", type=float, default=0.1, help="share of each class held out (default 0.1)")
    p.add_argument("--seed", type=int, default=0, help="the same seed gives the same split")
    p.add_argument("--link", action="store_true", help="symbolic links to the images instead of copies")
    p.add_argument(
        "--near",
        type=int,
        default=8,
        help="images whose 64-bit perceptual hashes differ in at most this many bits are one item (default 8; -1: "
        "exact copies only)",
    )
    p = _add(dsub, "check", cmd_dataset_check, "the class/bin table, every broken item and the balance")
    p.add_argument("dir")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = _add(dsub, "bins", cmd_dataset_bins, "which bin each class goes to; --set writes the dataset's bins.yaml")
    p.add_argument("dir", help="a class-folder dataset")
    p.add_argument("--set", action="append", metavar="CLASS=BIN", help="e.g. --set cans=recyclable (again for more)")
