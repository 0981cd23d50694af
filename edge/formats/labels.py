"""Class labels and the bin each one goes to, read from garbage_classify_rule.json."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from edge.errors import DatasetError
from edge.formats.jsonfile import read_json

BINS: tuple[str, ...] = ("other", "kitchen", "recyclable", "hazardous")

# The seed's rules name bins in Chinese; English names are accepted as well.
BIN_ALIASES: dict[str, str] = {
    "其他垃圾": "other",
    "厨余垃圾": "kitchen",
    "可回收物": "recyclable",
    "有害垃圾": "hazardous",
    **{name: name for name in BINS},
}


@dataclass(frozen=True)
class Label:
    """One class: its index in the model output, its item name and its bin."""

    index: int
    name: str
    bin: str

    def to_dict(self) -> dict:
        return asdict(self)


def parse_rules(mapping: dict, source: str = "rules") -> list[Label]:
    """Turn ``{"0": "<bin>/<item>", ...}`` into labels ordered by index.

    Indices must be 0..N-1 without gaps, since they are the model's output positions.
    """
    if not isinstance(mapping, dict) or not mapping:
        raise DatasetError(f"{source}: expected a JSON object mapping index to '<bin>/<item>'")
    labels: dict[int, Label] = {}
    for key, value in mapping.items():
        try:
            index = int(key)
        except (TypeError, ValueError):
            raise DatasetError(f"{source}: key {key!r} is not a class index") from None
        if not isinstance(value, str) or "/" not in value:
            raise DatasetError(f"{source}: class {key}: expected '<bin>/<item>', got {value!r}")
        bin_name, item = value.split("/", 1)
        bin_key = BIN_ALIASES.get(bin_name.strip())
        if bin_key is None:
            allowed = ", ".join(sorted(BIN_ALIASES))
            raise DatasetError(f"{source}: class {key}: unknown bin {bin_name!r} (allowed: {allowed})")
        labels[index] = Label(index, item.strip(), bin_key)
    expected = list(range(len(labels)))
    if sorted(labels) != expected:
        raise DatasetError(f"{source}: class indices must be 0..{len(labels) - 1} without gaps")
    return [labels[i] for i in expected]


def load_rules(path: str | Path) -> list[Label]:
    """Read a garbage_classify_rule.json file."""
    path = Path(path)
    mapping = read_json(path, DatasetError, "rules file not found", "cannot read rules")
    return parse_rules(mapping, str(path))
