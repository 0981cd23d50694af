"""`make fuzz`'s second half: hostile HTTP against the workstation's tools and the bin's page.

    python tests/scenarios/fuzz_http.py --bundle BUNDLE [--requests 10000] [--seed 0]

Three targets, each with ``--requests`` inputs: the review station's API (random JSON bodies, hostile paths,
headers and lengths, sent with the page's token so that they reach the handlers), the bin's status page
(``/api/correct``, ``/api/classify``, hostile paths and credentials) and `samples fetch` against a bin page that
answers random listings, names and bodies. Every request must get an HTTP answer below 500, the servers' logs
must hold no traceback, and no file may appear outside the folders the tools own. Prints the counts; exits 1 on
any failure.
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from edge.errors import SmartbinError  # noqa: E402
from edge.tools.localbroker import LocalBroker, free_port  # noqa: E402
from tests.support import ROOT, poll  # noqa: E402
from tests.support.review import page_token  # noqa: E402
from tests.support.statuspage import start, wait_http  # noqa: E402

NASTY = ["", "..", "../../etc/passwd", "/abs", "%2e%2e", "\x00", "é€", "a" * 5000, "NaN", "-1", "1e309", "{}", "[]"]
REVIEW_POSTS = ["/api/answer", "/api/bins", "/api/rollout", "/api/training", "/api/rollout/stop", "/api/nothing"]
PAGE_POSTS = ["/api/correct", "/api/nothing"]  # /api/classify reads no body: it waits for a frame
GETS = ["/", "/api/items", "/image/", "/runs/", "/samples/", "/api/samples", "/decision/", "/metrics", "/healthz"]


@dataclass
class Report:
    sent: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def fail(self, what: str) -> None:
        if len(self.failures) < 20:
            self.failures.append(what)


def value(rng: random.Random, depth: int = 0) -> object:
    """A random JSON value, hostile strings and numbers included."""
    kind = rng.randrange(7 if depth < 3 else 4)
    if kind == 0:
        return rng.choice(NASTY)
    if kind == 1:
        return rng.choice([0, -1, 2**63, 1e308, -0.0, 3.5, True, None])
    if kind == 2:
        return "".join(chr(rng.randrange(32, 0x2FFF)) for _ in range(rng.randrange(12)))
    if kind == 3:
        return rng.choice(["item", "not_item", "unsure", "recyclable", "kitchen", "1", "1,100%", "0%"])
    if kind == 4:
        return [value(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys = ["ids", "verdict", "label", "bin", "stages", "watch", "force", "max_flips", "shadow_items", "min_frames"]
    return {rng.choice(keys): value(rng, depth + 1) for _ in range(rng.randrange(6))}


def request(port: int, raw: bytes) -> int | None:
    """One request as bytes; the status code, or None when the server dropped the connection unanswered."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(raw)
            line = sock.makefile("rb").readline()
    except OSError:
        return None
    parts = line.split()
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None


def hostile(rng: random.Random, paths: list[str], host: str, headers: dict[str, str]) -> bytes:
    """A POST with a random body to one of ``paths``, or a GET of a hostile path."""
    if rng.random() < 0.3:
        target = rng.choice(GETS) + rng.choice(NASTY + ["x.jpg", "job-1/report.html"])
        head = f"GET {target.replace(' ', '%20')} HTTP/1.1\r\nHost: {host}\r\n"
        body = b""
    else:
        body = json.dumps(value(rng)).encode() if rng.random() < 0.8 else bytes(rng.randrange(256) for _ in range(40))
        length = rng.choice([str(len(body)), str(len(body)), "-5", "abc", str(2**40)])
        head = f"POST {rng.choice(paths)} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {length}\r\n"
        head += "Content-Type: application/json\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "Connection: close\r\n\r\n"
    return head.encode("utf-8", "replace") + body


def fuzz_server(name: str, port: int, paths: list[str], headers: dict, count: int, rng: random.Random, report) -> None:
    report.sent[name] = count
    for _ in range(count):
        raw = hostile(rng, paths, f"127.0.0.1:{port}", headers)
        status = request(port, raw)
        if status is None or status >= 500:
            report.fail(f"{name}: {status} for {raw[:120]!r}")


def fuzz_fetch(count: int, rng: random.Random, work: Path, report: Report) -> None:
    """`samples fetch` against a page that answers whatever the dice say."""
    import logging

    from convert.data.fetch import fetch

    logging.getLogger("convert.data.fetch").setLevel(logging.ERROR)  # each refusal is said; here they are the point
    replies: dict[str, bytes] = {}

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            body = replies.get(self.path, bytes(rng.randrange(256) for _ in range(rng.randrange(64))))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    out = work / "fetched" / "inbox"
    report.sent["samples fetch"] = count
    try:
        for _ in range(count):
            names = [value(rng) if rng.random() < 0.5 else f"{rng.randrange(10**15):015d}-{rng.choice(NASTY)}"]
            replies.clear()
            replies["/api/samples"] = json.dumps({"samples": names} if rng.random() < 0.8 else value(rng)).encode()
            try:
                fetch(f"http://127.0.0.1:{server.server_port}", out)
            except SmartbinError:
                pass  # a clear error is an answer
            except Exception as exc:  # noqa: BLE001 - what this run is looking for
                report.fail(f"samples fetch: {type(exc).__name__}: {exc}")
    finally:
        server.shutdown()


def outside(work: Path, before: set[Path], allowed: list[Path]) -> list[str]:
    """Files that appeared under ``work`` outside the folders the tools own."""
    now = {p for p in work.rglob("*") if p.is_file()}
    return [str(p) for p in now - before if not any(p.is_relative_to(a) for a in allowed)]


def run(bundle: Path, count: int, seed: int, work: Path) -> Report:
    rng, report = random.Random(seed), Report()
    inbox = work / "inbox"
    inbox.mkdir()
    (inbox / "001765000000000-0123456789ab.jpg").write_bytes(b"\xff\xd8\xff\xd9")
    meta = {"event_id": "0123456789ab" * 2, "ts": 1765000000.0, "label": "can"}
    (inbox / "001765000000000-0123456789ab.json").write_text(json.dumps(meta))
    before = {p for p in work.rglob("*") if p.is_file()}
    port = free_port()
    log = work / "review.log"
    command = [sys.executable, "-m", "edge.cli", "review", str(inbox), "--port", str(port)]
    with log.open("w") as out:
        review = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        assert poll(lambda: request(port, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n") == 200, 60), log.read_text()
        token = page_token(f"http://127.0.0.1:{port}/")
        fuzz_server("review station", port, REVIEW_POSTS, {"X-Review-Token": token}, count, rng, report)
    finally:
        review.terminate()
        review.wait(30)
    with LocalBroker(workdir=work / "broker") as broker:
        (work / "bin").mkdir()
        page, page_port = start(work / "bin", bundle, broker.port, {})
        try:
            wait_http(page_port)
            origin = {"Origin": f"http://127.0.0.1:{page_port}"}
            fuzz_server("status page", page_port, PAGE_POSTS, origin, count, rng, report)
        finally:
            page.terminate()
            _, err = page.communicate(timeout=30)
    fuzz_fetch(count, rng, work, report)
    for name, text in (("review station", log.read_text()), ("status page", err)):
        if "Traceback" in text:
            report.fail(f"{name}: a traceback in its log: {text[text.index('Traceback') :][:400]}")
    owned = [inbox, work / "bin", work / "broker", work / "fetched", log]
    report.failures += [f"a file outside its folder: {p}" for p in outside(work, before, owned)]
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", required=True, type=Path)
    parser.add_argument("--requests", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="smartbin-fuzz-http-") as tmp:
        report = run(args.bundle.resolve(), args.requests, args.seed, Path(tmp))
    sent = ", ".join(f"{name} {n}" for name, n in report.sent.items())
    print(f"fuzz http: sent {sent}; failures {len(report.failures)}")
    for failure in report.failures:
        print(f"  {failure}")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
