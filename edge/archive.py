"""A bundle as one file, for over-the-air updates: a plain .tar, manifest.json first.

Any static HTTP server or S3-compatible store can serve it; the device needs only its URL and
sha256. The manifest comes first so that a reader sees what the archive is before the models.
"""

from __future__ import annotations

import io
import shutil
import tarfile
import time
from pathlib import Path

from edge.bundle import MANIFEST_FILE, Bundle, sha256_file
from edge.errors import BundleError
from edge.signing import SIGNATURE_FILE, sign


def pack(bundle_dir: str | Path, out: str | Path, key: str | Path | None = None) -> str:
    """Write the verified bundle as a .tar (manifest first, then every file, flat); return its sha256.

    ``key``: an Ed25519 private key (PEM); its signature of the manifest follows the manifest."""
    bundle = Bundle.open(bundle_dir)
    bundle.verify()
    skip = {MANIFEST_FILE, SIGNATURE_FILE} if key else {MANIFEST_FILE}
    files = sorted(p.name for p in bundle.path.iterdir() if p.is_file() and p.name not in skip)
    members = [(MANIFEST_FILE, (bundle.path / MANIFEST_FILE).read_bytes())]
    if key:
        members.append((SIGNATURE_FILE, sign(members[0][1], key)))
    out = Path(out)
    partial = out.with_name(out.name + ".partial")
    with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            _add(tar, name, len(data), io.BytesIO(data))
        for name in files:
            with (bundle.path / name).open("rb") as fh:
                _add(tar, name, (bundle.path / name).stat().st_size, fh)
    partial.replace(out)
    return sha256_file(out)


def _add(tar: tarfile.TarFile, name: str, size: int, fh) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o644, int(time.time())
    tar.addfile(info, fh)


def unpack(archive: str | Path, dest: str | Path, max_bytes: int) -> Bundle:
    """Extract a bundle archive into ``dest`` (created; must not exist) and verify it.

    Only plain files at the top level are accepted (no links, folders or paths), and no more than
    ``max_bytes`` in all, so an archive cannot write outside ``dest`` or fill the disk.
    """
    archive, dest = Path(archive), Path(dest)
    try:
        with tarfile.open(archive, "r:") as tar:
            members = tar.getmembers()
            if not members or members[0].name != MANIFEST_FILE:
                raise BundleError(f"{archive}: not a bundle archive ({MANIFEST_FILE} must come first)")
            bad = [m.name for m in members if not m.isfile() or "/" in m.name or m.name in ("", ".", "..")]
            if bad:
                raise BundleError(f"{archive}: only plain files at the top level are allowed, not {bad[0]!r}")
            total = sum(m.size for m in members)
            if total > max_bytes:
                raise BundleError(f"{archive}: unpacks to {total} bytes, more than the limit of {max_bytes}")
            dest.mkdir(parents=True)
            # Bytes only, no owner, mode or time from the archive; by hand, not extractall(filter=...): Debian
            # bookworm's Python 3.11.2 (Raspberry Pi OS) has no extraction filters.
            for member in members:
                with tar.extractfile(member) as source, (dest / member.name).open("wb") as target:
                    shutil.copyfileobj(source, target)
    except (tarfile.TarError, EOFError) as exc:
        raise BundleError(f"{archive}: not a readable tar archive: {exc}") from None
    bundle = Bundle.open(dest)
    bundle.verify()
    return bundle
