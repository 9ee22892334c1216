"""Runs: the organization's record of each workflow it started, the anchor for tenant checks."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import Column, String
from sqlmodel import Field, SQLModel, select
from sqlmodel.ext.asyncio.session import AsyncSession

from blocks.core.context import OrgContext
from blocks.infra.db import bind_org
from blocks.models.base import new_id, org_fk_column, timestamp_column, user_fk_column, utcnow


class StartState(StrEnum):
    STARTING = "starting"
    STARTED = "started"
    START_FAILED = "start_failed"


class Run(SQLModel, table=True):
    __tablename__ = "runs"

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    org_id: uuid.UUID = Field(sa_column=org_fk_column())
    workflow_name: str = Field(max_length=200)
    workflow_id: str = Field(unique=True, max_length=200)
    requested_by: uuid.UUID | None = Field(default=None, sa_column=user_fk_column(nullable=True))
    start_state: str = Field(sa_column=Column(String(20), nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column(index=True))


def workflow_id_for(run_id: uuid.UUID) -> str:
    return f"run-{run_id}"


async def create_run(ctx: OrgContext, session: AsyncSession, *, workflow_name: str) -> Run:
    await bind_org(session, ctx.org_id)
    run_id = new_id()
    run = Run(
        id=run_id,
        org_id=ctx.org_id,
        workflow_name=workflow_name,
        workflow_id=workflow_id_for(run_id),
        requested_by=ctx.user_id,
        start_state=StartState.STARTING,
    )
    session.add(run)
    await session.flush()
    return run


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
    session.add(run)
    await session.flush()
