"""The wire contract: every topic's payload is a class of edge/wire/payloads.py, and the JSON Schemas shipped
in edge/schemas/ are the ones those classes generate."""

from __future__ import annotations

import json
import typing

import jsonschema
import pytest
from pydantic import ValidationError

from edge.formats.labels import BINS
from edge.formats.variants import VARIANT_FILES
from edge.wire import payloads, schemas
from edge.wire.command_spec import ACTIONS, FIELDS
from edge.wire.topics import Topic
from tests.support import SCHEMAS


def test_the_shipped_schemas_are_the_generated_ones():
    generated = schemas.schemas()
    assert {p.name for p in SCHEMAS.glob("*.json")} == set(generated) == {t.schema for t in Topic}
    for name, schema in generated.items():
        shipped = json.loads((SCHEMAS / name).read_text(encoding="utf-8"))
        assert shipped == schema, f"regenerate edge/schemas/ with `make schemas` ({name} differs)"


def test_the_contract_takes_its_lists_from_their_owners():
    assert typing.get_args(payloads.Bin) == BINS
    assert typing.get_args(payloads.Command.model_fields["action"].annotation) == ACTIONS
    assert set(payloads.Command.model_fields) == FIELDS | {"id", "action"}
    assert typing.get_args(payloads.StatusModel.model_fields["variant"].annotation) == tuple(VARIANT_FILES)


def test_a_decision_built_with_its_class_is_what_its_schema_allows():
    decision = payloads.Decision(
        event_id="0" * 32, ts=1.5, bin="kitchen", label="peel", label_index=3, confidence=0.9, votes=3, frames=5,
        reason="vote", device_id="bin-1",
    )  # fmt: skip
    sent = decision.dump()
    jsonschema.validate(sent, schemas.schemas()["decision.json"])
    assert "frame_ids" not in sent and payloads.Decision.model_validate_json(json.dumps(sent)) == decision
    with pytest.raises(ValidationError):
        payloads.Decision(**{**sent, "bin": "compost"})


def test_an_ack_that_says_not_ok_must_say_why():
    schema = schemas.schemas()["actuator_ack.json"]
    ack = {"event_id": None, "bin": None, "ok": False, "duplicate": False, "stale": False, "ts": 1.0}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(ack, schema)
    jsonschema.validate({**ack, "error": "not a JSON decision"}, schema)
    assert payloads.ActuatorAck(**ack, error="x").dump()["event_id"] is None  # a null the producer set is sent


def test_home_assistant_reads_only_fields_the_messages_have(tmp_path):
    """Each discovery template's ``value_json.a.b`` names a field of its state topic's payload class (the
    schema), and inside ``counts`` (a dict) a key of what a real counters database sums up."""
    import re

    from edge.broker.homeassistant import discovery
    from edge.storage.counters import Counters
    from edge.wire.topics import topic_of

    counters = Counters(tmp_path / "counters.sqlite")
    sent = dict(event_id="a" * 32, ts=1.0, label="can", label_index=0, confidence=0.9, votes=5, frames=5)
    counters.count_decision(payloads.Decision(**sent, bin="recyclable", reason="vote", device_id="b"))
    counts = counters.summary()
    read = 0
    for component in discovery("smartbin/b", "b")["cmps"].values():
        fields = schemas.schemas()[topic_of(component["state_topic"]).schema]["properties"]
        for path in re.findall(r"value_json\.([\w.]+)", component.get("value_template", "")):
            first, *rest = path.split(".")
            assert first in fields, f"{component['name']}: {first} is no field of {component['state_topic']}"
            value = counts if first == "counts" else None
            for key in rest if value is not None else []:
                assert key in value, f"{component['name']}: counts has no {path}"
                value = value[key]
            read += 1
    assert read >= 8  # bin, label, confidence, four bins' counts, the low-confidence share, the event's two
