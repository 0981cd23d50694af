"""A bundle as one file, for over-the-air updates: a plain .tar, manifest.json first.

Any static HTTP server or S3-compatible store can serve it; the device needs only its URL and
sha256. The manifest comes first so that a reader sees what the archive is before the models.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

from edge.bundle import MANIFEST_FILE, Bundle, sha256_file
from edge.errors import BundleError


def pack(bundle_dir: str | Path, out: str | Path) -> str:
    """Write the verified bundle as a .tar (manifest first, then every file, flat); return its sha256."""
    bundle = Bundle.open(bundle_dir)
    bundle.verify()
    files = sorted(p.name for p in bundle.path.iterdir() if p.is_file() and p.name != MANIFEST_FILE)
    out = Path(out)
    partial = out.with_name(out.name + ".partial")
    with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
        for name in [MANIFEST_FILE, *files]:
            info = tar.gettarinfo(str(bundle.path / name), arcname=name)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode = 0o644
            with (bundle.path / name).open("rb") as fh:
                tar.addfile(info, fh)
    partial.replace(out)
    return sha256_file(out)


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
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, EOFError) as exc:
        raise BundleError(f"{archive}: not a readable tar archive: {exc}") from None
    bundle = Bundle.open(dest)
    bundle.verify()
    return bundle
