"""The messages outbound destinations receive: event types, filtering, ids and bodies."""

from __future__ import annotations

import json
import uuid

from blocks.core.audit.chain import GENESIS_HASH, chain_hash
from blocks.core.audit.export_format import SignedCheckpoint, event_line
from blocks.core.integrations.events import (
    ALL_AUDIT_EVENTS,
    SIEM_BATCH_TYPE,
    checkpoint_body,
    event_type_of,
    message_id,
    siem_body,
    wanted,
    webhook_body,
)


def _event(seq: int, **data: object) -> dict[str, object]:
    return {
        "id": str(uuid.UUID(int=seq)),
        "org_id": str(uuid.UUID(int=99)),
        "seq": seq,
        "occurred_at": "2026-12-02T10:00:00.000000+00:00",
        "action": "step.decided",
        "actor_type": "user",
        "actor_id": "u-1",
        "actor_email": "enc:v1:personal",
        "target_type": "step",
        "target_id": "approve",
        "run_id": "r-1",
        "outcome": "success",
        "reason": None,
        "ip": "203.0.113.9",
        "user_agent": "curl/8",
        "data": data,
    }


def test_a_runs_end_is_typed_by_its_status() -> None:
    assert event_type_of("run.completed", {"status": "failed"}) == "run.failed"
    assert event_type_of("run.completed", {"status": "cancelled"}) == "run.cancelled"
    assert event_type_of("run.completed", {"status": "approved"}) == "run.completed"
    assert event_type_of("step.decided", {"status": "failed"}) == "step.decided"
    assert event_type_of("run.completed", None) == "run.completed"


def test_a_webhook_gets_what_it_asked_for_or_everything() -> None:
    assert wanted(["step.decided"], "step.decided")
    assert not wanted(["step.decided"], "step.opened")
    assert not wanted(["run.completed"], "run.failed")
    assert wanted([ALL_AUDIT_EVENTS], "member.role_changed")


def test_the_message_id_is_the_events_and_fit_for_signing() -> None:
    event_id = uuid.uuid4()
    assert message_id(event_id) == message_id(str(event_id)) == f"evt_{event_id.hex}"
    assert "." not in message_id(event_id)


def test_a_webhook_body_keeps_neither_content_nor_personal_data() -> None:
    event = _event(7, decision="approve", comment="enc:c1:sealed", votes=2)
    body = webhook_body(event, "step.decided")
    assert body == webhook_body(dict(event), "step.decided")  # the same bytes every attempt
    sent = json.loads(body)
    assert sent["type"] == "step.decided"
    assert sent["timestamp"] == event["occurred_at"]
    assert sent["data"]["data"] == {"decision": "approve", "votes": 2}
    assert sent["data"]["seq"] == 7
    assert sent["data"]["run_id"] == "r-1"
    for personal in ("actor_email", "ip", "user_agent"):
        assert personal not in sent["data"]
    assert b"enc:" not in body
    assert b"203.0.113.9" not in body


def test_a_siem_batch_carries_each_event_as_hashed_so_the_chain_verifies() -> None:
    prev, lines = GENESIS_HASH, []
    for seq in (1, 2, 3):
        payload = _event(seq, amount=1.5e-7, name="Zoë")
        hash_ = chain_hash(prev, payload)
        lines.append(event_line(payload, prev, hash_))
        prev = hash_
    checkpoint = SignedCheckpoint(
        str(uuid.UUID(int=99)), 3, prev, "2026-12-02T10:01:00.000000+00:00", "k1", "c2ln"
    )
    body = siem_body(
        org_id=str(uuid.UUID(int=99)),
        event_lines="".join(lines).encode("ascii"),
        first_seq=1,
        last_seq=3,
        checkpoints=[checkpoint],
        public_keys={"k1": "cHVi"},
        gap=None,
        sent_at="2026-12-02T10:01:01+00:00",
    )
    sent = json.loads(body)
    assert sent["type"] == SIEM_BATCH_TYPE
    data = sent["data"]
    assert (data["first_seq"], data["last_seq"], data["gap"]) == (1, 3, None)
    assert data["checkpoints"][0]["hash"] == prev
    assert data["public_keys"] == {"k1": "cHVi"}
    # The receiver recomputes the chain from what it got.
    prev = GENESIS_HASH
    for event in data["events"]:
        payload = {k: v for k, v in event.items() if k not in ("type", "prev_hash", "hash")}
        assert event["prev_hash"] == prev
        prev = chain_hash(prev, payload)
        assert prev == event["hash"]
    assert prev == checkpoint.hash


def test_a_siem_batch_says_a_gap_and_may_hold_only_checkpoints() -> None:
    body = siem_body(
        org_id="o",
        event_lines=b"",
        first_seq=None,
        last_seq=None,
        checkpoints=[],
        public_keys={},
        gap=(4, 9),
        sent_at="t",
    )
    data = json.loads(body)["data"]
    assert data["events"] == []
    assert data["gap"] == {"first_seq": 4, "last_seq": 9}


def test_a_witness_is_sent_the_checkpoint_and_its_key() -> None:
    checkpoint = SignedCheckpoint(
        "o", 5, "ab" * 32, "2026-12-02T10:01:00.000000+00:00", "k1", "c2ln"
    )
    sent = json.loads(checkpoint_body(checkpoint, {"k1": "cHVi"}))
    assert sent["type"] == "audit.checkpoint"
    assert sent["data"]["seq"] == 5
    assert sent["data"]["public_key"] == "cHVi"
    assert sent["data"]["type"] == "checkpoint"  # a line `blocks audit verify --against` reads
