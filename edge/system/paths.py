"""Where shipped data (firmware_config/) lives, in a checkout or an installed package."""

from __future__ import annotations

import sys
from pathlib import Path


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
