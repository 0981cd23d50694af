"""What a SIGHUP rebuilds, and what it refuses, from the config before and after (tests/daemon/ and
tests/models/ reload real daemons)."""

from __future__ import annotations

import pytest

from edge.config import parse_config
from edge.daemon.reload import ReloadRefused, changed_sections, plan_reload
from tests.support import board


def config(change=lambda data: None):
    data = {**board(), "device_id": "bin-01"}
    change(data)
    return parse_config(data)


def test_only_changed_live_sections_are_rebuilt_in_order():
    running = config()
    assert plan_reload(running, config()) == []
    both = config(lambda d: (d["decision"].update(min_confidence=0.9), d["model"].update(top_k=2)))
    assert plan_reload(running, both) == ["model", "decision"]  # Config's order: the model first
    # the actuator's section is another service's: changed, but nothing here is rebuilt for it
    moved = config(lambda d: d["actuator"].update(hold_s=0.5))
    assert changed_sections(running, moved) == ["actuator"] and plan_reload(running, moved) == []


@pytest.mark.parametrize(
    "change, named",
    [
        (lambda d: d.update(device_id="bin-02"), "device_id"),
        (lambda d: d["outbox"].update(max_items=5), "outbox"),
        (lambda d: d["updates"].update(store="/srv/other-store"), "updates.store"),
    ],
)
def test_what_would_strand_state_is_refused_and_named(change, named):
    with pytest.raises(ReloadRefused, match=f"^{named} cannot change while running .*restart the service"):
        plan_reload(config(), config(change))


def test_other_update_settings_are_live():
    assert plan_reload(config(), config(lambda d: d["updates"].update(keep=5))) == ["updates"]
