"""Store-and-forward of decisions: the SQLite outbox first, then the broker; a row is deleted only on the
broker's PUBACK. On every (re)connect the unacknowledged backlog is sent again, in order, once per connection;
a refused decision stays and is offered again later. Subscribers de-duplicate on ``event_id``."""

from __future__ import annotations

import logging
import time

import paho.mqtt.client as mqtt

from edge.broker.connection import MAX_INFLIGHT, Connection
from edge.broker.freshness import EXPIRY_S, sent_properties
from edge.broker.inflight import InFlight
from edge.broker.messages import marked_earlier_boot
from edge.storage.outbox import Outbox, OutboxError
from edge.system.queues import drain
from edge.system.repeats import OncePerChange
from edge.wire.payloads import Routing

log = logging.getLogger(__name__)

MADE_REMEMBERED = 10000  # decisions whose monotonic birth time is kept until acknowledged
REFUSED_RETRY_S = 30.0  # a decision the broker refused (MQTT 5 PUBACK >= 0x80) is offered again after this


class Forwarder(InFlight):
    """The outbox's rows out over a connection: in order, each once per connection, with its age now."""

    def __init__(self, outbox: Outbox, topic: str, refused_retry_s: float = REFUSED_RETRY_S):
        super().__init__()
        self.outbox, self.topic = outbox, topic
        self.refused_retry_s = refused_retry_s
        self.refused = 0  # decisions the broker refused (each refusal counted; the decision stays in the outbox)
        self.refusal: str | None = None  # the last refusal's reason, until the broker accepts decisions again
        self._retry_refused: tuple[int, float] | None = None  # (oldest refused row, monotonic time to offer it)
        self._made: dict[int, float] = {}  # outbox row -> monotonic time its decision was made (this run)
        self.errors = OncePerChange(log, "the outbox")

    def add(self, payload: dict, connection: Connection) -> None:
        """Store durably, then send. Raises OutboxError when the outbox cannot be written."""
        # Its age from here on needs no wall clock; the moments since its ts was stamped (this host, just now)
        # count too, unless the wall clock was stepped meanwhile.
        routing = Routing.model_validate(payload)
        since = time.time() - routing.ts
        made = time.monotonic() - (since if 0 <= since < 1 else 0.0)
        self._made[self.outbox.add(routing.event_id, self.topic, payload, routing.ts)] = made
        while len(self._made) > MADE_REMEMBERED:  # rows the outbox dropped when full are never acknowledged
            del self._made[next(iter(self._made))]
        self.flush(connection)

    def _age(self, row_id: int, payload: str) -> float:
        """Seconds since the decision was made: by the monotonic clock for this run's, by this host's wall
        clock for a backlog from before a restart (either way, one host's clock only)."""
        made = self._made.get(row_id)
        if made is not None:
            return time.monotonic() - made
        try:
            return time.time() - float(Routing.model_validate_json(payload).ts)
        except ValueError:  # pydantic's ValidationError too
            return 0.0

    def flush(self, connection: Connection) -> None:
        """Send unacknowledged outbox rows not yet sent on ``connection``, in order; refused ones again once
        their retry is due."""
        self.process_acks()
        with self._lock:
            if self._retry_refused is not None and time.monotonic() >= self._retry_refused[1]:
                self._sent_upto = min(self._sent_upto, self._retry_refused[0] - 1)
                self._retry_refused = None
            while connection.connected.is_set() and len(self._inflight) < MAX_INFLIGHT:
                rows = self.outbox.pending(self._sent_upto, MAX_INFLIGHT - len(self._inflight))
                if not rows:
                    return
                waiting = set(self._inflight.values())
                for row_id, topic, payload, earlier_boot in rows:
                    self._sent_upto = row_id
                    if row_id in waiting:  # sent before a refusal rewound, and not answered yet
                        continue
                    if earlier_boot:  # decided before a power cut: a record now, whatever the clocks say
                        payload = marked_earlier_boot(payload)
                    properties = None
                    if connection.protocol == "5":  # how old it is, and a countdown for the broker
                        properties = sent_properties(EXPIRY_S if earlier_boot else self._age(row_id, payload))
                    info = connection.client.publish(topic, payload, qos=1, properties=properties)
                    if info.rc != mqtt.MQTT_ERR_SUCCESS:
                        return  # the connection dropped; reconnected() replays from here
                    self._inflight[info.mid] = row_id

    def flush_logged(self, connection: Connection) -> None:
        """``flush`` where an exception must not escape (paho's thread, every loop turn): a failing card is
        logged once per change."""
        try:
            self.flush(connection)
            self.errors.ok()
        except OutboxError as exc:
            self.errors.error(str(exc))

    def process_acks(self) -> None:
        """Delete the rows the broker accepted from the outbox; keep the refused ones (an ACL that does not
        let this client publish its decisions, a quota, a size limit) and offer them again later."""
        for mid, reason in drain(self._acks):
            with self._lock:
                row_id = self._inflight.pop(mid, None)
            if row_id is None:
                continue
            if reason is not None and reason.is_failure:
                self._refused(row_id, reason)
                continue
            self.outbox.ack(row_id)
            self._made.pop(row_id, None)
            if self.refusal is not None and self._retry_refused is None:
                log.info("the broker accepts decisions again")
                self.refusal = None

    def _refused(self, row_id: int, reason: mqtt.ReasonCode) -> None:
        self.refused += 1
        why = f"the broker refused a decision: {reason} (0x{reason.value:02x}); kept in the outbox"
        if why != self.refusal:
            log.error("%s, offered again every %g s", why, self.refused_retry_s)
            self.refusal = why
        with self._lock:
            oldest = row_id if self._retry_refused is None else min(row_id, self._retry_refused[0])
            self._retry_refused = (oldest, time.monotonic() + self.refused_retry_s)

    def drain(self, deadline: float, connection: Connection) -> None:
        """Until ``deadline`` (monotonic) or the outbox is empty, send what is there. A backlog waits for a
        connection still being made too: a short run (a finite source) that starts with one would otherwise
        end before its first CONNACK and send nothing."""
        try:
            while time.monotonic() < deadline and self.outbox.depth() > 0:
                connection.maintain()  # a protocol fallback due now is made: the loop that made them has ended
                if connection.connected.is_set():
                    self.flush(connection)
                time.sleep(0.05)
        except OutboxError as exc:
            self.errors.error(str(exc))

    def idle(self) -> bool:
        """No decision in flight and none waiting: what else is to go may go now."""
        with self._lock:
            if self._inflight:
                return False
        try:
            return self.outbox.depth() == 0
        except OutboxError:
            return False

    def depth(self) -> int:
        """Rows not yet acknowledged (0 when the outbox cannot be read: said once)."""
        self.process_acks()
        try:
            return self.outbox.depth()
        except OutboxError as exc:
            self.errors.error(str(exc))
            return 0
