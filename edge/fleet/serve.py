"""A bundle archive served over HTTP from the machine a rollout runs on, so that `smartbin fleet rollout
models/r2` needs no web server of the user's (any static HTTP(S) server or S3-compatible store does too:
pass its URL instead)."""

from __future__ import annotations

import functools
import http.server
import socket
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edge.errors import SmartbinError
from edge.fleet.plan import Release
from edge.formats.archive import pack
from edge.formats.bundle import sha256_file
from edge.web.bounded import BoundedServer, RequestDeadline


class QuietHandler(RequestDeadline, http.server.SimpleHTTPRequestHandler):
    """Static files without a line on stderr per request."""

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        pass


def serve(folder: Path, host: str = "127.0.0.1", port: int = 0) -> tuple[BoundedServer, int]:
    """A static file server over ``folder`` in a thread: (server, the port it listens on). Bounded: a fleet of
    bins fetching at once waits its turn in the listen backlog."""
    handler = functools.partial(QuietHandler, directory=str(folder))
    server = BoundedServer((host, port), handler)
    threading.Thread(target=server.serve_forever, name="bundle-server", daemon=True).start()
    return server, server.server_address[1]


def archive(
    bundle: Path, folder: Path, key: Path | None = None, variants: list[str] | None = None, head_only: bool = False
) -> tuple[Path, str]:
    """The archive to serve, in ``folder`` (which is all that is served): a bundle folder packed there (its head
    alone with ``head_only``), or a .tar linked there as it is; (file, sha256)."""
    if bundle.is_file():
        link = folder / bundle.name
        link.symlink_to(bundle.resolve())
        return link, sha256_file(bundle)
    if not bundle.is_dir():
        raise SmartbinError(f"{bundle}: no such bundle folder or .tar")
    out = folder / f"{bundle.resolve().name}.tar"
    return out, pack(bundle, out, key, variants, head_only)


def address_towards(host: str, port: int) -> str:
    """This machine's address on the route to ``host`` (where the bins, beside their broker, reach it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((socket.gethostbyname(host), port))  # UDP: picks the route, sends nothing
        return probe.getsockname()[0]


@contextmanager
def served(
    bundle: Path,
    broker: tuple[str, int],
    bind: str = "0.0.0.0:0",
    advertise: str | None = None,
    key: Path | None = None,
    variants: list[str] | None = None,
    head_only: bool = False,
) -> Iterator[Release]:
    """The bundle's archive served from here while the block runs: its Release at the address the bins
    reach this machine at (``advertise``, else the one on the route to their ``broker``)."""
    with tempfile.TemporaryDirectory(prefix="smartbin-rollout-") as tmp:
        file, digest = archive(bundle, Path(tmp), key, variants, head_only)
        host, _, port = bind.rpartition(":")
        server, port_number = serve(file.parent, host or "0.0.0.0", int(port or 0))
        try:
            yield Release(f"http://{advertise or address_towards(*broker)}:{port_number}/{file.name}", digest)
        finally:
            server.shutdown()
            server.server_close()
