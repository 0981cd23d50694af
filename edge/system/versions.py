"""Versions of installed distributions, for manifests and benchmark reports."""

from __future__ import annotations

from importlib import metadata


def installed_versions(names: tuple[str, ...]) -> dict[str, str]:
    """{distribution: version} for those of ``names`` that are installed here."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions
