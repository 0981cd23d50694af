"""The rooms of edge/ in the order docs/architecture.md draws: each imports only rooms below it, lazy imports
included. The order is read from the drawing, so the picture and the rule cannot drift apart."""

from __future__ import annotations

import re
from pathlib import Path

from tests.support.codegraph import import_graph

ROOT = Path(__file__).resolve().parents[2]


def drawn_order(root: Path) -> dict[str, int]:
    """Room -> its height in the drawing (0 at the bottom). Rooms on one line share a height."""
    text = (root / "docs" / "architecture.md").read_text(encoding="utf-8")
    block = text.split("```rooms", 1)[1].split("```", 1)[0]
    lines = [re.split(r"\s{3,}", line.strip())[0].split() for line in block.strip().splitlines()]
    return {room: height for height, rooms in enumerate(reversed(lines)) for room in rooms}


def room_of(module: str) -> str | None:
    """``edge.daemon.outputs`` -> ``daemon``, ``edge.config`` -> ``config``, ``edge`` -> ``__init__``; None
    outside edge/."""
    parts = module.split(".")
    if parts[0] != "edge":
        return None
    return parts[1] if len(parts) > 1 else "__init__"


def wrong_imports(root: Path) -> list[str]:
    """Every import of edge/ that goes up or sideways in the drawing, as ``module -> module``."""
    order = drawn_order(root)
    wrong = []
    for module, targets in sorted(import_graph(root).items()):
        room = room_of(module)
        if room is None:
            continue
        assert room in order, f"{room} (of {module}) is not in docs/architecture.md's drawing of the rooms"
        for target in sorted(targets):
            other = room_of(target)
            if other is not None and other != room and order.get(other, len(order)) >= order[room]:
                wrong.append(f"{module} -> {target}")
    return wrong


def test_every_import_in_edge_goes_down_the_drawn_rooms():
    assert wrong_imports(ROOT) == []


def test_the_drawing_names_every_room_of_edge():
    rooms = {p.name for p in (ROOT / "edge").iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    rooms |= {p.stem for p in (ROOT / "edge").glob("*.py")}
    assert set(drawn_order(ROOT)) == rooms


def test_a_planted_upward_or_sideways_import_is_found(tmp_path: Path):
    """A copy of edge/ with two imports planted: wire (the contract) reaching up into the daemon, lazily inside
    a function, and vision reaching sideways into sources."""
    import shutil

    shutil.copytree(ROOT / "edge", tmp_path / "edge", ignore=shutil.ignore_patterns("__pycache__", "schemas"))
    (tmp_path / "convert").mkdir()
    (tmp_path / "convert" / "__init__.py").write_text("")
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    assert wrong_imports(tmp_path) == []
    with (tmp_path / "edge" / "wire" / "topics.py").open("a") as fh:
        fh.write("\n\ndef planted():\n    from edge.daemon.daemon import Daemon\n\n    return Daemon\n")
    (tmp_path / "edge" / "vision" / "planted.py").write_text("from edge.sources import Frame\n")
    assert wrong_imports(tmp_path) == ["edge.vision.planted -> edge.sources", "edge.wire.topics -> edge.daemon.daemon"]
