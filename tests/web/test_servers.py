"""The status page as a product on a hostile network: credentials that are not even ASCII get a 401, never a
traceback; clients that open connections and say nothing are dropped after the request timeout, and a flood
of them cannot keep a real request from its answer. The daemon is the real process, its page the real
server (the review station and a rollout's archive server stand on the same BoundedServer)."""

from __future__ import annotations

import signal
import socket

import pytest

from edge.web.bounded import MAX_CONNECTIONS
from tests.support import poll
from tests.support.statuspage import start, wait_http

pytestmark = pytest.mark.slow


def raw_get(port: int, path: str, headers: bytes = b"", timeout: float = 30) -> bytes:
    """A GET as bytes on the wire (urllib refuses to send a non-ASCII header), and the status line back."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(
            b"GET " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n" + headers + b"Connection: close\r\n\r\n"
        )
        return sock.makefile("rb").readline()


def test_bad_credentials_and_a_flood_of_silent_clients(tmp_path, bundle_dir, broker, monkeypatch):
    monkeypatch.setenv("SMARTBIN_WEB_PASSWORD", "pw-for-test")
    process, port = start(tmp_path, bundle_dir, broker.port, {"password_env": "SMARTBIN_WEB_PASSWORD"})
    idle: list[socket.socket] = []
    try:
        wait_http(port)
        for header in (
            b"Authorization: Basic \xc3\xa9\xe2\x82\xac\r\n",
            b"Authorization: Basic !!!\r\n",
            b"Authorization:\r\n",
        ):
            assert raw_get(port, "/metrics", header).split()[1] == b"401", header
        # more silent connections than the page serves at once: the page drops each after its timeout, and a
        # real request that came after all of them is answered
        idle = [socket.create_connection(("127.0.0.1", port), timeout=60) for _ in range(MAX_CONNECTIONS + 8)]
        assert raw_get(port, "/healthz", timeout=120).split()[1] in (b"200", b"503")
        assert poll(lambda: all(s.recv(1) == b"" for s in idle[:MAX_CONNECTIONS]), 60)  # closed by the page
    finally:
        for sock in idle:
            sock.close()
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0 and "Traceback" not in err, err[-3000:]
