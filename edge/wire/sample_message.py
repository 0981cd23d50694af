"""A kept frame sent over the bin's own MQTT connection (``samples.over_mqtt``): for bins behind a NAT or a
cellular router, which no workstation can reach. ``smartbin samples fetch --broker`` collects them.

A sample goes in parts of ``PART_CHARS`` (its whole message's JSON cut in slices): on a narrow uplink a
decision made meanwhile waits behind the parts in flight, not behind whole frames (measured with `make
samples-link`: 2.7 s behind two whole frames on 250 kbit/s)."""

from __future__ import annotations

import base64
import binascii
import re

from pydantic import Field, field_validator, model_validator

from edge.wire.message import Payload, titled
from edge.wire.payloads import Sample
from edge.wire.topics import Topic

# A sample's file name, without its suffix: ``<ms since the epoch, 15 digits>-<event_id's first 12>`` (a
# flagged frame's event id is "flag-…"). What a bin serves and a workstation accepts, from a page or the
# broker. No dot, no slash: never a path elsewhere.
SAMPLE_NAME = re.compile(r"[0-9]{15}-[A-Za-z0-9_-]{1,12}")
MAX_JPEG_BYTES = 16 * 2**20  # a frame is ~0.1 MB; a bigger one is refused, by the bin's page and the broker's
PART_CHARS = 4096  # ~33 ms on a 1 Mbit/s uplink, ~130 ms on 250 kbit/s
MAX_PARTS = (MAX_JPEG_BYTES * 4 // 3 + 2**16) // PART_CHARS + 1  # the biggest frame's message, with its JSON


class SampleMessage(Payload):
    model_config = titled(Topic.SAMPLE, "a kept frame, sent when the bin has no decision to send")

    sample_id: str = Field(pattern=f"^{SAMPLE_NAME.pattern}$", description="the file name, without .jpg/.json")
    sample: Sample = Field(description="the sample's JSON, as the bin keeps it beside the frame")
    jpeg: str = Field(description="the frame, base64", max_length=(MAX_JPEG_BYTES * 4) // 3 + 4)

    @field_validator("jpeg")
    @classmethod
    def _a_jpeg(cls, value: str) -> str:
        try:
            head = base64.b64decode(value[:8], validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("not base64") from None
        if not head.startswith(b"\xff\xd8"):
            raise ValueError("not a JPEG")
        return value

    def image(self) -> bytes:
        """The JPEG's bytes (ValueError when the base64 breaks past its start)."""
        try:
            return base64.b64decode(self.jpeg, validate=True)
        except binascii.Error as exc:
            raise ValueError(f"not base64: {exc}") from None


class SamplePart(Payload):
    model_config = titled(Topic.SAMPLE, "a part of a kept frame's message, sent when the bin has no decision to send")

    sample_id: str = Field(pattern=f"^{SAMPLE_NAME.pattern}$", description="the file name, without .jpg/.json")
    part: int = Field(ge=0, description="this part's place, from 0")
    parts: int = Field(ge=1, le=MAX_PARTS, description="how many parts the sample's message has")
    data: str = Field(max_length=PART_CHARS, description="this slice of the sample's message (SampleMessage's JSON)")

    @model_validator(mode="after")
    def _within(self) -> SamplePart:
        if self.part >= self.parts:
            raise ValueError(f"part {self.part} of {self.parts}")
        return self


def split(message: SampleMessage) -> list[SamplePart]:
    """The message in parts, in order."""
    text = message.model_dump_json(exclude_unset=True)
    slices = [text[at : at + PART_CHARS] for at in range(0, len(text), PART_CHARS)]
    return [
        SamplePart(sample_id=message.sample_id, part=i, parts=len(slices), data=piece) for i, piece in enumerate(slices)
    ]


def sample_message(sample_id: str, meta_json: bytes, jpeg: bytes) -> SampleMessage:
    """The message of one sample as the bin keeps it (its JSON's bytes and its JPEG's)."""
    return SampleMessage(
        sample_id=sample_id,
        sample=Sample.model_validate_json(meta_json),
        jpeg=base64.b64encode(jpeg).decode("ascii"),
    )
