"""edge/ never imports TensorFlow, Keras or the workstation's `convert`, directly or indirectly
(devices install smartbin[edge] only, and the device never reaches into the workstation)."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import edge

ROOT = Path(__file__).resolve().parent.parent


def edge_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(edge.__path__, "edge.") if m.name != "edge.__main__")


BLOCKER = """
import importlib, importlib.abc, sys
BLOCKED = ("tensorflow", "keras", "tf_keras", "convert")
TRIED = []  # a module that catches the ImportError still counts
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            TRIED.append(name)
            raise ImportError(f"blocked: {name}")
        return None
sys.meta_path.insert(0, Block())
"""


def test_every_edge_module_imports_with_tensorflow_keras_and_convert_blocked():
    modules = edge_modules()
    assert {"edge.runtime.litert", "edge.cli", "edge.service.daemon", "edge.tools.benchworker"} <= set(modules)
    code = BLOCKER + (f"for name in {modules!r}:\n    importlib.import_module(name)\nprint(len(sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-1500:]


def test_the_blocker_really_blocks():
    code = BLOCKER + "import convert.dataset\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode != 0 and "blocked: convert" in result.stderr


def test_device_commands_run_with_the_workstation_blocked():
    code = BLOCKER + "from edge.cli import main\nsys.exit(main(['config', 'check', 'firmware_config/x86-dev.yaml']))\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-1500:]


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


def test_the_console_script_starts_on_the_device_side_and_the_workstation_registers():
    from importlib.metadata import entry_points

    from edge.cli import registered_extensions

    scripts = {e.name: e.value for e in entry_points(group="console_scripts") if e.name == "smartbin"}
    assert scripts == {"smartbin": "edge.cli:main"}
    import convert.cli

    assert convert.cli.register in registered_extensions()
