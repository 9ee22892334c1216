"""Runs: the organization's record of each workflow it started, the anchor for tenant checks.

A start is two short transactions around one Temporal call, and no connection is held across
that call: the row is committed as `starting` (with the caller's `Idempotency-Key`, if any), the
workflow is started, and the row is settled by a compare-and-set (`settle_start`: only a row
still `starting` moves). The reconciler settles rows left `starting` past its bound, under the
row's lock (`SKIP LOCKED`, so two reconcilers never judge one row). The API resumes a `starting`
row on a retry only while it is young (`may_resume_start`), and a start that Temporal took after
the reconciler had given the run up is found by the API's compare-and-set and revoked.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import Column, String, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlmodel import Field, SQLModel, col, select, update
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
    # One statement: a key another request holds is no error, only no row (no savepoint needed).
    statement = (
        pg_insert(Run)
        .values(**run.model_dump())
        .on_conflict_do_nothing(
            index_elements=["org_id", "idempotency_key"],
            index_where=text("idempotency_key IS NOT NULL"),
        )
        .returning(Run.id)  # type: ignore[arg-type]
    )
    inserted = (await session.exec(statement)).first()  # type: ignore[call-overload]
    return run if inserted is not None else None


async def run_by_idempotency_key(ctx: OrgContext, session: AsyncSession, key: str) -> Run | None:
    await bind_org(session, ctx.org_id)
    statement = select(Run).where(Run.org_id == ctx.org_id, Run.idempotency_key == key)
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


async def may_resume_start(
    ctx: OrgContext, session: AsyncSession, run_id: uuid.UUID, *, within_seconds: float
) -> bool:
    """Whether a retry may still start this `starting` run: it was created less than
    `within_seconds` ago by the database's clock (the reconciler judges rows by the same clock)."""
    await bind_org(session, ctx.org_id)
    young = await session.exec(  # type: ignore[call-overload]
        text(
            "SELECT 1 FROM runs WHERE org_id = :org_id AND id = :id AND start_state = 'starting' "
            "AND created_at > now() - make_interval(secs => :within)"
        ).bindparams(org_id=ctx.org_id, id=run_id, within=within_seconds)
    )
    return young.first() is not None


async def settle_start(
    ctx: OrgContext, session: AsyncSession, run_id: uuid.UUID, state: StartState
) -> tuple[Run | None, bool]:
    """Move a `starting` run to `state` in one statement; returns the row as it now stands
    (None if there is no such run) and whether this call moved it (False if something else
    settled it first)."""
    await bind_org(session, ctx.org_id)
    statement = (
        update(Run)
        .where(
            col(Run.org_id) == ctx.org_id,
            col(Run.id) == run_id,
            col(Run.start_state) == StartState.STARTING,
        )
        .values(start_state=state, settled_at=utcnow())
        .returning(Run)
    )
    moved = (
        (
            await session.exec(
                select(Run)  # type: ignore[call-overload]
                .from_statement(statement)
                .execution_options(populate_existing=True)
            )
        )
        .scalars()
        .first()
    )
    if moved is not None:
        return moved, True
    current = (
        select(Run)
        .where(Run.org_id == ctx.org_id, Run.id == run_id)
        .execution_options(populate_existing=True)
    )
    return (await session.exec(current)).first(), False


async def set_start_state(
    ctx: OrgContext, session: AsyncSession, run: Run, state: StartState
) -> None:
    if run.org_id != ctx.org_id:
        raise PermissionError("run belongs to another organization")
    run.start_state = state
    run.settled_at = utcnow()
    session.add(run)
    await session.flush()
