"""Rolling a trained job's bundle out from the review station: the fleet as the broker shows it (one FleetView
for the page's life), and one staged rollout at a time (edge/fleet/rollout.py, as `smartbin fleet rollout`
does), its lines and report written to the job's ``rollout.json`` as they come."""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from edge.config import MqttConfig
from edge.errors import SmartbinError
from edge.fleet.rollout import roll_out
from edge.fleet.rule import Rule
from edge.fleet.serve import served
from edge.fleet.view import FleetView
from edge.system.atomic import write_atomic

log = logging.getLogger(__name__)
ROLLOUT_FILE = "rollout.json"


@dataclass
class Request:
    """What the page asks for: the stages and the rule."""

    stages: list[str]
    rule: Rule
    head_only: bool = False  # a taught head: its head alone goes out (the bins keep their backbone)


class PageRollouts:
    """The fleet for the page, and the rollouts it starts."""

    def __init__(self, settings: MqttConfig, bind: str = "0.0.0.0:0", advertise: str | None = None):
        self.settings, self.bind, self.advertise = settings, bind, advertise
        self.view = FleetView(settings, "smartbin-review")
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()
        self.stop = threading.Event()  # the page's stop button, or the server stopping

    def start_watching(self) -> PageRollouts:
        self.view.start()
        return self

    def close(self, timeout: float = 120) -> None:
        """Stop a running rollout (its bins put back) and the view."""
        if self.stop_rollout():
            self.thread.join(timeout)
        self.view.close()

    def stop_rollout(self) -> bool:
        """Ask a running rollout to stop and put its bins back; False when none runs."""
        running = self.thread is not None and self.thread.is_alive()
        if running:
            self.stop.set()
        return running

    def devices(self) -> list[dict]:
        """Every bin the broker has a status or model of, as the page lists them."""
        rows = []
        for device_id, view in sorted(self.view.snapshot().items()):
            status, model = view.status, view.model
            rows.append(
                {
                    "device": device_id,
                    "state": status.state if status else None,
                    "health": status.health if status else None,
                    "model": model.folder if model else None,
                }
            )
        return rows

    @staticmethod
    def state(job_folder: Path) -> dict | None:
        path = job_folder / ROLLOUT_FILE
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def start(self, job_folder: Path, bundle: Path, request: Request) -> None:
        """The rollout in the background; SmartbinError while another runs."""
        with self.lock:
            if self.thread is not None and self.thread.is_alive():
                raise SmartbinError("a rollout is running already: wait for it to end")
            state = {"state": "running", "lines": [], "report": None, "error": None}
            self.stop.clear()
            self.save(job_folder, state)
            self.thread = threading.Thread(target=self.run, args=(job_folder, bundle, request, state), daemon=True)
            self.thread.start()

    def run(self, job_folder: Path, bundle: Path, request: Request, state: dict) -> None:
        def say(line: str) -> None:
            state["lines"].append(line)
            self.save(job_folder, state)

        try:
            broker = (self.settings.host, self.settings.port)
            with served(bundle, broker, self.bind, self.advertise, head_only=request.head_only) as release:
                say(f"release: {release.url}")
                report = roll_out(self.view, release, request.rule, request.stages, say=say, stop=self.stop)
            state.update(state="completed" if report.completed else "stopped", report=report.to_dict())
        except Exception as exc:  # noqa: BLE001 - whatever ended it is the page's answer
            log.warning("rollout of %s ended: %s", bundle, exc)
            state.update(state="failed", error=str(exc) or type(exc).__name__)
        self.save(job_folder, state)

    @staticmethod
    def save(job_folder: Path, state: dict) -> None:
        write_atomic(job_folder / ROLLOUT_FILE, json.dumps(state, indent=2).encode())
