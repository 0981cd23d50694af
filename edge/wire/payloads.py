"""Every MQTT payload of ours as a typed class; edge/schemas/<topic>.json is generated from them
(edge/wire/schemas.py: `make schemas`, and a test checks that the shipped files are what these generate).

Producers build their messages with these classes (``dump``). Unknown fields are ignored when a class
reads a message, so a reader of an older version reads a newer daemon's messages.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, ValidationError

from edge.formats.labels import BINS
from edge.formats.variants import VARIANT_FILES
from edge.wire.command_spec import ACTIONS, MAX_PAYLOAD
from edge.wire.features import Features
from edge.wire.message import Bin, Payload, title, titled
from edge.wire.model_info import ModelInfo  # noqa: F401 - one of the payloads, in a module of its own
from edge.wire.topics import Topic

if TYPE_CHECKING:
    from edge.classifier import Prediction

Health = Literal["ok", "degraded", "camera_lost"]
CommandId = Union[str, int, None]


class Decision(Payload):
    model_config = titled(Topic.DECISION, "one per item; de-duplicate on event_id")

    event_id: str = Field(pattern="^[0-9a-f]{32}$")
    ts: float
    bin: Bin
    label: str
    label_index: int = Field(ge=-1, description="-1: no class was sure enough (reason low_confidence)")
    confidence: float = Field(ge=0, le=1)
    votes: int = Field(ge=1)
    frames: int = Field(ge=1)
    reason: Literal["vote", "low_confidence"]
    frame_ids: list[int] | None = None
    device_id: str
    earlier_boot: bool | None = Field(
        None,
        description="true: made before the daemon's host last started (a power cut); an actuator never moves for it",
    )


class Stamped(BaseModel):
    """What the actuator reads of the daemon's metrics and status: when the daemon sent it (its clock), and the
    MQTT version it speaks (the status only). Over MQTT 3.1.1 they teach it the daemon's clock offset."""

    ts: StrictFloat | StrictInt = Field(allow_inf_nan=False)
    mqtt_protocol: Literal["5", "3.1.1"] | None = None


class Routing(BaseModel):
    """What anything that routes or ages a decision reads of it (the actuator, the outbox): only these three
    fields are required, so a hand-made decision routes too, and the rest may change without breaking it."""

    event_id: str = Field(min_length=1)
    bin: Bin
    ts: StrictFloat | StrictInt = Field(allow_inf_nan=False)
    earlier_boot: bool = Field(
        False,
        description="made before the daemon's host last started (a power cut): sent as a record, never moved for",
    )

    @classmethod
    def read(cls, payload: bytes | str) -> Routing:
        """The decision's routing, or ValueError saying in a line what is wrong (for the actuator's ack)."""
        try:
            data = json.loads(payload)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ValueError("not a JSON decision") from None
        if not isinstance(data, dict):
            raise ValueError("not a JSON decision")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            field = exc.errors()[0]["loc"][0]
        if field == "bin":
            raise ValueError(f"unknown bin {data.get(field)!r} (allowed: {', '.join(BINS)})") from None
        if field == "ts":
            raise ValueError("decision without a ts (seconds since the epoch, when it was made)") from None
        raise ValueError("decision without an event_id") from None


class TopK(BaseModel):
    label: str
    label_index: int
    bin: Bin
    confidence: float = Field(ge=0, le=1)


class StageLatency(BaseModel):
    """Milliseconds per stage of one frame; more stages may follow."""

    model_config = ConfigDict(
        extra="allow", json_schema_extra={"additionalProperties": {"type": "number", "minimum": 0}}
    )

    preprocess: float = Field(ge=0)
    infer: float = Field(ge=0)
    postprocess: float = Field(ge=0)
    capture_to_publish: float = Field(ge=0)


class Classification(Payload):
    model_config = titled(Topic.CLASSIFICATION, "every classified frame")

    ts: float
    frame_id: int = Field(ge=0)
    label: str
    label_index: int = Field(ge=0)
    confidence: float = Field(ge=0, le=1)
    bin: Bin
    top_k: list[TopK] = Field(min_length=1)
    latency_ms: StageLatency


Verdict = Literal["item", "not_item", "unsure"]


class Correction(BaseModel):
    """A person's answer about a sample: what the item was (``label``), or that no item was there, or that
    they cannot tell; given on the bin (the ``correct`` command, the status page) or at `smartbin review`."""

    label: str | None
    ts: float
    verdict: Verdict = "item"
    by: Literal["bin", "review"] = "bin"


class Sample(BaseModel):
    """A kept frame's JSON beside its JPEG on the bin (served at /samples/<id>.json to `smartbin samples
    pull`): the decision or flag it was kept for, the model that made it, and an operator's correction."""

    event_id: str
    ts: float
    label: str | None = None
    label_index: int | None = None
    bin: str | None = None
    confidence: float | None = None
    votes: int | None = None
    frames: int | None = None
    reason: str | None = None
    device_id: str | None = None
    top_k: list[TopK] = []
    model: dict[str, Any] = {}
    kept_because: list[str] = []
    correction: Correction | None = None
    features: Features | None = None

    def dump(self) -> dict:
        """Every field, as JSON types (a sample on disk names what it does not know)."""
        return self.model_dump(mode="json", exclude_none=False)


def top_k(prediction: Prediction) -> list[TopK]:
    """A prediction's best classes, as every payload gives them."""
    return [
        TopK(label=label.name, label_index=label.index, bin=label.bin, confidence=round(p, 4))
        for label, p in prediction.top_k
    ]


def classification(
    prediction: Prediction, ts: float, frame_id: int, capture_to_publish_ms: float, top: list[TopK] | None = None
) -> Classification:
    """The …/classification message of one frame (``top``: its top-k, when already made)."""
    latency = {stage: round(ms, 3) for stage, ms in prediction.latency_ms.items()}
    return Classification(
        ts=round(ts, 3),
        frame_id=frame_id,
        label=prediction.label.name,
        label_index=prediction.label.index,
        confidence=round(prediction.confidence, 4),
        bin=prediction.label.bin,
        top_k=top if top is not None else top_k(prediction),
        latency_ms=StageLatency(**latency, capture_to_publish=round(capture_to_publish_ms, 3)),
    )


class Relearn(BaseModel):
    ts: float
    reason: str


class Presence(BaseModel):
    """null with presence.mode always; learning: warm-up, or settling after a re-learn (health degraded)"""

    state: Literal["empty", "item", "learning"]
    relearns: int = Field(ge=0)
    last_relearn: Relearn | None


class StatusModel(BaseModel):
    """What serves, as the status gives it."""

    name: str
    variant: Literal[tuple(VARIANT_FILES)]  # type: ignore[valid-type]
    sha256: str = Field(pattern="^[0-9a-f]{64}$")


class SourceState(BaseModel):
    uri: str
    state: Literal["starting", "ok", "reconnecting", "ended"]
    error: str | None = None


class Status(Payload):
    model_config = titled(Topic.STATUS, "also the Last Will")

    state: Literal["online", "offline"]
    device_id: str
    version: str
    model: StatusModel
    backend: Literal["litert", "tflite_runtime", "tensorflow", "onnxruntime"]
    delegate: str | None = None
    health: Health
    source: SourceState
    presence: Presence | None = None
    paused: bool | None = None
    host: str | None = None
    mqtt_protocol: Literal["5", "3.1.1"] | None = Field(
        None, description="the MQTT version spoken: over 3.1.1 a decision's age rests on the two hosts' clocks"
    )
    started: float
    ts: float


class Percentiles(BaseModel):
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None


class Metrics(Payload):
    model_config = titled(Topic.METRICS, "periodic")

    ts: float
    fps: float = Field(ge=0)
    frames_classified: int = Field(ge=0)
    frames_grabbed: int = Field(ge=0)
    frames_dropped: int = Field(ge=0)
    decisions: int = Field(ge=0)
    latency_ms: dict[str, Percentiles]
    outbox_depth: int = Field(ge=0)
    outbox_dropped: int = Field(ge=0)
    outbox_error: str | None = None
    outbox_refused: int | None = Field(None, ge=0)
    outbox_refusal: str | None = None
    source_state: str
    source_reconnects: int | None = Field(None, ge=0)
    broker_connects: int | None = Field(None, ge=0)
    mqtt_protocol: Literal["5", "3.1.1"] | None = None
    commands_rejected: int | None = Field(None, ge=0)
    cpu_temp_c: float | None = None
    uptime_s: float = Field(ge=0)
    health: Health
    presence: Presence | None = None
    samples: dict[str, int] | None = Field(
        None,
        description="the sample store: kept, bytes, written, dropped (queue full), skipped_low_disk, errors; with "
        "samples.over_mqtt also unsent (waiting for the broker's PUBACK), sent, and unsent_dropped (queue full)",
    )
    counts: dict[str, Any] | None = Field(
        None, description="items per bin and label, today and all time (outlive restarts); today's low-confidence share"
    )


_ONE_LINE = r"^\s*\S([\s\S]{0,98}\S)?\s*$"


class Command(Payload):
    """Every command is answered on …/command/result with the same id (command_result.json). Any field listed
    here may accompany any action; each action requires its own."""

    model_config = ConfigDict(
        title=f"{title(Topic.COMMAND)} (QoS 1, subscribed): what a client may ask; at most {MAX_PAYLOAD} bytes of "
        "UTF-8 JSON",
        extra="forbid",
        json_schema_extra={
            "allOf": [
                {
                    "if": {"properties": {"action": {"const": "set_threshold"}}},
                    "then": {
                        "required": ["value"],
                        "properties": {"value": {"type": "number", "minimum": 0, "maximum": 1}},
                    },
                },
                {
                    "if": {"properties": {"action": {"const": "reload_model"}}},
                    "then": {"properties": {"bundle": {"type": ["string", "null"]}}},
                },
                {
                    "if": {"properties": {"action": {"const": "update_model"}}},
                    "then": {
                        "required": ["url"],
                        "properties": {
                            "url": {"type": "string", "pattern": r"^https?://[^\s]{1,2040}$"},
                            "sha256": {"type": ["string", "null"], "pattern": "^[0-9a-f]{64}$"},
                            "force": {"type": "boolean"},
                            "shadow": {"type": "boolean"},
                        },
                    },
                },
                {
                    "if": {"properties": {"action": {"const": "correct"}}},
                    "then": {
                        "required": ["event_id", "label"],
                        "properties": {
                            "event_id": {"type": "string", "pattern": _ONE_LINE},
                            "label": {"type": "string", "pattern": _ONE_LINE},
                        },
                    },
                },
            ]
        },
    )

    id: CommandId = Field(None, description="echoed in the result")
    action: Literal[ACTIONS]  # type: ignore[valid-type]
    value: Any = Field(None, description="set_threshold: the new decision.min_confidence")
    bundle: Any = Field(
        None, description="reload_model: a model store folder name or a path (default: the configured bundle)"
    )
    url: Any = Field(None, description="update_model: where the bundle .tar is served")
    sha256: Any = Field(None, description="update_model: the archive's digest, as `smartbin bundle pack` prints it")
    force: Any = Field(None, description="update_model: install even when it is the model already serving")
    shadow: Any = Field(None, description="update_model: run it beside the serving model, which still decides")
    event_id: Any = Field(None, description="correct: the decision to correct")
    label: Any = Field(None, description="correct: what the item really was (a label name; others are kept too)")


class CommandResult(Payload):
    model_config = titled(
        Topic.COMMAND_RESULT,
        "the answer to every command",
        **{
            "if": {"properties": {"ok": {"const": True}}},
            "then": {"required": ["result"]},
            "else": {"required": ["error"]},
        },
    )

    id: CommandId
    action: str | None
    ok: bool
    result: dict[str, Any] | None = None
    error: str | None = None
    repeated: bool | None = Field(None, description="a re-delivered command (its id was carried out): not again")
    ts: float


class ActuatorAck(Payload):
    model_config = titled(
        Topic.ACTUATOR_ACK,
        "one per decision the actuator received",
        allOf=[{"if": {"properties": {"ok": {"const": False}}}, "then": {"required": ["error"]}}],
    )

    event_id: str | None = Field(description="null when the decision could not be read")
    bin: Bin | None
    ok: bool = Field(description="true: moved (or already moved for this event_id)")
    duplicate: bool = Field(description="this event_id was carried out before: not moved again")
    stale: bool = Field(description="older than actuator.max_age_s: not moved, the item is gone")
    error: str | None = Field(None, description="why it was not moved (only when ok is false)")
    ts: float
    age_s: float | None = Field(None, description="the decision's age as the actuator judged it, in seconds")
    age_from: Literal["mqtt5", "learnt_offset", "clocks"] | None = Field(
        None,
        description="what the age rests on: MQTT 5's counts, the daemon's clock offset learnt from its periodic "
        "messages (MQTT 3.1.1), or the two hosts' clocks alone (3.1.1, before any such message)",
    )
    moved_at: float | None = Field(None, description="when the flap began to move (this host's clock); only on a move")
