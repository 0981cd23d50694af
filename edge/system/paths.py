"""Where things live: the bin's state on its disk, and shipped data (firmware_config/) in a checkout or an
installed package."""

from __future__ import annotations

import sys
from pathlib import Path

# The bin's state (outbox, model store, samples, counters, the actuator's log): the service user's home, the
# unit's StateDirectory (systemd/), and every default path of the config under it.
STATE_DIR = Path("/var/lib/smartbin")


def firmware_config_dir() -> Path:
    """Return the firmware_config folder: beside the package in a checkout, else under share/."""
    candidates = [
        Path(__file__).resolve().parents[2] / "firmware_config",
        Path(sys.prefix) / "share" / "smartbin" / "firmware_config",
    ]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    return candidates[0]


def default_rules_path() -> Path:
    """The 40 garbage_classify_v2 classes and their bins, shipped as the default rules."""
    return firmware_config_dir() / "garbage_classify_rule.json"


def board_config(name: str) -> Path | None:
    """A shipped board's config by name (``rpi5``: firmware_config/rpi5.yaml), or None when there is none."""
    path = firmware_config_dir() / f"{name}.yaml"
    return path if name.replace("-", "").isalnum() and path.is_file() else None
