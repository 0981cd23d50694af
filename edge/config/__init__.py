"""The daemon's configuration: pydantic models, strict (unknown keys are errors), loaded from YAML.

Errors name the file, the key path, the bad value and what is allowed. Secrets never live
in the YAML: the MQTT password and the key passphrase come from an environment variable or
a file the config names.
"""

from __future__ import annotations

import getpass
import os
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from edge.config.network import MqttConfig, WebConfig
from edge.errors import ConfigError, NoPermission
from edge.formats.labels import BINS
from edge.formats.signing import check_public_key
from edge.formats.variants import VARIANT_FILES, is_onnx
from edge.runtime import BACKENDS, runs
from edge.sources import check_uri
from edge.strict import Strict, describe_error
from edge.system.identity import default_device_id
from edge.system.paths import STATE_DIR
from edge.vision.decision import PRESENCE, VoteSettings
from edge.vision.preprocess import Roi
from edge.wire.topics import FLEET, device_base

VOTE = VoteSettings()
BACKEND_NAMES = ("auto", *BACKENDS)
VARIANT_NAMES = tuple(VARIANT_FILES)


class ModelConfig(Strict):
    bundle: Path = Field(description="bundle folder written by `smartbin convert`")
    backend: Literal[BACKEND_NAMES] = Field("auto", description="inference backend")  # type: ignore[valid-type]
    variant: Optional[Literal[(*VARIANT_NAMES, "auto")]] = Field(  # type: ignore[valid-type]
        None,
        description="model variant; default int8 for TFLite, onnx for ONNX Runtime; auto: the fastest that passes "
        "its references, measured on this device (with the backend, and the threads)",
    )
    threads: Union[int, Literal["auto"]] = Field("auto", description="inference threads; auto: every core, up to 4")

    @field_validator("threads")
    @classmethod
    def thread_count(cls, value: int | str) -> int | str:
        if value != "auto" and not 1 <= value <= 64:
            raise ValueError("must be auto or a number from 1 to 64")
        return value

    delegate: Optional[str] = Field(
        None, description="TFLite delegate library or ONNX provider; none: plain CPU kernels, without XNNPACK"
    )
    top_k: int = Field(3, ge=1, le=10)

    @property
    def runs_onnx(self) -> bool:
        """Whether this model runs on ONNX Runtime (the device then needs smartbin's ``onnx`` extra)."""
        return self.backend == "onnxruntime" or (self.variant not in (None, "auto") and is_onnx(self.variant))

    @model_validator(mode="after")
    def backend_runs_variant(self) -> ModelConfig:
        if self.backend != "auto" and self.variant not in (None, "auto") and not runs(self.backend, self.variant):
            raise ValueError(f"backend {self.backend!r} cannot run variant {self.variant!r}")
        return self


class RoiConfig(Strict):
    x: float = Field(0.0, ge=0, lt=1)
    y: float = Field(0.0, ge=0, lt=1)
    w: float = Field(1.0, gt=0, le=1)
    h: float = Field(1.0, gt=0, le=1)

    @model_validator(mode="after")
    def inside_frame(self) -> RoiConfig:
        if self.x + self.w > 1.0001 or self.y + self.h > 1.0001:
            raise ValueError("region must lie inside the frame (x + w <= 1 and y + h <= 1)")
        return self

    def to_roi(self) -> Roi:
        return Roi(self.x, self.y, self.w, self.h)


class SourceConfig(Strict):
    uri: str = Field(description="csi://0, v4l2:///dev/video0, rtsp://…, file://clip.mp4, dir://…, synthetic://")
    roi: Optional[RoiConfig] = Field(None, description="the bin's drop zone, in fractions of the frame")
    frozen_after_s: float = Field(10.0, ge=0, description="identical frames for this long count as a failure")
    reconnect_max_s: float = Field(10.0, gt=0, description="longest wait between reconnect attempts")
    stall_timeout_s: float = Field(
        30.0, gt=0, description="no frame this long after start: READY anyway, saying camera_lost (no start timeout)"
    )
    restart_after_s: float = Field(
        600.0, ge=0, description="no frame this long: exit for systemd to restart the service (0: reconnect for ever)"
    )

    @field_validator("uri")
    @classmethod
    def known_scheme(cls, uri: str) -> str:
        check_uri(uri)  # raises ConfigError naming the allowed schemes and options; builds nothing
        return uri


class PresenceConfig(Strict):
    mode: Literal["background", "always"] = Field("background", description="how an item is detected")
    pixel_threshold: int = Field(PRESENCE.pixel_threshold, ge=1, le=255)
    area_fraction: float = Field(PRESENCE.area_fraction, gt=0, lt=1)
    warmup_frames: int = Field(PRESENCE.warmup_frames, ge=1)
    relearn_fraction: float = Field(
        PRESENCE.relearn_fraction,
        gt=0,
        le=1,
        description="more of the view than this changing at once is lighting: re-learn (1: never)",
    )
    max_item_s: float = Field(
        PRESENCE.max_item_s,
        gt=0,
        description="something in view longer than this (a bag left there) becomes the background",
    )


class DecisionConfig(Strict):
    """The vote: edge/vision/decision.py's VoteSettings, checked (set_threshold changes min_confidence at run time)."""

    vote_frames: int = Field(VOTE.vote_frames, ge=1, le=100, description="frames that vote once an item is present")
    min_votes: int = Field(VOTE.min_votes, ge=1, description="an item seen for fewer frames is ignored (a hand)")
    min_confidence: float = Field(
        VOTE.min_confidence, ge=0, le=1, description="mean confidence of the winning label; below it: the default bin"
    )
    default_bin: Literal[BINS] = VOTE.default_bin  # type: ignore[valid-type]
    clear_frames: int = Field(VOTE.clear_frames, ge=1, description="empty frames in a row before the item is gone")
    cooldown_s: float = Field(VOTE.cooldown_s, ge=0, description="extra wait after an item is gone (a flap settling)")

    def settings(self) -> VoteSettings:
        """The vote's own settings type (the stage does not know the config)."""
        return VoteSettings(**self.model_dump())

    @model_validator(mode="after")
    def votes_fit(self) -> DecisionConfig:
        if self.min_votes > self.vote_frames:
            raise ValueError("min_votes must not exceed vote_frames")
        return self


class OutboxConfig(Strict):
    path: Path = Field(STATE_DIR / "outbox.sqlite", description="SQLite file for unsent decisions")
    max_items: int = Field(10000, ge=1, description="oldest decisions are dropped beyond this")


class UpdatesConfig(Strict):
    """Over-the-air model updates (the update_model command): where models live and how a new one is trusted."""

    store: Path = Field(STATE_DIR / "models", description="versioned model store; outlives restarts")
    keep: int = Field(3, ge=2, le=20, description="models kept in the store (the current and previous included)")
    max_bytes: int = Field(1_000_000_000, ge=1, description="largest download and unpacked bundle, in bytes")
    timeout_s: float = Field(30.0, gt=0, le=600, description="network timeout of each download attempt")
    attempts: int = Field(3, ge=1, le=10, description="download attempts, each resuming where the last stopped")
    health_window_s: float = Field(60.0, ge=0, le=3600, description="after a switch a crash within it rolls back")
    shadow_max_cost: float = Field(2.0, gt=0, description="a shadow model costing more x the serving one's time stops")
    shadow_max_s: float = Field(3600.0, gt=0, description="a shadow model not promoted or stopped stops after this")
    public_key: Optional[str] = Field(
        None, description="Ed25519 public key (base64, from `smartbin bundle keygen`): only bundles it signed install"
    )

    @field_validator("public_key")
    @classmethod
    def key_format(cls, value: str | None) -> str | None:
        return None if value is None else check_public_key(value)


class SamplesConfig(Strict):
    """Frames kept for relabelling and retraining (`smartbin samples pull`)."""

    enabled: bool = Field(True, description="keep low-confidence, default-bin, disputed and flagged frames")
    path: Path = Field(STATE_DIR / "samples", description="folder of <id>.jpg + <id>.json pairs")
    max_bytes: int = Field(500_000_000, ge=10_000, description="oldest samples go first beyond this")
    retention_days: float = Field(30.0, gt=0, description="samples older than this go")
    min_free_bytes: int = Field(200_000_000, ge=0, description="nothing is written while the disk has less free")
    confident_fraction: float = Field(0.02, ge=0, le=1, description="share of confident decisions kept at random")
    queue: int = Field(16, ge=1, le=1000, description="frames waiting for the writer; beyond it they are counted drops")
    jpeg_quality: int = Field(90, ge=10, le=100)
    features: bool = Field(
        True,
        description="with a bundle in two parts, keep the backbone's features in each sample's JSON (5.5 kB for "
        "ResNet50): a head is trained on them at the workstation without a pass over the frames",
    )
    over_mqtt: bool = Field(
        False,
        description="also send each kept sample over the bin's MQTT connection (…/sample), behind the decisions: "
        "for a bin no workstation can reach (smartbin samples fetch --broker)",
    )
    mqtt_queue: int = Field(
        1000, ge=1, description="samples waiting to go over MQTT; beyond it the oldest stay on the bin, unsent"
    )


class CountersConfig(Strict):
    """Items sorted per label and per bin, per day (metrics, /metrics, Home Assistant)."""

    path: Path = Field(STATE_DIR / "counters.sqlite", description="SQLite file; counts outlive restarts")


class ActuatorConfig(Strict):
    """How a decision moves the bin: one servo angle per bin, or one GPIO output (flap) per bin."""

    mode: Literal["servo", "pins"] = "servo"
    servo_pin: int = Field(18, ge=0, le=40, description="BCM pin of the servo (servo mode)")
    angles: dict[Literal[BINS], float] = Field(  # type: ignore[valid-type]
        default_factory=lambda: {"other": -90.0, "kitchen": -30.0, "recyclable": 30.0, "hazardous": 90.0},
        description="servo angle per bin, -90..90",
    )
    neutral_angle: float = Field(0.0, ge=-90, le=90)
    pins: dict[Literal[BINS], int] = Field(  # type: ignore[valid-type]
        default_factory=lambda: {"other": 5, "kitchen": 6, "recyclable": 13, "hazardous": 19},
        description="BCM output pin per bin (pins mode)",
    )
    hold_s: float = Field(1.5, gt=0, le=30, description="how long the flap stays open before returning")
    max_age_s: float = Field(
        2.0,
        gt=0,
        le=3600,
        description="older decisions are acked stale, not moved. MQTT 5: no shared clock, judged up to 1 s older "
        "(docs/mqtt.md); 3.1.1: the decision's ts against this host's clock (NTP on both hosts)",
    )
    min_pulse_width_ms: float = Field(
        0.5, gt=0, lt=5, description="servo pulse at -90 degrees (common hobby servos: 0.5 ms; gpiozero's own: 1)"
    )
    max_pulse_width_ms: float = Field(
        2.5, gt=0, lt=5, description="servo pulse at +90 degrees (common hobby servos: 2.5 ms; gpiozero's own: 2)"
    )
    state_path: Path = Field(STATE_DIR / "actuator.sqlite", description="events already carried out")

    @model_validator(mode="after")
    def every_bin_mapped(self) -> ActuatorConfig:
        mapping = self.angles if self.mode == "servo" else self.pins
        missing = [b for b in BINS if b not in mapping]
        if missing:
            raise ValueError(f"{'angles' if self.mode == 'servo' else 'pins'} lacks bin(s): {', '.join(missing)}")
        if self.mode == "servo" and any(not -90 <= a <= 90 for a in self.angles.values()):
            raise ValueError("servo angles must lie in -90..90")
        if self.min_pulse_width_ms >= self.max_pulse_width_ms:
            raise ValueError("min_pulse_width_ms must be below max_pulse_width_ms")
        return self


DEVICE_ID = r"^[A-Za-z0-9_-]{1,64}$"  # a topic level of its own: no wildcard, no slash


class Config(Strict):
    device_id: str = Field(
        default_factory=default_device_id,
        validate_default=True,
        pattern=DEVICE_ID,
        description="this bin's name in topics and its MQTT client id; default: the hostname, or "
        "bin-<machine id> where the hostname is a stock one (raspberrypi, ubuntu, ...)",
    )
    model: ModelConfig
    source: SourceConfig
    presence: PresenceConfig = PresenceConfig()
    decision: DecisionConfig = DecisionConfig()
    mqtt: MqttConfig = MqttConfig()
    outbox: OutboxConfig = OutboxConfig()
    updates: UpdatesConfig = UpdatesConfig()
    samples: SamplesConfig = SamplesConfig()
    counters: CountersConfig = CountersConfig()
    web: WebConfig = WebConfig()
    actuator: ActuatorConfig = ActuatorConfig()
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("device_id")
    @classmethod
    def not_the_fleets(cls, value: str) -> str:
        if value == FLEET:  # a bin there would read and overwrite the rollout's lock and record
            raise ValueError(f"{FLEET} is the fleet's own topic level (<prefix>/{FLEET}/…); name the bin otherwise")
        return value

    @property
    def topic_base(self) -> str:
        return device_base(self.mqtt.topic_prefix, self.device_id)


def parse_config(data: Any, source: str = "<config>") -> Config:
    """Validate a mapping; ConfigError lists every problem with its key path."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of keys at the top level")
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        lines = [describe_error(e, Config) for e in exc.errors()]
        raise ConfigError(f"{source}: " + "; ".join(lines)) from None
    except ConfigError as exc:  # raised inside a validator (e.g. a bad source URI)
        raise ConfigError(f"{source}: source.uri: {exc}") from None


def _user() -> str:
    """Who is reading, for a permission message."""
    try:
        return f"user {getpass.getuser()}"
    except (KeyError, OSError):  # a uid without a passwd entry (a container)
        return f"uid {os.getuid()}"


def load_config(path: str | Path) -> Config:
    """Read and validate a YAML config file; relative paths in it are taken from the file's folder."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except PermissionError:
        raise NoPermission(
            f"{path}: permission denied for {_user()} (the installer lets only root and the service's user "
            "read it): run the command with sudo"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    config = parse_config(data, str(path))
    for setting in PATHS:
        section, key = setting.split(".")
        part = getattr(config, section)
        value = getattr(part, key)
        setattr(part, key, value if value.is_absolute() else (path.parent / value).resolve())
    return config


# file settings taken from the config file's folder when relative
PATHS = ("model.bundle", "outbox.path", "updates.store", "samples.path", "counters.path", "actuator.state_path")


def masked(config: Config) -> dict:
    """The effective config as a dict, with secret-bearing values masked."""
    data = config.model_dump(mode="json")
    for section in ("mqtt", "web"):
        settings = getattr(config, section)
        data[section]["password"] = "***" if (settings.password_env or settings.password_file) else None
    return data


def json_schema() -> dict:
    """The JSON Schema the YAML files are checked against (shipped as firmware_config/config.schema.json)."""
    return Config.model_json_schema()
