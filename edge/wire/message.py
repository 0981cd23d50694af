"""What every message class of the wire contract shares: the base that dumps a message and how a schema is
titled (payloads.py, shadow.py and fleet's records build on it)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from edge.formats.labels import BINS
from edge.wire.topics import DEFAULT_PREFIX, Topic

Bin = Literal[BINS]  # type: ignore[valid-type]  # one list of bins: edge/formats/labels.py
DIALECT = "https://json-schema.org/draft/2020-12/schema"


def titled(topic: Topic, what: str, **extra: Any) -> ConfigDict:
    """A payload class's schema title: its topic, how it is sent (from the topic's own definition) and what it is."""
    how = f"QoS {topic.qos}" + (", retained" if topic.retain else "")
    return ConfigDict(title=f"{title(topic)} ({how}): {what}", json_schema_extra=extra or None)


def title(topic: Topic) -> str:
    """How the schemas and docs write a topic: ``smartbin/<device_id>/decision``."""
    return f"{DEFAULT_PREFIX}/<device_id>/{topic.value}"


class Payload(BaseModel):
    """A message body: built with keyword arguments, sent as compact JSON without the fields left unset."""

    def dump(self) -> dict:
        """The fields the producer set (a None it set stays: null says something), as JSON types."""
        return self.model_dump(mode="json", exclude_unset=True)
