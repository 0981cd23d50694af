"""`smartbin fleet list`, `smartbin fleet rollout` and `smartbin fleet-sim`: the fleet as its broker shows
it, a new bundle carried through it in stages (rollout.py), and simulated bins to load a broker with. Heavy
imports wait for the command that needs them."""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import tempfile
from pathlib import Path

from edge.errors import SmartbinError
from edge.system.renamed import add_renamed
from edge.web.reader import add_page_options, page_access


def add_fleet_commands(sub: argparse._SubParsersAction) -> None:
    """``fleet list``, ``fleet rollout`` and ``fleet-sim`` under the `smartbin` command."""
    sim = sub.add_parser("fleet-sim", help="N simulated bins against one broker: rate, latency, lost messages")
    sim.set_defaults(func=cmd_fleet_sim)
    add_renamed(sim, "--devices", "--bins", type=int, default=50, help="simulated bins (devices)")
    sim.add_argument("--duration", type=float, default=20.0, help="seconds of decisions")
    sim.add_argument("--rate", type=float, default=0.5, help="decisions per second per bin")
    sim.add_argument("--broker", help="HOST:PORT (default: start a local mosquitto)")
    fleet = sub.add_parser("fleet", help="the bins on a broker: list them, roll a bundle out in stages")
    fsub = fleet.add_subparsers(dest="fleet_command", metavar="ACTION", required=True)
    listing = fsub.add_parser("list", help="every bin's retained status and model")
    listing.set_defaults(func=cmd_fleet_list)
    rollout = fsub.add_parser(
        "rollout",
        help="a bundle to a few bins first, judged against the others, then to the rest (or rolled back)",
        description="Send a bundle to the first stage's bins, watch them against the bins on the old model, go "
        "on stage by stage while they are as sure as the others, else put every updated bin back.",
    )
    rollout.set_defaults(func=cmd_fleet_rollout)
    rollout.add_argument("bundle", nargs="?", help="bundle folder or .tar, served from here (or give --url)")
    rollout.add_argument("--resume", action="store_true", help="finish the rollout of this release that died")
    rollout.add_argument("--undo", action="store_true", help="put a rollout that died's bins back (no bundle)")
    rollout.add_argument("--url", help="where the bins fetch the archive instead (any HTTP(S) server)")
    rollout.add_argument("--sha256", help="the archive's digest (with --url; `smartbin bundle pack` prints it)")
    rollout.add_argument("--stages", default="1", help="bins reached at each stage, a count or a share (1,25%%)")
    rollout.add_argument("--canaries", help="the first stage's bins by device id, comma-separated")
    add_renamed(rollout, "--devices", "--bins", help="only these devices, comma-separated (default: every one online)")
    add_rule_options(rollout)
    gate = rollout.add_argument_group("the hold-out gate")
    gate.add_argument("--holdout", help="held-out images: the new bundle must sort as many right as the bins' one")
    add_renamed(
        gate,
        "--baseline",
        "--serving",
        help="the bundle the bins serve: its folder, a folder of bundles, or a bin's page",
    )
    add_page_options(gate, "page-")  # for a --baseline that is a bin's page
    gate.add_argument("--force", action="store_true", help="roll out even when the hold-out gate refuses it")
    rollout.add_argument("--serve", default="0.0.0.0:0", help="HOST:PORT the archive is served on (0.0.0.0:0)")
    rollout.add_argument("--advertise", help="the address the bins reach this machine at (default: found)")
    rollout.add_argument("--sign", metavar="KEY", help="sign the manifest (bins with updates.public_key)")
    rollout.add_argument("--variants", help="only these variants in the archive, comma-separated (e.g. int8)")
    rollout.add_argument(
        "--head-only", action="store_true", help="a bundle in two parts: its head alone (smartbin head train)"
    )
    rollout.add_argument("--json", metavar="FILE", help="write the report as JSON")
    for parser in (listing, rollout):
        add_broker_options(parser, "localhost:1883")


def add_rule_options(rollout: argparse.ArgumentParser) -> None:
    """The rule's limits as options, their defaults from the rule's one table (edge/fleet/rule.py)."""
    from edge.fleet.rule import DEFAULTS as d  # noqa: N811 - the rule's one table of defaults

    rule = rollout.add_argument_group("the rule: when a stage passes")
    rule.add_argument("--watch", type=float, default=d.watch_s, help=f"seconds each stage is watched ({d.watch_s:g})")
    rule.add_argument(
        "--min-frames", type=int, default=d.min_frames, help=f"frames a side to judge by ({d.min_frames})"
    )
    rule.add_argument("--max-confidence-drop", type=float, default=d.max_confidence_drop, help="mean confidence lost")
    rule.add_argument("--max-unsure-rise", type=float, default=d.max_unsure_rise, help="more items too unsure")
    rule.add_argument("--update-timeout", type=float, default=d.update_timeout_s, help="seconds a bin may take")
    rule.add_argument(
        "--shadow-items",
        type=int,
        default=d.shadow_items,
        help=f"items the canaries decide with the new model in the shadow first ({d.shadow_items}; 0: none)",
    )
    rule.add_argument(
        "--max-flips",
        type=float,
        default=d.max_flips,
        help=f"share of those items the new model may send to another bin ({d.max_flips:g})",
    )
    rule.add_argument("--expect-flips", help="changes you expect, not counted: OLD>NEW bins, comma-separated")
    rule.add_argument("--expect-labels", help="new or fixed labels whose items may change bin, comma-separated")
    rule.add_argument("--min-items", type=int, default=d.min_items, help="items a side before field signals count")
    rule.add_argument("--max-bin-shift", type=float, default=d.max_bin_shift, help="share of items a bin may gain/lose")
    rule.add_argument("--max-correction-rise", type=float, default=d.max_correction_rise, help="more corrections")


def rule_of(args: argparse.Namespace):
    """The rule from the command line's limits, checked."""
    from edge.fleet.rule import Rule, check_rule

    return check_rule(
        Rule(
            args.watch,
            args.min_frames,
            args.max_confidence_drop,
            args.max_unsure_rise,
            args.update_timeout,
            args.shadow_items,
            args.max_flips,
            split(args.expect_flips) or [],
            split(args.expect_labels) or [],
            args.min_items,
            args.max_bin_shift,
            args.max_correction_rise,
        )
    )


def add_broker_options(parser: argparse.ArgumentParser, default: str | None) -> None:
    """--broker, or --config for a smartbin config's mqtt section, and --prefix: where the fleet is."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--broker", default=default, help=f"HOST:PORT of the bins' broker ({default or 'none'})")
    where.add_argument("--config", help="a smartbin config whose mqtt section to use (TLS, user, prefix)")
    parser.add_argument("--prefix", default=None, help="topic prefix (default: the config's, or smartbin)")


def mqtt_settings(args: argparse.Namespace):
    """The broker settings: a config's mqtt section, or --broker."""
    from edge.config import MqttConfig, load_config

    if args.config:
        settings = load_config(args.config).mqtt
    else:
        host, _, port = args.broker.rpartition(":")
        if not host or not port.isdigit():
            raise SmartbinError(f"--broker {args.broker!r}: expected HOST:PORT, e.g. localhost:1883")
        settings = MqttConfig(host=host, port=int(port))
    return settings.model_copy(update={"topic_prefix": args.prefix}) if args.prefix else settings


def watching(args: argparse.Namespace):
    """A FleetView of the broker, connected, with the retained messages in."""
    from edge.fleet.view import FleetView

    view = FleetView(mqtt_settings(args)).start()
    view.settle()
    return view


def cmd_fleet_list(args: argparse.Namespace) -> int:
    view = watching(args)
    try:
        bins = view.snapshot()
    finally:
        view.close()
    if not bins:
        print("no bin has published a status on this broker")
    for device_id, bin_view in sorted(bins.items()):
        status, model = bin_view.status, bin_view.model
        state = f"{status.state}, {status.health}, {status.version}" if status else "no status"
        print(f"{device_id}: {state}; model {model.folder if model else '?'}")
    return 0


def split(value: str | None) -> list[str] | None:
    return [part.strip() for part in value.split(",") if part.strip()] if value else None


def cmd_fleet_rollout(args: argparse.Namespace) -> int:
    from edge.fleet.rollout import StopEvent, roll_out, undo

    rule = rule_of(args)
    stop = StopEvent()
    stop_on_signals(stop)
    if args.undo:
        view = watching(args)
        try:
            outcome = undo(view, rule, say=print)
        finally:
            view.close()
        return 0 if all(what.startswith("back on") for what in outcome.values()) else 1
    if bool(args.bundle) == bool(args.url):
        raise SmartbinError("give a bundle to serve from here, or --url (and --sha256) where the bins fetch it")
    from edge.fleet.plan import Release, parse_stages
    from edge.fleet.serve import served

    stages = parse_stages(args.stages)
    view = watching(args)
    try:
        if args.holdout:
            gate_or_refuse(args, view)
        with contextlib.ExitStack() as stack:
            if args.url:
                release = Release(args.url, args.sha256)
            else:
                broker = (view.config.host, view.config.port)
                bundle, variants = Path(args.bundle), split(args.variants)
                where = served(bundle, broker, args.serve, args.advertise, args.sign, variants, args.head_only)
                release = stack.enter_context(where)
            print(f"release: {release.url} (sha256 {release.sha256 or 'not given'})")
            canaries, only = split(args.canaries), split(args.devices)
            report = roll_out(view, release, rule, stages, canaries, only, say=print, stop=stop, resume=args.resume)
    finally:
        view.close()
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_dict(), indent=2), encoding="utf-8")
    print("rollout complete: every bin switched" if report.completed else f"rollout stopped: {report.reason}")
    return 0 if report.completed else 1


def stop_on_signals(stop) -> None:
    """SIGINT (also when the shell started us with it ignored, as a background job), SIGTERM (a job's timeout,
    systemctl stop) and SIGHUP (the SSH session dropped) end a rollout the same way: its bins put back."""
    from edge.system.signals import set_on

    def noted(signum: signal.Signals) -> None:
        stop.reason = f"interrupted by {signum.name}"

    set_on(stop, signal.SIGINT, signal.SIGTERM, signal.SIGHUP, noted=noted)


def gate_or_refuse(args: argparse.Namespace, view) -> None:
    """The hold-out gate before anything is sent: the new bundle against the one the bins serve."""
    from edge.fleet.gate import fetched_baseline, hold_out, serving_bundle

    if not args.bundle or not Path(args.bundle).is_dir():
        raise SmartbinError("--holdout measures a bundle folder: give the bundle's folder (not --url or a .tar)")
    if not args.baseline:
        raise SmartbinError("--holdout needs --baseline: the bundle the bins serve (or a folder of bundles)")
    models = [v.status.model for v in view.snapshot().values() if v.online and v.status]
    with tempfile.TemporaryDirectory(prefix="smartbin-baseline-") as tmp:
        baseline = Path(args.baseline)
        if args.baseline.startswith(("http://", "https://")):  # a bin's status page: the model it serves
            baseline = fetched_baseline(args.baseline, Path(tmp), page_access(args, "page-"))
        serving = serving_bundle(baseline, {m.sha256 for m in models if m.sha256})
        variant = models[0].variant if models else None
        gate = hold_out(Path(args.bundle), serving, Path(args.holdout), variant)
    print(gate.line())
    if gate.refusal and not args.force:
        raise SmartbinError(f"hold-out gate: {gate.refusal}; nothing was sent (--force rolls it out anyway)")
    if gate.refusal:
        print(f"hold-out gate: {gate.refusal}; rolled out anyway (--force)")


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
        report = run_fleet(args.devices, args.duration, host, int(port), args.rate)
    finally:
        if broker:
            broker.close()
    print(format_report(report))
    return 0 if report["lost"] == 0 else 1
