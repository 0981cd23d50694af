"""The fleet's own retained messages, beside the bins' (``<prefix>/_fleet/…``): one rollout at a time holds
the lock, and its record says which bins it sent the release to and what each served before, so that a rollout
that died (SIGKILL, power) can be finished or undone by the next one, from any workstation."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

LOCK = "lock"  # retained; kept by the broker for ttl_s where it speaks MQTT 5, renewed while the rollout runs
RECORD = "rollout"  # retained until the rollout ends with every bin where it should be


class RolloutLock(BaseModel):
    """Who holds the fleet: one rollout at a time, across workstations."""

    token: str
    owner: str = Field(description="user@host pid of the rollout")
    host: str = ""
    pid: int = 0
    started: float
    expires: float = Field(description="the owner's clock: a lock not renewed by then is a dead rollout's")
    ttl_s: float


class Before(BaseModel):
    """What a bin served when the rollout started: its folder and what reload_model takes to come back."""

    folder: str
    target: str | None = Field(description="a path or store folder for reload_model; null: the configured bundle")


class RolloutRecord(BaseModel):
    """A rollout's progress, kept on the broker while it changes bins."""

    token: str
    owner: str
    started: float
    url: str
    sha256: str | None
    state: Literal["running", "putting back"] = "running"
    before: dict[str, Before] = Field(default_factory=dict)
    sent: list[str] = Field(default_factory=list, description="bins sent the release (they may have switched)")
    shadowing: list[str] = Field(default_factory=list, description="bins sent the release to run in the shadow")
