"""A slow network link in front of a real server: a TCP relay on loopback that holds each
response's first byte for ``delay_s``, as a bin's cellular link does with a large download.

Tests use it where "the old model keeps serving while the update is fetched" must hold on any
machine: without it a fast CPU finishes a loopback download before the next camera frame.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class SlowLink:
    """Relays 127.0.0.1:<port> to ``upstream_port``; the server's first answer byte waits ``delay_s``. ``answers``
    cleared: the server's answers are held back (a link that went one-way); ``cut()``: the connections drop."""

    def __init__(self, upstream_port: int, delay_s: float):
        self.upstream_port, self.delay_s = upstream_port, delay_s
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self._stop = threading.Event()
        self.answers = threading.Event()
        self.answers.set()
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> None:
        """Every relayed connection drops, as a link that goes down does; new ones are relayed again."""
        for sock in list(self._open):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._open.clear()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:  # the server is down: this connection fails, as it would without the relay
                client.close()
                continue
            self._open += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, 0.0, None), daemon=True).start()
            threading.Thread(
                target=self._pipe, args=(upstream, client, self.delay_s, self.answers), daemon=True
            ).start()

    @staticmethod
    def _pipe(source: socket.socket, dest: socket.socket, delay_s: float, gate: threading.Event | None) -> None:
        with relayed(source, dest):
            while data := source.recv(1 << 16):
                if delay_s:
                    time.sleep(delay_s)
                    delay_s = 0.0
                while gate is not None and not gate.wait(0.1):  # held back: dropped if the link is cut meanwhile
                    if source.fileno() < 0:
                        return
                dest.sendall(data)

    def close(self) -> None:
        self._stop.set()
        self.server.close()


class NarrowLink:
    """Relays 127.0.0.1:<port> to ``upstream_port`` at ``kbit_s`` each way, as a bin's cellular uplink does:
    what the bin writes faster waits in its own socket and the relay's, in order (a modem's queue)."""

    def __init__(self, upstream_port: int, kbit_s: float):
        self.upstream_port, self.bytes_s = upstream_port, kbit_s * 1000 / 8
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                return
            for source, dest in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pace, args=(source, dest), daemon=True).start()

    def _pace(self, source: socket.socket, dest: socket.socket) -> None:
        free_at = time.monotonic()  # when the link has sent what it was given
        with relayed(source, dest):
            while data := source.recv(1500):  # a packet at a time, each taking its time on the wire
                free_at = max(free_at, time.monotonic()) + len(data) / self.bytes_s
                time.sleep(max(0.0, free_at - time.monotonic()))
                dest.sendall(data)

    def close(self) -> None:
        self.server.close()


@contextmanager
def relayed(*socks: socket.socket) -> Iterator[None]:
    """A relay's loop: a dropped socket ends it, and both ends are then shut and closed (the other follows)."""
    try:
        yield
    except OSError:
        pass
    finally:
        for sock in socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
