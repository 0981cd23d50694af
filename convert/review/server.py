"""`smartbin review`: the review station's local web server (no internet, no account).

It serves the page (convert/review/page.py), the samples' JPEGs and a small JSON API over a
``ReviewStore``: the items, an answer for one or many samples (saved before the reply), and the class ->
bin mapping. Bound to localhost unless told otherwise, and then it answers only requests addressed to
localhost (a DNS-rebinding page names its own host); on any other address it needs a password (HTTP basic
auth). Anything that changes something must come from the page itself: JSON from its own origin, carrying the
token the page was served with.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
from dataclasses import asdict, replace
from http import HTTPStatus
from pathlib import Path

from convert.review.page import page_html
from convert.review.page_rollouts import PageRollouts, Request
from convert.review.store import ReviewStore, as_json
from convert.review.training import Trainer
from edge.errors import DatasetError, SmartbinError
from edge.fleet.plan import parse_stages
from edge.fleet.rule import DEFAULTS, check_rule
from edge.formats.labels import BINS
from edge.system.access import is_loopback
from edge.web.bounded import BoundedServer, JsonHandler, basic_auth, same_credentials
from edge.web.page import same_origin_json

log = logging.getLogger(__name__)

# the page's rollout fields and the rule's limits they set (the rest keep the rule's defaults)
PAGE_RULE = {
    "watch": "watch_s",
    "min_frames": "min_frames",
    "max_confidence_drop": "max_confidence_drop",
    "shadow_items": "shadow_items",
    "max_flips": "max_flips",
}

MAX_BODY = 1 << 20  # an answer for a few thousand ids at most
VERDICTS = ("item", "not_item", "unsure")
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "[::1]"}
REPORT_TYPES = {".html": "text/html; charset=utf-8", ".png": "image/png", ".json": "application/json"}


class ReviewHandler(JsonHandler):
    store: ReviewStore  # set on the bound subclass
    trainer: Trainer | None = None
    fleet: PageRollouts | None = None
    auth: str | None = None  # the expected "Basic …" header, when a password is set
    token: str = ""  # in the page, and in every request that changes something
    port: int = 0

    def _allowed(self) -> bool:
        """A password where one is set; else only requests addressed to this machine by a loopback name."""
        if self.auth is not None:
            return self._password_ok(self.auth, "smartbin review")
        host = (self.headers.get("Host") or "").strip().lower()
        if host in {f"{name}:{self.port}" for name in LOOPBACK_NAMES} | LOOPBACK_NAMES:
            return True
        self._json({"error": f"refused: Host {host!r} is not this station"}, HTTPStatus.MISDIRECTED_REQUEST)
        return False

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        log.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if not self._allowed():
            return
        path = self.path.split("?", 1)[0]
        try:
            if path == "/":
                self._send(HTTPStatus.OK, page_html(self.token).encode("utf-8"), "text/html; charset=utf-8")
            elif path == "/api/items":
                items = self.store.items()
                self._json({"items": as_json(items), "classes": self.store.classes(items), "bins": list(BINS)})
            elif path == "/api/training":
                self._json(self._training())
            elif path == "/api/fleet":
                self._json(self._fleet())
            elif path.startswith("/runs/") and self.trainer is not None:
                _, _, job_id, name = path.split("/", 3) if path.count("/") == 3 else ("", "", "", "")
                file = self.trainer.report_file(job_id, name)
                self._send(HTTPStatus.OK, file.read_bytes(), REPORT_TYPES[file.suffix])
            elif path.startswith("/image/") and path.endswith(".jpg"):
                image = self.store.image(path[len("/image/") : -len(".jpg")])
                self._send(HTTPStatus.OK, image.read_bytes(), "image/jpeg")
            else:
                self._send(HTTPStatus.NOT_FOUND, b"not found", "text/plain")
        except (DatasetError, SmartbinError) as exc:
            self._json({"error": str(exc)}, HTTPStatus.NOT_FOUND)

    def _training(self) -> dict:
        trainer = self.trainer
        if trainer is None:
            missing = "to train from here, start smartbin review with --train-data, --holdout and --baseline"
            return {"configured": False, "missing": missing, "jobs": []}
        setup = trainer.setup
        return {
            "configured": True,
            "jobs": [asdict(job) for job in trainer.jobs()],
            "epochs": trainer.epochs,
            "data": ", ".join(str(d) for d in setup.data),
            "holdout": str(setup.holdout),
            "teach": trainer.teaches(),
        }

    def do_POST(self) -> None:  # noqa: N802
        if not self._allowed():
            return
        if not same_credentials(self.headers.get("X-Review-Token"), self.token) or not same_origin_json(self.headers):
            self._json({"error": "refused: not a JSON request from this page's own origin"}, HTTPStatus.FORBIDDEN)
            return
        length = self._body_length(MAX_BODY)
        try:
            if length is None:
                raise ValueError(f"the body must be 1..{MAX_BODY} bytes of JSON")
            body = json.loads(self.read_body(length))
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            if self.path == "/api/answer":
                self._json({"items": as_json(self._answer(body))})
            elif self.path == "/api/training":
                if self.trainer is None:
                    raise ValueError(self._training()["missing"])
                self._json(asdict(self.trainer.start(str(body.get("kind", "full")))))
            elif self.path == "/api/rollout":
                self._json(self._roll_out(body))
            elif self.path == "/api/rollout/stop" and self.fleet is not None:
                self._json({"stopping": self.fleet.stop_rollout()})
            elif self.path == "/api/bins":
                self.store.set_bin(str(body.get("label", "")), str(body.get("bin", "")))
                self._json({"classes": self.store.classes(self.store.items())})
            else:
                self._send(HTTPStatus.NOT_FOUND, b"not found", "text/plain")
        except (ValueError, DatasetError) as exc:
            self._json({"error": str(exc)}, HTTPStatus.BAD_REQUEST)
        except SmartbinError as exc:  # a training is running already
            self._json({"error": str(exc)}, HTTPStatus.CONFLICT)

    def _fleet(self) -> dict:
        if self.fleet is None:
            return {"configured": False, "missing": "to roll out from here, start smartbin review with --broker"}
        jobs = self.trainer.jobs() if self.trainer else []
        rollout = self.fleet.state(self.trainer.folder(jobs[0].id)) if jobs else None
        return {"configured": True, "devices": self.fleet.devices(), "rollout": rollout}

    def _roll_out(self, body: dict) -> dict:
        """The newest training job's bundle through the fleet, by the page's stages and rule."""
        if self.fleet is None or self.trainer is None:
            raise ValueError("to roll out from here, start smartbin review with --broker and the training options")
        jobs = self.trainer.jobs()
        if not jobs or jobs[0].state != "done" or not jobs[0].bundle:
            raise ValueError("train first: the newest training job has no bundle")
        refusal = (jobs[0].comparison or {}).get("refusal")
        if refusal and body.get("force") is not True:
            raise ValueError(f"hold-out gate: {refusal}; keep the bins' model (or send force: true)")
        try:
            stages = parse_stages(str(body.get("stages", "1")))
            given = {attr: body[key] for key, attr in PAGE_RULE.items() if key in body}
            rule = check_rule(replace(DEFAULTS, **{a: type(getattr(DEFAULTS, a))(v) for a, v in given.items()}))
        except (TypeError, OverflowError, SmartbinError) as exc:
            raise ValueError(str(exc)) from None
        if jobs[0].kind == "head":  # the items of what was just taught are meant to change bin
            rule = replace(rule, expect_labels=[*rule.expect_labels, *self.trainer.taught_labels(jobs[0])])
        request = Request(stages, rule, head_only=jobs[0].kind == "head")
        self.fleet.start(self.trainer.folder(jobs[0].id), Path(jobs[0].bundle), request)
        return {"started": jobs[0].id}

    def _answer(self, body: dict) -> list:
        ids, verdict, label = body.get("ids"), body.get("verdict"), body.get("label")
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            raise ValueError("ids must be a non-empty list of sample ids")
        if verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {', '.join(VERDICTS)}")
        if label is not None and not isinstance(label, str):
            raise ValueError("label must be a string")
        return self.store.answer(ids, verdict, label)


class ReviewServer:
    """The server, bound at construction (a taken port fails at once), serving in its own thread."""

    def __init__(
        self,
        folder: Path,
        host: str = "127.0.0.1",
        port: int = 8090,
        trainer: Trainer | None = None,
        fleet: PageRollouts | None = None,
        password: str | None = None,
    ):
        if password is None and not is_loopback(host):
            raise SmartbinError(
                f"review: --host {host} lets other machines in: give a password with --password-env VARIABLE "
                "(HTTP basic auth, user smartbin), or keep the default 127.0.0.1"
            )
        parts = {"store": ReviewStore(folder), "trainer": trainer, "fleet": fleet, "token": secrets.token_urlsafe(24)}
        if password is not None:
            parts["auth"] = basic_auth("smartbin", password)
        handler = type("BoundReviewHandler", (ReviewHandler,), parts)
        self.server = BoundedServer((host, port), handler)
        handler.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="review", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/"

    def start(self) -> ReviewServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
