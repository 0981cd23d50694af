"""systemd units pass `systemd-analyze verify` and `security`; the installer's dry run and prefix install."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edge.tools.localbroker import free_port
from tests.support import ROOT, write_config

INSTALL = ROOT / "systemd" / "install.sh"
UNITS = ("smartbin-edge.service", "smartbin-actuator.service")
needs_systemd = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed (Debian's systemd package)"
)


def install(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(INSTALL), *args], capture_output=True, text=True, check=check)


@pytest.fixture()
def prefix(tmp_path: Path, bundle_dir: Path) -> Path:
    """A real install under a temporary root, using this test run's venv (no network)."""
    root = tmp_path / "root"
    install(
        "--prefix",
        str(root),
        "--board",
        "x86-dev",
        "--venv",
        str(Path(sys.executable).parent.parent),
        "--bundle",
        str(bundle_dir),
    )
    return root


@needs_systemd
def test_installed_units_verify_cleanly(prefix: Path):
    units = [str(prefix / "etc/systemd/system" / u) for u in UNITS]
    result = subprocess.run(
        ["systemd-analyze", "verify", *units],
        capture_output=True,
        text=True,
        env={**os.environ, "SYSTEMD_LOG_LEVEL": "notice"},
    )
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stdout + result.stderr


@needs_systemd
@pytest.mark.parametrize("unit", UNITS)
def test_security_exposure_is_at_most_2(unit: str):
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(ROOT / "systemd" / unit)], capture_output=True, text=True
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout[-500:]
    assert float(match[1]) <= 2.0, result.stdout[-2000:]


def test_unit_contract():
    edge = (ROOT / "systemd" / "smartbin-edge.service").read_text()
    for line in (
        "Type=notify",
        "NotifyAccess=main",
        "WatchdogSec=",
        "Restart=on-failure",
        "RestartPreventExitStatus=78",
        "User=smartbin",
        "StateDirectory=smartbin",
        "ConfigurationDirectory=smartbin",
        "DevicePolicy=closed",
        "DeviceAllow=char-video4linux rw",
        "CapabilityBoundingSet=\n",
        "ProtectSystem=strict",
    ):
        assert line in edge, line
    actuator = (ROOT / "systemd" / "smartbin-actuator.service").read_text()
    assert "After=network.target mosquitto.service smartbin-edge.service" in actuator
    assert "ExecReload=/bin/kill -HUP $MAINPID" in actuator  # reload re-reads its config; it used to end it


def test_prefix_install_is_complete_and_idempotent(prefix: Path, bundle_dir: Path):
    from edge.config import load_config
    from edge.formats.bundle import Bundle
    from edge.system.identity import default_device_id

    config = prefix / "etc/smartbin/config.yaml"
    assert load_config(config).model.backend == "auto"
    current = prefix / "var/lib/smartbin/models/current"
    assert current.is_symlink() and Bundle.open(current).verify() is None
    unit = (prefix / "etc/systemd/system/smartbin-edge.service").read_text()
    assert f"ExecStart={Path(sys.executable).parent}/smartbin run --config /etc/smartbin/config.yaml" in unit
    assert load_config(config).device_id == default_device_id()  # no shipped config names one
    config.write_text(config.read_text().replace("# device_id: kitchen-bin", "device_id: kitchen-bin"))  # the user's
    second = install("--prefix", str(prefix), "--board", "x86-dev", "--venv", str(Path(sys.executable).parent.parent))
    assert "kept existing" in second.stdout and load_config(config).device_id == "kitchen-bin"
    assert "device id: kitchen-bin (topics smartbin/kitchen-bin/..." in second.stdout
    install("--prefix", str(prefix), "--uninstall")
    assert not (prefix / "etc/systemd/system/smartbin-edge.service").exists() and config.exists()
    install("--prefix", str(prefix), "--uninstall", "--purge")
    assert not config.exists()


def test_dry_run_changes_nothing_and_shows_the_plan(tmp_path: Path):
    result = install("--dry-run", "--board", "rpi4")
    assert "board: rpi4 (extras: pi)" in result.stdout
    for step in (
        "useradd --system",
        "python3 -m venv --system-site-packages /opt/smartbin/venv",  # picamera2 comes from the OS
        "apt-get install -y python3-picamera2",
        "[pi]",
        "/etc/smartbin/config.yaml",
        "systemctl enable --now smartbin-edge.service",
    ):
        assert step in result.stdout, step
    empty = tmp_path / "root"
    empty.mkdir()
    install("--dry-run", "--prefix", str(empty), "--board", "rpi5")
    assert list(empty.iterdir()) == []


def test_refusals_are_clear():
    unknown = install("--dry-run", "--board", "pi3", check=False)
    assert unknown.returncode == 1 and "unknown board 'pi3' (allowed: rpi4 rpi5" in unknown.stderr
    as_user = ["runuser", "-u", "nobody", "--"] if os.geteuid() == 0 and shutil.which("runuser") else []
    not_root = subprocess.run([*as_user, "bash", str(INSTALL), "--board", "rpi4"], capture_output=True, text=True)
    if os.geteuid() != 0 or as_user:
        assert not_root.returncode == 1 and "run as root (sudo)" in not_root.stderr
    bad_bundle = install("--dry-run", "--board", "rpi4", "--bundle", "/nonexistent", check=False)
    assert bad_bundle.returncode == 1 and "is not a model bundle" in bad_bundle.stderr


def test_install_paths_per_board():
    """A Jetson's venv sees JetPack's OpenCV; an x86 box gets a plain venv and no picamera2."""
    jetson = install("--dry-run", "--board", "jetson-orin-nano").stdout
    assert "python3 -m venv --system-site-packages /opt/smartbin/venv" in jetson and "[jetson]" in jetson
    x86 = install("--dry-run", "--board", "x86-dev").stdout
    assert "python3 -m venv /opt/smartbin/venv" in x86 and "picamera2" not in x86
    pinned = ROOT / "constraints" / f"{platform.machine()}.txt"  # what constraints/refresh.sh wrote for it
    assert f"-c {pinned} " in x86 and f"-c {pinned} " not in jetson
    # a Jetson keeps numpy 1.x for JetPack's OpenCV: its own pins (tests/jetson_check.sh installs and runs them)
    assert f"-c {ROOT / 'constraints' / 'jetson.txt'} " in jetson
    # the CSI camera's /tmp/argus_socket stays in reach on a Jetson only (tests/system/test_real_systemd.py runs it)
    assert "10-jetson-camera.conf" in jetson and "10-jetson-camera.conf" not in x86


@needs_systemd
def test_units_name_only_groups_that_exist_here(prefix: Path):
    def exists(group: str) -> bool:
        return subprocess.run(["getent", "group", group], capture_output=True).returncode == 0

    for unit, wanted in (("smartbin-edge.service", ("video", "gpio")), ("smartbin-actuator.service", ("gpio",))):
        text = (prefix / "etc/systemd/system" / unit).read_text()
        present = [g for g in wanted if exists(g)]
        line = next((ln for ln in text.splitlines() if ln.startswith("SupplementaryGroups=")), None)
        assert line == (f"SupplementaryGroups={' '.join(present)}" if present else None), (unit, line)


def test_an_old_python_is_stopped_with_one_sentence(tmp_path: Path):
    """Debian 11 ships Python 3.9: the installer names the version setup.py requires instead of failing inside
    pip; a Jetson Nano (JetPack 4: Python 3.6) is refused as unsupported, whatever Python is passed."""
    old = tmp_path / "python3.9"
    old.write_text("#!/bin/sh\necho 3.9\n")
    old.chmod(0o755)
    result = install("--dry-run", "--board", "x86-dev", "--python", str(old), check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "is Python 3.9; smartbin needs 3.10 or newer" in result.stderr
    nano = install("--dry-run", "--board", "jetson-nano", "--python", sys.executable, check=False)
    assert nano.returncode == 1 and "the Jetson Nano is not supported" in nano.stderr


def test_under_systemd_each_line_carries_its_priority_and_no_time(tmp_path: Path):
    """journald reads a "<N>" prefix as the entry's priority (`journalctl -p warning` finds warnings) and adds
    the time itself. The stream is the one JOURNAL_STREAM names, as systemd sets it; a run on a terminal (the
    control: another stream) keeps its times and has no prefixes."""
    # valid, its model missing: an info line, a logged error, exit 75
    config = write_config(tmp_path / "config.yaml", tmp_path / "no-model", "synthetic://", free_port())
    runs = {}
    for name in ("journal", "terminal"):
        with (tmp_path / name).open("w") as err:
            st = os.fstat(err.fileno())
            named = f"{st.st_dev}:{st.st_ino}" if name == "journal" else f"{st.st_dev}:{st.st_ino + 1}"
            env = {**os.environ, "JOURNAL_STREAM": named}
            result = subprocess.run([sys.executable, "-m", "edge", "--config", str(config)], stderr=err, env=env)
        assert result.returncode == 75
        runs[name] = (tmp_path / name).read_text().splitlines()
    priorities = [int(m.group(1)) for m in map(re.compile(r"^<(\d)>").match, runs["journal"]) if m]
    assert len(priorities) == len(runs["journal"]) >= 3, runs["journal"]
    assert 6 in priorities and priorities[-1] == 3  # info, and the exit's error line
    time = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
    assert not any(time.search(line) for line in runs["journal"])
    assert all(time.match(line) for line in runs["terminal"][:-1]) and not runs["terminal"][-1].startswith("<")
