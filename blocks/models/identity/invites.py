"""Invites: an emailed, single-use, expiring token that makes its addressee a member with roles."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import Column, ColumnElement, String, text, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from blocks.core.context import OrgContext
from blocks.core.roles import Role
from blocks.infra.crypto.hashing import issue_token, presented_secret_matches, split_token
from blocks.infra.db import bind_org
from blocks.models.base import new_id, org_fk_column, timestamp_column, user_fk_column, utcnow

INVITE_PREFIX = "inv"
# The SECURITY DEFINER lookups that run before an invite's organization is known (0013).
_FIND = text("SELECT * FROM blocks_find_invite(:lookup)")
_HAS_PENDING = text("SELECT blocks_has_pending_invite(:email)")


class Invite(SQLModel, table=True):
    __tablename__ = "invites"

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    # The table's own index is (org_id, email); no index of its own on org_id.
    org_id: uuid.UUID = Field(sa_column=org_fk_column(index=False))
    email: str = Field(max_length=320)
    # varchar[] in the migration, like memberships.roles.
    roles: list[str] = Field(sa_column=Column(ARRAY(String), nullable=False))
    lookup: str = Field(unique=True, max_length=32)
    secret_hash: str = Field(max_length=64, repr=False)
    invited_by: uuid.UUID | None = Field(default=None, sa_column=user_fk_column(nullable=True))
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    expires_at: datetime = Field(sa_column=timestamp_column())
    accepted_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))
    accepted_by: uuid.UUID | None = Field(default=None, sa_column=user_fk_column(nullable=True))
    revoked_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))


class InviteState(StrEnum):
    PENDING = "pending"
    ACCEPTED = "accepted"
    REVOKED = "revoked"
    EXPIRED = "expired"


def invite_state(invite: Invite, now: datetime | None = None) -> InviteState:
    if invite.accepted_at is not None:
        return InviteState.ACCEPTED
    if invite.revoked_at is not None:
        return InviteState.REVOKED
    if invite.expires_at <= (now or utcnow()):
        return InviteState.EXPIRED
    return InviteState.PENDING


class InviteProblem(Exception):
    """Why an invite token cannot be used: `code` for clients, the message for the person."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


_PROBLEMS = {
    InviteState.ACCEPTED: ("invite_used", "this invitation has already been accepted"),
    InviteState.REVOKED: (
        "invite_revoked",
        "this invitation was withdrawn; ask the organization for a new one",
    ),
    InviteState.EXPIRED: ("invite_expired", "this invitation has expired; ask for a new one"),
}


def usable_or_raise(invite: Invite) -> None:
    """Raise the InviteProblem that says why the invite cannot be accepted now, if one does."""
    state = invite_state(invite)
    if state is not InviteState.PENDING:
        raise InviteProblem(*_PROBLEMS[state])


def _pending(ctx: OrgContext) -> list[ColumnElement[bool]]:
    return [
        col(Invite.org_id) == ctx.org_id,
        col(Invite.accepted_at).is_(None),
        col(Invite.revoked_at).is_(None),
    ]


async def has_pending_invite(db: AsyncSession, email: str) -> bool:
    """Pre-tenant: whether any organization has a live invite for this address (with sign-up
    closed, only such an address may make an account). Row-level security keeps each
    organization's invites to itself, so the one cross-organization question goes through a
    SECURITY DEFINER function that answers only yes or no (migration 0013)."""
    result = await db.exec(_HAS_PENDING.bindparams(email=email))  # type: ignore[call-overload]
    return bool(result.scalar_one())


async def create_invite(
    ctx: OrgContext,
    db: AsyncSession,
    *,
    email: str,
    roles: list[Role],
    lifetime: timedelta,
) -> tuple[Invite, str, list[uuid.UUID]]:
    """A new invite and its token (shown once, in the email), and the ids of the earlier pending
    invites of this address in this organization, now revoked: only the newest link works."""
    await bind_org(db, ctx.org_id)
    now = utcnow()
    revoked = await db.exec(  # type: ignore[call-overload]
        update(Invite)
        .where(*_pending(ctx), col(Invite.email) == email)
        .values(revoked_at=now)
        .returning(col(Invite.id))
    )
    replaced = [row[0] for row in revoked.all()]
    issued = issue_token(INVITE_PREFIX)
    invite = Invite(
        org_id=ctx.org_id,
        email=email,
        roles=[role.value for role in roles],
        lookup=issued.lookup,
        secret_hash=issued.secret_hash,
        invited_by=ctx.user_id,
        created_at=now,
        expires_at=now + lifetime,
    )
    db.add(invite)
    await db.flush()
    return invite, issued.plaintext, replaced


async def pending_invites(ctx: OrgContext, db: AsyncSession) -> list[Invite]:
    """Invites not yet accepted, revoked or expired, newest first."""
    await bind_org(db, ctx.org_id)
    statement = (
        select(Invite)
        .where(*_pending(ctx), col(Invite.expires_at) > utcnow())
        .order_by(col(Invite.created_at).desc())
    )
    return list((await db.exec(statement)).all())


async def get_invite(ctx: OrgContext, db: AsyncSession, invite_id: uuid.UUID) -> Invite | None:
    """One invite of this organization (another organization's reads as missing)."""
    await bind_org(db, ctx.org_id)
    statement = select(Invite).where(Invite.org_id == ctx.org_id, Invite.id == invite_id)
    return (await db.exec(statement)).first()


async def renew_invite(
    ctx: OrgContext, db: AsyncSession, invite: Invite, *, lifetime: timedelta
) -> str:
    """A new token for the same invite, valid for a full lifetime again; the old one stops
    working (its lookup no longer exists)."""
    await bind_org(db, ctx.org_id)
    issued = issue_token(INVITE_PREFIX)
    invite.lookup = issued.lookup
    invite.secret_hash = issued.secret_hash
    invite.expires_at = utcnow() + lifetime
    db.add(invite)
    await db.flush()
    return issued.plaintext


async def revoke_invite(ctx: OrgContext, db: AsyncSession, invite: Invite) -> bool:
    """Withdraw a pending invite; False if it was already accepted or revoked meanwhile."""
    await bind_org(db, ctx.org_id)
    now = utcnow()
    result = await db.exec(  # type: ignore[call-overload]
        update(Invite).where(*_pending(ctx), col(Invite.id) == invite.id).values(revoked_at=now)
    )
    if not result.rowcount:
        return False
    await db.refresh(invite)
    return True


async def revoke_all_pending(ctx: OrgContext, db: AsyncSession) -> int:
    """Withdraw every pending invite of the organization (it is closing); how many."""
    await bind_org(db, ctx.org_id)
    result = await db.exec(  # type: ignore[call-overload]
        update(Invite).where(*_pending(ctx)).values(revoked_at=utcnow())
    )
    return int(result.rowcount or 0)


async def find_invite(db: AsyncSession, token: str) -> Invite:
    """The pre-tenant lookup: the invite a token names, whatever its state, or InviteProblem.

    Whoever holds the token finds the one row of its public lookup id through a SECURITY
    DEFINER function (`invites` has row-level security, migration 0013); only once the secret
    matches is the session bound to the invite's organization.
    """
    parts = split_token(token, INVITE_PREFIX)
    row = None
    if parts is not None:
        statement = select(Invite).from_statement(_FIND.bindparams(lookup=parts[0]))
        row = (await db.exec(statement)).scalars().first()  # type: ignore[call-overload]
    secret = parts[1] if parts else None
    if not presented_secret_matches(secret, row.secret_hash if row else None) or row is None:
        raise InviteProblem(
            "invite_invalid",
            "this invitation link is not valid (a newer one may have replaced it)",
        )
    await bind_org(db, row.org_id)
    return row


async def mark_accepted(
    ctx: OrgContext, db: AsyncSession, invite: Invite, user_id: uuid.UUID
) -> bool:
    """Use the invite once: False if a concurrent acceptance (or a revocation) came first, or it
    expired meanwhile. The row lock of this UPDATE makes a second acceptance wait, then miss."""
    await bind_org(db, ctx.org_id)
    now = utcnow()
    result = await db.exec(  # type: ignore[call-overload]
        update(Invite)
        .where(*_pending(ctx), col(Invite.id) == invite.id, col(Invite.expires_at) > now)
        .values(accepted_at=now, accepted_by=user_id)
    )
    if not result.rowcount:
        return False
    await db.refresh(invite)
    return True
