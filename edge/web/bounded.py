"""What every HTTP server of ours stands on (the status page, the review station, a rollout's archive server):
a bound on connections served at once, a timeout on each, replies never cached, a request body read only
when its length is declared and small, and credentials compared without ever raising.

``http.server`` alone serves each connection in a thread of its own, without limit, and waits forever for a
client that opened a connection and sends nothing: a few hundred idle sockets take the page, or the bin's
memory, away; one that sends a byte a second would keep its connection as long as it likes (each receive is in
time), so a request must be read whole within the timeout (RequestDeadline). Headers are bounded by http.client
already (100 of at most 64 kB each). Over TLS the handshake
runs in the connection's own thread, under the same timeout: a client that stalls it holds one slot, not the
server's accept loop."""

from __future__ import annotations

import base64
import hmac
import json
import logging
import socket
import ssl
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from edge.system.tls import TlsFiles

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 32  # served at once; more wait in the listen backlog (a page makes a handful)
REQUEST_TIMEOUT_S = 10.0  # a client silent this long mid-request is dropped


class BoundedServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that serves at most ``max_connections`` at once, each with a timeout. One more waits
    for a slot (accepting stops meanwhile: the rest wait in the kernel's backlog) and is closed after the
    timeout if none frees up."""

    daemon_threads = True
    # socketserver's 5 drops the SYNs of a sixth client that connects while the accept loop is busy: it waits a
    # second for its retry. More wait in the kernel's queue while every slot is taken.
    request_queue_size = 2 * MAX_CONNECTIONS

    def __init__(
        self, address: tuple[str, int], handler, max_connections: int = MAX_CONNECTIONS, tls: TlsFiles | None = None
    ):
        self.slots = threading.BoundedSemaphore(max_connections)
        self.tls = tls  # HTTPS: the files are read again before each connection when they changed (a renewal)
        self.turned_away = 0  # connections closed because no slot freed up in time
        super().__init__(address, handler)

    def process_request(self, request: socket.socket, client_address) -> None:
        if not self.slots.acquire(timeout=REQUEST_TIMEOUT_S):
            self.turned_away += 1
            self.shutdown_request(request)
            return
        try:
            request.settimeout(REQUEST_TIMEOUT_S)
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: socket.socket, client_address) -> None:
        try:
            if self.tls is not None:
                request = self._handshake(request)
            if request is not None:
                super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request, client_address) -> None:
        """A client gone mid-request (reset, broken pipe, cut at its deadline) is no error of ours; anything
        else is logged once, with its traceback, in the log (socketserver would print it on stderr)."""
        if isinstance(sys.exc_info()[1], OSError):
            log.debug("connection from %s ended: %s", client_address[0], sys.exc_info()[1])
        else:
            log.exception("request from %s failed", client_address[0])

    def _handshake(self, request: socket.socket) -> ssl.SSLSocket | None:
        """The connection over TLS, or None when the handshake fails (plain HTTP on an HTTPS port, an
        untrusted client certificate, a client that stalls): closed, the server goes on."""
        self.tls.read_again()
        with self.tls.lock:  # the context is not replaced while a connection takes its certificate
            wrapped = self.tls.context.wrap_socket(request, server_side=True, do_handshake_on_connect=False)
        # the same whole-request deadline as a request's (RequestDeadline): a handshake trickled a byte at a
        # time would otherwise keep the slot, each receive being in time
        deadline = threading.Timer(REQUEST_TIMEOUT_S, lambda: _shut(wrapped))
        deadline.daemon = True
        deadline.start()
        try:
            wrapped.do_handshake()
        except (OSError, ValueError) as exc:
            log.debug("TLS handshake failed: %s", exc)
            wrapped.close()
            return None
        finally:
            deadline.cancel()
        return wrapped


def _shut(connection: socket.socket) -> None:
    """End a connection that missed its deadline: its thread's next receive returns nothing."""
    try:
        connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class RequestDeadline:
    """A mixin before a request handler: the request (line, headers, body) read within REQUEST_TIMEOUT_S in all.
    The socket's own timeout is per receive, so a client that sends a byte a second would otherwise hold a slot
    as long as it likes. The deadline ends once the request is read (its headers, and a declared body through
    ``read_body``) or the reply begins: the work and a long download are not cut."""

    def setup(self) -> None:
        super().setup()
        self._read = False
        self._deadline = threading.Timer(REQUEST_TIMEOUT_S, self._too_slow)
        self._deadline.daemon = True
        self._deadline.start()

    def _too_slow(self) -> None:
        if not self._read:
            _shut(self.connection)

    def _request_read(self) -> None:
        self._read = True
        self._deadline.cancel()

    def parse_request(self) -> bool:
        parsed = super().parse_request()
        if parsed and not self.headers.get("Content-Length"):
            self._request_read()
        return parsed

    def read_body(self, length: int) -> bytes:
        """The declared body (its length checked by the caller), under the request's deadline."""
        body = self.rfile.read(length)
        self._request_read()
        return body

    def send_response(self, *args, **kwargs) -> None:
        self._request_read()
        super().send_response(*args, **kwargs)

    def finish(self) -> None:
        self._deadline.cancel()
        super().finish()


class JsonHandler(RequestDeadline, BaseHTTPRequestHandler):
    """Replies of a local page's server: a body with its type, never cached; JSON as UTF-8. (The connection's
    timeout is the server's: BoundedServer sets it before the handler starts.)"""

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, data: object, status: int = HTTPStatus.OK) -> None:
        self._send(status, json.dumps(data, ensure_ascii=False).encode("utf-8"), "application/json")

    def _password_ok(self, expected: str | None, realm: str) -> bool:
        """True without a password or with the right one; else a 401 asking for it (and False)."""
        if expected is None or same_credentials(self.headers.get("Authorization"), expected):
            return True
        self.send_response(HTTPStatus.UNAUTHORIZED)
        self.send_header("WWW-Authenticate", f'Basic realm="{realm}"')
        self.end_headers()
        return False

    def _body_length(self, limit: int) -> int | None:
        """The declared body length when it is 1..``limit`` bytes, else None (absent, not a number, too big)."""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            return None
        return length if 0 < length <= limit else None


def basic_auth(user: str, password: str) -> str:
    """The ``Authorization`` header value of HTTP basic auth (what a page expects and a client sends)."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def same_credentials(given: str | None, expected: str) -> bool:
    """An Authorization header against the expected one, in constant time; any header (non-ASCII, garbage)
    is an answer, never an exception."""
    if given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode("utf-8"))
