"""Command-line options under a new name: the old spelling keeps working for one release and says the new one."""

from __future__ import annotations

import argparse
import sys
from typing import Any


class _OldSpelling(argparse.Action):
    def __init__(self, option_strings: list[str], dest: str, new: str = "", **kwargs: Any):
        super().__init__(option_strings, dest, **kwargs)
        self.new = new

    def __call__(self, parser, namespace, values, option_string: str | None = None) -> None:
        # on stderr as argparse's own messages are: the command's output stays what scripts read
        sys.stderr.write(f"{parser.prog}: {option_string} is now {self.new}; the old name goes in the next release\n")
        setattr(namespace, self.dest, values)


def add_renamed(group: Any, new: str, old: str, **kwargs: Any) -> argparse.Action:
    """``group.add_argument(new, **kwargs)``, and ``old`` hidden from --help, setting the same value with a
    deprecation line. For options that take a value."""
    action = group.add_argument(new, **kwargs)
    group.add_argument(old, dest=action.dest, help=argparse.SUPPRESS, action=_OldSpelling, new=new, type=action.type)
    return action
