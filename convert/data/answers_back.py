"""The review folder's answers that matter to the bins, sent back over the broker: where a person named an item
otherwise than its bin did, the bin gets its ``correct`` command (its corrections count in the fleet's field
signals, and the sample on the bin carries the answer). No connection into a bin is needed.

Each answer goes once: its command id is stable (a bin carries out an id once, whatever the broker delivers
twice), and ``answers_sent.json`` in the folder records it once the bin has answered; an answer a bin has not
answered (it was offline) goes again at the next fetch, and a changed answer goes as a new command.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from pathlib import Path
from typing import NamedTuple

from pydantic import ValidationError

from edge.broker.client import connect_first, make_client
from edge.config import DEVICE_ID, MqttConfig
from edge.system.atomic import write_atomic
from edge.wire.payloads import Command, CommandResult, Sample
from edge.wire.sample_message import SAMPLE_NAME
from edge.wire.topics import Topic, device_topic, every_bin

log = logging.getLogger(__name__)

SENT_FILE = "answers_sent.json"


class Answer(NamedTuple):
    device_id: str
    event_id: str
    label: str

    @property
    def command_id(self) -> str:
        return f"review-{self.event_id[:12]}-{hashlib.sha256(self.label.encode()).hexdigest()[:8]}"


def corrections(folder: Path) -> dict[str, Answer]:
    """Sample id -> the answer its bin should hear: an item named at the review, not the label the bin gave."""
    found = {}
    for path in sorted(folder.glob("*.json")):
        if not SAMPLE_NAME.fullmatch(path.stem):
            continue
        try:
            meta = Sample.model_validate_json(path.read_bytes())
        except (OSError, ValidationError):
            continue  # the review station says what it cannot read
        answer = meta.correction
        if answer is None or answer.by != "review" or answer.verdict != "item" or not answer.label:
            continue
        if answer.label != meta.label and meta.device_id and re.fullmatch(DEVICE_ID, meta.device_id):
            found[path.stem] = Answer(meta.device_id, meta.event_id, answer.label)
    return found


def send_answers(config: MqttConfig, folder: Path, wait_s: float) -> tuple[int, int]:
    """Send the answers not yet confirmed by their bins; return (confirmed now, still waiting)."""
    sent_file = folder / SENT_FILE
    try:
        sent: dict[str, str] = json.loads(sent_file.read_text(encoding="utf-8")) if sent_file.is_file() else {}
    except (OSError, ValueError) as exc:
        log.warning("%s: not read (%s); every answer goes again (a bin carries out each once)", sent_file, exc)
        sent = {}
    todo = {answer.command_id: (sample_id, answer) for sample_id, answer in corrections(folder).items()}
    todo = {key: value for key, value in todo.items() if sent.get(value[0]) != key}
    if not todo:
        return 0, 0
    answered: dict[str, str] = {}
    lock, all_answered, subscribed = threading.Lock(), threading.Event(), threading.Event()

    def on_message(client, userdata, message) -> None:
        try:
            result = CommandResult.model_validate_json(message.payload)
        except ValidationError:
            return
        with lock:
            if isinstance(result.id, str) and result.id in todo:
                answered[todo[result.id][0]] = result.id
                if not result.ok:
                    log.warning(
                        "%s did not take the answer for %s: %s", message.topic, todo[result.id][0], result.error
                    )
                if len(answered) == len(todo):
                    all_answered.set()

    def on_connect(client, userdata, flags, reason_code, properties) -> None:
        if not reason_code.is_failure:
            client.subscribe(every_bin(config.topic_prefix, Topic.COMMAND_RESULT), qos=Topic.COMMAND_RESULT.qos)

    client = make_client(config, "")  # a passing client: the broker names it
    client.on_connect = on_connect
    client.on_subscribe = lambda *args: subscribed.set()
    client.on_message = on_message
    connect_first(client, config)
    client.loop_start()
    try:
        if subscribed.wait(30):
            for command_id, (_, answer) in todo.items():
                command = Command(id=command_id, action="correct", event_id=answer.event_id, label=answer.label)
                topic = device_topic(config.topic_prefix, answer.device_id, Topic.COMMAND)
                client.publish(topic, json.dumps(command.dump()), qos=Topic.COMMAND.qos)
            all_answered.wait(wait_s)
    finally:
        client.disconnect()
        client.loop_stop()
    with lock:
        sent.update(answered)
    write_atomic(sent_file, json.dumps(sent, indent=1, sort_keys=True).encode("utf-8"))
    return len(answered), len(todo) - len(answered)
