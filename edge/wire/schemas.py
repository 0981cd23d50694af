"""The MQTT payloads' JSON Schemas (edge/schemas/), generated from the classes of edge/wire/payloads.py:
`make schemas` (``python -m edge.wire.schemas``); a test checks that the shipped files are these."""

from __future__ import annotations

import json
from pathlib import Path

from edge.wire.message import DIALECT, Payload, title
from edge.wire.payloads import (
    ActuatorAck,
    Classification,
    Command,
    CommandResult,
    Decision,
    Metrics,
    ModelInfo,
    Status,
)
from edge.wire.sample_message import SamplePart
from edge.wire.shadow import ShadowItem
from edge.wire.topics import Topic

SNAPSHOT_SCHEMA = {
    "$schema": DIALECT,
    "title": f"{title(Topic.SNAPSHOT)} (QoS 0): the newest frame, asked for with the snapshot command",
    "description": "Not JSON: the payload is the JPEG file itself (quality 95, the camera's full frame); the "
    "command's result gives its size and frame_id.",
    "type": "string",
    "contentEncoding": "binary",
    "contentMediaType": "image/jpeg",
}
PAYLOADS: dict[Topic, type[Payload]] = {
    Topic.STATUS: Status,
    Topic.DECISION: Decision,
    Topic.CLASSIFICATION: Classification,
    Topic.METRICS: Metrics,
    Topic.MODEL: ModelInfo,
    Topic.COMMAND: Command,
    Topic.COMMAND_RESULT: CommandResult,
    Topic.ACTUATOR_ACK: ActuatorAck,
    Topic.SHADOW: ShadowItem,
    Topic.SAMPLE: SamplePart,
}


def schemas() -> dict[str, dict]:
    """File name in edge/schemas/ -> the JSON Schema of that topic's payload."""
    out = {topic.schema: {"$schema": DIALECT, **model.model_json_schema()} for topic, model in PAYLOADS.items()}
    return {**out, Topic.SNAPSHOT.schema: SNAPSHOT_SCHEMA}


def write_schemas(folder: Path) -> list[Path]:
    """Write every payload's schema (`make schemas`)."""
    written = []
    for name, schema in schemas().items():
        path = folder / name
        path.write_text(json.dumps(schema, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":  # python -m edge.wire.schemas: regenerate edge/schemas/
    for written in write_schemas(Path(__file__).resolve().parents[1] / "schemas"):
        print(written)  # noqa: T201
