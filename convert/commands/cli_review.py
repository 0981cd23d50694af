"""`smartbin samples fetch` and `smartbin review`: bring what the bins kept to the workstation, and look at
it, label it and map its classes to bins on a local page (convert/review/)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from convert.commands.cli_samples import quiet_tensorflow
from edge.cli import add_command
from edge.errors import SmartbinError
from edge.fleet.cli import add_broker_options
from edge.system.access import password_from
from edge.system.renamed import add_renamed
from edge.system.signals import set_on
from edge.web.reader import add_page_options, page_access


def cmd_samples_fetch(args: argparse.Namespace) -> int:
    folder = Path(args.out)
    if bool(args.source) == bool(args.broker or args.config):
        raise SmartbinError("samples fetch: give a bin's page (http://bin:8080) or --broker/--config, one of them")
    if args.source:
        from convert.data.fetch import fetch

        before = len(list(folder.glob("*.json"))) if folder.is_dir() else 0
        fetch(args.source, folder, page_access(args))
        after = len(list(folder.glob("*.json")))
        print(f"{after - before} new sample(s) from {args.source} in {folder} ({after} in all)")
    else:
        _fetch_from_broker(args, folder)
    print(f"look at them with: smartbin review {folder}")
    return 0


def _fetch_from_broker(args: argparse.Namespace, folder: Path) -> None:
    import re

    from convert.data.fetch_broker import fetch_from_broker
    from edge.config import DEVICE_ID
    from edge.fleet.cli import mqtt_settings

    if args.device is not None and not re.fullmatch(DEVICE_ID, args.device):
        raise SmartbinError(f"--device {args.device!r}: a bin's device_id is letters, digits, _ and - (1 to 64)")
    from convert.data.answers_back import send_answers

    settings = mqtt_settings(args)
    if folder.is_dir():  # the answers given here since the last fetch, to their bins
        confirmed, waiting = send_answers(settings, folder, max(args.idle, 5.0))
        if confirmed or waiting:
            print(f"{confirmed} answer(s) taken by their bins, {waiting} waiting for a bin (sent again next fetch)")
    got = fetch_from_broker(settings, folder, args.device, args.idle, args.client_id)
    print(f"{got.written} new sample(s) through {settings.host}:{settings.port} in {folder}, {got.there} there already")
    for reason in got.refused[:5]:
        print(f"refused: {reason}", file=sys.stderr)
    if len(got.refused) > 5:
        print(f"… and {len(got.refused) - 5} more refused", file=sys.stderr)
    if got.new_session:
        print("a collecting session was made on the broker: it keeps the bins' samples for the next fetch from now on")


def cmd_review(args: argparse.Namespace) -> int:
    import shlex

    from convert.review.server import ReviewServer
    from convert.review.training import Trainer, TrainingSetup

    trainer = None
    wanted = {"--train-data": args.train_data, "--holdout": args.holdout, "--baseline": args.baseline}
    if any(wanted.values()):
        missing = [name for name, value in wanted.items() if not value]
        if missing:
            raise SmartbinError(f"to train from the page, review also needs {' and '.join(missing)}")
        setup = TrainingSetup(
            samples=Path(args.folder),
            data=[Path(d) for d in args.train_data],
            holdout=Path(args.holdout),
            serving=Path(args.baseline),
            work=Path(args.work or Path(args.folder) / "training"),
            train_args=shlex.split(args.train_args or ""),
            convert_args=shlex.split(args.convert_args or ""),
        )
        trainer = Trainer(setup)
    if args.rank_with:
        _rank_samples(Path(args.folder), args.rank_with, args.feature_cache)
    fleet = None
    if args.broker or args.config:
        from convert.review.page_rollouts import PageRollouts
        from edge.fleet.cli import mqtt_settings

        fleet = PageRollouts(mqtt_settings(args), args.serve, args.advertise).start_watching()
    password = password_from(args.password_env)
    try:
        server = ReviewServer(Path(args.folder), args.host, args.port, trainer, fleet, password).start()
    except OSError as exc:
        raise SmartbinError(f"review: cannot listen on {args.host}:{args.port}: {exc}") from exc
    stop = threading.Event()
    # Ctrl-C (also in a background job, where SIGINT was ignored), systemctl stop, the SSH session dropping
    set_on(stop, signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    print(f"review station on {server.url} (Ctrl-C to stop); each answer is saved in {args.folder} at once")
    print(f"then: smartbin samples pull {args.folder} --out <dataset>")
    stop.wait()
    server.stop()
    if trainer is not None:
        trainer.stop()  # its training process ends with the station; the job says it was interrupted
    if fleet is not None:
        fleet.close()
    return 0


def _rank_samples(folder: Path, run: str, cache: str | None) -> None:
    """The folder's samples ranked by how new they look to ``run`` (novelty.json), which the page sorts by."""
    quiet_tensorflow()
    from convert.review.store import ReviewStore
    from convert.training.novelty import rank

    items = ReviewStore(folder).items()
    if not items:
        return
    images = [folder / f"{item.id}.jpg" for item in items]
    rows = rank(run, folder, images, [item.label or "?" for item in items], cache)
    print(f"{len(rows)} samples ranked by how new they look to {run}; the most novel: {rows[0]['image']}")


def add_review_commands(sub: argparse._SubParsersAction, samples: argparse._SubParsersAction) -> None:
    """``samples fetch`` (under ``samples``) and ``review``."""
    p = add_command(samples, "fetch", cmd_samples_fetch, "copy a bin's kept samples into a folder to review")
    p.add_argument("source", nargs="?", help="the bin's status page (http://bin:8080, https://bin:8443)")
    p.add_argument("--out", required=True, help="the review folder (several bins may share one)")
    add_page_options(p)
    add_broker_options(p, None)  # or the samples the bins sent over MQTT (samples.over_mqtt)
    p.add_argument("--device", help="with --broker: only this bin's samples (default: every bin's)")
    p.add_argument("--idle", type=float, default=3.0, help="with --broker: stop after this many seconds without one")
    p.add_argument("--client-id", help="with --broker: the collecting session's client id (default: per host)")
    p = add_command(sub, "review", cmd_review, "look at what the bins kept and label it, on a local web page")
    p.add_argument("folder", help="a folder of samples (smartbin samples fetch, or a copy of a bin's samples)")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (0.0.0.0: other machines too)")
    p.add_argument("--password-env", help="environment variable holding a password (needed off 127.0.0.1)")
    p.add_argument("--port", type=int, default=8090, help="port to serve on (0: any free one)")
    p.add_argument("--rank-with", metavar="RUN", help="sort by how new each sample looks to this training run")
    p.add_argument("--feature-cache", metavar="DIR", help="keep the embeddings here for the next --rank-with")
    p.add_argument("--train-data", action="append", help="to train from the page: the dataset the bins' model had")
    p.add_argument("--holdout", help="to train from the page: images neither model trained on (dataset split)")
    add_renamed(p, "--baseline", "--serving", help="to train from the page: the bundle the bins run now, to compare")
    p.add_argument("--work", help="where training jobs go (default: FOLDER/training)")
    p.add_argument("--train-args", help='more options of smartbin train, e.g. "--epochs 12 --img-size 224"')
    p.add_argument("--convert-args", help='more options of smartbin convert, e.g. "--calib-samples 200"')
    add_broker_options(p, None)  # to roll a trained bundle out from the page
    p.add_argument("--serve", default="0.0.0.0:0", help="HOST:PORT a rollout serves the bundle on (0.0.0.0:0)")
    p.add_argument("--advertise", help="the address the bins reach this machine at (default: found)")
