"""`smartbin demo`, the README's first command, end to end as a user runs it: it exits 0 only when every step
did what it shows (6 decisions for 6 items, v2 switched over HTTP, v3 rolled back after a SIGKILL in its
health window, the benchmark written)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
SMARTBIN = Path(sys.executable).with_name("smartbin")


def test_the_demo_runs_end_to_end(tmp_path: Path):
    out = tmp_path / "demo-output"
    done = subprocess.run(
        [str(SMARTBIN), "demo", "--out", str(out), "--bench-runs", "5"], capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    # what it says it did, from what it left behind: the bin back on v2 after v3 died in its health window
    state = json.loads((out / "models" / "state.json").read_text(encoding="utf-8"))
    assert state["current"].startswith("demo-v2-") and state["outcome"]["event"] == "rolled_back"
    assert state["outcome"]["failed"].startswith("demo-v3-")
    assert json.loads((out / "bench.json").read_text(encoding="utf-8"))["results"]
