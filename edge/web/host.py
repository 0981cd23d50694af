"""The status page's server through the daemon's life: made from the config, replaced on a reload with the
new one bound before the old one goes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from edge.config import Config
from edge.errors import SmartbinError
from edge.models.build import config_roi
from edge.sources import Frame
from edge.vision.preprocess import Roi
from edge.web.page import ClassifyRequest, WebServer, WebState
from edge.wire.status import StatusView


class WebHost:
    """Holds the page's server (None when the page is off) and makes its replacements."""

    def __init__(
        self,
        config: Config,
        view: Callable[[], StatusView],
        live: Callable[[], Frame | None],
        state: Callable[[], WebState],
        submit: Callable[[bytes], None],
        classify_now: Callable[[ClassifyRequest], None],
        serving: Callable[[], tuple[Path, str]],
    ):
        self.view, self.live, self.state, self.submit = view, live, state, submit
        self.classify_now, self.serving = classify_now, serving
        self.server: WebServer | None = self.make(config)  # bound, started with the daemon

    def make(self, config: Config) -> WebServer | None:
        """A bound, not yet started server for this config (None when the page is off)."""
        if not config.web.enabled:
            return None
        samples = config.samples.path if config.samples.enabled else None
        return WebServer(
            config.web,
            config.device_id,
            self.view,
            self.live,
            self.state(),
            config_roi(config),
            samples,
            self.submit,
            self.classify_now,
            self.serving,
        )

    def prepare(self, running: Config, new: Config) -> WebServer | None:
        """The new page's server, bound before the old one goes; on the same address the old one is
        released first and, if the new one cannot bind, taken back (SmartbinError)."""
        old = self.server
        same = old is not None and (old.config.host, old.config.port) == (new.web.host, new.web.port)
        if same:
            old.stop()
        try:
            return self.make(new)
        except OSError as exc:
            if same:
                self.server = self.make(running)
                self.server.start()
            raise SmartbinError(f"web: cannot listen on {new.web.host}:{new.web.port}: {exc}") from exc

    def replace(self, server: WebServer | None, roi: Roi | None) -> None:
        """Serve ``server`` from now on (the old one stops) with the drop zone ``roi``."""
        if server is not self.server and self.server is not None:
            self.server.stop()
        self.server = server
        if server is not None:
            if server.thread.ident is None:
                server.start()
            server.roi = roi

    def start(self) -> None:
        if self.server is not None:
            self.server.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
