"""The bench's terminal output: rich where it is installed (the workstation), plain text where it is not (a
device: rich is not in the device's extras, and a bench run over SSH or in a journal needs no colours)."""

from __future__ import annotations

import re
import sys
from typing import Any

try:
    import rich.console
    import rich.progress
    import rich.table
except ImportError:  # a device's venv
    rich = None

MARKUP = re.compile(r"\[/?[a-z ]+\]")  # rich's [red]...[/red]


class PlainTable:
    """The few calls of rich's Table the bench makes, rendered as aligned columns."""

    def __init__(self, title: str = ""):
        self.title, self.columns, self.rows = title, [], []

    def add_column(self, name: str, justify: str = "left") -> None:
        self.columns.append((name, justify))

    def add_row(self, *cells: str) -> None:
        self.rows.append([str(c) for c in cells])

    def render(self) -> str:
        lines = [[name for name, _ in self.columns], *self.rows]
        widths = [max(len(line[i]) for line in lines) for i in range(len(self.columns))]

        def cell(i: int, text: str) -> str:
            return text.ljust(widths[i]) if self.columns[i][1] == "left" else text.rjust(widths[i])

        return "\n".join([self.title, *("  ".join(cell(i, t) for i, t in enumerate(line)) for line in lines)])


class PlainConsole:
    """print() of rich's Console: markup removed, a table rendered as text."""

    def __init__(self, stderr: bool = False):
        self.stream = sys.stderr if stderr else sys.stdout

    def print(self, item: Any) -> None:
        text = item.render() if isinstance(item, PlainTable) else MARKUP.sub("", str(item))
        self.stream.write(text + "\n")
        self.stream.flush()


class PlainProgress:
    """rich's Progress as one line per step."""

    def __init__(self, console: PlainConsole):
        self.console = console

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def add_task(self, description: str, total: int) -> int:
        self.total, self.done = total, 0
        return 0

    def update(self, task: int, description: str) -> None:
        self.console.print(f"[{self.done + 1}/{self.total}] {description}")

    def advance(self, task: int) -> None:
        self.done += 1


def console(stderr: bool = False, width: int | None = None) -> Any:
    """A console for the bench's lines (rich's when installed)."""
    if rich is None:
        return PlainConsole(stderr)
    return rich.console.Console(stderr=stderr, width=width)


def progress(out: Any) -> Any:
    """A progress display on ``out`` (from ``console``)."""
    return PlainProgress(out) if rich is None else rich.progress.Progress(console=out, transient=True)


def table(title: str) -> Any:
    """A table the console prints."""
    return PlainTable(title) if rich is None else rich.table.Table(title=title)
