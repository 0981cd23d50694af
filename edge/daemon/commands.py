"""Messages on …/command: queued from paho's thread, validated (edge/wire/command_spec.py), then carried
out on the daemon's loop through the small ``CommandTarget`` interface. Anything a client sends gets an
answer on …/command/result (posted to the daemon's events, sent by its loop), never a crash."""

from __future__ import annotations

import json
import logging
import queue
import time
from collections import OrderedDict
from typing import Any, Protocol

from edge.daemon.events import Events
from edge.errors import SmartbinError
from edge.models.events import Answered
from edge.models.update import UpdateRequest
from edge.system.queues import drain
from edge.wire.command_spec import Command, CommandError, command_id_of, parse_command
from edge.wire.payloads import CommandResult

log = logging.getLogger(__name__)

COMMAND_QUEUE = 64
ANSWERED_IDS = 256  # the last command ids that changed something: a re-delivered one (QoS 1) acts once
READ_ONLY = frozenset({"ping", "status", "snapshot"})  # asking again is harmless, and ids get reused by hand
RETAINED = (
    "a retained command is not carried out: a command acts once, when it is sent (clear it with "
    "mosquitto_pub -r -n -t <this topic>, or publish without retain)"
)


class CommandTarget(Protocol):
    """What commands may do to the bin; the daemon provides it from its parts."""

    def status(self) -> dict: ...

    def set_paused(self, paused: bool) -> None: ...

    def set_threshold(self, value: float) -> float: ...

    def snapshot(self) -> dict: ...

    def flag(self) -> dict: ...

    def correct(self, event_id: str, label: str) -> dict: ...

    def start_update(self, request: UpdateRequest) -> None: ...

    def reload_model(self, bundle: str | None, command_id: Any) -> None: ...

    def stop_shadow(self) -> dict: ...


def answer_payload(answer: Answered) -> dict:
    """The …/command/result message: ``ok`` with a result, or not ok with the reason."""
    if answer.error is not None:
        log.warning("command %s rejected: %s", answer.action or "?", answer.error)
    outcome = {"result": answer.result or {}} if answer.error is None else {"error": answer.error}
    ok = answer.error is None
    if answer.repeated:
        outcome["repeated"] = True
    return CommandResult(id=answer.command_id, action=answer.action, ok=ok, ts=round(time.time(), 3), **outcome).dump()


def execute_command(target: CommandTarget, command: Command) -> dict | None:
    """Carry out a valid command; CommandError for one that cannot be done now. None: the command goes on
    beside the loop and is answered when it ends."""
    action, params = command.action, command.params
    try:
        if action == "ping":
            return {"pong": True}
        if action == "status":
            return target.status()
        if action in ("pause", "resume"):
            target.set_paused(action == "pause")
            return {"paused": action == "pause"}
        if action == "set_threshold":
            return {"min_confidence": target.set_threshold(float(params["value"]))}
        if action == "snapshot":
            return target.snapshot()
        if action == "flag":
            return target.flag()
        if action == "correct":
            return target.correct(params["event_id"], params["label"].strip())
        if action == "update_model":
            target.start_update(
                UpdateRequest(
                    command.id,
                    params["url"],
                    params.get("sha256"),
                    params.get("force", False),
                    params.get("shadow", False),
                )
            )
            return {"done": False, "stage": "started", "url": params["url"]}
        if action == "stop_shadow":
            return target.stop_shadow()
        if action == "reload_model":
            target.reload_model(params.get("bundle"), command.id)  # answered when switched in or refused
            return None
    except SmartbinError as exc:
        raise CommandError(str(exc), command.id) from exc
    raise CommandError(f"unknown action {action!r}", command.id)


class CommandQueue:
    """Commands wait here between paho's thread (or the web page's) and the loop, at most COMMAND_QUEUE."""

    def __init__(self, events: Events):
        self.answer = events.answer
        self.pending: queue.Queue[bytes] = queue.Queue(COMMAND_QUEUE)
        self.rejected = 0
        self.retained = 0  # retained command messages seen and not carried out
        self.answered: OrderedDict[str, None] = OrderedDict()  # ids carried out, oldest first

    def submit(self, payload: bytes, retained: bool = False) -> None:
        """Any thread: queue it, or answer busy at once. A retained message (one the broker kept from before
        this subscription) is answered and never carried out: it would act again at every reconnect."""
        if retained:
            self.retained += 1
            self.answer(command_id_of(payload), None, error=RETAINED)
            return
        try:
            self.pending.put_nowait(payload)
        except queue.Full:
            self.rejected += 1
            self.answer(None, None, error="busy: too many pending commands")

    def handle(self, target: CommandTarget) -> None:
        """The loop: carry out what waits, answering each."""
        for payload in drain(self.pending):
            command = None
            try:
                command = parse_command(payload)
                if command.action not in READ_ONLY and command.id is not None and self._seen(command.id):
                    error = f"command id {command.id!r} was already carried out: not again"
                    self.rejected += 1
                    self.answer(command.id, command.action, error=error, repeated=True)
                    continue
                result = execute_command(target, command)
                if result is not None:
                    self.answer(command.id, command.action, result)
            except CommandError as exc:
                self.rejected += 1
                command_id = exc.command_id if exc.command_id is not None or command is None else command.id
                self.answer(command_id, command.action if command else None, error=str(exc))
            except Exception as exc:  # a command must never stop the bin
                log.exception("command failed")
                self.rejected += 1
                self.answer(None, None, error=f"internal error: {type(exc).__name__}: {exc}")

    def _seen(self, command_id: Any) -> bool:
        """Whether this id was carried out already; remembers it otherwise (the last ANSWERED_IDS)."""
        key = json.dumps(command_id, sort_keys=True)
        if key in self.answered:
            return True
        self.answered[key] = None
        if len(self.answered) > ANSWERED_IDS:
            self.answered.popitem(last=False)
        return False
