"""Pending approval steps: the inbox's projection of the audit log, read in one query.

`approval_pending_steps` holds one row per open step: who may decide it (policy labels), whose
seats have voted, who asked, when it opened and is due. It is written by PostgreSQL, not by this
module: an AFTER INSERT trigger on `audit_events` (migration 0016) applies each step event the
append inserts (`step.opened` ... `step.closed`, `run.completed`) in the append's own transaction,
so the projection is exactly as durable and exactly-once as the audit log, whichever process
appends. The application role may only read it.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Column, Text, and_, any_, literal, not_, or_
from sqlalchemy.dialects.postgresql import ARRAY
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from blocks.core.context import OrgContext
from blocks.infra.db import bind_org
from blocks.models.base import org_fk_column, timestamp_column


class PendingStep(SQLModel, table=True):
    __tablename__ = "approval_pending_steps"

    org_id: uuid.UUID = Field(sa_column=org_fk_column(index=False, primary_key=True))
    run_id: str = Field(sa_column=Column(Text, primary_key=True))
    step_id: str = Field(sa_column=Column(Text, primary_key=True))
    workflow: str | None = Field(default=None, sa_column=Column(Text))
    title: str = Field(sa_column=Column(Text, nullable=False))
    # `user:<id>`, `role:<name>`, `group:<name>`, as `ApprovalPolicy.labels()` gives them.
    approvers: list[str] = Field(sa_column=Column(ARRAY(Text), nullable=False))
    # Whose seats have voted: the approver's, or the delegator's when a delegate acted.
    deciders: list[str] = Field(sa_column=Column(ARRAY(Text), nullable=False))
    requested_by: str | None = Field(default=None, sa_column=Column(Text))
    opened_at: datetime = Field(sa_column=timestamp_column())
    deadline: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))


@dataclass(frozen=True)
class Seat:
    """Someone the caller may decide as (themselves, or a member who delegated to them now),
    with that person's policy labels."""

    user_id: str
    labels: tuple[str, ...]


async def pending_steps_for(
    ctx: OrgContext, session: AsyncSession, seats: Sequence[Seat], *, limit: int
) -> list[PendingStep]:
    """Open steps of the organization that one of `seats` may decide now, soonest due first.

    A seat counts on a step when the step names one of its labels, the seat has not voted on it
    and did not ask for the run; steps of runs the caller asked for are left out altogether (they
    may decide those neither in person nor for someone else).
    """
    await bind_org(session, ctx.org_id)
    if not seats:
        return []
    me = str(ctx.user_id)
    everyone = list(dict.fromkeys(label for seat in seats for label in seat.labels))
    approvers, deciders, requested_by = (
        col(PendingStep.approvers),
        col(PendingStep.deciders),
        col(PendingStep.requested_by),
    )
    open_seat = [
        and_(
            approvers.overlap(list(seat.labels)),
            not_(literal(seat.user_id) == any_(deciders)),
            or_(requested_by.is_(None), requested_by != seat.user_id),
        )
        for seat in seats
    ]
    statement = (
        select(PendingStep)
        .where(
            PendingStep.org_id == ctx.org_id,
            approvers.overlap(everyone),  # the GIN index's condition
            or_(requested_by.is_(None), requested_by != me),
            or_(*open_seat),
        )
        .order_by(
            col(PendingStep.deadline).asc().nulls_last(),
            col(PendingStep.opened_at),
            col(PendingStep.run_id),
            col(PendingStep.step_id),
        )
        .limit(limit)
    )
    return list((await session.exec(statement)).all())
