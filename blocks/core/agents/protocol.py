"""The messages Blocks and a remote agent exchange, the same on every transport (relay, PubNub).

Each message is one JSON object with a `type`. Blocks sends `task` (a skill to run with its
input, or a reference to fetch a large input from), `cancel` (stop a task) and `input` (the
answer to a question the agent asked). The agent sends `ack` (the task arrived: Blocks deletes
its stored input), `status` (still working: a heartbeat, with an optional progress message; or
input required, with a question) and `result` (completed, failed or rejected, with the output or
the error). Task states are A2A v1.0's (`TASK_STATE_*`). Delivery is at least once: an agent
drops a task id it has already seen, and Blocks ignores anything about a task already finished. Blocks answers a `result` (and an
input-required `status`) with an `ack` of the task id once it has taken it: until then the agent
keeps it and sends it again after a reconnection.

Pure: parsing never trusts the sender (types and sizes checked, unknown fields ignored).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any

# A2A v1.0 task states (the `TaskState` enum of a2a.proto).
WORKING = "TASK_STATE_WORKING"
INPUT_REQUIRED = "TASK_STATE_INPUT_REQUIRED"
COMPLETED = "TASK_STATE_COMPLETED"
FAILED = "TASK_STATE_FAILED"
CANCELED = "TASK_STATE_CANCELED"
REJECTED = "TASK_STATE_REJECTED"
FINAL_STATES = frozenset({COMPLETED, FAILED, CANCELED, REJECTED})
# The error type a task fails its activity with when the agent said failed, rejected or
# canceled: the agent's own verdict, not retried.
AGENT_TASK_FAILED = "AgentTaskFailed"

# A task's input or an agent's output, serialized: larger is refused (Temporal's payload limit
# is 2 MB, and an agent is not a file transfer).
MAX_CONTENT_BYTES = 1024 * 1024
MAX_TEXT = 4000  # characters of a progress message, an error or a question's title


class MessageType(StrEnum):
    TASK = "task"
    CANCEL = "cancel"
    INPUT = "input"
    ACK = "ack"
    STATUS = "status"
    RESULT = "result"


class ProtocolError(ValueError):
    """A message that does not follow the protocol; the reason names the field."""


@dataclass(frozen=True)
class TaskMessage:
    """Blocks -> agent: run `skill` on `input` (or fetch the input from `input_ref` first, an
    expiring URL of the API the agent's token opens, when it is too large to travel inline)."""

    task_id: str
    skill: str
    input: dict[str, Any] | None
    attempt: int = 1
    input_ref: str | None = None
    # Where the task comes from, for the agent's logs: the run and the step.
    run_id: str | None = None
    step: str | None = None
    type: str = field(default=MessageType.TASK, init=False)


@dataclass(frozen=True)
class CancelMessage:
    task_id: str
    reason: str = ""
    type: str = field(default=MessageType.CANCEL, init=False)


@dataclass(frozen=True)
class InputMessage:
    """Blocks -> agent: the answer to the task's question (the approval step's decision)."""

    task_id: str
    answer: dict[str, Any]
    type: str = field(default=MessageType.INPUT, init=False)


@dataclass(frozen=True)
class AckMessage:
    task_id: str
    type: str = field(default=MessageType.ACK, init=False)


@dataclass(frozen=True)
class StatusMessage:
    """Agent -> Blocks: still working (`message`: progress), or input required (`question`:
    `{"title": str, "details": {...}}`, which becomes an approval step)."""

    task_id: str
    state: str = WORKING
    message: str | None = None
    question: dict[str, Any] | None = None
    type: str = field(default=MessageType.STATUS, init=False)


@dataclass(frozen=True)
class ResultMessage:
    """Agent -> Blocks: the task is over. `output` for completed, `error` for failed or rejected."""

    task_id: str
    state: str
    output: dict[str, Any] | None = None
    error: str | None = None
    type: str = field(default=MessageType.RESULT, init=False)


Message = TaskMessage | CancelMessage | InputMessage | AckMessage | StatusMessage | ResultMessage


def encode(message: Message) -> str:
    """One message as compact JSON text."""
    values = ((f.name, getattr(message, f.name)) for f in fields(message))
    body = {name: str(v) if name == "type" else v for name, v in values if v is not None}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def decode(raw: str | bytes | dict[str, Any]) -> Message:
    """A message from JSON text (or an already parsed object); ProtocolError names what is wrong."""
    if isinstance(raw, dict):
        body = raw
    else:
        if len(raw) > MAX_CONTENT_BYTES + 64 * 1024:
            raise ProtocolError("message: larger than the protocol allows")
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise ProtocolError("message: not JSON") from None
    if not isinstance(body, dict):
        raise ProtocolError("message: not a JSON object")
    kind = body.get("type")
    task_id = _required_text(body, "task_id", limit=100)
    match kind:
        case MessageType.TASK:
            return TaskMessage(
                task_id=task_id,
                skill=_required_text(body, "skill", limit=200),
                input=_object(body, "input"),
                attempt=_positive(body, "attempt"),
                input_ref=_text(body, "input_ref", limit=2000),
                run_id=_text(body, "run_id", limit=100),
                step=_text(body, "step", limit=200),
            )
        case MessageType.CANCEL:
            return CancelMessage(task_id=task_id, reason=_text(body, "reason") or "")
        case MessageType.INPUT:
            answer = _object(body, "answer")
            if answer is None:
                raise ProtocolError("answer: required, a JSON object")
            return InputMessage(task_id=task_id, answer=answer)
        case MessageType.ACK:
            return AckMessage(task_id=task_id)
        case MessageType.STATUS:
            state = body.get("state", WORKING)
            if state not in (WORKING, INPUT_REQUIRED):
                raise ProtocolError(f"state: {WORKING} or {INPUT_REQUIRED}, not {state!r}")
            question = _object(body, "question")
            if state == INPUT_REQUIRED and (question is None or not _title(question)):
                raise ProtocolError("question: input required needs {'title': text, ...}")
            return StatusMessage(
                task_id=task_id, state=state, message=_text(body, "message"), question=question
            )
        case MessageType.RESULT:
            state = body.get("state")
            if state not in FINAL_STATES:
                raise ProtocolError(f"state: one of {', '.join(sorted(FINAL_STATES))}")
            output = _object(body, "output")
            if state == COMPLETED and output is None:
                raise ProtocolError("output: a completed task answers a JSON object")
            return ResultMessage(
                task_id=task_id, state=state, output=output, error=_text(body, "error")
            )
        case _:
            raise ProtocolError(f"type: unknown message type {kind!r}")


def content_size(value: dict[str, Any] | None) -> int:
    """Bytes of `value` as compact JSON (what travels and what is stored)."""
    if value is None:
        return 0
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


def _title(question: dict[str, Any]) -> str | None:
    title = question.get("title")
    return title if isinstance(title, str) and title.strip() else None


def _required_text(body: dict[str, Any], name: str, *, limit: int) -> str:
    value = _text(body, name, limit=limit)
    if not value:
        raise ProtocolError(f"{name}: required, non-empty text")
    return value


def _text(body: dict[str, Any], name: str, *, limit: int = MAX_TEXT) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ProtocolError(f"{name}: text")
    if len(value) > limit:
        raise ProtocolError(f"{name}: longer than {limit} characters")
    return value


def _object(body: dict[str, Any], name: str) -> dict[str, Any] | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ProtocolError(f"{name}: a JSON object")
    if content_size(value) > MAX_CONTENT_BYTES:
        raise ProtocolError(f"{name}: larger than {MAX_CONTENT_BYTES} bytes as JSON")
    return value


def _positive(body: dict[str, Any], name: str) -> int:
    value = body.get(name, 1)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ProtocolError(f"{name}: a positive integer")
    return value
