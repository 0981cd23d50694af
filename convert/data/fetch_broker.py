"""`smartbin samples fetch --broker`: the samples that bins sent over MQTT (``samples.over_mqtt``) collected
into a review folder, for bins no workstation can reach (a NAT, a cellular router).

The collector's session is a persistent one (MQTT 3.1.1, every broker has it, clean session off, one client
id per workstation): from its first run on, the broker keeps the bins' samples for it between fetches. Each
message is acknowledged only once its files are written, so an interrupted fetch loses none. What a bin (or
anyone on the broker) sends is not trusted: the sample's name, its JSON and its JPEG are checked, a refused
message is said and skipped, and nothing already in the folder (answers given there) is replaced. A sample
comes in parts (edge/wire/sample_message.py), each written to disk before it is acknowledged.
"""

from __future__ import annotations

import json
import logging
import queue
import shutil
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
from pydantic import ValidationError

from edge.broker.client import connect_first, connect_problem, make_client, tls_files
from edge.config import MqttConfig
from edge.errors import SmartbinError
from edge.system.atomic import write_atomic
from edge.wire.sample_message import SampleMessage, SamplePart
from edge.wire.topics import Topic, device_topic, every_bin

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 30
PARTS = ".parts"  # in the review folder: the parts of samples not yet whole, a folder per sample


@dataclass
class Collected:
    """What one fetch brought: samples written, already there, refused (with the first reasons)."""

    written: int = 0
    there: int = 0
    refused: list[str] = field(default_factory=list)
    new_session: bool = False  # the broker had no session for this collector: nothing was kept before


def collector_id() -> str:
    """One persistent session per workstation (23 characters at most: what MQTT 3.1.1 brokers must take)."""
    return f"smartbin-s-{socket.gethostname()}"[:23]


def fetch_from_broker(
    config: MqttConfig, folder: Path, device: str | None = None, idle_s: float = 3.0, client_id: str | None = None
) -> Collected:
    """Collect the samples the broker holds for this collector's session (and those that arrive meanwhile)
    into ``folder``; return when none has come for ``idle_s`` seconds."""
    topic = (
        device_topic(config.topic_prefix, device, Topic.SAMPLE)
        if device
        else every_bin(config.topic_prefix, Topic.SAMPLE)
    )
    messages: queue.SimpleQueue[mqtt.MQTTMessage] = queue.SimpleQueue()
    subscribed, done = threading.Event(), Collected()
    refused: list[str] = []

    def on_connect(client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            refused.append(str(reason_code))
            subscribed.set()
            return
        done.new_session = not flags.session_present
        client.subscribe(topic, qos=Topic.SAMPLE.qos)

    client = make_client(config, client_id or collector_id(), protocol=mqtt.MQTTv311, clean_session=False)
    client.manual_ack_set(True)  # acknowledged once written: a fetch cut short loses nothing
    client.on_connect = on_connect
    client.on_subscribe = lambda *args: subscribed.set()
    client.on_message = lambda client, userdata, message: messages.put(message)
    connect_first(client, config)
    client.loop_start()
    try:
        where = f"the broker at {config.host}:{config.port}"
        if not subscribed.wait(CONNECT_TIMEOUT_S):
            raise SmartbinError(f"{where}: {connect_problem(config, tls_files(config))}")
        if refused:
            raise SmartbinError(f"{where} refused the connection: {refused[0]} (mqtt username and password?)")
        folder.mkdir(parents=True, exist_ok=True)
        last = time.monotonic()
        while time.monotonic() - last < idle_s:
            try:
                message = messages.get(timeout=0.1)
            except queue.Empty:
                continue
            last = time.monotonic()
            _keep(message, folder, done)
            client.ack(message.mid, message.qos)
    finally:
        client.disconnect()
        client.loop_stop()
    return done


def _keep(message: mqtt.MQTTMessage, folder: Path, done: Collected) -> None:
    """One message taken: a part kept until its sample is whole, or a whole sample (a bin of an earlier
    release sends them so) written into ``folder``."""
    try:
        data = json.loads(message.payload)
        if isinstance(data, dict) and "part" in data:
            payload = _joined(SamplePart.model_validate(data), folder / PARTS)
            if payload is None:
                return
        else:
            payload = message.payload
        sample = SampleMessage.model_validate_json(payload)
        image = sample.image()
    except ValidationError as exc:
        first = exc.errors()[0]
        done.refused.append(f"{message.topic}: not a sample ({'.'.join(map(str, first['loc']))}: {first['msg']})")
        return
    except ValueError as exc:
        done.refused.append(f"{message.topic}: not a sample ({exc})")
        return
    if (folder / f"{sample.sample_id}.json").exists():  # kept: the answers given here
        done.there += 1
        return
    write_atomic(folder / f"{sample.sample_id}.jpg", image)
    meta = json.dumps(sample.sample.dump(), ensure_ascii=False).encode("utf-8")  # as the bin writes it
    write_atomic(folder / f"{sample.sample_id}.json", meta)
    done.written += 1


def _joined(part: SamplePart, parts_folder: Path) -> bytes | None:
    """The sample's whole message once this part completes it (its parts then removed), else None. Each part
    is a file of its own until then, so a fetch cut short keeps the parts it acknowledged."""
    here = parts_folder / part.sample_id
    here.mkdir(parents=True, exist_ok=True)
    write_atomic(here / f"{part.part}.{part.parts}", part.data.encode("utf-8"))
    files = [here / f"{i}.{part.parts}" for i in range(part.parts)]
    if not all(file.is_file() for file in files):
        return None
    whole = b"".join(file.read_bytes() for file in files)
    shutil.rmtree(here, ignore_errors=True)
    try:
        parts_folder.rmdir()  # when no other sample is in parts: the folder as the bin's, nothing else
    except OSError:
        pass
    return whole
