"""The workstation's half of the `smartbin` command: dataset, train, convert, evaluate, predict, demo.

``register`` adds them to the `smartbin` command (edge/cli.py) through the ``smartbin.commands``
entry-point group (setup.py), so that `edge` never imports `convert`. Subcommands that need
TensorFlow import it when they run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from convert.commands.cli_dataset import add_dataset_commands
from convert.commands.cli_head import add_head_commands
from convert.commands.cli_review import add_review_commands
from convert.commands.cli_samples import cmd_features, cmd_samples_pull, quiet_tensorflow
from convert.export.recipes import ONNX_RECIPES
from convert.training.backbones import BACKBONES, DEFAULT_BACKBONE, SMALL_BACKBONE
from convert.training.distribute import PRECISIONS
from edge.cli import add_command as _add
from edge.errors import SmartbinError
from edge.formats.variants import ONNX_VARIANTS, TFLITE_VARIANTS, VARIANT_FILES
from edge.system.renamed import add_renamed
from edge.vision.decision import VoteSettings
from edge.web.reader import add_page_options


# ---------------------------------------------------------------- train / convert / evaluate
def cmd_train(args: argparse.Namespace) -> int:
    quiet_tensorflow()
    from convert.training.train import TrainConfig, train

    config = TrainConfig(
        data=args.data[0] if len(args.data) == 1 else args.data,
        out=args.out,
        backbone=args.backbone,
        weights=args.weights,
        img_size=args.img_size,
        epochs=args.epochs,
        batch_size=args.batch_size,
        fine_tune_epochs=args.fine_tune_epochs,
        val_fraction=args.val_fraction,
        seed=args.seed,
        bn_batches=args.bn_batches,
        devices=args.devices,
        precision=args.precision,
        feature_cache=args.feature_cache,
        feature_passes=args.feature_passes,
        force=args.force,
        class_weights=args.class_weights,
    )
    out = train(config)
    if out is None:
        print(f"this worker's part is done; the chief (worker 0) writes {args.out}")
        return 0
    import json

    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    print(
        f"trained {out}/model.keras: validation top-1 {report['top1']:.1%}, top-5 {report['top5']:.1%}, "
        f"bin accuracy {report['bin_accuracy']:.1%}"
    )
    speed = json.loads((out / "throughput.json").read_text(encoding="utf-8"))
    print(
        ", ".join(f"{p['phase']} {p['images_per_s']:.0f} images/s" for p in speed["phases"])
        + f" ({', '.join(speed['devices'])}, {speed['precision']})"
    )
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    quiet_tensorflow()
    from convert.export.exporter import ExportOptions, export_bundle

    options = ExportOptions(
        variants=[v.strip() for v in args.variants.split(",") if v.strip()],
        onnx=args.onnx,
        data=args.data,
        calib_samples=args.calib_samples,
        gate_images=args.gate_images,
        min_confidence=args.min_confidence,
        onnx_target=args.onnx_target,
        allow_accuracy_drop=args.allow_accuracy_drop,
        name=args.name,
        probes=not args.no_probes,
        quant_report=args.quant_report,
        mixed_precision=args.mixed_precision,
        force=args.force,
        jobs=args.jobs,
        split_head=args.split_head,
    )
    return export_bundle(args.model, args.out, options)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from convert.evaluation.evaluate import evaluation_report, print_evaluation
    from edge.benchmark.accuracy import evaluate_bundle

    probs: dict = {}
    result = evaluate_bundle(args.bundle, args.data, args.backend, args.threads, probs)
    if args.json:
        import json

        print(json.dumps(result, ensure_ascii=False, indent=2))
    else:
        print_evaluation(result)
    if args.report:
        variant = evaluation_report(args.bundle, args.data, probs, args.variant, Path(args.report))
        print(f"report of {variant}: {Path(args.report) / 'report.html'}", file=sys.stderr if args.json else sys.stdout)
    return 0


# ---------------------------------------------------------------- predict
def cmd_predict(args: argparse.Namespace) -> int:
    from edge.formats.bundle import is_bundle

    if not is_bundle(args.model):
        quiet_tensorflow()
    from convert.evaluation.predict import PredictOptions, format_result, open_predictor, predict_one

    options = PredictOptions(
        tta=args.tta, top_k=args.top_k, backend=args.backend, variant=args.variant, threads=args.threads
    )
    predictor = open_predictor(args.model, options)
    failures = 0
    for source in args.images:
        try:
            print(format_result(predict_one(predictor, source, options), args.json))
        except SmartbinError as exc:
            failures += 1
            print(f"smartbin: error: {exc}", file=sys.stderr)
    return 1 if failures else 0


def cmd_demo(args: argparse.Namespace) -> int:
    quiet_tensorflow()
    from pathlib import Path

    from convert.demo.demo import run_demo

    return run_demo(Path(args.out), args.bench_runs, args.backbone)


def _add_data_commands(sub: argparse._SubParsersAction) -> None:
    """dataset ..., samples pull and features."""
    add_dataset_commands(sub)
    samples = sub.add_parser("samples", help="field samples from a device", description="Field samples.")
    ssub = samples.add_subparsers(dest="samples_command", metavar="ACTION", required=True)
    add_review_commands(sub, ssub)
    p = _add(ssub, "pull", cmd_samples_pull, "a device's kept samples as a dataset to train on")
    p.add_argument(
        "source",
        help="a folder of samples: `smartbin samples fetch`'s, or a copy of a bin's (/var/lib/smartbin/samples)",
    )
    add_page_options(p)  # for a source that is a bin's page: still read, one release, with a line naming fetch
    p.add_argument("--out", required=True, help="dataset folder to write (new or empty)")
    p.add_argument(
        "--rank-with",
        metavar="RUN",
        help="a run folder: rank the unreviewed samples by distance to its training images (most novel first)",
    )
    p.add_argument("--feature-cache", metavar="DIR", help="keep the embeddings here for the next pull")
    p = _add(sub, "features", cmd_features, "write the backbone's embeddings of a dataset or of pulled samples")
    p.add_argument("run", help="run folder or .keras file")
    p.add_argument("--data", required=True, action="append", help="dataset folder (again to add more)")
    p.add_argument("--out", required=True, help="the .npz to write (paths, labels, features)")
    add_renamed(p, "--feature-cache", "--cache", metavar="DIR", help="keep the features here (as train's cache)")


def _add_train(sub: argparse._SubParsersAction) -> None:
    """train: a run folder from one or more datasets."""
    p = _add(sub, "train", cmd_train, "train the ResNet classifier on a dataset (workstation)")
    p.add_argument(
        "--data",
        required=True,
        action="append",
        help="dataset folder (seed format or class folders); again to add more, e.g. pulled field samples",
    )
    p.add_argument("--out", required=True, help="run folder to write")
    p.add_argument(
        "--backbone",
        default=DEFAULT_BACKBONE,
        choices=BACKBONES,
        help="resnet-mini: a small residual network for small boards (no ImageNet weights)",
    )
    p.add_argument("--weights", default="imagenet", help="imagenet (downloads), none, or a backbone weights file")
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--fine-tune-epochs", type=int, default=0, help="then unfreeze the last stage for N epochs")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--devices",
        default="auto",
        help="auto (every GPU TensorFlow sees, else the CPU), all, a list (gpu:0,gpu:1), or cpu:N (N CPU replicas); "
        "several machines: set TF_CONFIG on each (docs/training.md)",
    )
    p.add_argument(
        "--precision",
        default="float32",
        choices=PRECISIONS,
        help="mixed_float16 on NVIDIA GPUs (loss scaled dynamically), mixed_bfloat16 on recent CPUs/TPUs",
    )
    p.add_argument(
        "--feature-cache",
        metavar="DIR",
        help="with a frozen backbone, compute its features once per image and augmentation pass, keep them in "
        "DIR and train the head on them (a later run reuses them)",
    )
    p.add_argument(
        "--feature-passes", type=int, default=0, help="augmentation passes the cache holds (default: one per epoch)"
    )
    _add_train_balance(p)


def _add_train_balance(p: argparse.ArgumentParser) -> None:
    """train's options on how the classes and the BatchNorms come out."""
    p.add_argument(
        "--force",
        action="store_true",
        help="train even when a class has no bin (it goes to other) or every class goes to one bin",
    )
    p.add_argument(
        "--class-weights",
        default="even",
        choices=["even", "none"],
        help="even: every class weighs as much in the loss however many images it has (20 answers of a new item "
        "beside 300 of each old class); none: every image the same, a class's share of the images is its prior",
    )
    p.add_argument(
        "--bn-batches",
        type=int,
        default=20,
        help="after training, re-measure the trained BatchNorms' statistics on N training batches (0: never); "
        "kept when the validation top-1 is not lower",
    )


def _add_convert(sub: argparse._SubParsersAction) -> None:
    """convert: a run folder to a verified bundle."""
    p = _add(sub, "convert", cmd_convert, "export a trained model to a verified bundle (TFLite variants, ONNX)")
    p.add_argument("model", help="run folder or .keras file")
    p.add_argument("--out", required=True, help="bundle folder to write")
    p.add_argument(
        "--variants",
        default=",".join(TFLITE_VARIANTS),
        help=f"TFLite variants to write (default %(default)s); --onnx adds {' and '.join(ONNX_VARIANTS)}",
    )
    p.add_argument(
        "--onnx",
        action="store_true",
        help="also write model.onnx (TensorRT/CUDA on Jetson) and model_int8.onnx (ONNX Runtime int8 for x86 CPUs)",
    )
    p.add_argument(
        "--onnx-target",
        default="auto",
        choices=["auto", *ONNX_RECIPES],
        help="the CPU model_int8.onnx will run on (auto: this machine's); sets U8S8/S8S8 and 7/8-bit weights",
    )
    p.add_argument("--data", help="dataset for calibration and the accuracy gate (default: the training data)")
    p.add_argument(
        "--calibration-images",
        "--calib-samples",
        dest="calib_samples",
        type=int,
        default=100,
        help="training images for int8 calibration, drawn evenly across classes (default 100)",
    )
    _add_gate_options(p)
    p.add_argument(
        "--jobs",
        type=int,
        choices=(1, 2),
        default=2,
        help="2: a model over 20 MB converts float16, dynamic and int8 in a second process on 2+ cores "
        "(~2 GB more memory for ResNet50); 1: everything in one (default %(default)s)",
    )
    p.add_argument(
        "--split-head",
        action="store_true",
        help="a bundle in two parts: the variants are the backbone, the head (head.npz, a few MB) beside them, "
        "replaceable alone (docs/quantization.md)",
    )
    p.add_argument("--name", help="model name in the manifest (default: the run folder's name)")
    p.add_argument("--force", action="store_true", help="replace --out even when it is not a bundle folder")
    p.add_argument("--allow-accuracy-drop", action="store_true", help="write variants that miss the gate (marked)")
    p.add_argument(
        "--no-probes",
        action="store_true",
        help="leave out the peak probes (~5 MB, ~10 MB with --onnx); the bench then uses the nominal peak alone",
    )


def _add_gate_options(p: argparse.ArgumentParser) -> None:
    """How `convert` gates the quantized variants and what it does when one misses."""
    p.add_argument(
        "--gate-images",
        type=int,
        default=500,
        help="images the agreement with Keras is measured on: held-out, then spare training images, then "
        "flipped/brightened copies (default 500)",
    )
    p.add_argument(
        "--min-confidence",
        type=float,
        default=VoteSettings.min_confidence,
        help="quantized variants must agree where either model is this sure (the device's decision.min_confidence, "
        "default %(default)s)",
    )
    p.add_argument(
        "--quant-report",
        action="store_true",
        help="write quantization.md/.json (per-layer error) even when the integer variants pass their gates",
    )
    p.add_argument(
        "--no-mixed-precision",
        dest="mixed_precision",
        action="store_false",
        help="do not keep layers in float when a full-integer variant misses its gate",
    )


def _add_use_commands(sub: argparse._SubParsersAction) -> None:
    """evaluate, predict and demo."""
    p = _add(sub, "evaluate", cmd_evaluate, "accuracy and agreement of every variant of a bundle on a dataset")
    p.add_argument("bundle")
    p.add_argument("--data", required=True)
    p.add_argument("--backend", default="auto")
    p.add_argument("--threads", type=int)
    p.add_argument("--json", action="store_true")
    p.add_argument("--report", metavar="DIR", help="write the training report's page and PNGs for one variant")
    p.add_argument("--variant", help="the variant --report shows (default: int8 where the bundle has it)")

    p = _add(sub, "predict", cmd_predict, "classify images with a run folder, .keras file or bundle")
    p.add_argument("model", help="run folder, .keras file or bundle folder")
    p.add_argument("images", nargs="+", help="image files or http(s) URLs")
    p.add_argument("--tta", type=int, default=1, help="average N crops (the seed's test-time augmentation)")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--backend", default="auto", help="bundles: auto, litert, tflite_runtime, tensorflow, onnxruntime")
    p.add_argument("--variant", help=f"bundles: one of {', '.join(VARIANT_FILES)}")
    p.add_argument("--threads", type=int)
    p.add_argument("--json", action="store_true")
    p = _add(sub, "demo", cmd_demo, "the whole path offline: data -> train -> convert -> daemon -> MQTT -> bench")
    p.add_argument("--out", default="demo-output")
    p.add_argument("--bench-runs", type=int, default=50)
    p.add_argument(
        "--backbone",
        default=SMALL_BACKBONE,
        choices=[SMALL_BACKBONE, DEFAULT_BACKBONE],
        help="the network the demo trains (resnet50: the users' one, several minutes more on 2 cores)",
    )


def register(sub: argparse._SubParsersAction) -> None:
    """Add the workstation's subcommands to the `smartbin` parser (the ``smartbin.commands`` entry point)."""
    for add in (_add_data_commands, _add_train, _add_convert, _add_use_commands, add_head_commands):
        add(sub)
