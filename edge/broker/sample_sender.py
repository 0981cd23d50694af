"""Kept samples out over the bin's own MQTT connection (``samples.over_mqtt``), for bins no workstation can
reach: never in the way of decisions (only while none waits, in parts of a few kB, two parts in flight at
most), each deleted from the queue on its last part's PUBACK and sent again after a reconnect until then."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt

from edge.broker.connection import Connection
from edge.broker.inflight import InFlight
from edge.broker.messages import dumps
from edge.storage.outbox import OutboxError
from edge.storage.sample_queue import SampleQueue
from edge.system.queues import drain
from edge.system.repeats import OncePerChange
from edge.wire.sample_message import SamplePart, sample_message, split

log = logging.getLogger(__name__)

IN_FLIGHT = 2  # a decision made meanwhile waits behind at most this many parts on the link


@dataclass
class Sending:
    """The sample whose parts are going out: its queue row, its parts, how many are sent and acknowledged."""

    row_id: int
    parts: list[SamplePart]
    sent: int = 0
    acked: int = 0


class SampleSender(InFlight):
    """The sample queue's names, read from the sample store's folder and published in order."""

    def __init__(self, samples: SampleQueue, folder: Path, topic: str):
        super().__init__()
        self.samples, self.folder, self.topic = samples, folder, topic
        self._sending: Sending | None = None
        self.sent = self.gone = 0  # acknowledged; expired from the store before they could go
        self.errors = OncePerChange(log, "sending samples")

    def flush(self, connection: Connection) -> None:
        """Publish the next parts while connected, up to ``IN_FLIGHT`` unacknowledged (the loop's thread)."""
        try:
            self._process_acks()
            with self._lock:
                while connection.connected.is_set() and len(self._inflight) < IN_FLIGHT:
                    sending = self._sending
                    if sending is None or sending.sent == len(sending.parts):
                        sending = self._next()
                    if sending is None:
                        break
                    part = sending.parts[sending.sent]
                    info = connection.client.publish(self.topic, dumps(part.dump()), qos=1)
                    if info.rc != mqtt.MQTT_ERR_SUCCESS:
                        return  # reconnected() starts the sample again
                    self._inflight[info.mid] = sending.row_id
                    sending.sent += 1
            self.errors.ok()
        except OutboxError as exc:
            self.errors.error(str(exc))

    def _next(self) -> Sending | None:
        """The next queued sample in parts, once the one going out is all sent (None: nothing to send now).
        A sample the store no longer has (the byte cap, the retention time, broken on disk) is forgotten."""
        if self._sending is not None:  # all sent, not all acknowledged: its row stays until they are
            return None
        while rows := self.samples.pending(self._sent_upto, 1):
            row_id, name = rows[0]
            self._sent_upto = row_id
            try:
                meta, jpeg = (self.folder / f"{name}.json").read_bytes(), (self.folder / f"{name}.jpg").read_bytes()
                self._sending = Sending(row_id, split(sample_message(name, meta, jpeg)))
                return self._sending
            except (OSError, ValueError) as exc:
                log.info("sample %s not sent: %s", name, exc)
                self.gone += 1
                self.samples.done(row_id)
        return None

    def reconnected(self, client: mqtt.Client) -> None:
        """A new connection: the sample going out starts again from its first part."""
        super().reconnected(client)
        with self._lock:
            self._sending = None

    def _process_acks(self) -> None:
        for mid, reason in drain(self._acks):
            with self._lock:
                row_id = self._inflight.pop(mid, None)
                sending = self._sending
            if row_id is None or sending is None or sending.row_id != row_id:  # a decision's, or from before
                continue  # a reconnect
            if reason is not None and reason.is_failure:  # an ACL or a size limit: said, tried again next connect
                self.errors.error(f"the broker refused a sample: {reason}")
                continue
            sending.acked += 1
            if sending.acked == len(sending.parts):
                self.samples.done(row_id)
                self.sent += 1
                with self._lock:
                    self._sending = None

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
