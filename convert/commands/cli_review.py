"""`smartbin samples fetch` and `smartbin review`: bring what the bins kept to the workstation, and look at
it, label it and map its classes to bins on a local page (convert/review/)."""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

from convert.commands.cli_samples import password_from
from edge.cli import add_command
from edge.errors import SmartbinError


def cmd_samples_fetch(args: argparse.Namespace) -> int:
    from convert.data.pull import fetch

    folder = Path(args.out)
    before = len(list(folder.glob("*.json"))) if folder.is_dir() else 0
    fetch(args.source, folder, args.user, password_from(args.password_env))
    after = len(list(folder.glob("*.json")))
    print(f"{after - before} new sample(s) from {args.source} in {folder} ({after} in all)")
    print(f"look at them with: smartbin review {folder}")
    return 0


def cmd_review(args: argparse.Namespace) -> int:
    from convert.review.server import ReviewServer

    try:
        server = ReviewServer(Path(args.folder), args.host, args.port).start()
    except OSError as exc:
        raise SmartbinError(f"review: cannot listen on {args.host}:{args.port}: {exc}") from exc
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(f"review station on {server.url} (Ctrl-C to stop); each answer is saved in {args.folder} at once")
    print(f"then: smartbin samples pull {args.folder} --out <dataset>")
    stop.wait()
    server.stop()
    return 0


def add_review_commands(sub: argparse._SubParsersAction, samples: argparse._SubParsersAction) -> None:
    """``samples fetch`` (under ``samples``) and ``review``."""
    p = add_command(samples, "fetch", cmd_samples_fetch, "copy a bin's kept samples into a folder to review")
    p.add_argument("source", help="the bin's status page (http://bin:8080)")
    p.add_argument("--out", required=True, help="the review folder (several bins may share one)")
    p.add_argument("--user", default="smartbin", help="the status page's user name")
    p.add_argument("--password-env", help="environment variable holding the status page's password")
    p = add_command(sub, "review", cmd_review, "look at what the bins kept and label it, on a local web page")
    p.add_argument("folder", help="a folder of samples (smartbin samples fetch, or a copy of a bin's samples)")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (0.0.0.0: other machines too)")
    p.add_argument("--port", type=int, default=8090, help="port to serve on (0: any free one)")
