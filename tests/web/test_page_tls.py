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
