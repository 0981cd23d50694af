"""Which bin each class of a class-folder dataset goes to: by name, never by folder order.

A folder's bin comes, first to last, from its name (``<bin>__<name>``, e.g. ``recyclable__cans``),
the dataset's ``bins.yaml`` (``cans: recyclable``), its ``garbage_classify_rule.json`` (by item
name, or a folder named by class index), or the public layouts users bring (``KNOWN_BINS``).
A class found in none of them has no bin: training refuses it and names the command that fixes it.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from edge.errors import DatasetError
from edge.formats.labels import BIN_ALIASES, BINS, Label, load_rules
from edge.system.atomic import write_atomic
from edge.system.paths import default_rules_path

BINS_FILE = "bins.yaml"
SEPARATOR = "__"  # <bin>__<name>
RULES_SOURCE = "rules file"  # where a bin came from: garbage_classify_rule.json

_RECYCLABLE = "recyclable"
# The class names of the public datasets users train on, by name (matched ignoring case, '-', '_' and spaces).
KNOWN_LAYOUTS: dict[str, dict[str, str]] = {
    # TrashNet (Thung & Yang, 2016): six folders
    "TrashNet": {
        **dict.fromkeys(("cardboard", "glass", "metal", "paper", "plastic"), _RECYCLABLE),
        "trash": "other",
    },
    # Garbage Classification v2 (Kaggle, sumn2u): ten folders
    "Garbage Classification v2": {
        "battery": "hazardous",
        "biological": "kitchen",
        **dict.fromkeys(("cardboard", "clothes", "glass", "metal", "paper", "plastic", "shoes"), _RECYCLABLE),
        "trash": "other",
    },
    # Garbage Classification (Kaggle, mostafaabla): twelve folders, glass by colour
    "Garbage Classification (12 classes)": {
        **dict.fromkeys(("brown-glass", "green-glass", "white-glass"), _RECYCLABLE),
    },
}


def normalise(name: str) -> str:
    """A class name as matched: lower case, with '-', '_' and spaces alike."""
    return name.strip().lower().replace("-", " ").replace("_", " ")


def _known() -> dict[str, tuple[str, str]]:
    """normalised name -> (bin, the layout it comes from)."""
    seed = load_rules(default_rules_path())  # the 40 garbage_classify_v2 classes
    table = {normalise(lab.name): (lab.bin, "garbage_classify_v2") for lab in seed}
    for layout, bins in KNOWN_LAYOUTS.items():
        for name, bin_name in bins.items():
            table.setdefault(normalise(name), (bin_name, layout))
    return table


def bin_key(value: object, source: str, key: str) -> str:
    """A bin name (English or the seed's Chinese) as one of BINS, or an error naming the file, key and bins."""
    bin_name = BIN_ALIASES.get(str(value).strip()) if isinstance(value, str) else None
    if bin_name is None:
        raise DatasetError(f"{source}: {key}: unknown bin {value!r} (allowed: {', '.join(BINS)})")
    return bin_name


def _bins_yaml(path: Path) -> dict:
    """The raw ``class name: bin`` mapping of a bins.yaml; {} when there is none."""
    import yaml

    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise DatasetError(f"{path}: cannot read: {exc}") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected 'class name: bin' lines, e.g. 'cans: recyclable'")
    return data


def read_bins_file(path: Path) -> dict[str, str]:
    """``bins.yaml``: normalised class name -> bin, each bin checked; {} when there is none."""
    return {normalise(str(name)): bin_key(value, str(path), str(name)) for name, value in _bins_yaml(path).items()}


@dataclass(frozen=True)
class FolderClass:
    """One class folder: the class it holds, its bin (None: unknown) and where that bin came from."""

    folder: str
    name: str
    bin: str | None
    source: str


def resolve(folders: list[str], root: Path, rules: list[Label] | None) -> list[FolderClass]:
    """Each folder's class and bin, in folder order."""
    bins_file = read_bins_file(root / BINS_FILE)
    by_rule = {normalise(lab.name): lab for lab in rules or []}
    known = _known()
    classes = []
    for folder in folders:
        prefix, _, rest = folder.partition(SEPARATOR)
        if rest and BIN_ALIASES.get(prefix) is not None:
            classes.append(FolderClass(folder, rest, BIN_ALIASES[prefix], "folder name"))
        elif normalise(folder) in bins_file:
            classes.append(FolderClass(folder, folder, bins_file[normalise(folder)], BINS_FILE))
        elif rules and (folder.isdigit() and int(folder) < len(rules) or normalise(folder) in by_rule):
            label = rules[int(folder)] if folder.isdigit() else by_rule[normalise(folder)]
            classes.append(FolderClass(folder, label.name, label.bin, RULES_SOURCE))
        elif normalise(folder) in known:
            bin_name, layout = known[normalise(folder)]
            classes.append(FolderClass(folder, folder, bin_name, layout))
        else:
            classes.append(FolderClass(folder, folder, None, "none"))
    return classes


def bin_problems(root: Path, labels: list[Label], unmapped: list[str]) -> list[str]:
    """Why a model trained on these classes would sort badly: classes without a bin, or one bin for all."""
    example = unmapped or ([labels[-1].name] if labels else [])
    fix = f"smartbin dataset bins {shlex.quote(str(root))} " + " ".join(
        f"--set {shlex.quote(n)}=BIN" for n in example[:3]
    )
    allowed = f"BIN: {', '.join(BINS)}"
    if unmapped:
        names = ", ".join(unmapped[:8]) + (f" and {len(unmapped) - 8} more" if len(unmapped) > 8 else "")
        have = "class has" if len(unmapped) == 1 else "classes have"
        return [f"{len(unmapped)} {have} no bin ({names}); say where they go: {fix} ({allowed})"]
    bins = {lab.bin for lab in labels}
    if len(labels) > 1 and len(bins) == 1:
        return [f"all {len(labels)} classes go to the bin {bins.pop()!r}: every item would drop there; fix: {fix}"]
    return []


def write_bins(root: Path, assignments: dict[str, str]) -> Path:
    """Add or change ``class: bin`` lines of the dataset's bins.yaml (each bin checked)."""
    import yaml

    path = root / BINS_FILE
    # a broken file is named, not overwritten
    current = {str(k): bin_key(v, str(path), str(k)) for k, v in _bins_yaml(path).items()}
    for name, value in assignments.items():
        current = {k: v for k, v in current.items() if normalise(k) != normalise(name)}
        current[name] = bin_key(value, "--set", name)
    # whole or not at all: a power cut or a second writer mid-way never leaves half a file
    write_atomic(path, yaml.safe_dump(current, allow_unicode=True, sort_keys=True).encode("utf-8"))
    return path
