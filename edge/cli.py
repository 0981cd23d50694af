"""The `smartbin` console command. Its own subcommands are the device's: run, config, actuator, fleet-sim,
fleet, bundle, bench.

Other packages add theirs through the ``smartbin.commands`` entry-point group (the workstation's
dataset, train, convert, ... register from convert/commands/cli.py), so nothing here imports `convert` or
TensorFlow, and a device without the workstation's parts still runs all of its own commands.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from edge import __version__
from edge.errors import ConfigError, NoPermission, SmartbinError
from edge.fleet.cli import add_fleet_commands
from edge.system import journal

log = logging.getLogger("smartbin")

EXIT_USER_ERROR = 2
EXIT_RETRY = 75  # EX_TEMPFAIL: systemd restarts the unit (the daemon has waited its back-off first)
EXIT_NO_PERMISSION = 77  # EX_NOPERM: a file this user may not read (sudo fixes it, not an edit)
EXIT_CONFIG_ERROR = 78  # EX_CONFIG: systemd's RestartPreventExitStatus stops a restart loop on it

# The packages only an extra brings (setup.py), and the extra: a command that needs one on an install without
# it (a device's smartbin[edge] told to train) says which install runs it, not a traceback.
EXTRA_OF = {
    **dict.fromkeys(("tensorflow", "keras", "tf2onnx", "onnx", "matplotlib", "rich"), "train"),
    "onnxruntime": "onnx",
    **dict.fromkeys(("picamera2", "gpiozero"), "pi"),
}


# ---------------------------------------------------------------- device
def _service(start: Callable[[str], int], config: str) -> int:
    """Run a systemd service's main function. A config error (78) will not fix itself by restarting;
    anything else (no model loads, the broker's TLS files gone) may: 75, which systemd restarts."""
    try:
        return start(config)
    except ConfigError:
        raise
    except SmartbinError as exc:
        log.debug("cause", exc_info=True)
        journal.print_error(f"smartbin: error: {exc} (exit {EXIT_RETRY}: systemd starts it again)")
        return EXIT_RETRY


def cmd_run(args: argparse.Namespace) -> int:
    from edge.daemon.daemon import run_daemon

    return _service(run_daemon, args.config)


def cmd_config_check(args: argparse.Namespace) -> int:
    from edge.config import load_config

    config = load_config(args.file)
    print(f"{args.file}: OK (device {config.device_id}, source {config.source.uri}, model {config.model.bundle})")
    return 0


def cmd_config_show(args: argparse.Namespace) -> int:
    import yaml

    from edge.config import load_config, masked
    from edge.system.paths import board_config

    # a board's name (rpi5) where no such file is here: the shipped config, as the installer copies it
    path = args.file if Path(args.file).exists() else board_config(args.file) or args.file
    print(yaml.safe_dump(masked(load_config(path)), sort_keys=False, allow_unicode=True), end="")
    return 0


def cmd_actuator(args: argparse.Namespace) -> int:
    from edge.actuator.actuator import run_actuator

    return _service(run_actuator, args.config)


def cmd_bench(args: argparse.Namespace) -> int:
    from edge.bench import main as bench_main

    if "--pick" in args.bench_args:  # what model.variant auto measures here, and its choice
        from edge.benchmark.pick_table import main as pick_main

        return pick_main(args.bench_args, bench_main)
    return bench_main(args.bench_args)


def cmd_bundle_pack(args: argparse.Namespace) -> int:
    """One file for an over-the-air update, and the command that installs it."""
    from edge.formats.archive import pack

    out = Path(args.out or f"{Path(args.bundle).resolve().name}.tar")
    variants = [v.strip() for v in args.variants.split(",") if v.strip()] if args.variants else None
    if args.for_config:
        from edge.config import load_config

        model = load_config(args.for_config).model
        if model.variant is None:
            raise SmartbinError(
                f"{args.for_config}: model.variant is null (chosen on the device); pass --variants to choose"
            )
        if model.variant != "auto":
            variants = sorted({*(variants or []), model.variant})
        elif model.backend != "auto":  # auto on a pinned backend: every variant it runs, for the device to time
            from edge.formats.bundle import Bundle
            from edge.runtime import runs

            variants = [v for v in Bundle.open(args.bundle).variant_names() if runs(model.backend, v)]
    digest = pack(args.bundle, out, args.sign, variants, args.head_only)
    size = out.stat().st_size / 1e6
    print(f"packed {', '.join(variants) if variants else 'every variant'} ({size:.1f} MB)")
    url = f"{args.base_url.rstrip('/')}/{out.name}" if args.base_url else f"http://<server>/{out.name}"
    print(f"{out}  sha256 {digest}")
    print(json.dumps({"id": 1, "action": "update_model", "url": url, "sha256": digest}))
    return 0


def cmd_bundle_install(args: argparse.Namespace) -> int:
    """A bundle into a device's model store, made current: what install.sh --bundle runs."""
    from edge.config import UpdatesConfig, load_config
    from edge.models.store import ModelStore

    updates = load_config(args.config).updates if args.config else UpdatesConfig(store=Path(args.store))
    folder = ModelStore(updates.store, updates.keep).install(Path(args.bundle))
    print(f"installed {folder} (current); restart the service to run it: systemctl restart smartbin-edge")
    return 0


def cmd_bundle_keygen(args: argparse.Namespace) -> int:
    from edge.formats.signing import generate_key

    if Path(args.out).exists():
        raise SmartbinError(f"{args.out}: exists; a key is never overwritten")
    public = generate_key(args.out)
    print(f"private key: {args.out} (keep it on this machine; bundle pack --sign {args.out})")
    print(f"public key for each device's config:\nupdates:\n  public_key: {public}")
    return 0


# ---------------------------------------------------------------- parser
def add_command(sub, name: str, func: Callable[[argparse.Namespace], int], help_text: str) -> argparse.ArgumentParser:
    """One subcommand whose ``func(args)`` returns the exit code."""
    parser = sub.add_parser(name, help=help_text, description=help_text)
    parser.set_defaults(func=func)
    return parser


Extension = Callable[[argparse._SubParsersAction], None]
EXTENSIONS = "smartbin.commands"  # entry-point group: each entry is an Extension


def registered_extensions() -> list[Extension]:
    """The subcommand sets other installed packages register; one that cannot load here is left out."""
    from importlib.metadata import entry_points

    found = entry_points()
    group = found.select(group=EXTENSIONS) if hasattr(found, "select") else found.get(EXTENSIONS, [])  # 3.9
    extensions = []
    for entry in group:
        try:
            extensions.append(entry.load())
        except ImportError as exc:
            if getattr(exc, "name", None) == entry.module:  # its package is there, the module it names is not
                log.warning(
                    "the commands of %s are left out: %s is not in this install (metadata of an older version: "
                    "reinstall the package; an old smartbin.egg-info in this folder shadows the installed one)",
                    entry.value,
                    entry.module,
                )
            else:  # e.g. a device without the workstation's packages
                log.debug("commands of %s not available: %s", entry.value, exc)
    return extensions


def build_parser(extensions: Sequence[Extension] = ()) -> argparse.ArgumentParser:
    """The parser of the device's commands, plus the subcommands each extension adds."""
    parser = argparse.ArgumentParser(prog="smartbin", description="Train, convert and run the smart bin classifier.")
    parser.add_argument("--version", action="version", version=f"smartbin {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for extend in extensions:
        extend(sub)
    p = add_command(
        sub, "run", cmd_run, "run the bin: camera -> classifier -> decisions over MQTT (the systemd service)"
    )
    p.add_argument("--config", required=True, help="YAML file (see firmware_config/)")

    config = sub.add_parser("config", help="check or show a device config", description="Check or show a config.")
    csub = config.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    p = add_command(csub, "check", cmd_config_check, "validate a config file; exit 78 with the reason when invalid")
    p.add_argument("file")
    p = add_command(csub, "show", cmd_config_show, "print the effective config (defaults filled in, secrets masked)")
    p.add_argument("file", help="a config file, or a shipped board's name (rpi4, rpi5, jetson-orin-nano, x86-dev)")

    p = add_command(sub, "actuator", cmd_actuator, "drive the bin's servo or flaps from decisions (gpiozero)")
    p.add_argument("--config", required=True, help="the same YAML file as `smartbin run`")

    bundle = sub.add_parser("bundle", help="package a bundle", description="Package a bundle for devices.")
    bsub = bundle.add_subparsers(dest="bundle_command", metavar="ACTION", required=True)
    p = add_command(bsub, "pack", cmd_bundle_pack, "one .tar (manifest first) for update_model; prints its sha256")
    p.add_argument("bundle", help="bundle folder from `smartbin convert`")
    p.add_argument("--out", help="archive path (default: <folder name>.tar here)")
    p.add_argument("--base-url", help="where it will be served, to print the update_model command in full")
    p.add_argument("--sign", metavar="KEY", help="sign the manifest with this Ed25519 private key (bundle keygen)")
    p.add_argument("--variants", help="only these variants, comma-separated (e.g. int8): what the device runs")
    p.add_argument(
        "--head-only",
        action="store_true",
        help="a bundle in two parts: its head alone (kB to MB), for bins that serve the same backbone",
    )
    p.add_argument(
        "--for",
        dest="for_config",
        metavar="CONFIG",
        help="only what this device config runs (e.g. firmware_config/rpi5.yaml: auto on litert, the TFLite ones)",
    )
    p = add_command(
        bsub, "install", cmd_bundle_install, "copy a bundle into a device's model store and make it current"
    )
    p.add_argument("bundle", help="bundle folder from `smartbin convert`")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", help="the device's config (its updates.store)")
    where.add_argument("--store", help="the model store folder itself (e.g. /var/lib/smartbin/models)")
    p = add_command(bsub, "keygen", cmd_bundle_keygen, "a new Ed25519 key pair for signing bundles")
    p.add_argument("--out", required=True, help="private key file to write (PEM, mode 0600)")

    add_fleet_commands(sub)

    p = add_command(sub, "bench", cmd_bench, "latency benchmark (same as python edge/bench.py; --help for its options)")
    p.add_argument("bench_args", nargs=argparse.REMAINDER, help="options of edge/bench.py")

    return parser


def _split_bench(argv: list[str]) -> tuple[list[str], list[str] | None]:
    """Everything after ``bench`` is edge/bench.py's, untouched: argparse's REMAINDER refuses a first token
    that looks like an option (``smartbin bench --bundle m`` ended in "unrecognized arguments")."""
    for i, token in enumerate(argv):
        if not token.startswith("-"):
            return (argv[: i + 1], argv[i + 1 :]) if token == "bench" else (argv, None)
    return argv, None


def main(argv: Sequence[str] | None = None, extensions: Sequence[Extension] | None = None) -> int:
    """Parse and run one command (the console script); user mistakes become one line and an exit code,
    never a traceback. ``extensions``: the subcommand sets to add (default: the registered ones)."""
    argv, passed_on = _split_bench(list(sys.argv[1:] if argv is None else argv))
    args = build_parser(registered_extensions() if extensions is None else extensions).parse_args(argv)
    if passed_on is not None:
        args.bench_args = passed_on
    journal.configure(args.verbose)
    try:
        return args.func(args)
    except ConfigError as exc:
        log.debug("cause", exc_info=True)  # -v shows the chain of causes
        journal.print_error(f"smartbin: configuration error: {exc}")
        return EXIT_CONFIG_ERROR
    except NoPermission as exc:
        journal.print_error(f"smartbin: error: {exc}")
        return EXIT_NO_PERMISSION
    except SmartbinError as exc:
        log.debug("cause", exc_info=True)
        journal.print_error(f"smartbin: error: {exc}")
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        return 130
    except ModuleNotFoundError as exc:
        extra = EXTRA_OF.get((exc.name or "").split(".")[0])
        if extra is None:
            raise
        where = " (the workstation's)" if extra == "train" else ""
        journal.print_error(
            f"smartbin: error: this command needs {exc.name}, which this install does not have; "
            f"install smartbin[{extra}]{where}: pip install 'smartbin[{extra}]'"
        )
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
