"""The hold-out gate, wherever a rollout starts: the new bundle and the bundle the bins serve, on the same
held-out images, through the device's engine, each in the variant the bins run. A new bundle that sorts more
than ``max_drop`` points fewer items into the right bin is refused (unless forced, by the caller)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edge.errors import SmartbinError
from edge.formats.archive import unpack
from edge.formats.bundle import Bundle
from edge.web.reader import PageAccess, open_page

MAX_DROP_POINTS = 1.0


@dataclass
class Side:
    bundle: str
    variant: str
    top1: float
    bin_accuracy: float
    images: int


@dataclass
class Gate:
    new: Side
    serving: Side
    max_drop: float = MAX_DROP_POINTS

    @property
    def drop(self) -> float:
        """Points of bin accuracy lost (negative: gained)."""
        return (self.serving.bin_accuracy - self.new.bin_accuracy) * 100

    @property
    def refusal(self) -> str | None:
        """Why the new bundle may not go out, or None."""
        if self.drop <= self.max_drop:
            return None
        return (
            f"on {self.new.images} held-out images the new bundle sorts {self.new.bin_accuracy:.1%} of items into the "
            f"right bin, the bins' {self.serving.bin_accuracy:.1%} ({self.drop:.1f} points fewer; at most "
            f"{self.max_drop:g} allowed)"
        )

    def line(self) -> str:
        return (
            f"hold-out ({self.new.images} images): new {self.new.bin_accuracy:.1%} right bin, {self.new.top1:.1%} "
            f"top-1; the bins' {self.serving.bin_accuracy:.1%}, {self.serving.top1:.1%}"
        )


def variant_for(bundle: Path, preferred: str | None) -> str:
    """The variant the bins run when the bundle has it, else int8, else its first."""
    names = Bundle.open(bundle).variant_names()
    for name in (preferred, "int8"):
        if name in names:
            return name
    return names[0]


def measure(bundle: Path, holdout: Path, variant: str | None) -> Side:
    """One bundle on the hold-out through the device's engine."""
    from edge.benchmark.accuracy import evaluate_bundle

    chosen = variant_for(bundle, variant)
    result = evaluate_bundle(bundle, holdout, variants=[chosen])
    row = result["variants"][chosen]
    return Side(str(bundle), chosen, row["top1"], row["bin_accuracy"], result["images"])


def hold_out(new: Path, serving: Path, holdout: Path, variant: str | None = None) -> Gate:
    """Both bundles on the same hold-out; SmartbinError when one cannot be read or measured."""
    if not Path(holdout).is_dir():
        raise SmartbinError(f"--holdout {holdout}: not a folder of held-out images")
    return Gate(measure(Path(new), Path(holdout), variant), measure(Path(serving), Path(holdout), variant))


def serving_bundle(candidates: Path, sha256s: set[str]) -> Path:
    """The bundle the bins serve, found by its variant file's sha256 (as their status gives it) in a bundle
    folder or a folder of bundles; SmartbinError naming what the bins serve when none matches."""
    folders = (
        [candidates]
        if (candidates / "manifest.json").is_file()
        else sorted(p.parent for p in candidates.glob("*/manifest.json"))
    )
    for folder in folders:
        files = {v.sha256 for v in Bundle.open(folder).manifest.variants.values()}
        if sha256s and sha256s <= files:
            return folder
    raise SmartbinError(
        f"--baseline {candidates}: no bundle there has the model file the bins serve (sha256 "
        f"{', '.join(sorted(s[:12] for s in sha256s)) or 'unknown'}…); give the bundle they serve, or its folder"
    )


MAX_ARCHIVE_BYTES = 2 * 2**30  # a bin's model archive: a 224 px ResNet50 variant is ~100 MB


def fetched_baseline(page: str, into: Path, access: PageAccess) -> Path:
    """The bundle a bin serves, fetched from its status page (``/api/model.tar``: only the variant it runs)
    and unpacked into ``into``; PageUnavailable or SmartbinError saying why when the page will not give it."""
    url = page.rstrip("/") + "/api/model.tar"
    archive = into / "baseline.tar"
    with archive.open("wb") as fh, open_page(url, access, timeout=60) as response:
        while chunk := response.read(1 << 16):
            if fh.tell() + len(chunk) > MAX_ARCHIVE_BYTES:
                raise SmartbinError(f"--baseline {url}: more than {MAX_ARCHIVE_BYTES >> 20} MB")
            fh.write(chunk)
    return unpack(archive, into / "baseline", max_bytes=MAX_ARCHIVE_BYTES).path
