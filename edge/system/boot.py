"""Which boot of its host this process runs in: the kernel's boot id, new at every start of the machine.

A Pi has no real-time clock: after a power cut it starts with its clock set back to when it last saved it,
so a decision's wall-clock time cannot tell whether it was made before the cut. The boot id can: a
decision stored under another boot id was made before this boot, whatever the clocks say.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

BOOT_ID_FILE = Path("/proc/sys/kernel/random/boot_id")
# Where /proc has none (not Linux), and for a test's power cut: a machine cannot be rebooted in a test run.
ENV = "SMARTBIN_BOOT_ID"


@functools.cache
def boot_id() -> str:
    """This boot's id (32 hex digits); "unknown" where the system has none (then every boot looks the same,
    and decisions from before a power cut are judged by their age alone, as before)."""
    value = os.environ.get(ENV) or _read(BOOT_ID_FILE)
    value = value.strip().replace("-", "").lower()
    return value if re.fullmatch(r"[0-9a-f]{32}", value) else "unknown"


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError):
        return ""
