"""The model's life on the device: which model serves, loading beside the loop, over-the-air
updates, the health window after a switch, and rollback.

The daemon asks ``Serving`` for the classifier; ``Serving`` posts what the loop must act on to the
daemon's events (edge/models/events.py): another classifier serves (``Switched``), the retained model
topic changed (``ModelChanged``), a command's answer (``Answered``). Slow loads run on the shared
``Background``, so the loop keeps classifying with the old model and feeding the watchdog.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from edge.classifier import Classifier, Prediction
from edge.config import Config
from edge.errors import ModelUnavailable, SmartbinError
from edge.formats.bundle import Bundle
from edge.formats.signing import SIGNATURE_FILE
from edge.formats.signing import verify as verify_signature
from edge.models.autopick import AutoPick
from edge.models.build import load_classifier
from edge.models.events import ModelChanged, Poster, Switched
from edge.models.heads import head_info, on_serving_backbone
from edge.models.shadow import EXPIRED, Shadow
from edge.models.store import ModelStore
from edge.models.update import Prepared, Updater, UpdateRequest
from edge.system.background import Background
from edge.system.notify import Notifier
from edge.system.queues import drain
from edge.vision.decision import ItemDecision, VoteSettings
from edge.wire.payloads import ModelInfo
from edge.wire.shadow import ShadowItem, ShadowState

log = logging.getLogger(__name__)


class Serving:
    """The classifier that serves and the model store behind it."""

    def __init__(
        self,
        config: Config,
        notifier: Notifier,
        background: Background,
        events: Poster,
    ):
        self.config = config  # the config in force: a reload replaces it
        self.background, self.events = background, events
        self.answer = events.answer
        self.started = time.time()
        u = config.updates
        self.store = ModelStore(u.store, u.keep)
        self.store.recover(u.health_window_s)  # a run that died inside a health window: back to the previous model
        self.classifier = self._load_at_start(notifier)
        self.previous: Classifier | None = None  # kept through a health window: a rollback is a swap
        load = lambda path: (  # noqa: E731 - the config in force then; a head update on the serving backbone
            on_serving_backbone(path, self.classifier, self.config.model.top_k) or load_classifier(self.config, path)
        )
        self.store.remove_leftovers()
        self.updater = Updater(self.store, load, lambda: self.config)
        self.trial_until: float | None = None  # monotonic end of the health window after a switch
        self.shadow: Shadow | None = None  # a new model beside the serving one (update_model with shadow)
        self.shadow_stopped: str | None = None  # why the last one stopped, for …/model
        self._signed: tuple[Path | None, str | None, bool] = (None, None, False)  # folder, key -> signed
        state = self.store.state()
        if state.trial_until is not None:
            self.trial_until = time.monotonic() + max(0.0, state.trial_until - time.time())
        self.picks = AutoPick(lambda: self.config, background, lambda: self.classifier, self.serve, self.changed)
        self.picks.check()  # model.variant auto: measured beside the loop once, for each bundle that serves

    def _load_at_start(self, notifier: Notifier) -> Classifier:
        """The store's current model; when it does not load, the one before it, then the configured bundle.
        A fallback is recorded in the store, so the retained model topic says which failed and why. Raises
        ModelUnavailable (a restart may help: a model copied in, a disk remounted) when none loads."""
        errors: list[str] = []
        for path in self.store.start_candidates(self.config.model.bundle):
            try:
                with notifier.extending(f"loading model {path} (an engine build may take minutes)"):
                    classifier = load_classifier(self.config, path)
            except SmartbinError as exc:
                log.error("model %s does not load: %s", path, exc)
                errors.append(str(exc))
                continue
            if errors and self.store.state().current:
                self.store.rollback(f"failed to load at start: {errors[0]}", to=path)
            return classifier
        raise ModelUnavailable("no model loads: " + "; ".join(errors))

    def serve(self, classifier: Classifier) -> None:
        """``classifier`` serves from now on; the loop relabels the vote before the next frame."""
        self.classifier = classifier
        self._signed = (None, None, False)  # a bundle copied over the same folder is checked again
        self.events.post(Switched(classifier))
        self.picks.check()

    def changed(self) -> None:
        """The retained …/model topic is out of date."""
        self.events.post(ModelChanged())

    # ------------------------------------------------------------------ what serves
    def classify(self, image) -> Prediction | None:
        """The serving model on one frame. Inside the health window a failure rolls back (None for this
        frame); outside it the exception is the caller's."""
        try:
            return self.classifier.classify(image)
        except Exception as exc:
            if self.background.busy("rollback"):
                return None  # the failed model's last frames, while the previous one loads
            if self.trial_until is None:
                raise
            log.exception("the new model failed on a frame")
            self.rollback(f"classification failed inside the health window: {type(exc).__name__}: {exc}")
            return None

    def summary(self) -> dict:
        """What serves, as the status gives it: name, variant and the variant file's sha256."""
        engine, bundle = self.classifier.engine, self.classifier.bundle
        return {
            "name": bundle.manifest.name,
            "variant": engine.variant,
            "sha256": bundle.manifest.variants[engine.variant].sha256,
        }

    def payload(self) -> dict:
        """The retained …/model topic: what serves, since when, what served before, how the last change went,
        whether it could be loaded again under this bin's signature rule, and the shadow."""
        state, bundle = self.store.state(), self.classifier.bundle
        key = self.config.updates.public_key
        shadow = self.shadow.state() if self.shadow else None
        if shadow is None and self.shadow_stopped:
            shadow = ShadowState(folder=None, stopped=self.shadow_stopped)
        return ModelInfo(
            name=bundle.manifest.name,
            folder=bundle.path.name,
            variant=self.classifier.engine.variant,
            created=bundle.manifest.created,
            sha256=state.sha256 if state.current else None,
            since=state.since if state.current else round(self.started, 3),
            previous=state.previous if state.current else None,
            health_window=self.trial_until is not None,
            last_change=state.outcome or None,
            bundle=str(bundle.path.resolve()),
            signed=self.signed(bundle.path, key),
            verifies=key is not None,
            shadow=shadow,
            pick=known.payload() if (known := self.picks.known(self.classifier)) else None,
            head=head_info(self.classifier),
        ).dump()

    def signed(self, folder: Path, key: str | None) -> bool:
        """Whether the bundle carries a signature (that ``key`` verifies, when the bin has one): checked once per
        model served and key, not at every …/model message (one goes out per item while a shadow runs)."""
        if self._signed[:2] != (folder, key):
            signed = (folder / SIGNATURE_FILE).is_file()
            if key is not None and signed:
                try:
                    verify_signature(folder, key)
                except SmartbinError:
                    signed = False  # signed, but not by the key this bin trusts: it would refuse it again
            self._signed = (folder, key, signed)
        return self._signed[2]

    def reference(self) -> dict:
        """Which model made a prediction, as a sample records it."""
        state, manifest, variant = self.store.state(), self.classifier.bundle.manifest, self.classifier.engine.variant
        reference = {
            "name": manifest.name,
            "folder": self.classifier.bundle.path.name,
            "variant": variant,
            "sha256": state.sha256 if state.current else None,
        }
        if manifest.head is not None:  # in two parts: the backbone its features came from
            reference["backbone"] = manifest.variants[variant].sha256
        return reference

    # ------------------------------------------------------------------ changes
    def reload(self, bundle: str | None, command_id: Any = None) -> None:
        """Verify and load a bundle beside the loop, which keeps serving the old one; the answer comes when
        it is switched in, or refused. ``bundle``: a folder of the model store by name, a path, or None for
        the configured bundle. With ``updates.public_key`` only a bundle signed by it loads, whether it came
        over the air or by path. Loads wait their turn behind one another."""
        config = self.config
        path = self.store.resolve(bundle) if bundle else Path(config.model.bundle)

        def load() -> Classifier:
            bundle = Bundle.open(path)
            bundle.verify()
            if config.updates.public_key is not None:
                verify_signature(bundle.path, config.updates.public_key)
            return load_classifier(config, path)

        def done(classifier: Classifier | None, error: BaseException | None) -> None:
            if error is not None:
                self.answer(command_id, "reload_model", error=f"reload refused, still serving the old model: {error}")
                return
            self.switch_to(classifier, path, "reload_model")
            self.answer(command_id, "reload_model", {"model": self.summary()})

        if not self.background.submit("reload_model", load, done):
            raise SmartbinError("too many model loads are waiting already; wait for their answers")

    def switch_to(self, classifier: Classifier, path: Path, why: str) -> None:
        """``classifier`` (loaded from ``path`` by a person's choice: a reload_model, a new ``model.bundle``)
        serves. Once updates are in use the store records it, so that it is what starts next time and what
        ``…/model`` names; the update it replaces becomes the previous model."""
        previous = self.classifier.bundle.path
        self.serve(classifier)
        if self.store.state().current:
            self.store.switch(path, previous, None, 0, why)
            self.trial_until, self.previous = None, None
        self.changed()
        log.info("model %s serves (%s), instead of %s", path, why, previous)

    def start_update(self, request: UpdateRequest) -> None:
        """Fetch and test a bundle beside the loop; one that runs in the shadow already is switched in as it is."""
        shadow = self.shadow
        if shadow is not None and not request.shadow and request.sha256 and request.sha256 == shadow.sha256:
            self.shadow = None
            agreed = f"ran in the shadow on {shadow.items} items, {shadow.agreed} to the same bin"
            self.updater.offer(request, Prepared(request, shadow.folder, shadow.classifier, agreed))
            return
        self.updater.start(request, self.classifier.bundle)

    # ------------------------------------------------------------------ the shadow
    def start_shadow(self, prepared: Prepared) -> dict:
        """A tested model runs beside the serving one from the next frame (one at a time: a new one replaces it)."""
        if self.shadow is not None:
            self.stop_shadow(f"replaced by {prepared.folder.name}")
        u = self.config.updates
        self.shadow = Shadow(
            prepared.classifier, prepared.folder, prepared.request.sha256, u.shadow_max_cost, u.shadow_max_s
        )
        self.shadow_stopped = None
        self.changed()
        log.info("%s runs in the shadow of %s", prepared.folder.name, self.classifier.bundle.path.name)
        return {"stage": "shadowing", "model": prepared.folder.name, "acceptance": prepared.acceptance}

    def stop_shadow(self, reason: str = "stop_shadow command") -> dict:
        """No shadow from now on (none running is no error: a rollout puts its bins back without asking)."""
        shadow, self.shadow = self.shadow, None
        if shadow is None:
            return {"stopped": None}
        self.shadow_stopped = reason
        self.store.discard(shadow.folder)
        self.changed()
        log.warning("shadow %s stopped: %s", shadow.folder.name, reason)
        return {"stopped": shadow.folder.name, "items": shadow.items, "agreed": shadow.agreed}

    def shadow_frame(self, frame_id: int, image, prediction: Prediction) -> None:
        """The shadow on a frame the serving model classified; a shadow that fails is stopped, never fatal."""
        if self.shadow is None:
            return
        try:
            self.shadow.observe(frame_id, image, sum(prediction.latency_ms.values()))
        except Exception as exc:
            log.exception("the shadow model failed on a frame")
            self.stop_shadow(f"failed on a frame: {type(exc).__name__}: {exc}")

    def shadow_item(self, decision: ItemDecision, settings: VoteSettings, device_id: str) -> ShadowItem | None:
        """What the shadow would have decided for this decision's item (None: no shadow, or it saw none of it)."""
        if self.shadow is None:
            return None
        item = self.shadow.compare(decision, settings, device_id)
        why = self.shadow.why_stop()
        if why:
            self.stop_shadow(why)
        elif item is not None:
            self.changed()  # its figures in …/model
        return item

    def handle_updates(self) -> None:
        """The updater's news: progress and failures are answered, a tested model is switched in."""
        for request, kind, value in drain(self.updater.events):
            if kind == "progress":
                self.answer(request.command_id, "update_model", {"done": False, **value})
            elif kind == "failed":
                error = f"update refused, still serving the old model: {value}"
                self.answer(request.command_id, "update_model", error=error)
            elif request.shadow:
                self.answer(request.command_id, "update_model", {"done": True, **self.start_shadow(value)})
            else:
                self.answer(request.command_id, "update_model", {"done": True, **self.apply_update(value)})

    def apply_update(self, prepared: Prepared) -> dict:
        """Switch to a tested model (a pointer swap: no gap in classification) and open the health window."""
        old = self.classifier
        self.serve(prepared.classifier)
        window = self.config.updates.health_window_s
        self.store.switch(prepared.folder, old.bundle.path, prepared.request.sha256, window)
        self.trial_until = time.monotonic() + window if window > 0 else None
        self.previous = old if self.trial_until is not None else None
        if self.trial_until is None:
            self.store.confirm()
        self.changed()
        log.info("updated to %s (%s); health window %.0f s", prepared.folder.name, prepared.acceptance, window)
        return {"stage": "switched", "model": prepared.folder.name, "acceptance": prepared.acceptance}

    def rollback(self, reason: str) -> None:
        """Back to the previous model, now (a failure inside the health window): a swap when it is still in
        memory, else a load beside the loop (after a restart inside the window), the choice saved first."""
        if self.background.busy("rollback"):
            return
        state = self.store.rollback(reason)
        self.trial_until = None
        if self.previous is not None:
            self.serve(self.previous)
            self.previous = None
            self.changed()
            return
        path, config = self.store.path(state.current), self.config

        def done(classifier: Classifier | None, error: BaseException | None) -> None:
            if error is not None:  # the store's choice stands; a restart loads it or falls back further
                log.error("rollback to %s failed: %s", path, error)
                return
            self.serve(classifier)
            self.changed()

        self.background.submit("rollback", lambda: load_classifier(config, path), done)

    def updates_changed(self) -> None:
        """A reload changed ``updates:`` (in ``self.config`` already): each update reads its settings when it
        starts; the store keeps the new number of models from the next switch on. ``…/model`` says again whether
        this bin verifies signatures, and whether the model it serves would load under the new key."""
        self.store.keep = self.config.updates.keep
        self.changed()

    def check_trial(self) -> None:
        """The health window passed: the new model stays. A shadow past its time stops (its cost is judged per
        item, in ``shadow_item``)."""
        if self.shadow is not None and self.shadow.expired():
            self.stop_shadow(EXPIRED)
        if self.trial_until is not None and time.monotonic() >= self.trial_until:
            self.trial_until, self.previous = None, None
            self.store.confirm()
            self.changed()
            log.info("health window passed: %s stays", self.classifier.bundle.path.name)

    def stopping(self) -> None:
        """A stop asked for is no failure: inside a health window, the window opens again at the next start."""
        if self.trial_until is not None:
            self.store.interrupted()
