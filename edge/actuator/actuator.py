"""`smartbin actuator`: decisions on MQTT -> a servo angle or a GPIO flap per bin, exactly once per event.

Subscribes with a persistent session (QoS 1), remembers carried-out ``event_id``s in SQLite
(so a re-delivery, even after a restart, never moves the bin twice), acknowledges each event
on ``…/actuator/ack``, and never moves on malformed input, an unknown bin, or a decision older
than ``max_age_s``: the backlog a broker or actuator restart delivers is about items long gone. The age
needs no clock shared with the daemon's host (edge/broker/freshness.py).
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.actuator.movers import make_mover
from edge.broker.client import make_client, refuses_mqtt5
from edge.broker.freshness import ClockOffset, age_on_arrival
from edge.broker.messages import dumps
from edge.config import Config, load_config
from edge.errors import ConfigError, SmartbinError
from edge.storage.sqlitedb import Database
from edge.system.backoff import delay_after
from edge.system.repeats import OncePerChange
from edge.system.signals import set_on
from edge.wire.payloads import ActuatorAck, Routing, Stamped
from edge.wire.topics import Topic, under

log = logging.getLogger(__name__)

REMEMBERED_EVENTS = 10000
SESSION_NEVER_EXPIRES = 0xFFFFFFFF  # MQTT 5's value for a session kept as long as the broker keeps any
JOB_QUEUE = 100
# A broker back after an outage is found within seconds: paho's default (doubling up to 120 s) left the flaps
# still for up to two minutes after a long outage, and a broker with an ACL keeps nothing for a session it
# restored until its client is back (see docs/mqtt.md).
RECONNECT_DELAY_S = (1, 5)
CLOCK_TOPICS = (Topic.METRICS, Topic.STATUS)  # the daemon's periodic messages, stamped by its clock


class Seen:
    """event_ids already carried out, kept across restarts (SmartbinError naming the file on any failure)."""

    def __init__(self, path: Path):
        self.db = Database(path, SmartbinError)
        self.db.query("CREATE TABLE IF NOT EXISTS done (event_id TEXT PRIMARY KEY, ts REAL NOT NULL)")

    def add(self, event_id: str) -> bool:
        """Record the event; False when it was already there."""
        with self.db.transaction() as db:
            added = db.execute("INSERT OR IGNORE INTO done VALUES (?, ?)", (event_id, time.time())).rowcount
            if added:
                db.execute(
                    "DELETE FROM done WHERE event_id NOT IN (SELECT event_id FROM done ORDER BY ts DESC LIMIT ?)",
                    (REMEMBERED_EVENTS,),
                )
        return bool(added)

    def close(self) -> None:
        self.db.close()


@dataclass(frozen=True)
class Job:
    """A decision waiting for the flap."""

    event_id: str
    bin_name: str
    ts: float  # when it was made, by the daemon's wall clock
    arrival_age: float | None  # its age on arrival, from the daemon's and the broker's counts (MQTT 5)
    arrived: float  # time.monotonic() on arrival
    earlier_boot: bool = False  # made before the daemon's host last started: never moved for
    clock_offset: float | None = None  # the daemon's clock from this host's, learnt (MQTT 3.1.1)

    @property
    def age_from(self) -> str:
        """What the age rests on: the MQTT 5 counts, a learnt clock offset, or the two clocks alone."""
        if self.arrival_age is not None:
            return "mqtt5"
        return "clocks" if self.clock_offset is None else "learnt_offset"

    def age(self) -> float:
        """Seconds since the decision was made, now: without comparing clocks when it came with its age or an
        offset was learnt (edge/broker/freshness.py)."""
        if self.arrival_age is not None:
            return self.arrival_age + time.monotonic() - self.arrived
        return time.time() - self.ts - (self.clock_offset or 0.0)


def stale_because(age: float, limit: float, earlier_boot: bool) -> str | None:
    """Why a decision of this age must not move the flap, or None. By the clocks (MQTT 3.1.1 only), too far
    in the future is not trusted either; a decision from before the host's last boot never moves it."""
    if earlier_boot:
        return "made before the bin's host last started (a power cut)"
    if age > limit:
        return f"{age:.1f} s old, more than actuator.max_age_s"
    if age < -limit:
        return f"{-age:.1f} s in the future (are both clocks on NTP?), more than actuator.max_age_s"
    return None


class Actuator:
    def __init__(self, config: Config):
        self.config = config
        self.base = config.topic_base
        self.mover = make_mover(config.actuator)
        try:
            self.seen = Seen(config.actuator.state_path)
        except SmartbinError:
            self.mover.close()  # the pins are free for the next try
            raise
        self.jobs: queue.Queue[Job | None] = queue.Queue(maxsize=JOB_QUEUE)
        self.moves = 0
        self.stale = 0
        self.ready = threading.Event()
        # A persistent session: decisions sent while it restarts still arrive (and are judged by their age).
        # MQTT 5 unless pinned to 3.1.1: the age of a decision travels in MQTT 5 properties only.
        self.protocol = mqtt.MQTTv311 if config.mqtt.protocol == "3.1.1" else mqtt.MQTTv5
        self.refusals = OncePerChange(log, "the connection to the broker")
        self._connected_once, self._falling_back = False, False  # a CONNACK came; a fallback is under way
        self.clock_offset = ClockOffset()
        self.no_offset = OncePerChange(log, "the daemon's clock offset")
        self.daemon_protocol: str | None = None  # as the daemon's status says
        self.offset_deadline = time.monotonic() + 2 * config.mqtt.metrics_interval_s + 1
        self._clock_topics = {under(self.base, t) for t in CLOCK_TOPICS}
        self.client = self._make_client()
        self._stopping = threading.Event()
        self._worker = threading.Thread(target=self._work, name="actuator", daemon=True)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if not reason_code.is_failure:
            self._connected_once = True
            self.refusals.ok()
            client.subscribe(under(self.base, Topic.DECISION), qos=Topic.DECISION.qos)
            # the daemon's periodic messages: how far its clock is from this one (for MQTT 3.1.1)
            client.subscribe([(under(self.base, t), t.qos) for t in CLOCK_TOPICS])
            return
        m = self.config.mqtt
        self.refusals.error(f"the broker at {m.host}:{m.port} refused the actuator: {reason_code} (retrying)")
        if m.protocol == "auto" and self.protocol == mqtt.MQTTv5 and refuses_mqtt5(reason_code):
            # as the daemon does; paho's thread cannot replace its own client: another thread does
            self._falling_back = True
            threading.Thread(target=self._speak_311, name="actuator-fallback", daemon=True).start()

    def _speak_311(self) -> None:
        """Reconnect with MQTT 3.1.1: a decision's age then rests on the daemon's clock offset, learnt."""
        log.warning("the broker does not speak MQTT 5: the actuator uses 3.1.1 and learns the daemon's clock offset")
        old = self.client
        old.loop_stop()
        old.disconnect()
        self.protocol = mqtt.MQTTv311
        self.client = self._make_client()
        self.start_client()

    def _on_message(self, client, userdata, message) -> None:
        if message.topic in self._clock_topics:
            self._learn_offset(message)
            return
        try:
            routing = Routing.read(message.payload)
        except ValueError as exc:
            log.error("refused decision: %s", exc)
            self._ack(None, None, error=str(exc))
            return
        try:  # paho's thread: never wait here
            arrival = age_on_arrival(message.properties)
            job = Job(routing.event_id, routing.bin, routing.ts, arrival, time.monotonic(), routing.earlier_boot)
            self.jobs.put_nowait(job)
        except queue.Full:
            log.error("event %s refused: %d moves are queued already", routing.event_id[:8], JOB_QUEUE)
            self._ack(routing.event_id, routing.bin, error=f"busy: {JOB_QUEUE} moves queued already")

    def _learnt_offset(self) -> float | None:
        """The daemon's clock offset. Where the daemon's decisions come without their age (it, or this actuator,
        speaks MQTT 3.1.1) and none of its periodic messages has come yet, wait for one, up to two metrics
        intervals after the start: a restart's backlog is judged by it, not by two clocks that may be far apart.
        None by then (an ACL that hides the daemon's metrics from the actuator) leaves the two clocks, said once."""
        waits = self.protocol == mqtt.MQTTv311 or self.daemon_protocol == "3.1.1"
        while waits and not self.clock_offset.learnt.wait(0.2):
            if self._stopping.is_set() or time.monotonic() > self.offset_deadline:
                self.no_offset.error(
                    "no metrics from the daemon: judging MQTT 3.1.1 decisions by the two clocks (keep NTP on, or let "
                    f"the actuator read {under(self.base, Topic.METRICS)})"
                )
                return None
        self.no_offset.ok()
        return self.clock_offset.offset()

    def _learn_offset(self, message: mqtt.MQTTMessage) -> None:
        """The daemon's metrics and status say when it sent them; a retained one was sent long before."""
        try:
            stamped = Stamped.model_validate_json(message.payload)
        except ValueError:  # pydantic's ValidationError too
            return  # not ours to judge: the daemon's messages are checked by their own subscribers
        if stamped.mqtt_protocol is not None:
            self.daemon_protocol = stamped.mqtt_protocol  # its status says so (a retained one too)
        if not message.retain:  # a retained one was sent long before it arrives
            self.clock_offset.observe(float(stamped.ts))

    def _ack(
        self,
        event_id: str | None,
        bin_name: str | None,
        error: str | None = None,
        duplicate: bool = False,
        stale: bool = False,
        age_from: str | None = None,
        **judged: float,
    ) -> None:
        payload = ActuatorAck(
            event_id=event_id,
            bin=bin_name,
            ok=error is None,
            duplicate=duplicate,
            stale=stale,
            ts=round(time.time(), 3),
            **({"error": error} if error else {}),
            **({"age_from": age_from} if age_from else {}),
            **{key: round(value, 3) for key, value in judged.items()},  # age_s, moved_at
        ).dump()
        self.client.publish(under(self.base, Topic.ACTUATOR_ACK), dumps(payload), qos=Topic.ACTUATOR_ACK.qos)

    def _work(self) -> None:
        while not self._stopping.is_set() and (job := self.jobs.get()) is not None:
            event_id, bin_name = job.event_id, job.bin_name
            if job.arrival_age is None:  # MQTT 3.1.1: the age by the daemon's clock offset, learnt
                job = replace(job, clock_offset=self._learnt_offset())
                if self._stopping.is_set():
                    break  # not recorded: by the next start it is stale anyway
            try:
                new = self.seen.add(event_id)
            except SmartbinError as exc:  # the age check below still keeps a replay from moving the flap
                log.error("cannot record event %s: %s", event_id[:8], exc)
                new = True
            if not new:
                log.info("event %s already carried out; not moving again", event_id[:8])
                self._ack(event_id, bin_name, duplicate=True)
                continue
            # The age when the flap would move, not when the message arrived: a job that waited behind
            # others ages too. By the clocks (MQTT 3.1.1 only), too far in the future is not trusted either.
            age, limit = job.age(), self.config.actuator.max_age_s
            now = time.time()  # when the flap moves, if it does: the ack says so
            why = stale_because(age, limit, job.earlier_boot)
            if why is not None:
                log.warning("event %s is stale (%s, max_age_s %.1f): not moving", event_id[:8], why, limit)
                self.stale += 1
                self._ack(event_id, bin_name, error=f"stale: {why}", stale=True, age_from=job.age_from, age_s=age)
                continue
            log.info("event %s: moving to %s", event_id[:8], bin_name)
            try:
                self.mover.move(bin_name)
                self.moves += 1
                self._ack(event_id, bin_name, age_from=job.age_from, age_s=age, moved_at=now)
            except Exception as exc:  # a hardware error must not stop the actuator
                log.exception("move failed")
                self._ack(event_id, bin_name, error=f"move failed: {exc}")

    def _make_client(self) -> mqtt.Client:
        client = make_client(
            self.config.mqtt, f"smartbin-actuator-{self.config.device_id}", self.protocol, clean_session=False
        )
        client.reconnect_delay_set(*RECONNECT_DELAY_S)
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        client.on_subscribe = lambda *a: self.ready.set()
        client.on_disconnect = self._on_disconnect
        return client

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        """A broker that took the connection and dropped it before any CONNACK speaks MQTT 3.1.1 only (RabbitMQ
        3.10's plugin answers an MQTT 5 CONNECT so): under ``protocol: auto``, fall back as the daemon does."""
        unanswered = not self._connected_once and not flags.is_disconnect_packet_from_server
        if (
            unanswered
            and self.config.mqtt.protocol == "auto"
            and self.protocol == mqtt.MQTTv5
            and not self._falling_back
        ):
            self._falling_back = True
            threading.Thread(target=self._speak_311, name="actuator-fallback", daemon=True).start()

    def start(self) -> Actuator:
        self._worker.start()
        self.start_client()
        return self

    def start_client(self) -> None:
        """Connect in the background; paho reconnects by itself."""
        mqtt_config, session = self.config.mqtt, {}
        if self.protocol == mqtt.MQTTv5:  # the session outlives a disconnect, as 3.1.1's clean_session off
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = SESSION_NEVER_EXPIRES
            session = {"clean_start": False, "properties": properties}
        self.client.connect_async(mqtt_config.host, mqtt_config.port, mqtt_config.keepalive, **session)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self._stopping.set()  # what is still queued is not moved: by the next start it is stale anyway
        try:
            self.jobs.put_nowait(None)
        except queue.Full:
            pass  # the worker sees the flag after its current move
        self._worker.join(timeout=self.config.actuator.hold_s + 2)
        self.mover.close()
        self.seen.close()


def run_actuator(config_path: str | Path) -> int:
    """The actuator until SIGTERM. SIGHUP reads the config again and restarts the actuator with it (a config
    that no longer loads is refused, the running one kept). A start that fails (a pin another process holds,
    a state file that cannot be written, TLS files being renewed) is retried after 30, 60, 120, then every
    300 s, in this process: systemd would otherwise meet its start limit and leave the flap dead until
    someone types reset-failed; SIGHUP retries at once. A config error at the first start exits 78."""
    config = load_config(config_path)
    stop, reload = threading.Event(), threading.Event()
    set_on(stop, signal.SIGTERM, signal.SIGINT)
    set_on(reload, signal.SIGHUP)
    actuator: Actuator | None = None
    reloaded, failures, retry_at = False, 0, 0.0
    while not stop.is_set():
        if reload.is_set():
            reload.clear()
            try:
                config = load_config(config_path)
            except ConfigError as exc:
                log.error("reload refused, the actuator keeps its config: %s", exc)
            else:
                log.info("reloading %s", config_path)
                if actuator is not None:
                    actuator.stop()
                actuator, reloaded, retry_at = None, True, 0.0
        if actuator is None and time.monotonic() >= retry_at:
            try:
                actuator = Actuator(config).start()
                failures = 0
            except Exception as exc:  # the hardware's, the disk's or the certificates': a restart meets the same
                if isinstance(exc, ConfigError) and not reloaded:
                    raise  # the config as written cannot work (a key's passphrase): 78, no restart loop
                failures += 1
                delay = delay_after(failures)
                retry_at = time.monotonic() + delay
                log.error("the actuator cannot start (%s: %s); trying again in %.0f s", type(exc).__name__, exc, delay)
        stop.wait(0.2)  # signals set their events from a thread of their own: a short poll sees either
    if actuator is not None:
        actuator.stop()
    return 0
