"""How a message goes on the wire: compact JSON, and a stored decision marked as made before this boot."""

from __future__ import annotations

import json


def dumps(payload: dict) -> str:
    """Compact JSON, UTF-8 kept as it is."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))


def marked_earlier_boot(payload: str) -> str:
    """The stored decision with ``earlier_boot: true`` (a row that is not a JSON object goes as it is)."""
    try:
        data = json.loads(payload)
    except ValueError:
        return payload
    return dumps({**data, "earlier_boot": True}) if isinstance(data, dict) else payload
