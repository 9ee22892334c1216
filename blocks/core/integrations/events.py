"""The messages outbound destinations receive: which audit events a webhook wants, and the bodies.

A webhook is sent one message per audit event whose type it asked for; its `webhook-id` is
derived from the event's id, so every attempt and every redelivery of it carries the same one and
the receiver can drop duplicates. The body follows the Standard Webhooks shape (`type`,
`timestamp`, `data`) and never holds run content (sealed fields are left out) nor personal data
(email, address, user agent): the receiver learns what happened and where, and reads the rest
through the API with its own rights.

A SIEM stream is sent batches of events exactly as the audit export writes them (the hashed
fields, `prev_hash`, `hash`), in chain order, with the signed checkpoints that cover them, so the
SIEM can verify the chain itself; each batch names its first and last seq, and a gap (events the
stream could not send) is said in the batch that follows it. A witness is sent each checkpoint.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from typing import Any

from blocks.core.audit.export_format import SignedCheckpoint
from blocks.core.audit.sealed_content import CONTENT_PREFIX

# Every audit event of the organization, whatever its action.
ALL_AUDIT_EVENTS = "audit.*"
# The event types a webhook may ask for: what runs, steps, agents and LLM steps do, and all.
EVENT_TYPES: tuple[str, ...] = (
    "run.started",
    "run.completed",
    "run.failed",
    "run.cancelled",
    "step.opened",
    "step.decided",
    "step.reminded",
    "step.escalated",
    "step.sla_breached",
    "agent.task_dispatched",
    "agent.task_completed",
    "agent.task_failed",
    "llm.called",
    ALL_AUDIT_EVENTS,
)
SIEM_BATCH_TYPE = "audit.events"
CHECKPOINT_TYPE = "audit.checkpoint"
# A run's end is one audit action (`run.completed`) whose status says how it ended.
_RUN_ENDINGS = {"failed": "run.failed", "cancelled": "run.cancelled"}
# What a webhook body carries of an event, besides its data: ids, never personal data.
_EVENT_FIELDS = (
    "id",
    "seq",
    "action",
    "occurred_at",
    "actor_type",
    "actor_id",
    "target_type",
    "target_id",
    "run_id",
    "outcome",
    "hash",
)


def event_type_of(action: str, data: Mapping[str, Any] | None) -> str:
    """The webhook event type of an audit event: its action, but a run's end by its status."""
    if action == "run.completed" and data is not None:
        return _RUN_ENDINGS.get(str(data.get("status")), action)
    return action


def wanted(event_types: Iterable[str], event_type: str) -> bool:
    """Whether a webhook asking for `event_types` is sent an event of `event_type`."""
    types = set(event_types)
    return ALL_AUDIT_EVENTS in types or event_type in types


def message_id(event_id: uuid.UUID | str) -> str:
    """The `webhook-id` of an event's message: the same on every attempt and redelivery."""
    return f"evt_{uuid.UUID(str(event_id)).hex}"


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True).encode()


def _shareable(data: Mapping[str, Any] | None) -> dict[str, Any]:
    # Sealed run content stays in Blocks: a receiver reads it through the API if it may.
    if data is None:
        return {}
    return {
        k: v for k, v in data.items() if not (isinstance(v, str) and v.startswith(CONTENT_PREFIX))
    }


def webhook_body(event: Mapping[str, Any], event_type: str) -> bytes:
    """The body of an event's message; the same bytes for the same event, attempt after attempt."""
    fields = {name: event.get(name) for name in _EVENT_FIELDS}
    fields["data"] = _shareable(event.get("data"))
    return _dumps({"type": event_type, "timestamp": event["occurred_at"], "data": fields})


def siem_body(
    *,
    org_id: str,
    event_lines: bytes,
    first_seq: int | None,
    last_seq: int | None,
    checkpoints: Sequence[SignedCheckpoint],
    public_keys: Mapping[str, str],
    gap: tuple[int, int] | None,
    sent_at: str,
) -> bytes:
    """One SIEM batch: `event_lines` (JSON Lines from `stored_event_lines`, kept byte for byte so
    each event is exactly as the chain hashed it) become the `events` array; `gap` is a range of
    seqs this stream could not send, said once, in the batch that follows it."""
    events = b",".join(line for line in event_lines.split(b"\n") if line)
    head = {
        "org_id": org_id,
        "first_seq": first_seq,
        "last_seq": last_seq,
        "gap": None if gap is None else {"first_seq": gap[0], "last_seq": gap[1]},
        "checkpoints": [{"type": "checkpoint", **asdict(c)} for c in checkpoints],
        "public_keys": dict(public_keys),
    }
    # The events go in as the export wrote them, not re-serialized.
    data = _dumps(head)[:-1] + b',"events":[' + events + b"]}"
    return (
        b'{"data":'
        + data
        + b',"timestamp":'
        + _dumps(sent_at)
        + b',"type":"'
        + SIEM_BATCH_TYPE.encode()
        + b'"}'
    )


def checkpoint_body(checkpoint: SignedCheckpoint, public_keys: Mapping[str, str]) -> bytes:
    """A witness's message: one signed checkpoint and the public key that checks it."""
    key = public_keys.get(checkpoint.key_id)
    data = {"type": "checkpoint", **asdict(checkpoint), "public_key": key}
    return _dumps({"type": CHECKPOINT_TYPE, "timestamp": checkpoint.signed_at, "data": data})
