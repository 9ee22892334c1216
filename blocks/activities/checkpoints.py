"""Checkpoint activities: sign the chain head of every organization with new events (periodic),
or of one organization (on demand). The signing key is the worker's alone."""

from __future__ import annotations

import uuid

from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession
from temporalio import activity

from blocks.core.context import AuthMethod, OrgContext, OrgId
from blocks.infra.crypto.signing import CheckpointSigner
from blocks.models.audit.checkpoints import create_checkpoint

_UNSIGNED = text("SELECT org_id FROM blocks_orgs_with_unsigned_events(:limit)")
# A round visits at most this many organizations; any beyond wait for the next round.
_ORGS_PER_ROUND = 100_000


class CheckpointActivities:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], signer: CheckpointSigner
    ) -> None:
        self._sessions = sessions
        self._signer = signer

    @activity.defn(name="blocks.audit.checkpoint_all")
    async def checkpoint_all(self) -> int:
        """Returns how many checkpoints were written; organizations with no new events get none."""
        async with self._sessions() as session, session.begin():
            # The one cross-tenant read: ids of organizations whose chain head is past their last
            # checkpoint (migration 0024), with nothing else of theirs; idle ones are not visited.
            rows = await session.exec(_UNSIGNED.bindparams(limit=_ORGS_PER_ROUND))  # type: ignore[call-overload]
            org_ids = [row[0] for row in rows.all()]
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
