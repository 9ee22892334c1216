"""Checkpoint activities: sign the chain head of every organization with new events (periodic),
or of one organization (on demand). The signing key is the worker's alone."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession
from temporalio import activity

from blocks.core.context import AuthMethod, OrgContext, OrgId
from blocks.infra.crypto.signing import CheckpointSigner
from blocks.models.audit.checkpoints import create_checkpoint
from blocks.models.identity.orgs import Organization


class CheckpointActivities:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], signer: CheckpointSigner
    ) -> None:
        self._sessions = sessions
        self._signer = signer

    @activity.defn(name="blocks.audit.checkpoint_all")
    async def checkpoint_all(self) -> int:
        """Returns how many checkpoints were written; organizations with no new events get none."""
        async with self._sessions() as session:
            # The one cross-tenant read: the list of organizations, with nothing else of theirs.
            org_ids = list((await session.exec(select(Organization.id))).all())
        written = 0
        for org_id in org_ids:
            ctx = OrgContext(org_id=OrgId(org_id), user_id=None, roles=(), auth=AuthMethod.SYSTEM)
            # One transaction (and session) per org: a session is bound to a single tenant.
            async with self._sessions() as session, session.begin():
                if await create_checkpoint(ctx, session, self._signer, only_if_new=True):
                    written += 1
            activity.heartbeat(written)
        return written

    @activity.defn(name="blocks.audit.checkpoint_org")
    async def checkpoint_org(self, org_id: str) -> str:
        """Sign one organization's chain head now; returns the checkpoint's id."""
        ctx = OrgContext(
            org_id=OrgId(uuid.UUID(org_id)), user_id=None, roles=(), auth=AuthMethod.SYSTEM
        )
        async with self._sessions() as session, session.begin():
            checkpoint = await create_checkpoint(ctx, session, self._signer)
        assert checkpoint is not None  # only_if_new is off: a checkpoint is always made
        return str(checkpoint.id)
