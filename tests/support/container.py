"""A real systemd as PID 1 of a container made from this machine's own Debian (systemd-nspawn).

The root is built in a second from the host: its /usr bound read-only, a copy of its /etc, empty
/var, /opt and /root. Nothing is downloaded, so there is nothing to cache: the same /usr, the same
systemd, Python and mosquitto as the host. The container has its own network namespace (only
loopback): its broker and ports never meet the host's, and nothing inside can reach a network.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

NSPAWN = shutil.which("systemd-nspawn")
SYSTEMD = Path("/usr/lib/systemd/systemd")
# What a root shell on a fresh box has: nothing from this test run's virtualenv.
SHELL_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8"}


def unavailable() -> str | None:
    """Why a container cannot boot here, or None when it can."""
    if os.geteuid() != 0:
        return "booting systemd in a container needs root (systemd-nspawn)"
    if NSPAWN is None:
        return "systemd-nspawn is not installed (Debian's systemd-container package)"
    if not SYSTEMD.exists():
        return f"{SYSTEMD} is missing (Debian's systemd package)"
    if not Path("/bin").is_symlink():
        return "the host's / is not merged-/usr, so its /usr alone is not an OS to boot"
    if shutil.which("nsenter") is None:
        return "nsenter is missing (util-linux)"
    return None


MASKED = ("rabbitmq-server.service", "epmd.service", "epmd.socket")


class Container:
    """One booted container. ``sh`` runs a command inside as root; ``path`` maps a path inside to the host."""

    def __init__(self, root: Path, binds: dict[Path, str] | None = None, name: str = "smartbin-test"):
        self.root = root
        self.binds = binds or {}  # host folder -> read-only path inside
        self.name = name
        self.leader = 0
        self.process: subprocess.Popen | None = None
        self.log = root.parent / f"{name}.console.log"

    def _build_root(self) -> None:
        self.root.mkdir(parents=True)
        for d in ("usr", "var", "tmp", "root", "home", "opt", "srv", "dev", "proc", "sys", "run", "mnt"):
            (self.root / d).mkdir()
        for link in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
            if Path("/", link).is_symlink():
                (self.root / link).symlink_to(os.readlink(Path("/", link)))
        subprocess.run(["cp", "-a", "/etc", str(self.root)], check=True)
        self._copy_var_skeleton()
        etc = self.root / "etc"
        (etc / "os-release").unlink(missing_ok=True)  # a link into /usr, which is bound only at boot
        shutil.copy("/usr/lib/os-release", etc / "os-release")
        (etc / "machine-id").unlink(missing_ok=True)
        (etc / "hostname").write_text(f"{self.name}\n")
        # Boot to a quiet multi-user target: the host's enabled services are not ours to test.
        wants = etc / "systemd" / "system" / "multi-user.target.wants"
        shutil.rmtree(wants, ignore_errors=True)
        wants.mkdir(parents=True)
        # and never a broker that other tests installed on the host (RabbitMQ): masked, or its state folder
        # would change under the snapshots the tests compare
        for unit in MASKED:
            (etc / "systemd" / "system" / unit).unlink(missing_ok=True)
            (etc / "systemd" / "system" / unit).symlink_to("/dev/null")

    def _copy_var_skeleton(self) -> None:
        """The host's /var/{lib,log,cache,spool}/* folders, empty, with their owners and modes (packages'
        state folders, such as mosquitto's persistence, exist on an installed system). Never smartbin's own:
        the container starts as a machine smartbin was never installed on, whatever this host has."""
        for parent in ("lib", "log", "cache", "spool"):
            for folder in Path("/var", parent).glob("*"):
                if folder.is_dir() and not folder.is_symlink() and folder.name != "smartbin":
                    target = self.root / "var" / parent / folder.name
                    target.mkdir(parents=True, exist_ok=True)
                    info = folder.stat()
                    os.chown(target, info.st_uid, info.st_gid)
                    target.chmod(info.st_mode & 0o7777)

    def start(self, timeout: float = 60) -> Container:
        """Boot systemd and wait until it says the system is up (running or degraded)."""
        self._build_root()
        binds = [f"--bind-ro={host}:{inside}" for host, inside in self.binds.items()]
        cmd = [NSPAWN, "-D", str(self.root), "-M", self.name, "--register=no", "--keep-unit", "--private-network"]
        cmd += ["--bind-ro=/usr", *binds, "-b", "--console=pipe"]
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not self.leader:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the container did not boot: {self.log.read_text(errors='replace')[-2000:]}")
            self.leader = self._find_leader()
            time.sleep(0.1)
        state = ""
        while state not in ("running", "degraded"):  # its bus comes up a moment after PID 1
            if self.process.poll() is not None or time.monotonic() > deadline:
                failed = self.sh("systemctl --failed --no-pager", check=False)
                raise RuntimeError(f"systemd in the container is {state!r}: {failed.stdout}{failed.stderr}")
            state = self.sh("systemctl is-system-running --wait", check=False, timeout=timeout).stdout.strip()
            time.sleep(0.1)
        return self

    def _find_leader(self) -> int:
        """PID (on the host) of the container's systemd: the child of systemd-nspawn that runs systemd. (Its
        first child is a short-lived one that sets the container up; taken for the leader, it was gone by the
        time nsenter looked for it, on a fast machine.)"""
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                command, rest = stat[stat.index("(") + 1 :].rsplit(")", 1)
                if int(rest.split()[1]) == self.process.pid and command == "systemd":
                    return int(entry.name)
        return 0

    def sh(self, command: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        """Run a shell command inside the container as root, with a fresh root shell's environment."""
        result = subprocess.run(
            ["nsenter", "-t", str(self.leader), "-a", "env", "-i", *[f"{k}={v}" for k, v in SHELL_ENV.items()]]
            + ["/bin/sh", "-c", command],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"in the container: {command}\nexit {result.returncode}\n{result.stdout}{result.stderr}"
            )
        return result

    def path(self, inside: str) -> Path:
        """The host path of a file inside the container (its root is a plain folder here)."""
        return self.root / inside.lstrip("/")

    def copy_in(self, source: Path, inside: str) -> str:
        """Copy a file or folder from the host into the container; returns the path inside."""
        target = self.path(inside)
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, symlinks=True)
        else:
            shutil.copy2(source, target)
        return inside

    def unit(self, unit: str, *props: str) -> dict[str, str]:
        """``systemctl show`` properties of a unit."""
        out = self.sh(f"systemctl show {shlex.quote(unit)} -p {','.join(props)}").stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def stop(self) -> None:
        """Power the container off (SIGRTMIN+4 to its systemd), then remove its root."""
        if self.process is not None and self.process.poll() is None:
            self.leader = self._find_leader() or self.leader
            try:
                if self.leader:
                    os.kill(self.leader, signal.SIGRTMIN + 4)
                else:
                    self.process.terminate()
                self.process.wait(30)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                if self.leader:  # killing PID 1 of its namespace takes every process inside with it
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(self.leader, signal.SIGKILL)
                self.process.kill()
                self.process.wait(10)
        shutil.rmtree(self.root, ignore_errors=True)


# What the filesystem check after --purge ignores: systemd's and the journal's own state, the
# broker's database, our copies of the source and inputs, and shadow's backup files.
UNTRACKED = ("var/log", "var/lib/systemd", "var/lib/mosquitto", "var/cache", "var/tmp", "tmp", "run", "root", "srv")


def snapshot(root: Path) -> dict[str, bytes | str]:
    """Every path under /etc, /opt and /var with its content (files) or kind: what install/uninstall change."""
    seen: dict[str, bytes | str] = {}
    for top in ("etc", "opt", "var"):
        for path in sorted((root / top).rglob("*")):
            rel = path.relative_to(root).as_posix()
            if rel.startswith(UNTRACKED) or rel.endswith("-") or rel == "etc/machine-id":
                continue
            if path.is_symlink():
                seen[rel] = "-> " + os.readlink(path)
            elif path.is_file():
                seen[rel] = path.read_bytes()
            else:
                seen[rel] = "dir"
    return seen
