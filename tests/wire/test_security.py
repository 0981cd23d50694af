"""TLS with client certificates, the example ACL, and no secrets in logs or messages."""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge.tools.localbroker import LocalBroker, mosquitto_path
from tests.support import ROOT, write_config
from tests.support.pki import issue, make_pki, new_ca, openssl

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        mosquitto_path() is None or shutil.which("openssl") is None,
        reason="needs mosquitto and openssl (installed by .ci/run)",
    ),
]


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    """A CA, a server certificate for 'localhost' only, and client certificates named after devices."""
    return make_pki(tmp_path_factory.mktemp("pki"), ("test-bin", "other-bin", "operator", "homeassistant"))


@pytest.fixture()
def tls_broker(tmp_path: Path, pki: Path):
    acl = ROOT / "systemd" / "mosquitto" / "smartbin-acl.conf"
    extra = (
        f"cafile {pki / 'ca.crt'}\ncertfile {pki / 'server.crt'}\nkeyfile {pki / 'server.key'}\n"
        f"require_certificate true\nuse_identity_as_username true\nacl_file {acl}\n"
    )
    broker = LocalBroker(workdir=tmp_path / "broker", extra_config=extra).start()
    yield broker
    broker.stop()


def tls_client(pki: Path, port: int, cert: str | None, host: str = "localhost") -> tuple[mqtt.Client, list, list]:
    received, results = [], []
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.tls_set(
        ca_certs=str(pki / "ca.crt"),
        certfile=str(pki / f"{cert}.crt") if cert else None,
        keyfile=str(pki / f"{cert}.key") if cert else None,
        cert_reqs=ssl.CERT_REQUIRED,
    )
    client.on_connect = lambda c, u, f, rc, p: results.append(rc)
    client.on_message = lambda c, u, m: received.append((m.topic, m.payload))
    try:
        client.connect(host, port)
    except (ssl.SSLError, OSError) as exc:
        results.append(exc)
        return client, received, results
    client.loop_start()
    deadline = time.monotonic() + 5
    while not results and time.monotonic() < deadline:
        time.sleep(0.02)
    return client, received, results


def tls_config(tmp_path: Path, pki: Path, bundle: Path, port: int, host: str = "localhost") -> Path:
    import yaml

    path = write_config(tmp_path / "tls.yaml", bundle, "synthetic://?items=2", port)
    data = yaml.safe_load(path.read_text())
    data["mqtt"].update(
        host=host,
        tls={
            "enabled": True,
            "ca_file": str(pki / "ca.crt"),
            "cert_file": str(pki / "test-bin.crt"),
            "key_file": str(pki / "test-bin.key"),
        },
    )
    path.write_text(yaml.safe_dump(data))
    return path


def test_tls_daemon_connects_and_clients_without_certificates_are_rejected(tmp_path, pki, tls_broker, bundle_dir):
    port = tls_broker.port
    no_cert, _, results = tls_client(pki, port, None)
    no_cert.loop_stop()
    # Rejected: either the handshake fails at once or (TLS 1.3) the broker drops it before any CONNACK.
    assert not any(not isinstance(r, Exception) and not r.is_failure for r in results), results
    watcher, received, results = tls_client(pki, port, "operator")  # a dashboard: reads every bin
    assert results and not isinstance(results[0], Exception) and not results[0].is_failure  # the control
    watcher.subscribe("smartbin/test-bin/#", qos=1)
    time.sleep(0.3)  # the SUBACK, before the daemon's first messages
    config = tls_config(tmp_path, pki, bundle_dir, port)
    run = subprocess.run(
        [sys.executable, "-m", "edge", "--config", str(config)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    watcher.disconnect()
    watcher.loop_stop()
    assert run.returncode == 0, run.stderr[-1500:]
    # what the daemon said over TLS reached the broker: online, its decisions, offline at the end
    states = [json.loads(m)["state"] for t, m in received if t == "smartbin/test-bin/status"]
    assert states[:1] == ["online"] and states[-1] == "offline", (states, run.stderr[-1500:])
    assert any(t == "smartbin/test-bin/decision" for t, _ in received), run.stderr[-1500:]


def test_tls_refuses_a_server_whose_certificate_does_not_match(tmp_path, pki, tls_broker, bundle_dir):
    """The broker's certificate names localhost; the config says 127.0.0.1: the daemon never talks MQTT to
    it (a watcher on the broker sees no status from the bin), keeps running and retrying, and says why."""
    config = tls_config(tmp_path, pki, bundle_dir, tls_broker.port, host="127.0.0.1")  # cert names localhost only
    watcher, received, results = tls_client(pki, tls_broker.port, "test-bin")
    assert results and not results[0].is_failure, results
    watcher.subscribe("smartbin/test-bin/#", qos=1)
    lines: list[str] = []
    process = subprocess.Popen(
        [sys.executable, "-m", "edge", "--config", str(config)], cwd=ROOT, stderr=subprocess.PIPE, text=True
    )
    reader = threading.Thread(target=lambda: lines.extend(process.stderr), daemon=True)
    reader.start()
    deadline = time.monotonic() + 60
    while not any("cannot connect to 127.0.0.1" in line for line in lines) and time.monotonic() < deadline:
        time.sleep(0.1)
    alive = process.poll() is None
    process.terminate()
    process.wait(15)
    reader.join(5)
    watcher.disconnect()
    watcher.loop_stop()
    err = "".join(lines)
    refusal = [line for line in lines if "cannot connect to 127.0.0.1" in line]
    assert refusal and "certificate was refused" in refusal[0] and "match" in refusal[0], err[-1500:]
    assert alive, "the daemon exited instead of retrying"
    assert not [t for t, _ in received if t.endswith("/status")], "the bin reached a broker it must not trust"


def test_acl_a_device_cannot_speak_for_another(pki, tls_broker):
    port = tls_broker.port
    first, first_received, _ = tls_client(pki, port, "test-bin")
    first.subscribe("smartbin/test-bin/command", qos=1)
    other, _, _ = tls_client(pki, port, "other-bin")
    time.sleep(0.3)
    other.publish("smartbin/test-bin/decision", json.dumps({"bin": "hazardous"}), qos=1).wait_for_publish(5)
    other.publish("smartbin/test-bin/command", json.dumps({"id": 1, "action": "pause"}), qos=1).wait_for_publish(5)
    other.publish("smartbin/other-bin/decision", json.dumps({"bin": "other"}), qos=1).wait_for_publish(5)
    spy, spy_received, _ = tls_client(pki, port, "other-bin")
    spy.subscribe("smartbin/test-bin/#", qos=1)  # reading another bin's topics is denied too
    first.publish("smartbin/test-bin/decision", json.dumps({"bin": "other"}), qos=1).wait_for_publish(5)
    time.sleep(1)
    for client in (first, other, spy):
        client.disconnect()
        client.loop_stop()
    print(
        f"\nACL: commands delivered to test-bin from other-bin: {len(first_received)}, "
        f"messages other-bin read from test-bin: {len(spy_received)}"
    )
    assert first_received == [] and spy_received == []


def test_acl_lets_a_bin_announce_itself_to_home_assistant_and_only_itself(pki, tls_broker):
    """The example ACL with Home Assistant's discovery: a bin writes its own device config and hears Home
    Assistant's birth message; another bin cannot announce in its name."""
    from edge.broker import homeassistant
    from edge.config.network import HomeAssistantConfig

    ha_config, port = HomeAssistantConfig(enabled=True), tls_broker.port
    ha, ha_received, _ = tls_client(pki, port, "homeassistant")
    ha.subscribe("homeassistant/device/#", qos=1)
    bin_, bin_received, _ = tls_client(pki, port, "test-bin")
    bin_.subscribe(homeassistant.status_topic(ha_config), qos=1)
    other, _, _ = tls_client(pki, port, "other-bin")
    time.sleep(0.3)
    topic = homeassistant.discovery_topic(ha_config, "test-bin")
    payload = json.dumps(homeassistant.discovery("smartbin/test-bin", "test-bin"))
    other.publish(topic, json.dumps({"forged": True}), qos=1, retain=True).wait_for_publish(5)
    bin_.publish(topic, payload, qos=1, retain=True).wait_for_publish(5)
    ha.publish(homeassistant.status_topic(ha_config), "online", qos=1).wait_for_publish(5)
    time.sleep(1)
    for client in (ha, bin_, other):
        client.disconnect()
        client.loop_stop()
    assert ha_received == [(topic, payload.encode())]
    assert bin_received == [("homeassistant/status", b"online")]


def test_no_secrets_in_logs_config_show_or_status(tmp_path, bundle_dir, broker, monkeypatch):
    secret = "S3cr3t-pa55word-for-test"
    (tmp_path / "broker").mkdir(exist_ok=True)
    config = write_config(tmp_path / "c.yaml", bundle_dir, "synthetic://?items=1", broker.port)
    import yaml

    data = yaml.safe_load(config.read_text())
    data["mqtt"].update(username="test-bin", password_env="SMARTBIN_MQTT_PASSWORD")
    data["log_level"] = "DEBUG"
    config.write_text(yaml.safe_dump(data))
    env = {"SMARTBIN_MQTT_PASSWORD": secret}
    import os

    run = subprocess.run(
        [sys.executable, "-m", "edge", "--config", str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
    )
    show = subprocess.run(
        [sys.executable, "-m", "edge.cli", "config", "show", str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
    )
    assert run.returncode == 0, run.stderr[-1000:]
    for text in (run.stdout, run.stderr, show.stdout, show.stderr):
        assert secret not in text
    assert "password: '***'" in show.stdout


def test_actuator_shares_the_daemons_tls_including_an_encrypted_key(tmp_path, pki, tls_broker, bundle_dir, monkeypatch):
    """One MQTT client factory: the actuator honours tls.key_password_env, and a wrong passphrase is a
    configuration error (exit 78, one line) rather than a raw ssl traceback."""
    import os

    import yaml

    from edge.actuator.actuator import Actuator
    from edge.config import load_config

    openssl("pkey", "-in", "test-bin.key", "-aes256", "-passout", "pass:s3cret", "-out", "enc.key", cwd=pki)
    path = tls_config(tmp_path, pki, bundle_dir, tls_broker.port)
    data = yaml.safe_load(path.read_text())
    data["mqtt"]["tls"].update(key_file=str(pki / "enc.key"), key_password_env="SMARTBIN_TEST_KEY_PASS")
    data["actuator"].update(mode="pins", state_path=str(tmp_path / "actuator.sqlite"))
    path.write_text(yaml.safe_dump(data))
    env = {**os.environ, "GPIOZERO_PIN_FACTORY": "mock"}

    monkeypatch.setenv("SMARTBIN_TEST_KEY_PASS", "s3cret")
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "mock")
    actuator = Actuator(load_config(path)).start()
    assert actuator.ready.wait(10), "the actuator did not subscribe over TLS"
    actuator.stop()

    result = subprocess.run(
        [sys.executable, "-m", "edge.cli", "actuator", "--config", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**env, "SMARTBIN_TEST_KEY_PASS": "wrong"},
        timeout=60,
    )
    assert result.returncode == 78, result.stderr[-1500:]
    assert "mqtt.tls: cannot load the CA, certificate or key" in result.stderr and "Traceback" not in result.stderr


def issue_client_certificate(folder: Path, name: str) -> Path:
    """A new CA in ``folder`` and a client certificate ``name`` from it (a renewal from a new issuer)."""
    issue(new_ca(folder, "smartbin renewed CA"), name)
    return folder


def test_a_renewed_client_certificate_is_used_at_the_next_reconnect(tmp_path, pki, bundle_dir, monkeypatch):
    """The certificate files are read again before every connect: after a renewal (here from a new issuer,
    which the restarted broker alone trusts from then on) the client reconnects with the new certificate,
    where it used to offer the one it read at start for ever."""
    import yaml

    from edge.actuator.actuator import Actuator
    from edge.config import load_config

    live = tmp_path / "live"
    live.mkdir()
    for suffix in ("crt", "key"):
        shutil.copy(pki / f"test-bin.{suffix}", live / f"test-bin.{suffix}")
    server = f"certfile {pki / 'server.crt'}\nkeyfile {pki / 'server.key'}\nrequire_certificate true\n"
    broker = LocalBroker(workdir=tmp_path / "broker", extra_config=f"cafile {pki / 'ca.crt'}\n{server}").start()
    path = tls_config(tmp_path, pki, bundle_dir, broker.port)
    data = yaml.safe_load(path.read_text())
    data["mqtt"]["tls"].update(cert_file=str(live / "test-bin.crt"), key_file=str(live / "test-bin.key"))
    data["actuator"].update(mode="pins", state_path=str(tmp_path / "actuator.sqlite"))
    path.write_text(yaml.safe_dump(data))
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "mock")
    actuator = Actuator(load_config(path)).start()
    try:
        assert actuator.ready.wait(10), "the actuator did not subscribe over TLS"
        renewed = issue_client_certificate(tmp_path / "renewed", "test-bin")
        for suffix in ("crt", "key"):  # as renewal agents do: a new file renamed over the old
            shutil.copy(renewed / f"test-bin.{suffix}", live / f"new.{suffix}")
            (live / f"new.{suffix}").replace(live / f"test-bin.{suffix}")
        broker.stop()
        broker.extra_config = f"cafile {renewed / 'ca.crt'}\n{server}"
        actuator.ready.clear()
        broker.start()
        _, _, old = tls_client(pki, broker.port, "test-bin")  # the control: the old certificate is refused now
        assert not any(not isinstance(r, Exception) and not r.is_failure for r in old), old
        assert actuator.ready.wait(30), "no reconnect with the renewed certificate"
    finally:
        actuator.stop()
        broker.close()


def test_a_certificate_file_missing_at_start_is_retried_not_a_config_error(tmp_path, pki, bundle_dir):
    """A renewal agent that removes the key for a moment: the start exits 75 (systemd starts it again after
    the back-off), not 78, which systemd never restarts."""
    import yaml

    path = tls_config(tmp_path, pki, bundle_dir, 1)
    data = yaml.safe_load(path.read_text())
    data["mqtt"]["tls"]["key_file"] = str(tmp_path / "renewing" / "test-bin.key")
    path.write_text(yaml.safe_dump(data))
    run = subprocess.run(
        [sys.executable, "-m", "edge", "--config", str(path)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 75, run.stderr[-1500:]
    assert "test-bin.key is missing" in run.stderr and "Traceback" not in run.stderr


def test_a_renewal_caught_half_way_is_retried_and_an_old_mismatch_is_a_config_error(tmp_path, pki, bundle_dir):
    """The certificate already renewed, its key not yet (a pair that does not match), then a PEM cut short:
    while the files are minutes old the start exits 75 and is tried again; the same mismatch a day old is the
    config's mistake, 78, with OpenSSL's reason."""
    import os
    import shutil

    import yaml

    def start(key: Path, cert: Path) -> subprocess.CompletedProcess:
        path = tls_config(tmp_path, pki, bundle_dir, 1)
        data = yaml.safe_load(path.read_text())
        data["mqtt"]["tls"].update(key_file=str(key), cert_file=str(cert))
        path.write_text(yaml.safe_dump(data))
        command = [sys.executable, "-m", "edge", "--config", str(path)]
        return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)

    renewing = tmp_path / "renewing"
    renewing.mkdir()
    new_cert, old_key = renewing / "test-bin.crt", renewing / "test-bin.key"
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(tmp_path / "new.key"), "-out",
            str(new_cert), "-subj", "/CN=test-bin", "-days", "2", cwd=tmp_path)  # fmt: skip
    shutil.copy(pki / "test-bin.key", old_key)
    run = start(old_key, new_cert)
    assert run.returncode == 75, run.stderr[-1500:]
    assert "a renewal half-way" in run.stderr and "key values mismatch" in run.stderr and "Traceback" not in run.stderr
    cut = renewing / "cut.crt"
    cut.write_bytes(new_cert.read_bytes()[:300])
    assert start(tmp_path / "new.key", cut).returncode == 75
    day_old = os.stat(new_cert).st_mtime - 86400
    for file in (new_cert, old_key, pki / "ca.crt"):
        os.utime(file, (day_old, day_old))
    run = start(old_key, new_cert)
    assert run.returncode == 78 and "key values mismatch" in run.stderr, run.stderr[-1500:]
