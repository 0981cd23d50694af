"""Reading a bin's status page from the workstation (``samples fetch``, the gate's ``--baseline``): one GET
with the page's password, over HTTPS checked against the bin's own CA where one is given, and an error that
names the address and the option that fixes it."""

from __future__ import annotations

import argparse
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.client import HTTPResponse
from pathlib import Path

from edge.errors import PageUnavailable
from edge.system.access import password_from
from edge.web.bounded import basic_auth


@dataclass(frozen=True)
class PageAccess:
    """How to reach a bin's page: its password (None: none asked), and the CA (or the page's self-signed
    certificate) that its HTTPS certificate must be signed by (None: the system's CAs). The flags name the
    options a user gives them with, for the errors."""

    password: str | None = None
    user: str = "smartbin"
    ca: Path | None = None
    password_flag: str = "--password-env"
    ca_flag: str = "--ca"

    def context(self) -> ssl.SSLContext | None:
        if self.ca is None:
            return None
        try:
            return ssl.create_default_context(cafile=str(self.ca))
        except (OSError, ssl.SSLError) as exc:
            raise PageUnavailable(f"{self.ca_flag} {self.ca}: not a CA certificate file ({exc})") from None


@contextmanager
def open_page(url: str, access: PageAccess, timeout: float) -> Iterator[HTTPResponse]:
    """The page's reply to a GET of ``url``; PageUnavailable when there is none to read (an HTTP error, no
    route, a certificate not trusted, the connection lost while reading)."""
    headers = {} if access.password is None else {"Authorization": basic_auth(access.user, access.password)}
    context = access.context()
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, headers=headers), timeout=timeout, context=context
        ) as r:
            yield r
    except urllib.error.HTTPError as exc:
        hint = f" (give the page's password with {access.password_flag})" if exc.code == 401 else ""
        raise PageUnavailable(f"{url}: HTTP {exc.code} {exc.reason}{hint}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        hint = f" (give the bin's CA with {access.ca_flag})" if isinstance(reason, ssl.SSLCertVerificationError) else ""
        raise PageUnavailable(f"{url}: {reason}{hint}") from None


def add_page_options(parser: argparse._ActionsContainer, prefix: str = "") -> None:
    """The options that reach a bin's page: ``--user``, ``--password-env``, ``--ca`` (each after ``prefix``,
    ``--page-`` where the command has other passwords)."""
    parser.add_argument(f"--{prefix}user", default="smartbin", help="the status page's user name")
    parser.add_argument(f"--{prefix}password-env", help="environment variable holding the status page's password")
    parser.add_argument(
        f"--{prefix}ca", metavar="PEM", help="for https://: the CA (or self-signed certificate) of the bin's page"
    )


def page_access(args: argparse.Namespace, prefix: str = "") -> PageAccess:
    """The PageAccess the options of ``add_page_options`` give."""
    key = prefix.replace("-", "_")
    password_flag, ca_flag = f"--{prefix}password-env", f"--{prefix}ca"
    ca = getattr(args, f"{key}ca")
    return PageAccess(
        password=password_from(getattr(args, f"{key}password_env"), password_flag),
        user=getattr(args, f"{key}user"),
        ca=Path(ca) if ca else None,
        password_flag=password_flag,
        ca_flag=ca_flag,
    )
