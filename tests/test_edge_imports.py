"""edge/ never imports TensorFlow or Keras, directly or indirectly (devices install smartbin[edge] only)."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import edge

ROOT = Path(__file__).resolve().parent.parent


def edge_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(edge.__path__, "edge.") if m.name != "edge.__main__")


def test_importing_every_edge_module_loads_no_tensorflow():
    modules = edge_modules()
    assert "edge.runtime.litert" in modules and "edge.cli" in modules  # the walk really found them
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf_keras'))\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert result.stdout.strip() == "", f"edge imported: {result.stdout.strip()[:200]}"


def test_cli_help_loads_no_tensorflow():
    code = (
        "import sys\nfrom edge.cli import main\n"
        "for cmd in (['--help'], ['predict', '--help'], ['train', '--help'], ['convert', '--help']):\n"
        "    try:\n        main(cmd)\n    except SystemExit:\n        pass\n"
        "print('TF' if 'tensorflow' in sys.modules else 'clean', file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.stderr.strip().endswith("clean")
    assert "--fine-tune-epochs" in result.stdout and "--allow-accuracy-drop" in result.stdout


def test_version_flag():
    result = subprocess.run([sys.executable, "-m", "edge.cli", "--version"], capture_output=True, text=True, cwd=ROOT)
    assert result.stdout.strip() == f"smartbin {edge.__version__}"
