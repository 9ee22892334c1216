"""Access reviews' rows: each organization's review settings and the reviews it ran, with reports.

A review is a run of the built-in `access_review` workflow: its row here shares the run's id, says
how it was started and, once finished, holds the report and its SHA-256 (the `access_review.report`
audit event carries the same hash). What a review lists and revokes is in `items`.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Column, Integer, String
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from blocks.core.context import OrgContext
from blocks.infra.db import bind_org
from blocks.models.audit.events import AuditEvent
from blocks.models.base import org_fk_column, timestamp_column, user_fk_column, utcnow

# When an organization saved no settings: the owners review, each item within two weeks.
DEFAULT_SLA_HOURS = 336
DEFAULT_REVIEWER_ROLES = ("owner",)


class AccessReviewSettings(SQLModel, table=True):
    __tablename__ = "access_review_settings"

    org_id: uuid.UUID = Field(sa_column=org_fk_column(index=False, primary_key=True))
    reviewer_ids: list[uuid.UUID] = Field(
        default_factory=list, sa_column=Column(ARRAY(UUID(as_uuid=True)), nullable=False)
    )
    reviewer_group: str | None = Field(default=None, sa_column=Column(String(100)))
    sla_hours: int = Field(default=DEFAULT_SLA_HOURS, sa_column=Column(Integer, nullable=False))
    schedule_enabled: bool = False
    updated_by: uuid.UUID | None = Field(default=None, sa_column=user_fk_column(nullable=True))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())


class AccessReview(SQLModel, table=True):
    __tablename__ = "access_reviews"

    id: uuid.UUID = Field(primary_key=True)  # the run's id
    org_id: uuid.UUID = Field(sa_column=org_fk_column(index=False))
    trigger: str = Field(max_length=16)
    started_by: uuid.UUID | None = Field(default=None, sa_column=user_fk_column(nullable=True))
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    finished_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))
    report: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB, nullable=True))
    report_sha256: str | None = Field(default=None, max_length=64)


def default_settings(ctx: OrgContext) -> AccessReviewSettings:
    """What an organization that saved none reviews with (not stored)."""
    return AccessReviewSettings(org_id=ctx.org_id, updated_at=utcnow())


async def get_settings(ctx: OrgContext, session: AsyncSession) -> AccessReviewSettings | None:
    await bind_org(session, ctx.org_id)
    statement = select(AccessReviewSettings).where(AccessReviewSettings.org_id == ctx.org_id)
    return (await session.exec(statement)).first()


async def save_settings(
    ctx: OrgContext,
    session: AsyncSession,
    *,
    reviewer_ids: list[uuid.UUID],
    reviewer_group: str | None,
    sla_hours: int,
    schedule_enabled: bool,
) -> AccessReviewSettings:
    """Insert or replace the organization's settings; the row as saved."""
    await bind_org(session, ctx.org_id)
    values = {
        "org_id": ctx.org_id,
        "reviewer_ids": list(reviewer_ids),
        "reviewer_group": reviewer_group,
        "sla_hours": sla_hours,
        "schedule_enabled": schedule_enabled,
        "updated_by": ctx.user_id,
        "updated_at": utcnow(),
    }
    statement = (
        pg_insert(AccessReviewSettings)
        .values(**values)
        .on_conflict_do_update(
            index_elements=["org_id"], set_={k: v for k, v in values.items() if k != "org_id"}
        )
    )
    await session.exec(statement)  # type: ignore[call-overload]
    saved = await get_settings(ctx, session)
    assert saved is not None
    await session.refresh(saved)
    return saved


def review_params(
    settings: AccessReviewSettings, *, trigger: str, started_by: uuid.UUID | None
) -> dict[str, Any]:
    """The workflow's input for a review under `settings`."""
    named = bool(settings.reviewer_ids) or settings.reviewer_group is not None
    return {
        "reviewers": [str(u) for u in settings.reviewer_ids],
        "reviewer_group": settings.reviewer_group,
        "reviewer_roles": [] if named else list(DEFAULT_REVIEWER_ROLES),
        "sla_hours": settings.sla_hours,
        "trigger": trigger,
        "started_by": str(started_by) if started_by else None,
    }


async def create_review(
    ctx: OrgContext,
    session: AsyncSession,
    *,
    run_id: uuid.UUID,
    trigger: str,
    started_by: uuid.UUID | None,
) -> AccessReview:
    """The review's row for a run just created (nothing when it exists: a retried start)."""
    await bind_org(session, ctx.org_id)
    statement = (
        pg_insert(AccessReview)
        .values(
            id=run_id,
            org_id=ctx.org_id,
            trigger=trigger,
            started_by=started_by,
            created_at=utcnow(),
        )
        .on_conflict_do_nothing(index_elements=["id"])
    )
    await session.exec(statement)  # type: ignore[call-overload]
    review = await get_review(ctx, session, run_id)
    assert review is not None
    return review


async def get_review(
    ctx: OrgContext, session: AsyncSession, review_id: uuid.UUID
) -> AccessReview | None:
    await bind_org(session, ctx.org_id)
    statement = (
        select(AccessReview)
        .where(AccessReview.org_id == ctx.org_id, AccessReview.id == review_id)
        .execution_options(populate_existing=True)
    )
    return (await session.exec(statement)).first()


async def list_reviews(
    ctx: OrgContext, session: AsyncSession, *, limit: int = 100
) -> list[AccessReview]:
    """The organization's reviews, newest first."""
    await bind_org(session, ctx.org_id)
    statement = (
        select(AccessReview)
        .where(AccessReview.org_id == ctx.org_id)
        .order_by(col(AccessReview.created_at).desc(), col(AccessReview.id))
        .limit(limit)
    )
    return list((await session.exec(statement)).all())


async def store_report(
    ctx: OrgContext,
    session: AsyncSession,
    review_id: uuid.UUID,
    *,
    report: dict[str, Any],
    sha256: str,
) -> bool:
    """Keep a finished review's report; False when it had one already (a retried activity)."""
    review = await get_review(ctx, session, review_id)
    if review is None:
        raise LookupError(f"no access review {review_id}")
    if review.report is not None:
        return False
    review.report = report
    review.report_sha256 = sha256
    review.finished_at = utcnow()
    session.add(review)
    await session.flush()
    return True


async def recorded_event_data(
    ctx: OrgContext, session: AsyncSession, event_id: uuid.UUID
) -> dict[str, Any] | None:
    """The data of an audit event already written (a retried activity's), else None."""
    await bind_org(session, ctx.org_id)
    statement = select(AuditEvent.data).where(
        AuditEvent.org_id == ctx.org_id, AuditEvent.id == event_id
    )
    found = (await session.exec(statement)).first()
    return dict(found) if found is not None else None
