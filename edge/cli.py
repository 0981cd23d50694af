"""The `smartbin` command. Subcommands that need TensorFlow import it only when they run."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence

from edge import __version__
from edge.errors import ConfigError, SmartbinError

log = logging.getLogger("smartbin")

EXIT_USER_ERROR = 2
EXIT_CONFIG_ERROR = 78  # EX_CONFIG: systemd's RestartPreventExitStatus stops a restart loop on it


def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# ---------------------------------------------------------------- dataset
def cmd_dataset_synth(args: argparse.Namespace) -> int:
    from convert.synth import write_synthetic

    out = write_synthetic(args.out, args.classes, args.per_class, args.seed, args.size)
    print(f"wrote {args.classes * args.per_class} images of {args.classes} classes to {out}")
    return 0


def cmd_dataset_check(args: argparse.Namespace) -> int:
    from convert.dataset import check_dataset

    report = check_dataset(args.dir)
    if args.json:
        print(report.to_json())
        return 0 if report.ok else 1
    for problem in report.problems:
        print(f"problem: {problem}")
    per_class, per_bin = report.balance()
    print(
        f"{len(report.dataset.samples)} usable images, {len(report.problems)} problems, "
        f"{report.dataset.num_classes} classes"
    )
    print("per bin: " + ", ".join(f"{b} {n}" for b, n in per_bin.items()))
    print("per class: " + ", ".join(f"{c} {n}" for c, n in per_class.items()))
    return 0 if report.ok else 1


# ---------------------------------------------------------------- train / convert / evaluate
def cmd_train(args: argparse.Namespace) -> int:
    _quiet_tensorflow()
    from convert.train import TrainConfig, train

    config = TrainConfig(
        data=args.data,
        out=args.out,
        backbone=args.backbone,
        weights=args.weights,
        img_size=args.img_size,
        epochs=args.epochs,
        batch_size=args.batch_size,
        fine_tune_epochs=args.fine_tune_epochs,
        val_fraction=args.val_fraction,
        seed=args.seed,
    )
    out = train(config)
    import json

    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    print(
        f"trained {out}/model.keras: validation top-1 {report['top1']:.1%}, top-5 {report['top5']:.1%}, "
        f"bin accuracy {report['bin_accuracy']:.1%}"
    )
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    _quiet_tensorflow()
    from convert.export import ExportOptions, export_bundle

    options = ExportOptions(
        variants=[v.strip() for v in args.variants.split(",") if v.strip()],
        onnx=args.onnx,
        data=args.data,
        calib_samples=args.calib_samples,
        allow_accuracy_drop=args.allow_accuracy_drop,
        name=args.name,
    )
    return export_bundle(args.model, args.out, options)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from convert.evaluate import evaluate_bundle, print_evaluation

    result = evaluate_bundle(args.bundle, args.data, args.backend, args.threads)
    if args.json:
        import json

        print(json.dumps(result, ensure_ascii=False, indent=2))
    else:
        print_evaluation(result)
    return 0


# ---------------------------------------------------------------- predict
def cmd_predict(args: argparse.Namespace) -> int:
    from edge.bundle import is_bundle

    if not is_bundle(args.model):
        _quiet_tensorflow()
    from convert.predict import PredictOptions, format_result, open_predictor, predict_one

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


# ---------------------------------------------------------------- device
def _service(start: Callable[[str], int], config: str) -> int:
    """Run a systemd service's main function. Anything wrong before it runs (config, model, outbox)
    will not fix itself by restarting: exit with the code RestartPreventExitStatus knows."""
    try:
        return start(config)
    except SmartbinError as exc:
        raise ConfigError(str(exc)) from None


def cmd_run(args: argparse.Namespace) -> int:
    from edge.service.daemon import run_daemon

    return _service(run_daemon, args.config)


def cmd_config_check(args: argparse.Namespace) -> int:
    from edge.config import load_config

    config = load_config(args.file)
    print(f"{args.file}: OK (device {config.device_id}, source {config.source.uri}, model {config.model.bundle})")
    return 0


def cmd_config_show(args: argparse.Namespace) -> int:
    import yaml

    from edge.config import load_config, masked

    print(yaml.safe_dump(masked(load_config(args.file)), sort_keys=False, allow_unicode=True), end="")
    return 0


def cmd_actuator(args: argparse.Namespace) -> int:
    from edge.service.actuator import run_actuator

    return _service(run_actuator, args.config)


def cmd_fleet_sim(args: argparse.Namespace) -> int:
    from edge.tools.fleetsim import format_report, run_fleet
    from edge.tools.localbroker import LocalBroker

    broker = None
    if args.broker:
        host, port = args.broker.rsplit(":", 1)
    else:
        broker = LocalBroker(persistence=False).start()
        host, port = "127.0.0.1", broker.port
    try:
        report = run_fleet(args.bins, args.duration, host, int(port), args.rate)
    finally:
        if broker:
            broker.close()
    print(format_report(report))
    return 0 if report["lost"] == 0 else 1


def cmd_bench(args: argparse.Namespace) -> int:
    from edge.bench import main as bench_main

    return bench_main(args.bench_args)


def cmd_demo(args: argparse.Namespace) -> int:
    _quiet_tensorflow()
    from pathlib import Path

    from convert.demo import run_demo

    return run_demo(Path(args.out), args.bench_runs)


# ---------------------------------------------------------------- parser
def _add(sub, name: str, func: Callable[[argparse.Namespace], int], help_text: str) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=help_text, description=help_text)
    parser.set_defaults(func=func)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smartbin", description="Train, convert and run the smart bin classifier.")
    parser.add_argument("--version", action="version", version=f"smartbin {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    dataset = sub.add_parser("dataset", help="make or check a dataset", description="Make or check a dataset.")
    dsub = dataset.add_subparsers(dest="dataset_command", metavar="ACTION", required=True)
    p = _add(dsub, "synth", cmd_dataset_synth, "write a synthetic dataset in the garbage_classify_v2 format")
    p.add_argument("--out", required=True, help="folder to write")
    p.add_argument("--classes", type=int, default=6, help="number of classes (1-40, default 6)")
    p.add_argument("--per-class", type=int, default=30, help="images per class (default 30)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=128, help="image side in pixels (default 128)")
    p = _add(dsub, "check", cmd_dataset_check, "report every broken item and the class/bin balance")
    p.add_argument("dir")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = _add(sub, "train", cmd_train, "train the ResNet classifier on a dataset (workstation)")
    p.add_argument("--data", required=True, help="dataset folder (seed format or class folders)")
    p.add_argument("--out", required=True, help="run folder to write")
    p.add_argument("--backbone", default="resnet50", choices=["resnet50", "resnet101", "resnet152"])
    p.add_argument("--weights", default="imagenet", help="imagenet (downloads), none, or a backbone weights file")
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--fine-tune-epochs", type=int, default=0, help="then unfreeze the last stage for N epochs")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)

    p = _add(sub, "convert", cmd_convert, "export a trained model to a verified bundle (TFLite variants, ONNX)")
    p.add_argument("model", help="run folder or .keras file")
    p.add_argument("--out", required=True, help="bundle folder to write")
    p.add_argument("--variants", default="float32,float16,dynamic,int8")
    p.add_argument(
        "--onnx",
        action="store_true",
        help="also write model.onnx (TensorRT/CUDA on Jetson) and model_int8.onnx (ONNX Runtime int8 for x86 CPUs)",
    )
    p.add_argument("--data", help="dataset for calibration and the accuracy gate (default: the training data)")
    p.add_argument("--calib-samples", type=int, default=100)
    p.add_argument("--name", help="model name in the manifest (default: the run folder's name)")
    p.add_argument("--allow-accuracy-drop", action="store_true", help="write variants that miss the gate (marked)")

    p = _add(sub, "evaluate", cmd_evaluate, "accuracy and agreement of every variant of a bundle on a dataset")
    p.add_argument("bundle")
    p.add_argument("--data", required=True)
    p.add_argument("--backend", default="auto")
    p.add_argument("--threads", type=int)
    p.add_argument("--json", action="store_true")

    p = _add(sub, "predict", cmd_predict, "classify images with a run folder, .keras file or bundle")
    p.add_argument("model", help="run folder, .keras file or bundle folder")
    p.add_argument("images", nargs="+", help="image files or http(s) URLs")
    p.add_argument("--tta", type=int, default=1, help="average N crops (the seed's test-time augmentation)")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--backend", default="auto", help="bundles: auto, litert, tflite_runtime, tensorflow, onnxruntime")
    p.add_argument("--variant", help="bundles: int8, float32, float16, dynamic, onnx or onnx_int8")
    p.add_argument("--threads", type=int)
    p.add_argument("--json", action="store_true")
    p = _add(sub, "run", cmd_run, "run the bin: camera -> classifier -> decisions over MQTT (the systemd service)")
    p.add_argument("--config", required=True, help="YAML file (see firmware_config/)")

    config = sub.add_parser("config", help="check or show a device config", description="Check or show a config.")
    csub = config.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    p = _add(csub, "check", cmd_config_check, "validate a config file; exit 78 with the reason when invalid")
    p.add_argument("file")
    p = _add(csub, "show", cmd_config_show, "print the effective config (defaults filled in, secrets masked)")
    p.add_argument("file")

    p = _add(sub, "actuator", cmd_actuator, "drive the bin's servo or flaps from decisions (gpiozero)")
    p.add_argument("--config", required=True, help="the same YAML file as `smartbin run`")

    p = _add(sub, "fleet-sim", cmd_fleet_sim, "N simulated bins against one broker: rate, latency, lost messages")
    p.add_argument("--bins", type=int, default=50)
    p.add_argument("--duration", type=float, default=20.0, help="seconds of decisions")
    p.add_argument("--rate", type=float, default=0.5, help="decisions per second per bin")
    p.add_argument("--broker", help="HOST:PORT (default: start a local mosquitto)")

    p = _add(sub, "bench", cmd_bench, "latency benchmark (same as python edge/bench.py; --help for its options)")
    p.add_argument("bench_args", nargs=argparse.REMAINDER, help="options of edge/bench.py")

    p = _add(sub, "demo", cmd_demo, "the whole path offline: data -> train -> convert -> daemon -> MQTT -> bench")
    p.add_argument("--out", default="demo-output")
    p.add_argument("--bench-runs", type=int, default=50)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `smartbin` console command."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"smartbin: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    except SmartbinError as exc:
        print(f"smartbin: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
