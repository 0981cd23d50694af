"""The status page in a real headless Chromium: live image, classify now, decisions, health; /healthz, /metrics."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from edge import __version__
from edge.tools.localbroker import free_port
from tests.support import write_config
from tests.support.browser import chromium, needs_chromium
from tests.support.statuspage import get, start, wait_http

pytestmark = pytest.mark.slow


@needs_chromium
def test_status_page_in_headless_chromium(tmp_path, bundle_dir, broker, artifacts):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    process, port = start(tmp_path, bundle_dir, broker.port, {})
    driver = None
    try:
        wait_http(port)
        driver = chromium(tmp_path)
        driver.get(f"http://127.0.0.1:{port}/")
        wait = WebDriverWait(driver, 30, ignored_exceptions=(StaleElementReferenceException,))
        first = wait.until(
            lambda d: (
                int(d.find_element(By.ID, "live").get_attribute("data-frame") or 0) >= 1
                and d.find_element(By.ID, "live").get_attribute("data-frame")
            )
        )
        wait.until(lambda d: int(d.find_element(By.ID, "live").get_attribute("data-frame")) > int(first) + 2)
        assert driver.execute_script("return document.getElementById('live').naturalWidth") == 320
        driver.find_element(By.ID, "classify").click()
        result = wait.until(lambda d: (t := d.find_element(By.ID, "result").text) not in ("", "…") and t)
        assert "→" in result and "%" in result, result
        # the page redraws the table every refresh: a row is found and read in one try (a row found in one
        # redraw and read after the next is stale, and the wait tries again)
        first_row = wait.until(
            lambda d: (rows := d.find_elements(By.CSS_SELECTOR, "#decisions tr.decision")) and rows[0].text
        )
        assert any(b in first_row for b in ("other", "kitchen", "recyclable", "hazardous")), first_row
        health = wait.until(lambda d: d.find_element(By.ID, "health-table").text)
        assert "litert" in health and "connected" in health
        driver.save_screenshot(str(artifacts / "status_page.png"))
    finally:
        if driver:
            driver.quit()
        process.send_signal(signal.SIGTERM)
        process.wait(15)
    assert (artifacts / "status_page.png").stat().st_size > 10_000


def test_healthz_metrics_and_password(tmp_path, bundle_dir, broker, monkeypatch):
    monkeypatch.setenv("SMARTBIN_WEB_PASSWORD", "pw-for-test")
    process, port = start(tmp_path, bundle_dir, broker.port, {"password_env": "SMARTBIN_WEB_PASSWORD"})
    try:
        wait_http(port)
        status, body = get(f"http://127.0.0.1:{port}/healthz")
        health = json.loads(body)
        assert status == 200 and health["status"] == "ok" and health["model"]["variant"] == "int8"
        assert get(f"http://127.0.0.1:{port}/metrics")[0] == 401  # the password protects everything else
        request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics")
        import base64

        request.add_header("Authorization", "Basic " + base64.b64encode(b"smartbin:pw-for-test").decode())
        deadline, text = time.monotonic() + 60, ""
        classified = re.compile(r'smartbin_latency_seconds_count\{stage="infer"\} [1-9]')
        while not classified.search(text) and time.monotonic() < deadline:  # latency once a frame is classified
            time.sleep(0.2)
            with urllib.request.urlopen(request, timeout=5) as response:
                text = response.read().decode()
        assert "smartbin_frames_classified_total" in text and "smartbin_up 1.0" in text
        # Prometheus's conventions: latency a histogram in seconds, what runs as build_info, process metrics
        metrics = {(m.name, m.type): m for m in text_string_to_metric_families(text)}
        latency = metrics[("smartbin_latency_seconds", "histogram")]
        infer = {s.labels.get("le"): s.value for s in latency.samples if s.labels["stage"] == "infer"}
        counts = [infer[le] for le in sorted((k for k in infer if k not in (None, "+Inf")), key=float)]
        assert counts == sorted(counts) and infer["+Inf"] >= counts[-1] and infer["+Inf"] >= 1  # cumulative
        info = metrics[("smartbin_build_info", "gauge")].samples[0]
        assert info.value == 1 and info.labels["variant"] == "int8" and info.labels["version"] == __version__
        assert info.labels["mqtt_protocol"] == "5"
        assert metrics[("process_resident_memory_bytes", "gauge")].samples[0].value > 10e6
        # the per-bin counters (all time, today) and the drift signal
        assert 'smartbin_items_total{bin="recyclable"}' in text and 'smartbin_items_today{bin="other"}' in text
        assert "smartbin_low_confidence_share_today" in text
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=15)
    assert "password is sent in the clear" in err and "pw-for-test" not in err


def test_disabled_page_opens_no_port(tmp_path, bundle_dir, broker):
    process, port = start(tmp_path, bundle_dir, broker.port, {"enabled": False})
    try:
        time.sleep(3)
        assert process.poll() is None
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(15)


@needs_chromium
def test_a_page_elsewhere_cannot_change_anything(tmp_path, bundle_dir, broker):
    """A page on another origin that the operator opens in the same browser posts a correction as a form
    (text/plain: no CORS preflight) and is refused; the page's own correction is carried out."""
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.support.mqtt_client import Subscriber, answered

    evil = tmp_path / "elsewhere"
    evil.mkdir()
    process, port = start(tmp_path, bundle_dir, broker.port, {})
    field = '{"event_id":"forged","label":"battery","pad":"'
    (evil / "form.html").write_text(
        f"""<form method="POST" action="http://127.0.0.1:{port}/api/correct" enctype="text/plain">"""
        f"""<input name='{field}' value='"}}'></form><script>document.forms[0].submit()</script>"""
    )
    other = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(other), "--bind", "127.0.0.1", "--directory", str(evil)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    sub = Subscriber(broker.port)
    driver = None
    try:
        wait_http(port)
        driver = chromium(tmp_path)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # the other origin's server may still be starting
            driver.get(f"http://127.0.0.1:{other}/form.html")
            if "refused" in driver.page_source or "queued" in driver.page_source:
                break
            time.sleep(0.2)
        WebDriverWait(driver, 30).until(lambda d: d.current_url.startswith(f"http://127.0.0.1:{port}/api/correct"))
        assert "refused: not a JSON request" in driver.page_source and "queued" not in driver.page_source
        driver.get(f"http://127.0.0.1:{port}/")
        own = driver.execute_async_script(
            """const done = arguments[arguments.length - 1];
            fetch('/api/correct', {method: 'POST', headers: {'Content-Type': 'application/json'},
              body: JSON.stringify({event_id: 'own', label: 'battery'})}).then(r => r.json()).then(done);"""
        )
        answered(sub, own["queued"])  # carried out (answered: no such decision here)
        corrections = [m.json()["id"] for m in sub.on("command/result") if m.json()["id"].startswith("web-")]
        assert corrections == [own["queued"]], corrections  # commands are answered in order: none came before
    finally:
        if driver:
            driver.quit()
        server.terminate()
        process.send_signal(signal.SIGTERM)
        process.wait(15)
        sub.close()


def test_the_page_on_the_network_needs_a_password_or_a_stated_choice(tmp_path, bundle_dir, broker):
    """web.host 0.0.0.0 without a password is a config error naming the key and both ways out; a password or
    allow_anonymous_lan: true starts it."""
    import yaml

    from edge.config import load_config
    from edge.errors import ConfigError

    config = write_config(tmp_path / "c.yaml", bundle_dir, "synthetic://", broker.port)
    data = yaml.safe_load(config.read_text())
    data["web"].update(enabled=True, host="0.0.0.0")
    config.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as refused:
        load_config(config)
    assert "web" in str(refused.value) and "password_env" in str(refused.value) and str(config) in str(refused.value)
    assert "allow_anonymous_lan" in str(refused.value)
    for choice in ({"password_file": str(tmp_path / "pw")}, {"allow_anonymous_lan": True}):
        config.write_text(yaml.safe_dump({**data, "web": {**data["web"], **choice}}))
        assert load_config(config).web.host == "0.0.0.0"
    data["web"].update(host="127.0.0.1")
    config.write_text(yaml.safe_dump(data))
    assert load_config(config).web.host == "127.0.0.1"
