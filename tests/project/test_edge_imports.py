"""edge/ never imports TensorFlow, Keras or the workstation's `convert`, directly or indirectly
(devices install smartbin[edge] only, and the device never reaches into the workstation)."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import edge

ROOT = Path(__file__).resolve().parents[2]


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
    assert {"edge.runtime.litert", "edge.cli", "edge.daemon.daemon", "edge.benchmark.worker"} <= set(modules)
    code = BLOCKER + (f"for name in {modules!r}:\n    importlib.import_module(name)\nprint(len(sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-1500:]


def test_the_blocker_really_blocks():
    code = BLOCKER + "import convert.data.sampling\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode != 0 and "blocked: convert" in result.stderr


def test_device_commands_run_with_the_workstation_blocked():
    code = BLOCKER + "from edge.cli import main\nsys.exit(main(['config', 'check', 'firmware_config/x86-dev.yaml']))\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-1500:]


def test_a_workstation_command_on_a_device_install_names_the_install_that_runs_it(tmp_path: Path):
    """A device installs smartbin[edge]: `smartbin train` is there (the package is one) but TensorFlow and Keras
    are not. The command says which install runs it, in one line, and writes nothing."""
    absent = BLOCKER.replace('raise ImportError(f"blocked: {name}")', "raise ModuleNotFoundError(name, name=name)")
    absent = absent.replace('"tf_keras", "convert"', '"tf_keras"')
    train = ["train", "--data", str(ROOT / "tests"), "--out", str(out := tmp_path / "run")]
    code = absent + f"from edge.cli import main\nsys.exit(main({train!r}))\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2, result.stderr[-1500:]
    assert "Traceback" not in result.stderr and "pip install 'smartbin[train]'" in result.stderr
    assert not out.exists()


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
    import convert.commands.cli

    assert convert.commands.cli.register in registered_extensions()


def test_make_dist_builds_a_wheel_that_runs_outside_the_repository(tmp_path: Path):
    """`make dist`'s file, installed alone into a folder (its dependencies from this venv), runs the device's
    commands from anywhere, and carries the board configs, the schemas and the Python it needs."""
    import zipfile

    root = Path(__file__).resolve().parents[2]
    subprocess.run(["make", "-s", "dist", f"BIN={Path(sys.executable).parent}"], cwd=root, check=True)
    wheels = sorted((root / "dist").glob(f"smartbin-{edge.__version__}-py3-none-any.whl"))
    assert wheels, "make dist wrote no wheel"
    names = zipfile.ZipFile(wheels[-1]).namelist()
    assert "edge/schemas/decision.json" in names and any(n.endswith("firmware_config/rpi5.yaml") for n in names)
    metadata = zipfile.ZipFile(wheels[-1]).read(f"smartbin-{edge.__version__}.dist-info/METADATA").decode()
    assert "Requires-Python: >=3.10" in metadata
    target = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--target", str(target)]
    subprocess.run([*pip, str(wheels[-1])], check=True)
    config = target / "share" / "smartbin" / "firmware_config" / "x86-dev.yaml"
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}  # the wheel's code, not the repository's
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import edge, sys; from edge.cli import main; print(edge.__file__); main()",
            "config",
            "check",
            str(config),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(str(target)) and "OK" in result.stdout


def test_metadata_naming_a_module_that_is_gone_is_said_not_hidden(tmp_path: Path, monkeypatch, caplog):
    """An older install's metadata (an egg-info left in the folder) names convert.cli, which moved: its commands
    are left out with a warning saying why; a package that is not installed at all stays a quiet debug line."""
    import logging

    from edge.cli import registered_extensions

    dist = tmp_path / "smartbin_old-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: smartbin-old\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[smartbin.commands]\nold = convert.cli:register\nelsewhere = notinstalledpkg.cli:register\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with caplog.at_level(logging.DEBUG, logger="edge.cli"):
        extensions = registered_extensions()
    assert [e.__module__ for e in extensions] == ["convert.commands.cli"]  # the real one still loads
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "convert.cli is not in this install" in warnings[0]
