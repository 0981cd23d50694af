"""TLS files read the way a bin needs them: again whenever they change (a renewal), and a pair caught half-way
through a renewal told apart from a mistake in the config. Used by the MQTT client (the broker's CA, a client
certificate) and by the status page (its own certificate and key)."""

from __future__ import annotations

import logging
import os
import ssl
import threading
import time
from pathlib import Path
from typing import Optional, Protocol

from edge.errors import ConfigError, FilesUnavailable, SmartbinError

log = logging.getLogger(__name__)

RENEWAL_S = 300.0  # files this new that do not load may be a renewal half-way: tried again, not refused for good


class TlsSettings(Protocol):
    """What a config's ``tls`` section names (edge/config.py's TlsConfig)."""

    ca_file: Optional[Path]
    cert_file: Optional[Path]
    key_file: Optional[Path]
    key_password_env: Optional[str]
    check_hostname: bool


class TlsFiles:
    """The TLS context a config asks for, its files read again when they change: before every connect of a
    client (a fleet on short-lived client certificates reconnects with the renewed one), before each
    connection a server accepts (the page serves a renewed certificate without a restart). A CA file that
    changes adds its certificates to those trusted (OpenSSL keeps the ones read before until the next start).

    ``section`` names the config section in every error; ``server`` makes a server's context (its own
    certificate and key; no client certificates asked)."""

    def __init__(self, tls: TlsSettings, section: str = "mqtt.tls", server: bool = False):
        self.tls, self.section = tls, section
        self.lock = threading.Lock()  # a server's connections read the context while a renewal replaces files
        self._loaded: tuple | None = None  # the files' identity (inode, size, mtime) when last read
        try:
            if server:
                self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            else:
                self.context = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
                self.context.check_hostname = tls.check_hostname
        except FileNotFoundError as exc:
            raise self._missing(exc) from exc
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"{section}: cannot load the CA, certificate or key: {exc}") from exc
        self.refresh()

    def _missing(self, exc: OSError) -> FilesUnavailable:
        return FilesUnavailable(f"{self.section}: {exc.filename or 'a file'} is missing (a certificate renewal?)")

    def _identity(self) -> tuple:
        files = [f for f in (self.tls.ca_file, self.tls.cert_file, self.tls.key_file) if f is not None]
        try:
            return tuple((st.st_ino, st.st_size, st.st_mtime_ns) for st in map(os.stat, files))
        except FileNotFoundError as exc:
            raise self._missing(exc) from exc

    def refresh(self) -> bool:
        """Read the files again when they changed since the last read; True when they did. FilesUnavailable
        when one is missing (waiting fixes that), ConfigError when one does not load (a wrong passphrase)."""
        identity = self._identity()
        if identity == self._loaded:
            return False
        tls = self.tls
        try:
            if tls.ca_file and self._loaded is not None:
                self.context.load_verify_locations(cafile=str(tls.ca_file))
            if tls.cert_file:
                password = os.environ.get(tls.key_password_env) if tls.key_password_env else None
                self.context.load_cert_chain(str(tls.cert_file), str(tls.key_file), password=password)
        except FileNotFoundError as exc:
            raise self._missing(exc) from exc
        except (OSError, ssl.SSLError) as exc:
            # A pair that does not match or a PEM cut short may be a renewal caught half-way (the certificate
            # written, not yet its key): while the files are that new, a restart after the back-off may find
            # them whole (exit 75). Older, it is the config's: keep the cause, "wrong password", "no such
            # file" and "PEM lib" each need a different fix (exit 78).
            changed_s = time.time() - max((st[2] / 1e9 for st in identity), default=0.0)
            if 0 <= changed_s < RENEWAL_S and self._half_renewed(exc):
                raise FilesUnavailable(
                    f"{self.section}: the certificate files changed {changed_s:.0f} s ago and do not load ({exc}): "
                    "a renewal half-way? trying again"
                ) from exc
            raise ConfigError(f"{self.section}: cannot load the CA, certificate or key: {exc}") from exc
        self._loaded = identity
        return True

    def _half_renewed(self, exc: BaseException) -> bool:
        """A certificate and key that do not match, or a PEM file cut short: what a renewal leaves half-way (a
        wrong passphrase on a whole file is neither)."""
        if getattr(exc, "reason", None) == "KEY_VALUES_MISMATCH":
            return True
        for path in (p for p in (self.tls.ca_file, self.tls.cert_file, self.tls.key_file) if p is not None):
            try:
                text = Path(path).read_bytes()
            except OSError:
                return True
            if text.count(b"-----BEGIN ") != text.count(b"-----END ") or b"-----END " not in text:
                return True
        return False

    def read_again(self, *_paho) -> None:
        """Before every connect and reconnect (paho's on_pre_connect), before each connection a server
        accepts, and at a reload: the files as they are now; a problem is logged and the files read before
        stay in use."""
        with self.lock:
            try:
                if self.refresh():
                    log.info("%s: the certificate files changed; using the new ones", self.section)
            except SmartbinError as exc:  # half-way through a renewal: the next connection tries again
                log.warning("%s; using the ones read before", exc)
