"""The fleet simulation: many bins, one real broker, nothing lost."""

from __future__ import annotations

import subprocess
import sys

from tests.support import ROOT


def test_fleet_sim_counts_and_loses_nothing(broker):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge.cli",
            "fleet-sim",
            "--devices",
            "25",
            "--duration",
            "4",
            "--rate",
            "2",
            "--broker",
            f"127.0.0.1:{broker.port}",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    print(result.stdout)
    assert result.returncode == 0, result.stderr[-1500:]
    summary, lost = result.stdout.strip().splitlines()[-2:]
    assert lost == "lost: 0"
    sent = int(summary.split("sent ")[1].split(",")[0])
    received = int(summary.split("received ")[1].split(" ")[0])
    assert sent == received and sent > 50
