"""Who may reach what: secrets the config names (an environment variable or a file, never the YAML
itself), and whether an address is this machine's alone."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from edge.errors import ConfigError, SmartbinError


def read_secret(section: str, env: str | None, file: Path | None) -> str | None:
    """A secret from an environment variable or a file; ConfigError names the key when it is missing."""
    if env:
        value = os.environ.get(env)
        if value is None:
            raise ConfigError(f"{section}.password_env: environment variable {env} is not set")
        return value
    if file:
        try:
            return file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{section}.password_file: cannot read {file}: {exc.strerror}") from exc
    return None


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only."""
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name: it resolves to whatever the network says
        return False


def password_from(env: str | None, option: str = "--password-env") -> str | None:
    """A page's password from the environment variable a command-line ``option`` names (None without it)."""
    if env is None:
        return None
    password = os.environ.get(env)
    if password is None:
        raise SmartbinError(f"{option}: the environment variable {env} is not set")
    return password
