"""An actuator whose broker will not have it: it says why, once, and keeps trying."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.support import actuator_config, poll, start_actuator

pytestmark = pytest.mark.slow


def test_an_actuator_the_broker_refuses_says_why_once(tmp_path: Path):
    """A broker that takes no anonymous client: the actuator keeps retrying (the broker may be fixed) and its
    journal says why, once, not at every retry."""
    from edge.tools.localbroker import LocalBroker, free_port

    port = free_port()
    config = actuator_config(tmp_path, port, "pins")
    log = tmp_path / "actuator.log"
    with LocalBroker(port=port, workdir=tmp_path / "broker", extra_config="allow_anonymous false"):
        actuator = start_actuator(config, log)
        try:
            assert poll(lambda: "refused the actuator" in log.read_text(), 30), log.read_text()[-2000:]
            time.sleep(3)  # several retries (every 1 to 5 s)
        finally:
            actuator.terminate()
            actuator.wait(20)
    said = log.read_text()
    assert said.count("refused the actuator: Not authorized") == 1, said[-2000:]
    assert "Traceback" not in said
