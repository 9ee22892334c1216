"""Signed checkpoints of each organization's audit chain head, and reading them back."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, Column, String, Text, text
from sqlmodel import Field, SQLModel, select
from sqlmodel.ext.asyncio.session import AsyncSession

from blocks.core.audit.chain import GENESIS_HASH
from blocks.core.audit.checkpoints import CheckpointClaim
from blocks.core.context import OrgContext
from blocks.infra.crypto.signing import CheckpointSigner
from blocks.infra.db import bind_org
from blocks.models.base import new_id, org_fk_column, timestamp_column, utcnow


class AuditCheckpoint(SQLModel, table=True):
    __tablename__ = "audit_checkpoints"

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    org_id: uuid.UUID = Field(sa_column=org_fk_column(index=False))
    seq: int = Field(sa_column=Column(BigInteger, nullable=False))
    hash: str = Field(sa_column=Column(String(64), nullable=False))
    signed_at: datetime = Field(sa_column=timestamp_column())
    key_id: str = Field(sa_column=Column(String(64), nullable=False))
    signature: str = Field(sa_column=Column(Text, nullable=False))

    def claim(self) -> CheckpointClaim:
        return CheckpointClaim(
            org_id=str(self.org_id),
            seq=self.seq,
            hash=self.hash,
            signed_at=self.signed_at,
            key_id=self.key_id,
        )


async def create_checkpoint(
    ctx: OrgContext, session: AsyncSession, signer: CheckpointSigner, *, only_if_new: bool = False
) -> AuditCheckpoint | None:
    """Sign the org's current chain head. With `only_if_new`, None when nothing was appended
    since the last checkpoint (the periodic job uses that)."""
    await bind_org(session, ctx.org_id)
    head = (
        await session.exec(  # type: ignore[call-overload]
            text("SELECT seq, hash FROM audit_chain_heads WHERE org_id = :org_id").bindparams(
                org_id=ctx.org_id
            )
        )
    ).first()
    seq, head_hash = (int(head.seq), str(head.hash)) if head else (0, GENESIS_HASH)
    if only_if_new:
        last = await latest_checkpoint(ctx, session)
        if (last is None and seq == 0) or (last is not None and last.seq >= seq):
            return None
    claim = CheckpointClaim(
        org_id=str(ctx.org_id), seq=seq, hash=head_hash, signed_at=utcnow(), key_id=signer.key_id
    )
    checkpoint = AuditCheckpoint(
        org_id=ctx.org_id,
        seq=claim.seq,
        hash=claim.hash,
        signed_at=claim.signed_at,
        key_id=claim.key_id,
        signature=signer.sign(claim.message()),
    )
    session.add(checkpoint)
    await session.flush()
    return checkpoint


async def latest_checkpoint(ctx: OrgContext, session: AsyncSession) -> AuditCheckpoint | None:
    await bind_org(session, ctx.org_id)
    statement = (
        select(AuditCheckpoint)
        .where(AuditCheckpoint.org_id == ctx.org_id)
        .order_by(AuditCheckpoint.seq.desc(), AuditCheckpoint.signed_at.desc())  # type: ignore[attr-defined]
        .limit(1)
    )
    return (await session.exec(statement)).first()


async def list_checkpoints(
    ctx: OrgContext,
    session: AsyncSession,
    *,
    after_seq: int = -1,
    up_to_seq: int | None = None,
    limit: int = 1000,
) -> list[AuditCheckpoint]:
    await bind_org(session, ctx.org_id)
    statement = (
        select(AuditCheckpoint)
        .where(AuditCheckpoint.org_id == ctx.org_id, AuditCheckpoint.seq > after_seq)
        .order_by(AuditCheckpoint.seq, AuditCheckpoint.signed_at)  # type: ignore[arg-type]
        .limit(limit)
    )
    if up_to_seq is not None:
        statement = statement.where(AuditCheckpoint.seq <= up_to_seq)
    return list((await session.exec(statement)).all())


async def get_checkpoint(
    ctx: OrgContext, session: AsyncSession, checkpoint_id: uuid.UUID
) -> AuditCheckpoint | None:
    await bind_org(session, ctx.org_id)
    statement = select(AuditCheckpoint).where(
        AuditCheckpoint.org_id == ctx.org_id, AuditCheckpoint.id == checkpoint_id
    )
    return (await session.exec(statement)).first()
