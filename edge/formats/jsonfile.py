"""Reading the JSON files users hand us (manifests, rules) with errors that name the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edge.errors import SmartbinError


def read_json(path: Path, error: type[SmartbinError], missing: str, unreadable: str) -> Any:
    """The parsed file; ``error`` says "<path>: <missing>" or "<path>: <unreadable>: <why>"."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{path}: {missing}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"{path}: {unreadable}: {exc}") from exc
