"""tests/unit/ is the fast layer: the pure rules (the rollout's judgement, the reload plan, the gate, a decision's
age, the restart back-off), run in about a second with `pytest tests/unit`. It stays so: no test there takes a
fixture that trains, converts or starts something, and no module there imports what starts a process, a
broker, a server or TensorFlow."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support import ROOT

SLOW_IMPORTS = ("subprocess", "socket", "tensorflow", "keras", "edge.tools", "tests.support.fleet", "http.server")


def session_fixtures() -> set[str]:
    """The fixtures tests/conftest.py defines: each builds or starts something (a model, a broker, a clip)."""
    tree = ast.parse((ROOT / "tests" / "conftest.py").read_text(encoding="utf-8"))
    return {
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and any("fixture" in ast.unparse(d) for d in node.decorator_list)
    }


def slow_parts(folder: Path) -> list[str]:
    """What in ``folder``'s test modules is not for the fast layer: a slow fixture, a slow import."""
    slow, found = session_fixtures(), []
    for path in sorted(folder.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                found += [f"{path.name}: {node.name}({a.arg})" for a in node.args.args if a.arg in slow]
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            found += [f"{path.name}: import {n}" for n in names if n.startswith(SLOW_IMPORTS)]
    return found


def test_the_unit_layer_uses_nothing_slow():
    assert len(list((ROOT / "tests" / "unit").glob("test_*.py"))) >= 5
    assert slow_parts(ROOT / "tests" / "unit") == []


def test_the_check_finds_a_broker_and_a_subprocess(tmp_path: Path):
    assert {"broker", "bundle_dir", "clip_factory"} <= session_fixtures()
    (tmp_path / "test_planted.py").write_text("import subprocess\n\n\ndef test_x(tmp_path, broker):\n    pass\n")
    assert slow_parts(tmp_path) == ["test_planted.py: import subprocess", "test_planted.py: test_x(broker)"]
