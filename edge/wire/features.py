"""The serving backbone's output on a kept frame (a bundle in two parts), in the sample's JSON: what a head is
trained on at the workstation, so that teaching a new item needs no backbone pass over the frames (issue 52).
Carried wherever the sample's JSON goes (the page, the broker, the review folder): 2,048 values of a ResNet50,
float16, 5.5 kB of base64."""

from __future__ import annotations

import base64
import binascii
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

MAX_FEATURES = 16384  # a backbone's pooled output: ResNet50's is 2,048


class Features(BaseModel):
    backbone: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of the backbone variant's file")
    variant: str
    dtype: Literal["float16"] = "float16"
    data: str = Field(max_length=MAX_FEATURES * 2 * 4 // 3 + 4, description="the values, little-endian, base64")

    @classmethod
    def of(cls, values: np.ndarray, backbone: str, variant: str) -> Features:
        raw = np.asarray(values, "<f2").reshape(-1)[:MAX_FEATURES].tobytes()
        return cls(backbone=backbone, variant=variant, data=base64.b64encode(raw).decode("ascii"))

    def values(self) -> np.ndarray:
        """The values as float32 (ValueError when the data is not base64 of float16s)."""
        try:
            raw = base64.b64decode(self.data, validate=True)
        except binascii.Error as exc:
            raise ValueError(f"features: not base64: {exc}") from None
        if len(raw) % 2:
            raise ValueError("features: an odd number of bytes")
        return np.frombuffer(raw, "<f2").astype(np.float32)
