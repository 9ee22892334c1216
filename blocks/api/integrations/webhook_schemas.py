"""Request and answer bodies of the webhook destination routes (blocks.api.integrations.webhooks),
with the OpenAPI examples: the secret appears only in `DestinationWithSecretOut`, the answer of a
creation and of a rotation."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    Field,
    StringConstraints,
    WithJsonSchema,
    field_validator,
)

from blocks.api.reference import examples as ex
from blocks.api.reference.examples import example
from blocks.api.schemas import StrictModel
from blocks.core.audit.event_hash import MAX_SAFE_INT
from blocks.core.integrations.events import EVENT_TYPES
from blocks.models.integrations.webhooks import DEFAULT_OVERLAP, MAX_OVERLAP

DESTINATION_ID = "7b1e4c2a-5d3f-4e8a-9b6c-0d2f4a6c8e10"
DELIVERY_ID = "8c2f5d3b-6e4a-4f9b-8c7d-1e3a5b7d9f21"
_URL = "https://hooks.acme.example/blocks"
_TYPES = ["run.completed", "step.opened"]
_WHSEC_EXAMPLE = "whsec_ZXhhbXBsZS1ub3QtYS1yZWFsLXNpZ25pbmctc2VjcmV0"  # "example-not-a-real-..."
_EVENT_TYPE_LIST = ", ".join(f"`{t}`" for t in EVENT_TYPES)

Url = Annotated[str, StringConstraints(min_length=1, max_length=2048)]
Description = Annotated[str, StringConstraints(max_length=500)]
EventType = Annotated[
    str,
    StringConstraints(min_length=1, max_length=100),
    WithJsonSchema({"type": "string", "enum": list(EVENT_TYPES)}),
]
_EVENT_TYPES_HELP = f"Any of {_EVENT_TYPE_LIST}; `audit.*` is every audit event of the organization"


def _known_event_types(values: list[str] | None) -> list[str] | None:
    if values is None:
        return None
    unknown = [v for v in values if v not in EVENT_TYPES]
    if unknown:
        raise ValueError(f"{unknown[0]!r} is not an event type; one of {', '.join(EVENT_TYPES)}")
    return list(dict.fromkeys(values))  # duplicates dropped, order kept


class DestinationIn(StrictModel):
    model_config = example(
        url=_URL, description="Finance's ledger sync", event_types=_TYPES, kind="webhook"
    )

    url: Url = Field(description="Where events are POSTed: https, a public address")
    description: Description = ""
    event_types: list[EventType] | None = Field(
        default=None,
        min_length=1,
        max_length=len(EVENT_TYPES),
        description=f"A webhook's (required for one): {_EVENT_TYPES_HELP}. A `siem` stream gets"
        " every audit event and a `witness` every checkpoint: leave it out for them",
    )
    kind: Literal["webhook", "siem", "witness"] = Field(
        default="webhook",
        description="`webhook`: one signed message per event of the types asked for; `siem`: "
        "every audit event in chain order, in batches, exactly as hashed, with the signed "
        "checkpoints covering them; `witness`: every signed checkpoint",
    )
    from_seq: int | None = Field(
        default=None,
        ge=1,
        le=MAX_SAFE_INT,
        description="A `siem` stream's first event (default 1: the whole chain)",
    )

    @field_validator("event_types")
    @classmethod
    def _known(cls, values: list[str] | None) -> list[str] | None:
        return _known_event_types(values)

    def kind_problem(self) -> tuple[str, str] | None:
        """(field, reason) when a field does not fit the kind; None when all fit."""
        if self.kind == "webhook" and self.event_types is None:
            return "event_types", "a webhook names the event types it wants"
        if self.kind != "webhook" and self.event_types is not None:
            return "event_types", f"a {self.kind} destination is sent every event: leave it out"
        if self.kind != "siem" and self.from_seq is not None:
            return "from_seq", "only a siem stream starts at a sequence number"
        return None


class ReplayIn(StrictModel):
    model_config = example(from_seq=1)

    from_seq: int = Field(
        ge=1, le=MAX_SAFE_INT, description="Send every audit event again from this seq on"
    )


class DestinationPatch(StrictModel):
    model_config = example(event_types=["audit.*"], enabled=True)

    url: Url | None = Field(default=None, description="Checked again, as when added")
    description: Description | None = None
    event_types: list[EventType] | None = Field(
        default=None, min_length=1, max_length=len(EVENT_TYPES), description=_EVENT_TYPES_HELP
    )
    enabled: bool | None = Field(
        default=None, description="false stops deliveries (reason `admin`); true clears the reason"
    )

    @field_validator("event_types")
    @classmethod
    def _known(cls, values: list[str] | None) -> list[str] | None:
        return _known_event_types(values)


class RotateIn(StrictModel):
    model_config = example(overlap_hours=24)

    overlap_hours: int = Field(
        default=int(DEFAULT_OVERLAP.total_seconds() // 3600),
        ge=0,
        le=int(MAX_OVERLAP.total_seconds() // 3600),
        description="How long the old secret still signs (both signatures are sent); 0 drops it",
    )


_OUT_EXAMPLE: dict[str, Any] = {
    "id": DESTINATION_ID,
    "kind": "webhook",
    "url": _URL,
    "description": "Finance's ledger sync",
    "event_types": _TYPES,
    "enabled": True,
    "disabled_reason": None,
    "disabled_at": None,
    "secret_last4": "cmV0",
    "previous_secret_expires_at": None,
    "created_by": ex.OWNER_ID,
    "created_at": ex.CREATED,
    "updated_at": ex.CREATED,
    "rotated_at": None,
    "sent_seq": 42,
    "last_success_at": ex.DECIDED,
    "failing_since": None,
    "last_error": None,
}


class DestinationOut(BaseModel):
    model_config = example(**_OUT_EXAMPLE)

    id: uuid.UUID
    kind: str
    url: str
    description: str
    event_types: list[str]
    enabled: bool
    disabled_reason: str | None = Field(
        description="`gone` (the receiver answered 410), `failing` or `admin`; null if enabled"
    )
    disabled_at: datetime | None
    secret_last4: str | None = Field(description="The current secret's last four characters")
    previous_secret_expires_at: datetime | None = Field(
        description="Until when the secret before the last rotation still signs (null: none)"
    )
    created_by: uuid.UUID | None
    created_at: datetime
    updated_at: datetime
    rotated_at: datetime | None
    sent_seq: int = Field(
        description="The last audit seq handed over: fanned out into deliveries (webhook), "
        "acknowledged by the receiver (siem)"
    )
    last_success_at: datetime | None = Field(description="When the receiver last took a message")
    failing_since: datetime | None = Field(
        description="Since when every message failed (null: the last one went through); "
        "after days of failures the destination is disabled (`failing`) and admins are told"
    )
    last_error: str | None = Field(description="Why the last message failed; never its body")


class DestinationWithSecretOut(DestinationOut):
    model_config = example(**_OUT_EXAMPLE, secret=_WHSEC_EXAMPLE)

    secret: str = Field(
        description="The signing secret (Standard Webhooks `whsec_...`): shown this once only"
    )


class DeliveryOut(BaseModel):
    model_config = example(
        id=DELIVERY_ID,
        message_id="msg_2f9c1d7e4b8a4c6e9d0f1a2b3c4d5e6f",
        event_type="run.completed",
        event_seq=42,
        status="delivered",
        attempts=1,
        last_status_code=200,
        last_latency_ms=87,
        last_error=None,
        redeliveries=0,
        last_attempt_at=ex.DECIDED,
        next_attempt_at=None,
        created_at=ex.DECIDED,
    )

    id: uuid.UUID
    message_id: str = Field(description="The `webhook-id` header, the same on every attempt")
    event_type: str
    event_seq: int | None = Field(description="The audit event's seq, when the event is one")
    status: str = Field(
        description="`pending`, `delivered`, `failed` (every attempt of the schedule failed), "
        "`gone` (the receiver answered 410) or `skipped` (the destination was off)"
    )
    attempts: int
    last_status_code: int | None
    last_latency_ms: int | None
    last_error: str | None = Field(description="Why the last attempt failed; never the body")
    redeliveries: int = Field(description="How often it was redelivered by hand")
    last_attempt_at: datetime | None
    next_attempt_at: datetime | None
    created_at: datetime


class DeliveryListOut(BaseModel):
    model_config = example(
        deliveries=[DeliveryOut.model_config["json_schema_extra"]["examples"][0]],  # type: ignore[index]
        next_cursor=None,
    )

    deliveries: list[DeliveryOut]
    next_cursor: uuid.UUID | None = Field(
        description="Pass as `cursor` for the next (older) page; null at the end"
    )
