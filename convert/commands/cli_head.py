"""`smartbin head train`: a new head for a bundle in two parts, from the review station's answers (issue 52)."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from convert.commands.cli_samples import quiet_tensorflow
from edge.cli import add_command


def cmd_head_train(args: argparse.Namespace) -> int:
    quiet_tensorflow()
    from convert.training.teach import teach

    out = Path(args.out)
    data = [Path(d) for d in args.data]
    taught = teach(Path(args.samples), Path(args.bundle), data, out, Path(args.cache), args.epochs)
    added = ", ".join(taught.added) or "none (the same classes, trained further)"
    print(f"new classes: {added}; examples per class: {taught.examples}")
    print(
        f"features {taught.seconds['features']:.1f} s ({taught.computed} training images through the backbone, "
        f"the rest cached), head {taught.seconds['train']:.1f} s, in all {taught.seconds['total']:.1f} s"
    )
    if args.holdout:
        from edge.fleet.gate import hold_out

        gate = hold_out(out, Path(args.bundle), Path(args.holdout), taught.variant)
        print(gate.line())
        if gate.refusal and not args.force:
            shutil.rmtree(out)
            print(f"refused by the hold-out gate: {gate.refusal}; nothing kept (--force keeps it)")
            return 1
    print(f"{out}: its head alone goes to the bins with: smartbin bundle pack {out} --head-only")
    return 0


def add_head_commands(sub: argparse._SubParsersAction) -> None:
    """``head train``."""
    head = sub.add_parser("head", help="a bundle's head", description="The head of a bundle in two parts.")
    hsub = head.add_subparsers(dest="head_command", metavar="ACTION", required=True)
    p = add_command(hsub, "train", cmd_head_train, "teach a new item: a new head from the review station's answers")
    p.add_argument("samples", help="the review folder: samples with features, answered (new labels: new classes)")
    p.add_argument("--bundle", required=True, help="the bundle in two parts the bins serve")
    p.add_argument(
        "--data", required=True, action="append", help="the dataset(s) the bundle was trained on (features cached)"
    )
    p.add_argument("--out", required=True, help="the new bundle's folder")
    p.add_argument("--holdout", help="held-out images: the new bundle must sort them as well as the serving one")
    p.add_argument("--force", action="store_true", help="keep a bundle the hold-out gate refuses")
    p.add_argument("--epochs", type=int, default=30, help="passes over the features (default %(default)s)")
    p.add_argument(
        "--cache",
        default=str(Path.home() / ".cache" / "smartbin" / "features"),
        help="where the training set's features are kept, by backbone and image (default %(default)s)",
    )
