"""Logging for a terminal or for systemd's journal.

Under systemd (its ``JOURNAL_STREAM`` names the stream stderr is) each line starts with its syslog priority
(``<3>`` error, ``<4>`` warning, ...), which journald takes as the entry's priority, so that
``journalctl -p warning -u smartbin-edge`` finds warnings; and no time, which the journal adds itself.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

# syslog priorities (sd-daemon.h): what journald reads from a "<N>" prefix
PRIORITIES = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}
ERROR = PRIORITIES[logging.ERROR]


def to_journal(stream: TextIO = sys.stderr) -> bool:
    """True when ``stream`` is the one systemd connected to the journal (its device and inode match)."""
    named = os.environ.get("JOURNAL_STREAM", "")
    try:
        device, inode = (int(part) for part in named.split(":"))
        st = os.fstat(stream.fileno())
    except (ValueError, OSError, AttributeError):  # not set, malformed, or a stream without a descriptor
        return False
    return (st.st_dev, st.st_ino) == (device, inode)


def priority(levelno: int) -> int:
    """The syslog priority of a logging level (between two levels: the more severe one's)."""
    for level, value in sorted(PRIORITIES.items(), reverse=True):
        if levelno >= level:
            return value
    return PRIORITIES[logging.DEBUG]


class JournalFormatter(logging.Formatter):
    """Every line of a record (a traceback's too) with the record's priority, no time."""

    def __init__(self) -> None:
        super().__init__("%(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).splitlines())


def configure(verbose: bool) -> None:
    """The root logger for the CLI and the services: to the journal when systemd runs us, else with times."""
    handler = logging.StreamHandler(sys.stderr)
    if to_journal(sys.stderr):
        handler.setFormatter(JournalFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])


def print_error(text: str) -> None:
    """A line the CLI writes to stderr itself (not through logging): an error to the journal too."""
    sys.stderr.write((f"<{ERROR}>{text}" if to_journal(sys.stderr) else text) + "\n")
