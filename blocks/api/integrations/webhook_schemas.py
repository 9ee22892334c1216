"""Request and answer bodies of the webhook destination routes (blocks.api.integrations.webhooks),
with the OpenAPI examples: the secret appears only in `DestinationWithSecretOut`, the answer of a
creation and of a rotation."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StringConstraints, WithJsonSchema, field_validator

from blocks.api.reference import examples as ex
from blocks.api.reference.examples import example
from blocks.api.schemas import StrictModel
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
    event_types: list[EventType] = Field(
        min_length=1, max_length=len(EVENT_TYPES), description=_EVENT_TYPES_HELP
    )
    kind: Literal["webhook"] = "webhook"

    @field_validator("event_types")
    @classmethod
    def _known(cls, values: list[str]) -> list[str]:
        return _known_event_types(values) or []


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
        last_attempt_at=ex.DECIDED,
        next_attempt_at=None,
        created_at=ex.DECIDED,
    )

    id: uuid.UUID
    message_id: str = Field(description="The `webhook-id` header, the same on every attempt")
    event_type: str
    event_seq: int | None = Field(description="The audit event's seq, when the event is one")
    status: str = Field(description="`pending`, `delivered`, `failed` or `gone`")
    attempts: int
    last_status_code: int | None
    last_latency_ms: int | None
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
