"""A bundle as one file, for over-the-air updates: a plain .tar, manifest.json first.

Any static HTTP server or S3-compatible store can serve it; the device needs only its URL and
sha256 (or a signature). The manifest (and its signature) come first, so that a device checks
what the archive is, who signed it and how much it holds before it writes a byte of the models.
"""

from __future__ import annotations

import errno
import io
import json
import shutil
import tarfile
from datetime import datetime
from pathlib import Path

from edge.errors import BundleError
from edge.formats.bundle import MANIFEST_FILE, Bundle, Manifest, listed_files, parse_manifest, sha256_file
from edge.formats.signing import SIGNATURE_FILE, sign, verify_manifest
from edge.system.atomic import atomic_output, link_or_copy

# Written by `smartbin convert` beside the models and not listed in the manifest: a person's reading only.
REPORT_FILES = ("quantization.md", "quantization.json")


def pack(
    bundle_dir: str | Path,
    out: str | Path,
    key: str | Path | None = None,
    variants: list[str] | None = None,
    head_only: bool = False,
) -> str:
    """Write the verified bundle as a .tar (manifest first, then its files, flat); return its sha256.

    ``variants``: only these (with the acceptance set, without the bench's probes), under a manifest
    that lists just them: what one kind of device runs. ``key``: an Ed25519 private key (PEM); its
    signature of the manifest follows the manifest. ``head_only`` (a bundle in two parts): the manifest,
    the head and the acceptance set, without the backbone's files, which a bin takes from the bundle it
    serves when its manifest vouches for the same bytes (``unpack``'s ``base``)."""
    bundle = Bundle.open(bundle_dir)
    bundle.verify()
    if head_only and bundle.manifest.head is None:
        raise BundleError(f"{bundle.path}: --head-only needs a bundle in two parts (smartbin convert --split-head)")
    manifest, manifest_bytes = bundle.manifest, (bundle.path / MANIFEST_FILE).read_bytes()
    if variants is not None:
        for name in variants:
            bundle.file(name)  # a variant the bundle lacks is named here
        data = json.loads(manifest_bytes)
        data["variants"] = {name: data["variants"][name] for name in variants}
        data["probes"] = {}
        manifest_bytes = json.dumps(data, indent=2, ensure_ascii=False).encode()
        manifest = parse_manifest(data, bundle.path / MANIFEST_FILE)
    files = sorted(listed_files(manifest))
    if head_only:
        backbone = {e.file for e in [*manifest.variants.values(), *manifest.probes.values()]}
        files = [name for name in files if name not in backbone]
    elif variants is None:
        files += [name for name in REPORT_FILES if (bundle.path / name).is_file()]
    members = [(MANIFEST_FILE, manifest_bytes)]
    if key:
        members.append((SIGNATURE_FILE, sign(manifest_bytes, key)))
    out = Path(out)
    # every entry dated by the manifest: the same bundle packs to the same bytes, so the same sha256 (a
    # rollout resumed, a release packed again on another workstation)
    mtime = _created(manifest.created)
    with atomic_output(out) as partial, tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            _add(tar, name, len(data), io.BytesIO(data), mtime)
        for name in files:
            with (bundle.path / name).open("rb") as fh:
                _add(tar, name, (bundle.path / name).stat().st_size, fh, mtime)
    return sha256_file(out)


def _created(created: str) -> int:
    """The manifest's creation time as a tar entry's mtime (0 when it does not parse)."""
    try:
        return max(0, int(datetime.fromisoformat(created).timestamp()))
    except (TypeError, ValueError):
        return 0


def _add(tar: tarfile.TarFile, name: str, size: int, fh, mtime: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o644, mtime
    tar.addfile(info, fh)


def unpack(
    archive: str | Path,
    dest: str | Path,
    max_bytes: int,
    public_key: str | None = None,
    variant: str | None = None,
    base: Bundle | None = None,
) -> Bundle:
    """Extract a bundle archive into ``dest`` (created; must not exist) and verify it.

    Before anything is written: the manifest comes first and parses, its signature holds (with
    ``public_key``), it lists ``variant`` (the one this device runs), every other member is a plain
    top-level file it lists with the size it gives, and all of it fits in ``max_bytes``. So an archive
    cannot write outside ``dest``, fill the disk, or put an unsigned byte on it. ``base``: the bundle the
    device serves, whose variant files a head update's archive leaves out (linked when the sha256 match).
    """
    archive, dest = Path(archive), Path(dest)
    try:
        with tarfile.open(archive, "r:") as tar:
            members = tar.getmembers()
            if not members or members[0].name != MANIFEST_FILE or not members[0].isfile():
                raise BundleError(f"{archive}: not a bundle archive ({MANIFEST_FILE} must come first)")
            bad = [m.name for m in members if not m.isfile() or "/" in m.name or m.name in ("", ".", "..")]
            if bad:
                raise BundleError(f"{archive}: only plain files at the top level are allowed, not {bad[0]!r}")
            total = sum(m.size for m in members)
            if total > max_bytes:
                raise BundleError(f"{archive}: unpacks to {total} bytes, more than the limit of {max_bytes}")
            manifest_bytes = _read(tar, members[0], max_bytes)
            signature = members[1] if len(members) > 1 and members[1].name == SIGNATURE_FILE else None
            if public_key is not None:
                signed = _read(tar, signature, 1 << 12) if signature is not None else None
                verify_manifest(manifest_bytes, signed, public_key, archive)
            manifest = _check_members(archive, manifest_bytes, members, variant)
            dest.mkdir(parents=True)
            free = shutil.disk_usage(dest).free
            if total > free:
                raise BundleError(f"{archive}: unpacks to {total} bytes, only {free} free in {dest.parent}")
            # Bytes only, no owner, mode or time from the archive; by hand, not extractall(filter=...): Debian
            # bookworm's Python 3.11.2 (Raspberry Pi OS) has no extraction filters.
            for member in members:
                with tar.extractfile(member) as source, (dest / member.name).open("wb") as target:
                    shutil.copyfileobj(source, target)
            if base is not None:
                _from_base(archive, manifest, base, dest, {m.name for m in members})
    except (tarfile.TarError, EOFError) as exc:
        raise BundleError(f"{archive}: not a readable tar archive: {exc}") from None
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise BundleError(f"{archive}: no space left in {dest.parent} to unpack it") from None
        raise
    bundle = Bundle.open(dest)
    bundle.verify()
    return bundle


def _read(tar: tarfile.TarFile, member: tarfile.TarInfo, limit: int) -> bytes:
    if member.size > limit:
        raise BundleError(f"{member.name}: {member.size} bytes, more than {limit}")
    with tar.extractfile(member) as fh:
        return fh.read()


def _from_base(archive: Path, manifest: Manifest, base: Bundle, dest: Path, extracted: set[str]) -> None:
    """Each variant file the archive lists and leaves out, linked from ``base`` when its manifest gives it the
    same sha256 (a head update: same backbone, another head); another missing file fails ``verify`` after."""
    theirs = {entry.file: entry.sha256 for entry in base.manifest.variants.values()}
    for entry in manifest.variants.values():
        if entry.file in extracted:
            continue
        if theirs.get(entry.file) != entry.sha256:
            raise BundleError(
                f"{archive}: {entry.file} is neither in the archive nor the same file in the serving bundle "
                f"{base.path.name} (a head update made for another backbone)"
            )
        link_or_copy(base.path / entry.file, dest / entry.file)


def _check_members(
    archive: Path, manifest_bytes: bytes, members: list[tarfile.TarInfo], variant: str | None
) -> Manifest:
    """The archive holds what its manifest lists, at the listed sizes, and the variant this device runs."""
    where = f"{archive}: {MANIFEST_FILE}"
    try:
        manifest = parse_manifest(json.loads(manifest_bytes), where)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{where}: not valid JSON: {exc}") from None
    if variant is not None and variant not in manifest.variants:
        raise BundleError(
            f"{archive}: has no {variant!r} variant, which this device's model.variant asks for "
            f"(it has: {', '.join(manifest.variants) or 'none'}); pack it with --variants {variant}"
        )
    listed = listed_files(manifest)
    for member in members[1:]:
        if member.name in (SIGNATURE_FILE, *REPORT_FILES):
            continue
        if member.name not in listed:
            raise BundleError(f"{archive}: {member.name!r} is not listed in the manifest")
        if member.size != listed[member.name]:
            raise BundleError(
                f"{archive}: {member.name}: size check failed: {member.size} bytes, manifest says {listed[member.name]}"
            )
    return manifest
