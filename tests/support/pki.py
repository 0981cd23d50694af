"""Certificates made with Debian's openssl for the TLS tests: a CA, certificates it issued, a renewal."""

from __future__ import annotations

import subprocess
from pathlib import Path

SERVER_NAMES = "subjectAltName=DNS:localhost\n"  # not 127.0.0.1: a test checks a name it does not hold


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def new_ca(folder: Path, name: str = "smartbin test CA") -> Path:
    """``folder``/ca.crt and ca.key, a CA valid two days."""
    folder.mkdir(parents=True, exist_ok=True)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
            "-subj", f"/CN={name}", cwd=folder)  # fmt: skip
    return folder


def issue(folder: Path, name: str, server: bool = False) -> Path:
    """``folder``/<name>.crt and .key, issued by the CA in ``folder``; a server's names localhost only."""
    cn = "localhost" if server else name
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN={cn}", cwd=folder)  # fmt: skip
    extension = []
    if server:
        (folder / f"{name}.ext").write_text(SERVER_NAMES)
        extension = ["-extfile", f"{name}.ext"]
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.crt", "-days", "2", *extension, cwd=folder)  # fmt: skip
    return folder / f"{name}.crt"


def make_pki(folder: Path, clients: tuple[str, ...] = ()) -> Path:
    """A CA, a server certificate for localhost (server.crt, server.key), and one client
    certificate per name in ``clients``."""
    new_ca(folder)
    issue(folder, "server", server=True)
    for name in clients:
        issue(folder, name)
    return folder
