"""`make http-load`: a connection flood and a slow client against each of our HTTP servers, the figures side by
side (a benchmark: nothing here is asserted against a time).

    python tests/scenarios/http_load.py --bundle BUNDLE [--flood 128] [--servers page,review,archive]

For each server (the bin's status page in a real daemon, the review station as `smartbin review` starts it, a
rollout's archive server), in one run: a request alone; the same request sent after ``--flood`` connections that
open and say nothing (all of them at once, four times what a server serves at once); a slow client that sends
its request a byte a second; and the server's threads and memory (RSS) after. The servers serve MAX_CONNECTIONS
at once, each for at most REQUEST_TIMEOUT_S, so a flood delays a request by about one timeout and no more, the
slow client is dropped after one, and the threads stay bounded. Exits 1 when a request gets no answer.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from edge.tools.localbroker import LocalBroker, free_port  # noqa: E402
from edge.web.bounded import MAX_CONNECTIONS, REQUEST_TIMEOUT_S  # noqa: E402
from tests.support import ROOT, poll  # noqa: E402
from tests.support.statuspage import start, wait_http  # noqa: E402


@dataclass
class Figures:
    server: str
    alone_s: float | None
    flood_open: int  # silent connections the kernel let open (the rest waited in its backlog or were refused)
    flooded_s: float | None
    slow_dropped_s: float | None
    threads: int
    rss_mb: float


def answered(port: int, path: str, timeout: float = 120) -> float | None:
    """Seconds until the status line of a GET came back, None without one."""
    started = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
            line = sock.makefile("rb").readline()
    except OSError:
        return None
    return time.monotonic() - started if line.startswith(b"HTTP/1.") else None


def flooded(port: int, path: str, count: int) -> tuple[int, float | None]:
    """The same GET, sent once ``count`` silent connections are open: (how many opened, seconds from the flood's
    first connection to the answer)."""
    silent: list[socket.socket] = []
    started = time.monotonic()
    try:
        for _ in range(count):
            try:
                silent.append(socket.create_connection(("127.0.0.1", port), timeout=5))
            except OSError:
                break  # the backlog is full: the rest of the flood is refused by the kernel
        took = answered(port, path)
        return len(silent), None if took is None else time.monotonic() - started
    finally:
        for sock in silent:
            sock.close()


def slow_client(port: int, path: str) -> float | None:
    """A request sent a byte a second: seconds until the server closed the connection (None: it never did)."""
    request = f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode()
    started = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            for byte in request:
                sock.sendall(bytes([byte]))
                time.sleep(1.0)
                if time.monotonic() - started > 6 * REQUEST_TIMEOUT_S:
                    return None
    except OSError:
        return time.monotonic() - started
    return None


def process_figures(pid: int) -> tuple[int, float]:
    """Threads and RSS (MB) of a process, from /proc."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["Threads"]), int(fields["VmRSS"].split()[0]) / 1024


def measure(name: str, port: int, path: str, pid: int, flood: int) -> Figures:
    alone = answered(port, path)
    opened, under_flood = flooded(port, path, flood)
    slow = {}
    thread = threading.Thread(target=lambda: slow.update(s=slow_client(port, path)))
    thread.start()
    thread.join()
    threads, rss = process_figures(pid)
    return Figures(name, alone, opened, under_flood, slow.get("s"), threads, rss)


@contextmanager
def status_page(bundle: Path, work: Path) -> Iterator[tuple[int, int]]:
    with LocalBroker(workdir=work / "broker") as broker:
        (work / "bin").mkdir()
        process, port = start(work / "bin", bundle, broker.port, {})
        try:
            wait_http(port)
            yield port, process.pid
        finally:
            process.terminate()
            process.communicate(timeout=30)


@contextmanager
def review_station(bundle: Path, work: Path) -> Iterator[tuple[int, int]]:
    (work / "inbox").mkdir()
    port = free_port()
    command = [sys.executable, "-m", "edge.cli", "review", str(work / "inbox"), "--port", str(port)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert poll(lambda: answered(port, "/", 2) is not None, 120), "the review station did not start"
        yield port, process.pid
    finally:
        process.terminate()
        process.wait(30)


@contextmanager
def archive_server(bundle: Path, work: Path) -> Iterator[tuple[int, int]]:
    import os

    from edge.fleet.serve import archive, serve

    (work / "served").mkdir()
    archive(bundle, work / "served", variants=["int8"])
    server, port = serve(work / "served")
    try:
        yield port, os.getpid()
    finally:
        server.shutdown()
        server.server_close()


SERVERS: dict[str, tuple[Callable, str]] = {
    "page": (status_page, "/healthz"),
    "review": (review_station, "/"),
    "archive": (archive_server, "/"),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", required=True, type=Path)
    parser.add_argument("--flood", type=int, default=4 * MAX_CONNECTIONS)
    parser.add_argument("--servers", default=",".join(SERVERS))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="smartbin-http-load-") as tmp:
        for name in args.servers.split(","):
            running, path = SERVERS[name]
            work = Path(tmp) / name
            work.mkdir()
            with running(args.bundle.resolve(), work) as (port, pid):
                rows.append(measure(name, port, path, pid, args.flood))
    print(f"http load: {args.flood} silent connections at once; {MAX_CONNECTIONS} served at once, "
          f"{REQUEST_TIMEOUT_S:g} s timeout each")  # fmt: skip
    header = ("server", "alone s", "opened", "flooded s", "slow dropped s", "threads", "RSS MB")
    print("{:8} {:>8} {:>7} {:>10} {:>15} {:>8} {:>7}".format(*header))
    show = lambda v: "none" if v is None else f"{v:.3f}"  # noqa: E731
    for r in rows:
        cells = (r.server, show(r.alone_s), r.flood_open, show(r.flooded_s), show(r.slow_dropped_s), r.threads)
        print("{:8} {:>8} {:>7} {:>10} {:>15} {:>8} {:>7.1f}".format(*cells, r.rss_mb))
    return 0 if all(r.alone_s is not None and r.flooded_s is not None for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
