"""``model.variant: auto`` in the daemon: once a bundle serves that this device has not picked for, the pick is
measured beside the loop (edge/models/pick.py), kept in the model store, and the picked variant, backend and
threads are loaded and switched in. Until then the default serves, so a start is never held up by it."""

from __future__ import annotations

import logging
from collections.abc import Callable

from edge.classifier import Classifier
from edge.config import Config
from edge.models.build import load_classifier
from edge.models.pick import Choice, Pick, PickStore, machine_key, pick
from edge.system.background import Background

log = logging.getLogger(__name__)


class AutoPick:
    """Measures and switches in what this device runs fastest, for each bundle that serves."""

    def __init__(
        self,
        config: Callable[[], Config],
        background: Background,
        serving: Callable[[], Classifier],
        serve: Callable[[Classifier], None],
        changed: Callable[[], None],
    ):
        self.config, self.background = config, background
        self.serving, self.serve, self.changed = serving, serve, changed
        self._known: tuple[Classifier, Pick] | None = None  # read once per classifier, not per view

    def known(self, classifier: Classifier) -> Pick | None:
        """The pick made here for the classifier's bundle, as kept (None: not picked, or not under auto)."""
        if self.config().model.variant != "auto":
            return None
        if self._known is None or self._known[0] is not classifier:
            found = PickStore(self.config().updates.store).load(machine_key(classifier.bundle))
            if found is None:  # not kept: read again next time (a pick stored meanwhile by the loop is seen then)
                return None
            self._known = (classifier, found)
        return self._known[1]

    def check(self) -> None:
        """After a model starts serving: measure what has not been, beside the loop."""
        classifier, config = self.serving(), self.config()
        if config.model.variant != "auto" or self.background.busy("pick") or self.known(classifier) is not None:
            return
        bundle, backend = classifier.bundle, config.model.backend
        log.info("model.variant auto: timing the variants of %s on this device", bundle.path.name)
        self.background.submit("pick", lambda: pick(bundle, backend), lambda result, error: self._picked(result, error))

    def _picked(self, result: Pick | None, error: BaseException | None) -> None:
        serving = self.serving()
        if error is not None or result is None:
            log.error("model.variant auto: the pick failed (%s); %s serves", error, serving.engine.variant)
            return
        PickStore(self.config().updates.store).save(result)
        self._known = None
        ruled_out = [f"{t.variant}/{t.backend}/{t.threads}: {t.reason}" for t in result.trials if not t.passed]
        if ruled_out:
            log.warning("model.variant auto: ruled out %s", "; ".join(ruled_out))
        self.changed()
        chosen = result.chosen
        if chosen is None:
            log.error("model.variant auto: no variant passed its references here; %s serves", serving.engine.variant)
            return
        best = result.best
        log.info("model.variant auto: %s on %s, %d thread(s): %.2f ms per image", *vars(chosen).values(), best.p50_ms)
        engine = serving.engine
        if Choice(engine.variant, engine.backend, engine.threads) == chosen:
            return
        path, config = serving.bundle.path, self.config()

        def loaded(classifier: Classifier | None, error: BaseException | None) -> None:
            if error is not None:
                log.error("model.variant auto: %s does not load (%s); %s serves", chosen.variant, error, engine.variant)
            elif self.serving().bundle.path == path:  # still the bundle it was picked for
                self.serve(classifier)

        self.background.submit("pick", lambda: load_classifier(config, path), loaded)
