"""The config's network sections: the MQTT connection (with its TLS and Home Assistant) and the status page
(with its password and TLS). Secrets never live in the YAML: they come from an environment variable or a file
the config names."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

from pydantic import Field, field_validator, model_validator

from edge.strict import Strict
from edge.system.access import is_loopback, read_secret
from edge.wire.topics import DEFAULT_PREFIX


class TlsConfig(Strict):
    enabled: bool = False
    ca_file: Optional[Path] = None
    cert_file: Optional[Path] = None
    key_file: Optional[Path] = None
    key_password_env: Optional[str] = Field(None, description="environment variable with the key passphrase")
    check_hostname: bool = Field(True, description="verify the broker's certificate matches its name")

    @model_validator(mode="after")
    def pair(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self


class HomeAssistantConfig(Strict):
    enabled: bool = False
    discovery_prefix: str = "homeassistant"


class MqttConfig(Strict):
    host: str = "localhost"
    port: int = Field(1883, ge=1, le=65535)
    brokers: list[str] = Field(
        [],
        description="more HOST:PORT of the same broker cluster (its other nodes, a second broker bridged to the "
        "first): a connect that fails moves to the next, in turn",
    )
    topic_prefix: str = Field(DEFAULT_PREFIX, description="topics are <prefix>/<device_id>/…")
    client_id: Optional[str] = None
    username: Optional[str] = None
    password_env: Optional[str] = Field(None, description="environment variable holding the password")
    password_file: Optional[Path] = Field(None, description="file holding the password")
    protocol: Literal["auto", "5", "3.1.1"] = "auto"
    keepalive: int = Field(60, ge=5, le=3600)
    tls: TlsConfig = TlsConfig()
    publish_classifications: bool = True
    metrics_interval_s: float = Field(10.0, gt=0)
    home_assistant: HomeAssistantConfig = HomeAssistantConfig()

    @field_validator("topic_prefix")
    @classmethod
    def no_wildcards(cls, value: str) -> str:
        if any(c in value for c in "#+") or value.startswith("/") or value.endswith("/"):
            raise ValueError("no '#', '+' or leading/trailing '/' in a topic prefix")
        return value

    @field_validator("brokers")
    @classmethod
    def host_and_port(cls, value: list[str]) -> list[str]:
        for address in value:
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
                raise ValueError(f"{address!r} is not HOST:PORT (e.g. rabbit-2.example:1883)")
        return value

    def addresses(self) -> list[tuple[str, int]]:
        """Every broker to try, in turn: ``host:port`` first, then ``brokers``."""
        return [(self.host, self.port)] + [(a.rpartition(":")[0], int(a.rpartition(":")[2])) for a in self.brokers]

    def password(self) -> str | None:
        """The secret, read when needed (never stored in the config object)."""
        return read_secret("mqtt", self.password_env, self.password_file)


class WebConfig(Strict):
    """The local status page (live view, last decisions, classify now, /healthz, /metrics)."""

    enabled: bool = Field(False, description="off by default; no port is opened when off")
    host: str = Field("127.0.0.1", description="localhost only unless you choose otherwise")
    port: int = Field(8080, ge=0, le=65535)
    username: str = "smartbin"
    password_env: Optional[str] = Field(None, description="environment variable holding the page password")
    password_file: Optional[Path] = Field(None, description="file holding the page password")
    allow_anonymous_lan: bool = Field(
        False, description="serve the page beyond this machine without a password (anyone on the network sees it)"
    )
    tls: TlsConfig = Field(
        TlsConfig(),
        description="HTTPS: the page's own cert_file and key_file (read again when renewed; key_password_env "
        "for an encrypted key)",
    )

    @model_validator(mode="after")
    def lan_needs_password(self) -> WebConfig:
        # The page shows the camera, serves the kept frames and relabels decisions: not for anyone on the LAN.
        lan = not is_loopback(self.host)
        if self.enabled and lan and not (self.password_env or self.password_file or self.allow_anonymous_lan):
            raise ValueError(
                f"host {self.host} opens the page (camera, samples, corrections) to the network without a "
                "password: set password_env or password_file, or allow_anonymous_lan: true"
            )
        if self.tls.enabled and self.tls.cert_file is None:
            raise ValueError("tls.enabled needs the page's own certificate: tls.cert_file and tls.key_file")
        if self.tls.ca_file is not None:
            raise ValueError("tls.ca_file: the page asks browsers for no certificate; give tls.cert_file and key_file")
        return self

    def password(self) -> str | None:
        return read_secret("web", self.password_env, self.password_file)
