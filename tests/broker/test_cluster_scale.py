"""`make cluster-scale` as a user types it, small: simulated bins on a three-node RabbitMQ cluster, a node
killed mid-run, and every decision counted at the collector (the figures at full size are in
docs/deployment.md; nothing here is checked against a time)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT
from tests.support.servers.rabbitmq import rabbitmq_missing

pytestmark = pytest.mark.slow


def test_a_small_fleet_loses_no_decision_when_a_node_dies():
    missing = rabbitmq_missing()
    if missing:
        pytest.skip(missing)
    command = ["make", "--no-print-directory", "cluster-scale", f"BIN={Path(sys.executable).parent}"]
    command += ["SCALE_BINS=12", "SCALE_SECONDS=24"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    sent = int(re.search(r"decisions sent +(\d+)", done.stdout).group(1))
    assert sent > 0 and re.search(r"\nlost +0\n", done.stdout), done.stdout
    assert re.search(r"reconnect storm settled +\d+\.\d s after the kill", done.stdout), done.stdout
