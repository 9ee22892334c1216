"""Migration 0016 on a database with history: steps open before it are backfilled from the audit
log, and events written the old way (by a worker not yet upgraded) still open rows.

A PostgreSQL of its own, migrated to 0015 first, so the session's database stays at head.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import select

from blocks.core.context import AuthMethod, OrgContext, OrgId
from blocks.core.roles import Role
from blocks.infra.db import bind_org, session_factory
from blocks.infra.embedded.postgres import PostgresCredentials
from blocks.infra.migrate import upgrade_database
from blocks.models.approvals.pending_steps import PendingStep
from blocks.models.approvals.runs import create_run
from blocks.models.audit.combining import CombiningAppender
from blocks.models.audit.content import ContentKeys
from tests.integration.step_events import StepRun, policy, workflow_ctx
from tests.support import migrated_database


@pytest.fixture(scope="module")
async def at_0015(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[PostgresCredentials, AsyncEngine]]:
    async with migrated_database(
        tmp_path_factory.mktemp("backfill-pg"), revision="0015", pool_size=10
    ) as database:
        yield database


async def _rows(engine: AsyncEngine, ctx: OrgContext) -> dict[str, PendingStep]:
    async with session_factory(engine)() as session, session.begin():
        await bind_org(session, ctx.org_id)
        return {row.run_id: row for row in (await session.exec(select(PendingStep))).all()}


async def test_open_steps_are_backfilled_and_old_events_still_project(
    at_0015: tuple[PostgresCredentials, AsyncEngine],
) -> None:
    credentials, engine = at_0015
    sessions = session_factory(engine)
    # In SQL as 0015 has the tables (the models know the columns of head).
    org_id, owner_id = uuid.uuid4(), uuid.uuid4()
    async with sessions() as session, session.begin():
        await session.exec(  # type: ignore[call-overload]
            text(
                "INSERT INTO organizations (id, slug, name, created_at) "
                "VALUES (:id, 'backfill', 'Backfill', now())"
            ).bindparams(id=org_id)
        )
        await session.exec(  # type: ignore[call-overload]
            text(
                "INSERT INTO users (id, email, display_name, created_at) "
                "VALUES (:id, 'o@b.test', 'O', now())"
            ).bindparams(id=owner_id)
        )
        await bind_org(session, org_id)
        await session.exec(  # type: ignore[call-overload]
            text(
                "INSERT INTO memberships (id, org_id, user_id, roles, created_at) "
                "VALUES (:id, :org, :owner, ARRAY['owner'], now())"
            ).bindparams(id=uuid.uuid4(), org=org_id, owner=owner_id)
        )
    ctx = workflow_ctx(org_id)
    as_owner = OrgContext(
        org_id=OrgId(org_id), user_id=owner_id, roles=(Role.OWNER,), auth=AuthMethod.API_KEY
    )

    async def started_run(workflow: str) -> StepRun:
        """A run started through the API: its `runs` row names the workflow and requester."""
        async with sessions() as session, session.begin():
            row = await create_run(as_owner, session, workflow_name=workflow)
        assert row is not None
        return StepRun(requester=str(owner_id), workflow=workflow, run_id=str(row.id))

    waiting, voted, decided, finished = [await started_run(f"wf_{n}") for n in range(4)]
    unrecorded = StepRun(requester=None)  # started elsewhere: no `runs` row
    anyone = policy(roles=["approver"])
    appender = CombiningAppender(sessions)
    for run in (waiting, voted, decided, finished, unrecorded):
        await appender.append(
            ctx, [run.started(), run.opened("review", anyone, legacy=True, untitled=True)]
        )
    await appender.append(ctx, [voted.decided("review", "u1")])
    await appender.append(ctx, [decided.decided("review", "u1", state="approved")])
    await appender.append(ctx, [decided.closed("review"), finished.completed()])

    await asyncio.to_thread(upgrade_database, credentials.url(owner=True), "head")

    rows = await _rows(engine, ctx)
    assert set(rows) == {waiting.run_id, voted.run_id, unrecorded.run_id}
    assert (rows[waiting.run_id].workflow, rows[waiting.run_id].requested_by) == (
        "wf_0",
        str(owner_id),
    )
    assert rows[voted.run_id].deciders == ["u1"]
    assert rows[waiting.run_id].approvers == ["role:approver"]
    assert (rows[unrecorded.run_id].workflow, rows[unrecorded.run_id].requested_by) == (None, None)

    # A worker not yet upgraded writes the opening without workflow and requester: the trigger
    # finds them in the run's row.
    late = await started_run("wf_late")
    await appender.append(ctx, [late.started(), late.opened("review", anyone, legacy=True)])
    row = (await _rows(engine, ctx))[late.run_id]
    assert (row.workflow, row.requested_by) == ("wf_late", str(owner_id))
    async with sessions() as session, session.begin():
        await bind_org(session, org_id)
        assert await ContentKeys(session, org_id).reveal(None, "title", row.title) == "Step review"
