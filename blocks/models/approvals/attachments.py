"""Attachments: files on a run, their bytes sealed under the organization's data key; and the
organization's allow-list of the kinds it accepts.

The bytes are sealed as they arrive (AES-256-GCM under the organization's live data key, nonce
first, associated data binding organization, run and attachment) and opened only for a download.
Once the organization's keys are destroyed they never open again. The row keeps the plain bytes'
SHA-256 for the audit log.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime

from cryptography.exceptions import InvalidTag
from sqlalchemy import BigInteger, Column, Index, LargeBinary, String
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlmodel import Field, SQLModel, col, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from blocks.core.context import OrgContext
from blocks.infra.content.file_types import ALL_KINDS, DetectedFile, FileKind
from blocks.infra.db import bind_org
from blocks.models.base import new_id, org_fk_column, timestamp_column, user_fk_column, utcnow
from blocks.models.keys.org_keys import live_org_key, org_key_by_id


class Attachment(SQLModel, table=True):
    __tablename__ = "attachments"
    __table_args__ = (Index("ix_attachments_run", "org_id", "run_id", "created_at"),)

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    org_id: uuid.UUID = Field(sa_column=org_fk_column(index=False))
    run_id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), nullable=False))
    step_id: str | None = Field(default=None, max_length=200)
    decision: str | None = Field(default=None, max_length=8)
    decided_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))
    file_name: str = Field(max_length=200)
    kind: str = Field(max_length=8)
    media_type: str = Field(max_length=100)
    size_bytes: int = Field(sa_column=Column(BigInteger, nullable=False))
    sha256: str = Field(max_length=64)
    key_id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), nullable=False))
    sealed: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    uploaded_by: uuid.UUID = Field(sa_column=user_fk_column())
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())

    def __repr__(self) -> str:
        # Never the sealed bytes, even in a traceback's locals.
        return f"Attachment(id={self.id}, run_id={self.run_id}, file_name={self.file_name!r})"


class AttachmentSettings(SQLModel, table=True):
    __tablename__ = "attachment_settings"

    org_id: uuid.UUID = Field(sa_column=org_fk_column(index=False, primary_key=True))
    allowed_kinds: list[str] = Field(sa_column=Column(ARRAY(String), nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())


class AttachmentUnavailable(LookupError):
    """The sealed bytes do not open: the organization's keys were destroyed, or the row altered."""


def _aad(attachment: Attachment) -> bytes:
    return f"blocks.attachment.v1|{attachment.org_id}|{attachment.run_id}|{attachment.id}".encode()


async def add_attachment(
    ctx: OrgContext,
    session: AsyncSession,
    *,
    run_id: uuid.UUID,
    file_name: str,
    detected: DetectedFile,
    content: bytes,
    uploaded_by: uuid.UUID,
) -> Attachment:
    """A new attachment of `run_id`, its bytes sealed under the organization's live key."""
    await bind_org(session, ctx.org_id)
    attachment = Attachment(
        org_id=ctx.org_id,
        run_id=run_id,
        file_name=file_name,
        kind=detected.kind.value,
        media_type=detected.media_type,
        size_bytes=len(content),
        sha256=hashlib.sha256(content).hexdigest(),
        key_id=uuid.UUID(int=0),
        sealed=b"",
        uploaded_by=uploaded_by,
    )
    key = await live_org_key(session, ctx.org_id)
    attachment.key_id = key.key_id
    attachment.sealed = key.seal(content, _aad(attachment))
    session.add(attachment)
    await session.flush()
    return attachment


async def run_attachments(
    ctx: OrgContext, session: AsyncSession, run_id: uuid.UUID
) -> list[Attachment]:
    """The run's attachments, oldest first (the sealed bytes are loaded too; lists are short)."""
    await bind_org(session, ctx.org_id)
    statement = (
        select(Attachment)
        .where(Attachment.org_id == ctx.org_id, Attachment.run_id == run_id)
        .order_by(col(Attachment.created_at), col(Attachment.id))
    )
    return list((await session.exec(statement)).all())


async def get_attachment(
    ctx: OrgContext, session: AsyncSession, run_id: uuid.UUID, attachment_id: uuid.UUID
) -> Attachment | None:
    """One attachment of the run (None: unknown, another run's or another organization's)."""
    await bind_org(session, ctx.org_id)
    statement = select(Attachment).where(
        Attachment.org_id == ctx.org_id,
        Attachment.run_id == run_id,
        Attachment.id == attachment_id,
    )
    return (await session.exec(statement)).first()


async def attachments_by_ids(
    ctx: OrgContext, session: AsyncSession, run_id: uuid.UUID, ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, Attachment]:
    """The run's attachments among `ids`, by id (missing ids are simply absent)."""
    await bind_org(session, ctx.org_id)
    if not ids:
        return {}
    statement = select(Attachment).where(
        Attachment.org_id == ctx.org_id,
        Attachment.run_id == run_id,
        col(Attachment.id).in_(list(ids)),
    )
    return {a.id: a for a in (await session.exec(statement)).all()}


async def mark_decided(
    ctx: OrgContext,
    session: AsyncSession,
    attachment_ids: Iterable[uuid.UUID],
    *,
    step_id: str,
    decision: str,
) -> None:
    """Record the decision that named these attachments (the first decision that did)."""
    await bind_org(session, ctx.org_id)
    ids = list(attachment_ids)
    if not ids:
        return
    statement = (
        update(Attachment)
        .where(
            col(Attachment.org_id) == ctx.org_id,
            col(Attachment.id).in_(ids),
            col(Attachment.step_id).is_(None),
        )
        .values(step_id=step_id, decision=decision, decided_at=utcnow())
    )
    await session.exec(statement)  # type: ignore[call-overload]


async def open_attachment(ctx: OrgContext, session: AsyncSession, attachment: Attachment) -> bytes:
    """The attachment's bytes in clear, for one download."""
    await bind_org(session, ctx.org_id)
    key = await org_key_by_id(session, ctx.org_id, attachment.key_id)
    sealed = attachment.sealed
    try:
        return key.open_sealed(sealed, _aad(attachment))
    except InvalidTag as error:
        raise AttachmentUnavailable(
            f"attachment {attachment.id} does not open (it was altered or moved)"
        ) from error


async def allowed_kinds(ctx: OrgContext, session: AsyncSession) -> frozenset[FileKind]:
    """The kinds the organization accepts (every kind, until an admin narrows the list)."""
    await bind_org(session, ctx.org_id)
    row = await session.get(AttachmentSettings, ctx.org_id)
    if row is None:
        return ALL_KINDS
    # A kind a later version no longer knows is dropped, not an error.
    known = {kind.value for kind in FileKind}
    return frozenset(FileKind(kind) for kind in row.allowed_kinds if kind in known)


async def set_allowed_kinds(
    ctx: OrgContext, session: AsyncSession, kinds: Iterable[FileKind]
) -> frozenset[FileKind]:
    await bind_org(session, ctx.org_id)
    values = sorted({kind.value for kind in kinds})
    now = utcnow()
    statement = (
        pg_insert(AttachmentSettings)
        .values(org_id=ctx.org_id, allowed_kinds=values, updated_at=now)
        .on_conflict_do_update(
            index_elements=["org_id"], set_={"allowed_kinds": values, "updated_at": now}
        )
    )
    await session.exec(statement)  # type: ignore[call-overload]
    return frozenset(FileKind(v) for v in values)
