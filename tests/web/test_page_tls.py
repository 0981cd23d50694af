"""The bin's page over HTTPS, as a user sets it up: its own certificate and key in the config, `samples fetch`
checking it against the bin's CA, and a renewal served without a restart. A real daemon, Debian's openssl."""

from __future__ import annotations

import json
import os
import shutil
import signal
import ssl
import time
import urllib.request
from pathlib import Path

import pytest

from edge.cli import main
from tests.support.pki import issue, make_pki, new_ca
from tests.support.statuspage import start

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl (installed by .ci/run)"),
]


def healthz(port: int, ca: Path) -> dict:
    context = ssl.create_default_context(cafile=str(ca))
    with urllib.request.urlopen(f"https://localhost:{port}/healthz", timeout=5, context=context) as response:
        return json.loads(response.read())


def wait_https(port: int, ca: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            healthz(port, ca)
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("the page did not answer over HTTPS")


def fetch(url: str, out: Path, *options: str) -> int:
    return main(["samples", "fetch", url, "--out", str(out), "--password-env", "SMARTBIN_WEB_PASSWORD", *options])


def test_the_page_over_https_is_fetched_against_the_bins_ca_and_renewed_in_place(
    tmp_path, bundle_dir, broker, monkeypatch, capsys
):
    pki = make_pki(tmp_path / "pki")
    live = tmp_path / "live"  # where a renewal (certbot, step-ca) writes the page's certificate and key
    live.mkdir()
    for name in ("server.crt", "server.key"):
        shutil.copy(pki / name, live / name)
    monkeypatch.setenv("SMARTBIN_WEB_PASSWORD", "pw-for-test")
    tls = {"enabled": True, "cert_file": str(live / "server.crt"), "key_file": str(live / "server.key")}
    process, port = start(
        tmp_path,
        bundle_dir,
        broker.port,
        {"host": "0.0.0.0", "password_env": "SMARTBIN_WEB_PASSWORD", "tls": tls},
        source="synthetic://?items=3&fps=10&seed=3",
        samples={"confident_fraction": 1.0, "path": str(tmp_path / "samples")},
    )
    url, inbox = f"https://localhost:{port}", tmp_path / "inbox"
    try:
        wait_https(port, pki / "ca.crt")
        deadline = time.monotonic() + 60
        while not list(inbox.glob("*.json")) and time.monotonic() < deadline:  # once the bin kept a sample
            assert fetch(url, inbox, "--ca", str(pki / "ca.crt")) == 0
            time.sleep(0.5)
        assert list(inbox.glob("*.jpg")) and list(inbox.glob("*.json"))

        # without the bin's CA the certificate is not trusted: one line that names --ca, nothing written
        capsys.readouterr()
        elsewhere = tmp_path / "elsewhere"
        assert fetch(url, elsewhere) != 0
        err = capsys.readouterr().err
        assert "CERTIFICATE_VERIFY_FAILED" in err and "--ca" in err and "Traceback" not in err
        assert not list(elsewhere.glob("*.json"))
        # plain HTTP on the HTTPS port gets no page (and no password crosses in the clear); the page goes on
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5).read()

        # renewed from a new issuer, written in place: the next connection gets the new certificate
        renewed = new_ca(tmp_path / "renewed", "smartbin renewed CA")
        issue(renewed, "server", server=True)
        for name in ("server.key", "server.crt"):
            os.replace(shutil.copy(renewed / name, live / f".{name}"), live / name)
        assert healthz(port, renewed / "ca.crt")["status"] in ("ok", "starting")
        with pytest.raises(OSError, match="CERTIFICATE_VERIFY_FAILED"):
            healthz(port, pki / "ca.crt")
        assert process.poll() is None  # no restart
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=15)
    assert "status page on https://" in err and "in the clear" not in err and "Traceback" not in err, err[-2000:]


def test_a_tls_handshake_trickled_a_byte_a_second_is_cut_at_the_request_deadline(tmp_path):
    """The handshake runs under the same whole-request deadline as a request: a client that trickles its
    ClientHello a byte a second (each receive in time) is cut after REQUEST_TIMEOUT_S, and the server answers
    the next client. The real BoundedServer with the page's TLS files."""
    import socket
    import threading

    from edge.config.network import TlsConfig
    from edge.system.tls import TlsFiles
    from edge.web.bounded import REQUEST_TIMEOUT_S, BoundedServer, JsonHandler

    class Page(JsonHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self._json({"ok": True})

    pki = make_pki(tmp_path / "pki")
    tls = TlsFiles(TlsConfig(enabled=True, cert_file=pki / "server.crt", key_file=pki / "server.key"), "web.tls", True)
    server = BoundedServer(("127.0.0.1", 0), Page, tls=tls)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            closed = False
            for byte in b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(100):  # a ClientHello's start
                try:
                    sock.sendall(bytes([byte]))
                except OSError:
                    closed = True
                    break
                time.sleep(1.0)
                if time.monotonic() - started > 4 * REQUEST_TIMEOUT_S:
                    break
        assert closed, "the trickled handshake kept its connection"
        assert time.monotonic() - started < 4 * REQUEST_TIMEOUT_S
        context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        with urllib.request.urlopen(f"https://localhost:{port}/", timeout=10, context=context) as response:
            assert json.loads(response.read()) == {"ok": True}
    finally:
        server.shutdown()
        server.server_close()
