"""The audit activity: appends a workflow's events through the same path the API uses."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession
from temporalio import activity

from blocks.core.audit.records import AuditBatch, AuditRecorded
from blocks.core.context import AuthMethod, OrgContext, OrgId
from blocks.models.audit.combining import CombiningAppender


class AuditActivities:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], *, delivers_notices: bool = True
    ) -> None:
        # Whether this worker has a notification channel: without one, the workflows it runs
        # start no notice activity (one activity task and one workflow task less per step).
        self._delivers_notices = delivers_notices
        # Many runs of one organization flush at once (a burst of decisions): their batches
        # share transactions instead of queueing on the chain's head one commit at a time.
        self._appender = CombiningAppender(sessions)

    @activity.defn(name="blocks.audit.record")
    async def record(self, batch: AuditBatch) -> AuditRecorded | int:
        # `| int`: what it answered before, as histories recorded then replay it.
        # The org comes from the run's own input, which the API resolved when it started the run.
        ctx = OrgContext(
            org_id=OrgId(uuid.UUID(batch.org_id)), user_id=None, roles=(), auth=AuthMethod.WORKFLOW
        )
        await self._appender.append(ctx, batch.records)
        return AuditRecorded(count=len(batch.records), notices=self._delivers_notices)
