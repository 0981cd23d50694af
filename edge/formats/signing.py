"""Ed25519 signatures of bundle manifests: a fleet trusts a key instead of each archive's sha256.

The manifest lists the sha256 of every file of the bundle, so a signature over the manifest's
bytes vouches for the whole bundle (``Bundle.verify`` checks the files against it). The private
key stays on the workstation (PEM, written 0600 by ``smartbin bundle keygen``); devices hold the
public key, 32 bytes in base64, in ``updates.public_key``.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

from edge.errors import BundleError, SmartbinError

SIGNATURE_FILE = "manifest.sig"


def generate_key(path: str | Path) -> str:
    """Write a new private key (PEM, mode 0600) and return its public key in base64."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    path = Path(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    return public_key_of(path)


def _private_key(path: str | Path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise SmartbinError(f"{path}: not a readable unencrypted PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SmartbinError(f"{path}: not an Ed25519 key (make one with `smartbin bundle keygen`)")
    return key


def public_key_of(path: str | Path) -> str:
    """The base64 public key that goes into a device's ``updates.public_key``."""
    from cryptography.hazmat.primitives import serialization

    raw = _private_key(path).public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def sign(manifest: bytes, key_path: str | Path) -> bytes:
    return _private_key(key_path).sign(manifest)


def check_public_key(value: str) -> str:
    """A config value: base64 of 32 bytes."""
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("must be base64 (what `smartbin bundle keygen` prints)") from None
    if len(raw) != 32:
        raise ValueError(f"must be 32 bytes in base64, not {len(raw)}")
    return value


def verify(folder: Path, public_key: str) -> None:
    """Refuse a bundle folder whose manifest is not signed by ``public_key``."""
    signature = folder / SIGNATURE_FILE
    data = signature.read_bytes() if signature.is_file() else None
    verify_manifest((folder / "manifest.json").read_bytes(), data, public_key, folder)


def verify_manifest(manifest: bytes, signature: bytes | None, public_key: str, where: str | Path) -> None:
    """Refuse a manifest (``where``: the folder or archive it came from) not signed by ``public_key``."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if signature is None:
        raise BundleError(f"{where}: not signed (no {SIGNATURE_FILE}); this device accepts signed bundles only")
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key))
    try:
        key.verify(signature, manifest)
    except InvalidSignature:
        raise BundleError(
            f"{where}: signature check failed: the manifest is not signed by updates.public_key"
        ) from None
