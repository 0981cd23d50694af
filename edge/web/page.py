"""The local status page: live view, last decisions, "classify now", health, /healthz and /metrics.

Off by default, bound to localhost unless configured. It only reads state the daemon already
keeps; the one thing that runs inference ("classify now") is queued to the daemon's own loop.
Served with the standard library's threading HTTP server (no extra weight on a Pi) and the
official Prometheus client for /metrics.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from urllib.parse import urlsplit

import cv2
import numpy as np

from edge.config import WebConfig
from edge.errors import SmartbinError
from edge.formats.archive import pack
from edge.formats.images import encode_jpeg
from edge.sources import Frame
from edge.system.tls import TlsFiles
from edge.vision.preprocess import Roi
from edge.web.bounded import BoundedServer, JsonHandler, basic_auth
from edge.wire.command_spec import MAX_PAYLOAD
from edge.wire.sample_message import SAMPLE_NAME
from edge.wire.status import StatusView, metrics_payload, prometheus_registry

log = logging.getLogger(__name__)

THUMB_WIDTH = 160
SHOWN_DECISIONS = 20  # on the page (each may be corrected: fewer than outputs keeps)


def thumbnail(rgb: np.ndarray) -> bytes:
    h, w = rgb.shape[:2]
    return encode_jpeg(cv2.resize(rgb, (THUMB_WIDTH, max(1, round(h * THUMB_WIDTH / w))), interpolation=cv2.INTER_AREA))


CLASSIFY_WAITING = 4  # "classify now" requests waiting for the loop at once; more are answered busy


@dataclass
class ClassifyRequest:
    """One "classify now": the loop sets ``result`` (None: no frame yet), then ``done``."""

    done: threading.Event = field(default_factory=threading.Event)
    result: dict | None = None


class WebState:
    """What the page shows; written by the daemon's loop, read by the web threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.decisions: deque[dict] = deque(maxlen=SHOWN_DECISIONS)  # as published, for the page's script
        self.order: deque[str] = deque(maxlen=SHOWN_DECISIONS)  # their event ids
        self.thumbs: dict[str, bytes] = {}
        self.top: list[dict] = []

    def add_decision(self, event_id: str, payload: dict, frame: np.ndarray) -> None:
        """A decision message for the page, with its frame's thumbnail under ``event_id``."""
        with self.lock:
            if len(self.decisions) == self.decisions.maxlen:
                self.thumbs.pop(self.order[0], None)
            self.decisions.append(payload)
            self.order.append(event_id)
            self.thumbs[event_id] = thumbnail(frame)

    def set_top(self, top_k: list[dict]) -> None:
        with self.lock:
            self.top = top_k


def same_origin_json(headers) -> bool:
    """Whether a request that changes something comes from the server's own page: with a JSON body (a page
    elsewhere cannot send one without a CORS preflight, which is never answered; a cross-site form sends
    text/plain) and, where the browser names the origin, this server's own."""
    origin = headers.get("Origin")
    json_body = headers.get("Content-Type", "").split(";")[0].strip().lower() == "application/json"
    return json_body and (origin is None or urlsplit(origin).netloc == headers.get("Host"))


SAMPLE_FILE = re.compile(SAMPLE_NAME.pattern + r"\.(jpg|json)")  # the files the sample store writes

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>smartbin __DEVICE__</title>
<style>
body{font-family:system-ui,sans-serif;margin:1rem;background:#f6f7f8;color:#222}
h1{font-size:1.3rem} .grid{display:flex;flex-wrap:wrap;gap:1rem}
.card{background:#fff;border-radius:8px;padding:1rem;box-shadow:0 1px 3px #0002}
#live{max-width:100%;width:480px;border-radius:4px} table{border-collapse:collapse}
td,th{padding:.25rem .5rem;text-align:left;border-bottom:1px solid #eee} button{font-size:1.1rem;padding:.5rem 1rem}
.bin-other{color:#555}.bin-kitchen{color:#2a7}.bin-recyclable{color:#27c}.bin-hazardous{color:#c22}
</style></head><body>
<h1>smartbin <span id="device">__DEVICE__</span> — <span id="health">…</span></h1>
<div class="grid">
 <div class="card"><img id="live" alt="live view" src="/live.jpg"><br>
  <button id="classify">Classify now</button> <span id="result"></span></div>
 <div class="card"><h2>Health</h2><table id="health-table"></table></div>
 <div class="card"><h2>Last decisions</h2><table id="decisions"><thead><tr><th></th><th>time</th><th>bin</th>
  <th>label</th><th>confidence</th><th></th></tr></thead><tbody></tbody></table></div>
</div>
<script>
let frame = 0;
function esc(s){return String(s).replace(/[&<>"]/g,c=>({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c]));}
function refreshImage(){const img=new Image();img.onload=()=>{document.getElementById('live').src=img.src;
  document.getElementById('live').dataset.frame=++frame;setTimeout(refreshImage,500);};
  img.onerror=()=>setTimeout(refreshImage,2000);img.src='/live.jpg?t='+Date.now();}
async function refreshState(){try{const s=await (await fetch('/api/state')).json();
  document.getElementById('health').textContent=s.health;
  const h=s.metrics, rows=[['model',s.model],['backend',s.backend],['picked here',s.picked],['fps',h.fps],
   ['latency p50 ms',(h.latency_ms.total||{}).p50],['outbox',h.outbox_depth],['broker',s.broker],
   ['uptime s',h.uptime_s],['CPU °C',h.cpu_temp_c]];
  document.getElementById('health-table').innerHTML=rows.map(r=>'<tr><th>'+esc(r[0])+'</th><td>'+esc(r[1]??'—')
   +'</td></tr>').join('');
  document.querySelector('#decisions tbody').innerHTML=s.decisions.map(d=>'<tr class="decision"><td>'
   +'<img src="/decision/'+esc(d.event_id)+'.jpg" width="80"></td><td>'
   +new Date(d.ts*1000).toLocaleTimeString()+'</td><td class="bin-'+esc(d.bin)+'">'+esc(d.bin)+'</td><td>'
   +esc(d.label)+'</td><td>'+(d.confidence*100).toFixed(0)+'%</td><td><button class="correct" data-event="'
   +esc(d.event_id)+'">correct…</button></td></tr>').join('');
 }catch(e){} setTimeout(refreshState,1000);}
document.getElementById('classify').onclick=async()=>{const out=document.getElementById('result');out.textContent='…';
 const post={method:'POST',headers:{'Content-Type':'application/json'},body:'{}'};
 const r=await (await fetch('/api/classify',post)).json();
 out.textContent=r.error?('error: '+r.error):(r.label+' → '+r.bin+' ('+(r.confidence*100).toFixed(0)+'%)');
 out.className='bin-'+(r.bin||'');};
document.getElementById('decisions').onclick=async(e)=>{const b=e.target.closest('button.correct');if(!b)return;
 const label=prompt('What was it really? (the label to train with)');if(!label)return;
 const r=await fetch('/api/correct',{method:'POST',headers:{'Content-Type':'application/json'},
  body:JSON.stringify({event_id:b.dataset.event,label:label})});
 b.textContent=r.ok?('→ '+label):'failed';b.disabled=r.ok;};
refreshImage();refreshState();
</script></body></html>"""


class Handler(JsonHandler):
    server_ref: WebServer
    auth: str | None = None  # expected "Basic …" header value

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        log.debug("web: " + format, *args)

    def _authorised(self) -> bool:
        return self.path == "/healthz" or self._password_ok(self.auth, "smartbin")

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if not self._authorised():
            return
        path = self.path.split("?", 1)[0]
        web = self.server_ref
        if path == "/":
            page = PAGE.replace("__DEVICE__", web.device_id)
            self._send(HTTPStatus.OK, page.encode(), "text/html; charset=utf-8")
        elif path == "/live.jpg":
            frame = web.live()
            if frame is None:
                self._send(HTTPStatus.SERVICE_UNAVAILABLE, b"no frame yet", "text/plain")
                return
            self._send(HTTPStatus.OK, encode_jpeg(self._overlay(frame.image)), "image/jpeg")
        elif path.startswith("/decision/") and path.endswith(".jpg"):
            with web.state.lock:
                data = web.state.thumbs.get(path[len("/decision/") : -4])
            self._send(HTTPStatus.OK, data, "image/jpeg") if data else self._send(
                HTTPStatus.NOT_FOUND, b"", "text/plain"
            )
        elif path == "/api/state":
            view = web.view()
            with web.state.lock:
                decisions = list(web.state.decisions)[::-1]
            self._json(
                {
                    "health": view.health,
                    "model": f"{view.model['name']} ({view.model['variant']})",
                    "backend": view.backend,
                    "picked": picked_line(view.pick),
                    "broker": "connected" if view.broker_connected else "disconnected",
                    "metrics": metrics_payload(view),
                    "decisions": decisions,
                }
            )
        elif path == "/api/samples" and web.samples is not None:
            # newest first: what `smartbin samples fetch http://…` fetches
            self._json({"samples": [p.stem for p in sorted(web.samples.glob("*.json"), reverse=True)]})
        elif path == "/api/model.tar" and web.serving is not None:
            self._model_archive()
        elif path.startswith("/samples/") and web.samples is not None:
            self._sample_file(web.samples, path[len("/samples/") :])
        elif path == "/healthz":
            view = web.view()
            body = {
                "status": view.health,
                "source": view.source["state"],
                "broker_connected": view.broker_connected,
                "model": view.model,
            }
            self._json(body, HTTPStatus.OK if view.health == "ok" else HTTPStatus.SERVICE_UNAVAILABLE)
        elif path == "/metrics":
            from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

            self._send(HTTPStatus.OK, generate_latest(web.registry), CONTENT_TYPE_LATEST)
        else:
            self._send(HTTPStatus.NOT_FOUND, b"not found", "text/plain")

    def _same_origin(self) -> bool:
        if same_origin_json(self.headers):
            return True
        self._json({"error": "refused: not a JSON request from this page's own origin"}, HTTPStatus.FORBIDDEN)
        return False

    def do_POST(self) -> None:  # noqa: N802
        if not self._authorised() or not self._same_origin():
            return
        if self.path == "/api/correct":
            self._correct()
            return
        if self.path != "/api/classify":
            self._send(HTTPStatus.NOT_FOUND, b"not found", "text/plain")
            return
        web = self.server_ref
        if not web.waiting.acquire(blocking=False):
            self._json({"error": "busy"}, HTTPStatus.SERVICE_UNAVAILABLE)
            return
        try:
            request = ClassifyRequest()
            web.classify_now(request)
            if not request.done.wait(10):
                self._json({"error": "timed out"}, HTTPStatus.GATEWAY_TIMEOUT)
                return
        finally:
            web.waiting.release()
        self._json(request.result or {"error": "no frame yet"})

    def _sample_file(self, folder: Path, name: str) -> None:
        """One of the sample store's files, by a name it writes (nothing else of the folder)."""
        file = folder / name
        if not SAMPLE_FILE.fullmatch(name) or not file.is_file():
            self._send(HTTPStatus.NOT_FOUND, b"not found", "text/plain")
            return
        self._send(HTTPStatus.OK, file.read_bytes(), "image/jpeg" if name.endswith(".jpg") else "application/json")

    def _model_archive(self) -> None:
        """The model this bin serves, as `smartbin bundle pack` makes it (only its variant): what a workstation's
        hold-out gate measures a new model against (`fleet rollout --baseline http://bin:8080`)."""
        folder, variant = self.server_ref.serving()
        with tempfile.TemporaryDirectory(prefix="smartbin-model-") as tmp:
            archive = Path(tmp) / "model.tar"
            try:
                pack(folder, archive, variants=[variant])
            except SmartbinError as exc:
                self._json({"error": str(exc)}, HTTPStatus.INTERNAL_SERVER_ERROR)
                return
            self._send(HTTPStatus.OK, archive.read_bytes(), "application/x-tar")

    def _correct(self) -> None:
        """The page's correction: sent to the daemon's loop as a `correct` command (answered on MQTT too)."""
        length = self._body_length(MAX_PAYLOAD)
        if length is None:
            self._json({"error": f"body must be 1..{MAX_PAYLOAD} bytes of JSON"}, HTTPStatus.BAD_REQUEST)
            return
        try:
            body = json.loads(self.read_body(length))
            command = {
                "id": f"web-{time.time():.3f}",
                "action": "correct",
                **{k: body[k] for k in ("event_id", "label")},
            }
        except (ValueError, KeyError, TypeError):
            self._json({"error": 'expected {"event_id": "...", "label": "..."}'}, HTTPStatus.BAD_REQUEST)
            return
        self.server_ref.submit(json.dumps(command).encode())
        self._json({"queued": command["id"]}, HTTPStatus.ACCEPTED)

    def _overlay(self, image: np.ndarray) -> np.ndarray:
        """The ROI rectangle and the current top-3 drawn on a copy of the frame."""
        out = image.copy()
        h, w = out.shape[:2]
        roi = self.server_ref.roi
        if roi is not None:
            cv2.rectangle(
                out,
                (int(roi.x * w), int(roi.y * h)),
                (int((roi.x + roi.w) * w), int((roi.y + roi.h) * h)),
                (255, 200, 0),
                2,
            )
        with self.server_ref.state.lock:
            top = list(self.server_ref.state.top)
        for i, entry in enumerate(top):
            text = f"{entry['confidence']:.0%} {entry['bin']}"
            cv2.putText(out, text, (8, 20 + 18 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 2, cv2.LINE_AA)
            cv2.putText(out, text, (8, 20 + 18 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (20, 20, 20), 1, cv2.LINE_AA)
        return out


def picked_line(pick: dict | None) -> str | None:
    """model.variant auto's choice in one line: the variant, its backend and threads, how fast, among how many."""
    chosen = (pick or {}).get("chosen")
    if not chosen:
        return None
    trials = pick["trials"]
    best = next(t for t in trials if t["passed"] and all(t[k] == chosen[k] for k in ("variant", "backend", "threads")))
    out = sum(not t["passed"] for t in trials)
    return (
        f"{best['variant']} on {best['backend']}, {best['threads']} thread(s): {best['p50_ms']:.2f} ms "
        f"(fastest of {len(trials)} tried, {out} ruled out)"
    )


@dataclass
class WebServer:
    """The page's HTTP server. It reads the status view, the newest frame and the page's own state;
    "classify now" and corrections go to the daemon's loop (``classify_now``, ``submit``)."""

    config: WebConfig
    device_id: str
    view: Callable[[], StatusView]
    live: Callable[[], Frame | None]
    state: WebState
    roi: Roi | None = None
    samples: Path | None = None  # the sample store's folder, served for `smartbin samples fetch`
    submit: Callable[[bytes], None] = lambda payload: None  # a command for the daemon's loop
    classify_now: Callable[[ClassifyRequest], None] = lambda request: request.done.set()  # for the loop
    serving: Callable[[], tuple[Path, str]] | None = None  # the serving bundle's folder and variant

    def __post_init__(self) -> None:
        self.waiting = threading.BoundedSemaphore(CLASSIFY_WAITING)
        self.registry = prometheus_registry(self.view)
        handler = type("BoundHandler", (Handler,), {"server_ref": self})
        password = self.config.password()
        tls = TlsFiles(self.config.tls, "web.tls", server=True) if self.config.tls.enabled else None
        if password is not None:
            handler.auth = basic_auth(self.config.username, password)
            if tls is None:
                log.warning("status page password is sent in the clear over HTTP: set web.tls (docs/deployment.md)")
        self.server = BoundedServer((self.config.host, self.config.port), handler, tls=tls)
        self.thread = threading.Thread(target=self.server.serve_forever, name="web", daemon=True)

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def start(self) -> WebServer:
        self.thread.start()
        scheme = "https" if self.server.tls is not None else "http"
        log.info("status page on %s://%s:%d/", scheme, *self.server.server_address[:2])
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
