"""The booted container the real-systemd modules share within a module (each module boots its own, so that
parallel workers run them side by side)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.realsystemd import booted


@pytest.fixture(scope="module")
def machine(tmp_path_factory, bundle_dir: Path, clip_factory):
    yield from booted(tmp_path_factory, bundle_dir, clip_factory)
