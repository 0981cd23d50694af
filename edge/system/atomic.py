"""Files that are whole or absent, never half-written, whatever a power cut interrupts: written to a
hidden temporary name beside the target, flushed to the disk, then renamed over it."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def temporary_name(path: Path) -> Path:
    """Where ``path`` is written before it is renamed into place (``.<name>.tmp`` beside it)."""
    return path.with_name(f".{path.name}.tmp")


@contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """Yield the temporary path to write; on success it is synced and renamed to ``path``, on an
    exception it is removed and ``path`` is left as it was."""
    tmp = temporary_name(path)
    try:
        yield tmp
        with tmp.open("rb+") as fh:
            os.fsync(fh.fileno())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: Path, data: bytes) -> None:
    """``path`` holds ``data``, whole, or what it held before."""
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)


def link_or_copy(source: Path, dest: Path) -> None:
    """``dest`` as the same bytes as ``source``: a hard link (no second copy on the card), or a copy where the
    file system will not link (another device, no hard links)."""
    try:
        os.link(source, dest)
    except OSError:
        shutil.copyfile(source, dest)
