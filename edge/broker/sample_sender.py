"""Kept samples out over the bin's own MQTT connection (``samples.over_mqtt``), for bins no workstation can
reach: never in the way of decisions (only while none waits, two samples in flight at most), each deleted
from the queue on the broker's PUBACK and sent again after a reconnect until then."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import paho.mqtt.client as mqtt

from edge.broker.connection import Connection
from edge.broker.inflight import InFlight
from edge.broker.messages import dumps
from edge.storage.outbox import OutboxError
from edge.storage.sample_queue import SampleQueue
from edge.system.queues import drain
from edge.system.repeats import OncePerChange
from edge.wire.sample_message import sample_message

log = logging.getLogger(__name__)

IN_FLIGHT = 2  # a decision made meanwhile waits behind at most this many frames on the link


class SampleSender(InFlight):
    """The sample queue's names, read from the sample store's folder and published in order."""

    def __init__(self, samples: SampleQueue, folder: Path, topic: str):
        super().__init__()
        self.samples, self.folder, self.topic = samples, folder, topic
        self.sent = self.gone = 0  # acknowledged; expired from the store before they could go
        self.errors = OncePerChange(log, "sending samples")

    def flush(self, connection: Connection) -> None:
        """Publish the next samples while connected, up to ``IN_FLIGHT`` unacknowledged (the loop's thread)."""
        try:
            self._process_acks()
            with self._lock:
                while connection.connected.is_set() and len(self._inflight) < IN_FLIGHT:
                    rows = self.samples.pending(self._sent_upto, IN_FLIGHT - len(self._inflight))
                    if not rows:
                        break
                    for row_id, name in rows:
                        self._sent_upto = row_id
                        if not self._send(connection, row_id, name):
                            return
            self.errors.ok()
        except OutboxError as exc:
            self.errors.error(str(exc))

    def _send(self, connection: Connection, row_id: int, name: str) -> bool:
        """One sample published (or forgotten when the store no longer has it); False: the connection dropped."""
        try:
            meta, jpeg = (self.folder / f"{name}.json").read_bytes(), (self.folder / f"{name}.jpg").read_bytes()
            message = sample_message(name, meta, jpeg)
        except (OSError, ValueError) as exc:  # taken by the byte cap or the retention time, or broken on disk
            log.info("sample %s not sent: %s", name, exc)
            self.gone += 1
            self.samples.done(row_id)
            return True
        info = connection.client.publish(self.topic, dumps(message.dump()), qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            return False  # reconnected() sends it again
        self._inflight[info.mid] = row_id
        return True

    def _process_acks(self) -> None:
        for mid, reason in drain(self._acks):
            with self._lock:
                row_id = self._inflight.pop(mid, None)
            if row_id is None:  # a decision's, or one from before a reconnect
                continue
            if reason is not None and reason.is_failure:  # an ACL or a size limit: said, tried again next connect
                self.errors.error(f"the broker refused a sample: {reason}")
                continue
            self.samples.done(row_id)
            self.sent += 1

    def drain(self, deadline: float, connection: Connection) -> None:
        """At a stop, after the decisions: send what is queued until ``deadline`` (monotonic); the rest waits
        for the next start."""
        while time.monotonic() < deadline and connection.connected.is_set() and self.depth() > 0:
            self.flush(connection)
            time.sleep(0.05)

    def depth(self) -> int:
        """Samples not yet acknowledged."""
        try:
            return self.samples.depth()
        except OutboxError:
            return 0
