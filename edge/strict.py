"""The one strict base for every pydantic model of ours (unknown keys are errors, assignments are checked), and
how a validation error of one reads."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def describe_error(error: dict, root: type[BaseModel]) -> str:
    """One pydantic error of a model under ``root`` as a user reads it: the key path, and for an unknown key
    the keys allowed there, for a bad value the value and what is allowed."""
    loc = error["loc"]
    path = ".".join(str(p) for p in loc) or "(top level)"
    kind = error["type"]
    if kind == "extra_forbidden":
        parent = root
        for part in loc[:-1]:
            field = parent.model_fields.get(str(part))
            annotation = getattr(field, "annotation", None) if field else None
            parent = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
            if parent is None:
                break
        allowed = ", ".join(parent.model_fields) if parent else "see `smartbin config show`"
        return f"{path}: unknown key (allowed here: {allowed})"
    if kind == "missing":
        return f"{path}: required key is missing"
    value = error.get("input")
    message = error["msg"]
    if kind == "literal_error":
        message = "must be one of " + message.split("Input should be ", 1)[-1]
    return f"{path}: {value!r} is not valid: {message}"
