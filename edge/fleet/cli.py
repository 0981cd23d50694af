"""`smartbin fleet list`, `smartbin fleet rollout` and `smartbin fleet-sim`: the fleet as its broker shows
it, a new bundle carried through it in stages (rollout.py), and simulated bins to load a broker with. Heavy
imports wait for the command that needs them."""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path

from edge.errors import SmartbinError


def add_fleet_commands(sub: argparse._SubParsersAction) -> None:
    """``fleet list``, ``fleet rollout`` and ``fleet-sim`` under the `smartbin` command."""
    sim = sub.add_parser("fleet-sim", help="N simulated bins against one broker: rate, latency, lost messages")
    sim.set_defaults(func=cmd_fleet_sim)
    sim.add_argument("--bins", type=int, default=50)
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
    rollout.add_argument("--url", help="where the bins fetch the archive instead (any HTTP(S) server)")
    rollout.add_argument("--sha256", help="the archive's digest (with --url; `smartbin bundle pack` prints it)")
    rollout.add_argument("--stages", default="1", help="bins reached at each stage, a count or a share (1,25%%)")
    rollout.add_argument("--canaries", help="the first stage's bins by device id, comma-separated")
    rollout.add_argument("--bins", help="only these bins, comma-separated (default: every bin online)")
    rollout.add_argument("--watch", type=float, default=300.0, help="seconds each stage is watched (300)")
    rollout.add_argument("--min-frames", type=int, default=100, help="classified frames a side to judge by (100)")
    rollout.add_argument("--max-confidence-drop", type=float, default=0.10, help="mean confidence lost (0.10)")
    rollout.add_argument("--max-unsure-rise", type=float, default=0.20, help="more items too unsure (0.20)")
    rollout.add_argument("--update-timeout", type=float, default=600.0, help="seconds a bin may take to switch")
    rollout.add_argument("--serve", default="0.0.0.0:0", help="HOST:PORT the archive is served on (0.0.0.0:0)")
    rollout.add_argument("--advertise", help="the address the bins reach this machine at (default: found)")
    rollout.add_argument("--sign", metavar="KEY", help="sign the manifest (bins with updates.public_key)")
    rollout.add_argument("--variants", help="only these variants in the archive, comma-separated (e.g. int8)")
    rollout.add_argument("--json", metavar="FILE", help="write the report as JSON")
    for parser in (listing, rollout):
        add_broker_options(parser, "localhost:1883")


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
    from edge.fleet.rollout import Release, Rule, parse_stages, roll_out
    from edge.fleet.serve import served

    if bool(args.bundle) == bool(args.url):
        raise SmartbinError("give a bundle to serve from here, or --url (and --sha256) where the bins fetch it")
    stages = parse_stages(args.stages)
    rule = Rule(args.watch, args.min_frames, args.max_confidence_drop, args.max_unsure_rise, args.update_timeout)
    view = watching(args)
    try:
        with contextlib.ExitStack() as stack:
            if args.url:
                release = Release(args.url, args.sha256)
            else:
                broker = (view.config.host, view.config.port)
                where = served(Path(args.bundle), broker, args.serve, args.advertise, args.sign, split(args.variants))
                release = stack.enter_context(where)
            print(f"release: {release.url} (sha256 {release.sha256 or 'not given'})")
            report = roll_out(view, release, rule, stages, split(args.canaries), split(args.bins), say=print)
    finally:
        view.close()
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_dict(), indent=2), encoding="utf-8")
    print("rollout complete: every bin switched" if report.completed else f"rollout stopped: {report.reason}")
    return 0 if report.completed else 1


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
