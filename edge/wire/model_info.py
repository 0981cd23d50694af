"""The retained …/model payload: the model that serves, how the last change went, the shadow beside it, and
what ``model.variant: auto`` measured (a payload of edge/wire/payloads.py, in a module of its own)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from edge.wire.message import Payload, titled
from edge.wire.shadow import ShadowState
from edge.wire.topics import Topic


class LastChange(BaseModel):
    event: Literal["switched", "confirmed", "rolled_back"] | None = None
    failed: str | None = None
    reason: str | None = None
    ts: float | None = None


class PickChoice(BaseModel):
    variant: str
    backend: str
    threads: int


class PickTrial(PickChoice):
    p50_ms: float | None = Field(description="median time of one image through the engine (invoke only)")
    p95_ms: float | None
    reason: str | None = Field(description="why it was ruled out: references that disagree, a crash, an error")
    passed: bool


class PickInfo(BaseModel):
    """``model.variant: auto``: what this device measured for the bundle that serves, and chose."""

    chosen: PickChoice | None = Field(description="the fastest that passed; null when none did")
    measured: float
    trials: list[PickTrial]


class HeadInfo(BaseModel):
    """The head of a bundle in two parts (smartbin convert --split-head), replaceable alone."""

    sha256: str = Field(description="of head.npz")
    classes: int
    features: int
    shared_backbone: bool = Field(description="true: it serves on the backbone loaded before it (a head update)")


class ModelInfo(Payload):
    model_config = titled(Topic.MODEL, "the model that serves and how the last change went")

    name: str
    folder: str = Field(description="the bundle's folder (in the model store: <name>-<sha12>)")
    variant: str
    created: str = Field(description="when the converter made the bundle (ISO 8601)")
    sha256: str | None = Field(description="of the archive it was installed from; null otherwise")
    since: float
    previous: str | None
    health_window: bool = Field(description="true while a failure would still roll back")
    last_change: LastChange | None
    bundle: str | None = Field(None, description="the bundle's real path: what reload_model takes to come back")
    signed: bool | None = Field(None, description="its manifest carries a signature")
    verifies: bool | None = Field(None, description="this bin loads only signed bundles (updates.public_key)")
    shadow: ShadowState | None = None
    pick: PickInfo | None = Field(None, description="model.variant auto: the device's measurements and its choice")
    head: HeadInfo | None = Field(None, description="a bundle in two parts: the head that makes its probabilities")
