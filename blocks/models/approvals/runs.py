"""Runs: the organization's record of each workflow it started, the anchor for tenant checks.

A start is two transactions: the row is committed as `starting` (with the caller's
`Idempotency-Key`, if any), then, holding the row's lock, the workflow is started and the row
marked `started`. The lock is what keeps the API and the reconciler apart: the reconciler settles
only rows it can lock at once (`SKIP LOCKED`), so a start under way is never abandoned under it.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import Column, String, text
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, SQLModel, select
from sqlmodel.ext.asyncio.session import AsyncSession

from blocks.core.context import OrgContext
from blocks.infra.db import bind_org
from blocks.models.base import new_id, org_fk_column, timestamp_column, user_fk_column, utcnow


class StartState(StrEnum):
    STARTING = "starting"
    STARTED = "started"
    START_FAILED = "start_failed"  # Temporal refused the start for good (not a transient error)
    ABANDONED = "abandoned"  # no workflow was started within the bound; the reconciler closed it


class Run(SQLModel, table=True):
    __tablename__ = "runs"

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    org_id: uuid.UUID = Field(sa_column=org_fk_column())
    workflow_name: str = Field(max_length=200)
    # The catalogue's version of the workflow when the run was started (None before 0015).
    workflow_version: str | None = Field(default=None, max_length=50)
    workflow_id: str = Field(unique=True, max_length=200)
    requested_by: uuid.UUID | None = Field(default=None, sa_column=user_fk_column(nullable=True))
    start_state: str = Field(sa_column=Column(String(20), nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column(index=True))
    idempotency_key: str | None = Field(default=None, max_length=255)
    request_hash: str | None = Field(default=None, max_length=64)
    settled_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))


def workflow_id_for(run_id: uuid.UUID) -> str:
    return f"run-{run_id}"


async def create_run(
    ctx: OrgContext,
    session: AsyncSession,
    *,
    workflow_name: str,
    workflow_version: str | None = None,
    idempotency_key: str | None = None,
    request_hash: str | None = None,
) -> Run | None:
    """A new `starting` run, or None when another request already holds `idempotency_key`
    (a concurrent retry): the caller reads that run with `run_by_idempotency_key`."""
    await bind_org(session, ctx.org_id)
    run_id = new_id()
    run = Run(
        id=run_id,
        org_id=ctx.org_id,
        workflow_name=workflow_name,
        workflow_version=workflow_version,
        workflow_id=workflow_id_for(run_id),
        requested_by=ctx.user_id,
        start_state=StartState.STARTING,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
    )
    try:
        async with session.begin_nested():
            session.add(run)
    except IntegrityError:
        if idempotency_key is None:
            raise
        return None
    return run


async def run_by_idempotency_key(ctx: OrgContext, session: AsyncSession, key: str) -> Run | None:
    await bind_org(session, ctx.org_id)
    statement = select(Run).where(Run.org_id == ctx.org_id, Run.idempotency_key == key)
    return (await session.exec(statement)).first()


async def lock_run(ctx: OrgContext, session: AsyncSession, run_id: uuid.UUID) -> Run | None:
    """The run, locked for this transaction (waits for a reconciler that holds it)."""
    await bind_org(session, ctx.org_id)
    statement = (
        select(Run)
        .where(Run.org_id == ctx.org_id, Run.id == run_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return (await session.exec(statement)).first()


async def unsettled_start_ids(
    session: AsyncSession, *, older_than_seconds: float, limit: int
) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """(org id, run id) of runs left `starting` longer than the bound, in every organization.

    The one cross-tenant read of runs, for the reconciler only: the SECURITY DEFINER function
    (migration 0014) returns those two ids of `starting` rows and nothing else.
    """
    rows = await session.exec(  # type: ignore[call-overload]
        text("SELECT org_id, run_id FROM blocks_unsettled_run_starts(:bound, :limit)").bindparams(
            bound=older_than_seconds, limit=limit
        )
    )
    return [(row[0], row[1]) for row in rows.all()]


async def lock_unsettled_start(
    ctx: OrgContext, session: AsyncSession, run_id: uuid.UUID
) -> Run | None:
    """The run, locked, if it is still `starting` and no one else holds it (else None)."""
    await bind_org(session, ctx.org_id)
    statement = (
        select(Run)
        .where(
            Run.org_id == ctx.org_id,
            Run.id == run_id,
            Run.start_state == StartState.STARTING,
        )
        .with_for_update(skip_locked=True)
        .execution_options(populate_existing=True)
    )
    return (await session.exec(statement)).first()


async def get_run(ctx: OrgContext, session: AsyncSession, run_id: uuid.UUID) -> Run | None:
    await bind_org(session, ctx.org_id)
    statement = select(Run).where(Run.org_id == ctx.org_id, Run.id == run_id)
    return (await session.exec(statement)).first()


async def set_start_state(
    ctx: OrgContext, session: AsyncSession, run: Run, state: StartState
) -> None:
    if run.org_id != ctx.org_id:
        raise PermissionError("run belongs to another organization")
    run.start_state = state
    run.settled_at = utcnow()
    session.add(run)
    await session.flush()
