"""The demo's fleet loop: field samples -> corrections -> retrain v2 -> over-the-air update -> a rollback.

The bin ran model v1 on a clip and kept every decision's frame (the demo keeps them all); an
operator answered what each item really was. Those samples are pulled into a dataset, v2 is trained
on it beside the original data and converted, packed into one archive, and served by a local HTTP
server; the daemon gets `update_model`, tests v2 on its own engine and switches while it keeps
sorting. Then v3 arrives, and the daemon dies inside v3's health window: it comes back on v2.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.enums import CallbackAPIVersion
from rich.console import Console

from edge.cli import main as smartbin
from edge.config import load_config
from edge.fleet.serve import serve
from edge.formats.archive import pack
from edge.wire.topics import Topic, all_of, topic_of, under

ROOT = Path(__file__).resolve().parents[2]


class Watcher:
    """A subscriber on the demo bin's topics that prints command results and model changes."""

    def __init__(self, port: int, base: str, console: Console):
        """``base``: the bin's topic base (its config's ``topic_base``)."""
        self.console, self.base = console, base
        self.results: list[dict] = []
        self.models: list[dict] = []
        self.classified = 0
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(all_of(self.base), qos=1)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client, userdata, message) -> None:
        data, topic = json.loads(message.payload), topic_of(message.topic)
        if topic is Topic.COMMAND_RESULT:
            self.results.append(data)
            what = data["result"].get("stage") if data["ok"] else f"[red]refused: {data['error']}"
            self.console.print(f"  {data['id']}: {what}")
        elif topic is Topic.MODEL:
            self.models.append(data)
            change = data.get("last_change") or {}
            self.console.print(f"  model topic: {data['folder']} ({change.get('event', 'configured')})")
        elif topic is Topic.CLASSIFICATION:
            self.classified += 1

    def rolled_back(self) -> list[dict]:
        return [m for m in self.models if (m.get("last_change") or {}).get("event") == "rolled_back"]

    def command(self, payload: dict) -> None:
        self.client.publish(
            under(self.base, Topic.COMMAND), json.dumps(payload), qos=Topic.COMMAND.qos
        ).wait_for_publish(5)

    def wait(self, predicate, timeout: float = 120) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.1)
        return False

    def final(self, command_id: str) -> dict | None:
        for r in self.results:
            if r["id"] == command_id and (not r["ok"] or r["result"].get("done")):
                return r
        return None

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def retrain(
    out: Path, data: Path, samples: Path, weights: Path, img_size: int, backbone: str, console: Console
) -> Path | None:
    """Pull the corrected samples and train + convert v2 on the original data plus the field's."""
    field = out / "field"
    shutil.rmtree(field, ignore_errors=True)
    if smartbin(["samples", "pull", str(samples), "--out", str(field)]):
        return None
    run, bundle = out / "run-v2", out / "bundle-v2"
    train = ["train", "--data", str(data), "--data", str(field), "--out", str(run), "--weights", str(weights)]
    train += ["--backbone", backbone]
    if smartbin([*train, "--img-size", str(img_size), "--epochs", "20", "--val-fraction", "0.25"]):
        return None
    name = ["--name", "demo-v2", "--variants", "int8", "--no-probes", "--calib-samples", "200"]
    if smartbin(["convert", str(run), "--out", str(bundle), *name]):
        return None
    return bundle


def run_loop(out: Path, config_path: Path, port: int, v2: Path, console: Console) -> bool:
    """Update to v2 over HTTP while sorting; then v3, killed inside its health window: back on v2."""
    www = out / "www"
    www.mkdir(exist_ok=True)
    v3 = out / "bundle-v3"
    shutil.rmtree(v3, ignore_errors=True)
    shutil.copytree(v2, v3)
    manifest = json.loads((v3 / "manifest.json").read_text(encoding="utf-8"))
    manifest.update(name="demo-v3", created=time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() + 60)))
    (v3 / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    digests = {name: pack(bundle, www / f"{name}.tar") for name, bundle in (("v2", v2), ("v3", v3))}
    server, web_port = serve(www)
    base = f"http://127.0.0.1:{web_port}"
    watcher = Watcher(port, load_config(config_path).topic_base, console)
    log = (out / "daemon-loop.log").open("a")  # the daemon's own log, kept for a look
    daemon = subprocess.Popen([sys.executable, "-m", "edge", "--config", str(config_path)], cwd=ROOT, stderr=log)
    ok = False
    try:
        if not watcher.wait(lambda: watcher.classified > 0, 60):
            console.print("[red]the daemon did not start")
            return False
        console.print(f"update_model {base}/v2.tar (sha256 {digests['v2'][:12]}…)")
        before = watcher.classified
        watcher.command({"id": "update-v2", "action": "update_model", "url": f"{base}/v2.tar", "sha256": digests["v2"]})
        watcher.wait(lambda: watcher.final("update-v2") is not None)
        done = watcher.final("update-v2")
        console.print(f"  {watcher.classified - before} frames classified while v2 was fetched and tested")
        if not done or not done["ok"]:
            return False
        console.print(f"update_model {base}/v3.tar, then the process dies inside v3's health window (SIGKILL)")
        watcher.command({"id": "update-v3", "action": "update_model", "url": f"{base}/v3.tar", "sha256": digests["v3"]})
        watcher.wait(lambda: watcher.final("update-v3") is not None)
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(10)
        console.print("restarted by its supervisor (systemd on a bin):")
        daemon = subprocess.Popen([sys.executable, "-m", "edge", "--config", str(config_path)], cwd=ROOT, stderr=log)
        ok = watcher.wait(
            lambda: any((m.get("last_change") or {}).get("event") == "rolled_back" for m in watcher.models)
        )
        if ok:
            change = [m for m in watcher.models if (m.get("last_change") or {}).get("event") == "rolled_back"][-1]
            console.print(f"  rolled back to {change['folder']}: {change['last_change']['reason']}")
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
        watcher.close()
        server.shutdown()
        log.close()
    return ok


def loop_config(config_path: Path, clip: Path, out: Path) -> Path:
    """The demo bin's config for the loop: the clip on repeat, and a long health window."""
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    config["source"]["uri"] = f"file://{clip}?realtime=1&loop=1"
    config["updates"]["health_window_s"] = 600
    path = out / "demo-bin-loop.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return path
