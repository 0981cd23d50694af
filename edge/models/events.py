"""What the model's life tells the daemon's loop: a command's answer, another classifier serving, the retained
…/model topic out of date. ``Serving`` and the command queue post these to a ``Poster`` (the daemon's queue,
edge/daemon/events.py); none of them reaches the daemon or its outputs."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from edge.classifier import Classifier


@dataclass(frozen=True)
class Answered:
    """A command's answer for …/command/result: ``result`` when it was carried out, else ``error``."""

    command_id: Any
    action: str | None
    result: dict | None = None
    error: str | None = None
    repeated: bool = False  # a re-delivered command, not carried out again


@dataclass(frozen=True)
class Switched:
    """Another classifier serves: the vote takes its labels before the next frame, the status says so."""

    classifier: Classifier


@dataclass(frozen=True)
class ModelChanged:
    """What the retained …/model topic says changed (a switch, a health window's end, a rollback)."""


class Poster(ABC):
    """Where these go: any thread posts, the loop takes them before the next frame (edge/daemon/events.py)."""

    @abstractmethod
    def post(self, event: Any) -> None: ...

    def answer(
        self,
        command_id: Any,
        action: str | None,
        result: dict | None = None,
        error: str | None = None,
        repeated: bool = False,
    ) -> None:
        """Post a command's answer (the form ``Serving`` and ``CommandQueue`` answer in)."""
        self.post(Answered(command_id, action, result, error, repeated))
