"""A Pi's venv beside the OS's compiled packages, up to the boundary we can reach here.

On Raspberry Pi OS, picamera2 comes from apt with simplejpeg built for the OS's numpy 1.24, while the
venv (--system-site-packages, as install.sh makes it on a Pi) needs numpy 2. The same mismatch is built
here from Debian's own packages: python3-bottleneck, compiled against Debian's numpy 1.24, under a venv
of Debian's Python with numpy 2. It fails to import, as simplejpeg does on a Pi; systemd/venv-abi.sh
(which install.sh runs for simplejpeg on a Pi) makes it import, and the OS's copy is left as it was.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support import ROOT

WHEELS = ROOT / ".cache" / "wheels"
SYSTEM_PYTHON = Path("/usr/bin/python3")


def system_has(module: str) -> bool:
    return SYSTEM_PYTHON.exists() and subprocess.run([SYSTEM_PYTHON, "-c", f"import {module}"]).returncode == 0


@pytest.fixture()
def pi_like_venv(tmp_path: Path) -> Path:
    if not system_has("venv") or not system_has("bottleneck"):
        pytest.skip("needs Debian's python3-venv, python3-numpy and python3-bottleneck (.ci/run installs them)")
    if not list(WHEELS.glob("bottleneck-*.whl")):
        pytest.skip(f"no bottleneck wheel in {WHEELS}: `make wheels` fetches it (the README's `make test` does)")
    venv = tmp_path / "venv"
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--system-site-packages", venv], check=True)
    # what pip does when smartbin[pi] needs numpy 2 (OpenCV, LiteRT's ml_dtypes) beside the OS's 1.24
    pip = [venv / "bin" / "pip", "install", "--quiet", "--no-index", "--find-links", WHEELS]
    subprocess.run([*pip, "numpy>=2"], check=True)
    return venv


def run(python: Path, code: str) -> subprocess.CompletedProcess:
    return subprocess.run([python, "-c", code], capture_output=True, text=True)


def test_the_installer_gives_the_venv_a_build_of_an_os_module_for_its_numpy(pi_like_venv: Path):
    python = pi_like_venv / "bin" / "python"
    assert run(python, "import numpy; print(numpy.__version__)").stdout.startswith("2.")
    broken = run(python, "import bottleneck")
    assert broken.returncode != 0 and "numpy" in broken.stderr, broken.stderr[-1000:]
    fixed = subprocess.run(
        [ROOT / "systemd" / "venv-abi.sh", pi_like_venv, "--find-links", WHEELS, "bottleneck=bottleneck"],
        capture_output=True,
        text=True,
    )
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    works = run(python, "import bottleneck, numpy; print(bottleneck.__file__, bottleneck.nansum(numpy.arange(4.0)))")
    assert works.returncode == 0, works.stderr[-1000:]
    where, total = works.stdout.split()
    assert where.startswith(str(pi_like_venv)) and float(total) == 6.0
    assert run(SYSTEM_PYTHON, "import bottleneck").returncode == 0  # the OS's own copy still works for the OS


def test_a_module_that_fails_for_another_reason_is_named_not_reinstalled(pi_like_venv: Path):
    done = subprocess.run(
        [ROOT / "systemd" / "venv-abi.sh", pi_like_venv, "--find-links", WHEELS, "no_such_module=nothing"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1 and "no_such_module: does not import, not a numpy mismatch" in done.stderr
    assert shutil.which("pip", path=str(pi_like_venv / "bin"))  # the venv is intact
