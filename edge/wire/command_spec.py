"""What a command on …/command (or the status page) may be: its size, actions and fields, checked before
anything is carried out. MQTT and the web page both import it; it imports nothing of the service."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from edge.errors import SmartbinError

MAX_PAYLOAD = 4096
ACTIONS = (
    "ping",
    "status",
    "pause",
    "resume",
    "snapshot",
    "set_threshold",
    "reload_model",
    "update_model",
    "flag",
    "correct",
    "stop_shadow",
)
FIELDS = {"value", "bundle", "url", "sha256", "force", "shadow", "event_id", "label"}


class CommandError(SmartbinError):
    """A command that cannot be carried out; its message goes into the result."""

    def __init__(self, message: str, command_id: Any = None):
        super().__init__(message)
        self.command_id = command_id


@dataclass
class Command:
    id: Any
    action: str
    params: dict = field(default_factory=dict)


def parse_command(payload: bytes) -> Command:
    """Validate a raw payload; CommandError says what is wrong (the id is kept when readable)."""
    if len(payload) > MAX_PAYLOAD:
        raise CommandError(f"payload too large ({len(payload)} bytes, limit {MAX_PAYLOAD})")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise CommandError("payload is not UTF-8 text") from None
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise CommandError("payload is not valid JSON") from None
    if not isinstance(data, dict):
        raise CommandError('payload must be a JSON object like {"id": 1, "action": "ping"}')
    command_id = data.get("id")
    if isinstance(command_id, bool) or (command_id is not None and not isinstance(command_id, (str, int))):
        raise CommandError("id must be a string or an integer")
    action = data.get("action")
    if action not in ACTIONS:
        raise CommandError(f"unknown action {action!r} (allowed: {', '.join(ACTIONS)})", command_id)
    params = {k: v for k, v in data.items() if k not in ("id", "action")}
    if action == "set_threshold":
        value = params.get("value")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise CommandError("set_threshold needs a number 'value' between 0 and 1", command_id)
    elif action == "reload_model":
        bundle = params.get("bundle")
        if bundle is not None and not isinstance(bundle, str):
            raise CommandError("reload_model: 'bundle' must be a path or a model store name", command_id)
    elif action == "update_model":
        url, sha256 = params.get("url"), params.get("sha256")
        if not isinstance(url, str) or not re.match(r"^https?://[^\s]{1,2040}$", url):
            raise CommandError("update_model needs 'url': an http:// or https:// address of a bundle .tar", command_id)
        if sha256 is not None and (not isinstance(sha256, str) or not re.fullmatch(r"[0-9a-f]{64}", sha256)):
            raise CommandError("update_model: 'sha256' must be the archive's 64 lowercase hex digits", command_id)
        for name in ("force", "shadow"):
            if not isinstance(params.get(name, False), bool):
                raise CommandError(f"update_model: '{name}' must be true or false", command_id)
    elif action == "correct":
        for name in ("event_id", "label"):
            value = params.get(name)
            if not isinstance(value, str) or not 0 < len(value.strip()) <= 100:
                raise CommandError(f"correct needs '{name}': a non-empty string of at most 100 characters", command_id)
    unknown = set(params) - FIELDS
    if unknown:
        raise CommandError(f"unknown field(s) {', '.join(sorted(map(str, unknown)))}", command_id)
    return Command(command_id, action, params)


def command_id_of(payload: bytes) -> Any:
    """The id a payload carries, if it is a JSON object with one (to answer a command refused unread)."""
    try:
        message = json.loads(payload)
    except ValueError:
        return None
    return message.get("id") if isinstance(message, dict) else None
