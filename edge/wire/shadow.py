"""A model in the shadow of the serving one: what a bin says about it, per item (``…/shadow``) and in its
retained ``…/model`` (``ShadowState``). The serving model still decides; the shadow's decision on the same
frames is only reported, so that a rollout sees what the new model would have done before it does anything."""

from __future__ import annotations

from pydantic import BaseModel, Field

from edge.wire.message import Bin, Payload, titled
from edge.wire.topics import Topic


class Verdict(BaseModel):
    """One model's decision on an item: the bin its flap would move to, the label and how sure."""

    bin: Bin
    label: str
    confidence: float = Field(ge=0, le=1)


class ShadowItem(Payload):
    model_config = titled(Topic.SHADOW, "per decided item while a model runs in the shadow")

    event_id: str = Field(description="the serving model's decision on …/decision (its sample, if kept)")
    ts: float
    device_id: str
    shadow: str = Field(description="the shadow model's folder in the model store")
    serving: Verdict = Field(description="what the bin did")
    candidate: Verdict = Field(description="what the shadow model would have done on the same frames")
    agree: bool = Field(description="both send the item to the same bin")
    shadow_ms: float = Field(ge=0, description="the shadow's inference time per frame, mean over the item's frames")


class ShadowState(BaseModel):
    """The shadow in the retained …/model: what runs beside the serving model, or why the last one stopped."""

    folder: str | None = Field(description="the shadow model's folder; null once it stopped")
    sha256: str | None = None
    since: float | None = None
    items: int = Field(0, ge=0)
    agreed: int = Field(0, ge=0)
    ms_per_frame: float | None = Field(None, description="the shadow's mean inference time per frame")
    serving_ms_per_frame: float | None = Field(None, description="the serving model's, over the same frames")
    stopped: str | None = Field(None, description="why the last shadow stopped (a command, its cost, its time)")
