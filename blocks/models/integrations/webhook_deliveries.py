"""The delivery log of webhook destinations: one row per message, what each attempt came to.

A row is written when a destination's stream hands it an event it asked for (`add_deliveries`,
idempotent on the message id), its delivery workflow is started (`mark_started`; a row left
unstarted by a crash is started by the next pass), each attempt is recorded (status code,
latency, reason — never the receiver's body), and a manual redelivery starts it over under the
same `webhook-id`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import Column, tuple_
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlmodel import Field, SQLModel, col, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from blocks.core.context import OrgContext
from blocks.core.integrations.events import message_id
from blocks.infra.db import bind_org
from blocks.models.base import new_id, org_fk_column, timestamp_column, utcnow


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"  # every attempt of the schedule failed
    GONE = "gone"  # the receiver answered 410: the destination was disabled
    SKIPPED = "skipped"  # the destination was disabled or deleted before it was delivered


class WebhookDelivery(SQLModel, table=True):
    __tablename__ = "webhook_deliveries"

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    org_id: uuid.UUID = Field(sa_column=org_fk_column(index=False))
    destination_id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), nullable=False))
    message_id: str = Field(max_length=64)  # the webhook-id header, the same on every attempt
    event_type: str = Field(max_length=100)
    event_seq: int | None = None  # the audit event's seq, when the event is one
    event_id: uuid.UUID | None = Field(default=None, sa_column=Column(UUID(as_uuid=True)))
    status: str = Field(default=DeliveryStatus.PENDING.value, max_length=16)
    attempts: int = 0
    last_status_code: int | None = None
    last_latency_ms: int | None = None
    last_error: str | None = Field(default=None, max_length=300)
    last_attempt_at: datetime | None = Field(
        default=None, sa_column=timestamp_column(nullable=True)
    )
    next_attempt_at: datetime | None = Field(
        default=None, sa_column=timestamp_column(nullable=True)
    )
    started: bool = False
    redeliveries: int = 0
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())

    def workflow_id(self) -> str:
        """Its delivery workflow's id: one per delivery and redelivery, so a start is idempotent."""
        return f"blocks-webhook-delivery-{self.id}-{self.redeliveries}"


_TABLE = WebhookDelivery.__table__  # type: ignore[attr-defined]


class DeliveryCursorUnknown(LookupError):
    """The page cursor names no delivery of this destination."""


@dataclass(frozen=True)
class NewMessage:
    """An audit event a webhook asked for, to be delivered to it."""

    event_id: uuid.UUID
    event_seq: int
    event_type: str


async def add_deliveries(
    ctx: OrgContext,
    session: AsyncSession,
    destination_id: uuid.UUID,
    messages: Sequence[NewMessage],
) -> None:
    """A pending delivery per message; a message already logged for the destination is left
    as it is (the stream's pass that wrote it may be repeated after a crash)."""
    if not messages:
        return
    await bind_org(session, ctx.org_id)
    now = utcnow()
    rows = [
        {
            "id": new_id(),
            "org_id": ctx.org_id,
            "destination_id": destination_id,
            "message_id": message_id(m.event_id),
            "event_type": m.event_type,
            "event_seq": m.event_seq,
            "event_id": m.event_id,
            "status": DeliveryStatus.PENDING.value,
            "attempts": 0,
            "started": False,
            "redeliveries": 0,
            "created_at": now,
        }
        for m in messages
    ]
    statement = (
        pg_insert(_TABLE)
        .values(rows)
        .on_conflict_do_nothing(constraint="ux_webhook_deliveries_message")
    )
    await session.exec(statement)  # type: ignore[call-overload]


async def unstarted_deliveries(
    ctx: OrgContext, session: AsyncSession, destination_id: uuid.UUID, limit: int
) -> list[WebhookDelivery]:
    """Deliveries of the destination whose workflow has not been started yet, oldest first."""
    await bind_org(session, ctx.org_id)
    statement = (
        select(WebhookDelivery)
        .where(
            WebhookDelivery.org_id == ctx.org_id,
            WebhookDelivery.destination_id == destination_id,
            col(WebhookDelivery.started).is_(False),
        )
        .order_by(col(WebhookDelivery.created_at), col(WebhookDelivery.event_seq))
        .limit(limit)
    )
    return list((await session.exec(statement)).all())


async def mark_started(
    ctx: OrgContext, session: AsyncSession, delivery_ids: Sequence[uuid.UUID]
) -> None:
    if not delivery_ids:
        return
    await bind_org(session, ctx.org_id)
    statement = (
        update(WebhookDelivery)
        .where(
            col(WebhookDelivery.org_id) == ctx.org_id,
            col(WebhookDelivery.id).in_(list(delivery_ids)),
        )
        .values(started=True)
    )
    await session.exec(statement)  # type: ignore[call-overload]


async def get_delivery(
    ctx: OrgContext, session: AsyncSession, delivery_id: uuid.UUID, *, for_update: bool = False
) -> WebhookDelivery | None:
    await bind_org(session, ctx.org_id)
    statement = select(WebhookDelivery).where(
        WebhookDelivery.org_id == ctx.org_id, WebhookDelivery.id == delivery_id
    )
    if for_update:
        statement = statement.with_for_update()
    return (await session.exec(statement)).first()


def record_attempt(
    delivery: WebhookDelivery,
    *,
    status_code: int | None,
    latency_ms: int,
    reason: str,
    at: datetime,
    status: DeliveryStatus,
    next_attempt_at: datetime | None,
) -> None:
    """One attempt's result on the row (the caller's transaction writes it)."""
    delivery.attempts += 1
    delivery.last_status_code = status_code
    delivery.last_latency_ms = latency_ms
    delivery.last_error = None if status is DeliveryStatus.DELIVERED else reason[:300]
    delivery.last_attempt_at = at
    delivery.status = status.value
    delivery.next_attempt_at = next_attempt_at


async def restart_delivery(
    ctx: OrgContext, session: AsyncSession, delivery: WebhookDelivery
) -> WebhookDelivery:
    """A manual redelivery: the message is sent again along the whole schedule, under the same
    `webhook-id`, by a new workflow (`workflow_id` changes with `redeliveries`)."""
    await bind_org(session, ctx.org_id)
    delivery.redeliveries += 1
    delivery.status = DeliveryStatus.PENDING.value
    delivery.started = False
    delivery.next_attempt_at = utcnow()
    session.add(delivery)
    await session.flush()
    return delivery


async def list_deliveries(
    ctx: OrgContext,
    session: AsyncSession,
    destination_id: uuid.UUID,
    *,
    limit: int,
    after: uuid.UUID | None = None,
) -> list[WebhookDelivery]:
    """A page of the destination's delivery log, newest first; `after` is the last delivery of
    the page before (DeliveryCursorUnknown if it is not one of this destination's)."""
    await bind_org(session, ctx.org_id)
    mine = (
        WebhookDelivery.org_id == ctx.org_id,
        WebhookDelivery.destination_id == destination_id,
    )
    statement = select(WebhookDelivery).where(*mine)
    if after is not None:
        cursor = (
            await session.exec(select(WebhookDelivery).where(*mine, WebhookDelivery.id == after))
        ).first()
        if cursor is None:
            raise DeliveryCursorUnknown(str(after))
        statement = statement.where(
            tuple_(col(WebhookDelivery.created_at), col(WebhookDelivery.id))
            < tuple_(cursor.created_at, cursor.id)
        )
    statement = statement.order_by(
        col(WebhookDelivery.created_at).desc(), col(WebhookDelivery.id).desc()
    ).limit(limit)
    return list((await session.exec(statement)).all())
