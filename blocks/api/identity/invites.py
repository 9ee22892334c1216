"""Routes for invites: admins invite an address with roles, list, re-send and revoke them (the
addressee accepts in `invite_acceptance`)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from fastapi import APIRouter, BackgroundTasks, Request
from pydantic import BaseModel, Field

from blocks.api.deps import (
    CanManageMembers,
    DbSession,
    record_change,
)
from blocks.api.errors import Problem, not_found
from blocks.api.identity.email_field import EmailAddress
from blocks.api.identity.members import refuse_unless_owner
from blocks.api.integrations.outbound_mail import public_link, queue_email, require_mail
from blocks.api.reference import examples as ex
from blocks.api.reference.examples import example
from blocks.api.schemas import StrictModel
from blocks.core.context import OrgContext
from blocks.core.roles import Role
from blocks.infra.integrations.email import Mailer
from blocks.infra.settings import Settings
from blocks.models.identity.invites import (
    Invite,
    InviteProblem,
    InviteState,
    create_invite,
    get_invite,
    invite_state,
    pending_invites,
    renew_invite,
    revoke_invite,
)
from blocks.models.identity.members import (
    canonical_roles,
    get_org,
    member_by_email,
)

router = APIRouter(prefix="/v1/invites", tags=["identity"])


class InviteIn(StrictModel):
    model_config = example(email=ex.APPROVER_EMAIL, roles=["approver"])

    email: EmailAddress
    roles: list[Role] = Field(min_length=1, max_length=len(Role), description="e.g. [approver]")


class InviteOut(BaseModel):
    """An invite as admins see it; its token exists only in the email."""

    model_config = example(
        id=ex.INVITE_ID,
        email=ex.APPROVER_EMAIL,
        roles=["approver"],
        state="pending",
        invited_by=ex.OWNER_ID,
        created_at=ex.CREATED,
        expires_at=ex.DEADLINE,
        accepted_at=None,
        accepted_by=None,
        revoked_at=None,
    )

    id: uuid.UUID
    email: str
    roles: list[str]
    state: InviteState
    invited_by: uuid.UUID | None
    created_at: datetime
    expires_at: datetime
    accepted_at: datetime | None
    accepted_by: uuid.UUID | None
    revoked_at: datetime | None


def _out(invite: Invite) -> InviteOut:
    return InviteOut(
        id=invite.id,
        email=invite.email,
        roles=list(invite.roles),
        state=invite_state(invite),
        invited_by=invite.invited_by,
        created_at=invite.created_at,
        expires_at=invite.expires_at,
        accepted_at=invite.accepted_at,
        accepted_by=invite.accepted_by,
        revoked_at=invite.revoked_at,
    )


def _settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def _not_pending(invite: Invite) -> Problem:
    return Problem(
        409,
        "Conflict",
        f"this invite is {invite_state(invite).value}, not pending",
        code="invite_not_pending",
    )


def refused(problem: InviteProblem) -> Problem:
    # 410 for every unusable token, as decision links answer: the link no longer leads anywhere.
    return Problem(410, "Invitation Not Usable", str(problem), code=problem.code)


async def audit_invite(
    request: Request,
    ctx: OrgContext,
    session: DbSession,
    action: str,
    invite: Invite,
    **data: object,
) -> None:
    # The invited address is personal data the append-only log could never erase: it stays in
    # the invites table; events name the invite by id.
    await record_change(
        request,
        ctx,
        session,
        action,
        target_type="invite",
        target_id=str(invite.id),
        data={"roles": list(invite.roles), **data},
    )


async def _refuse_members(ctx: OrgContext, session: DbSession, email: str) -> None:
    existing = await member_by_email(ctx, session, email)
    if existing is None:
        return
    if existing.membership.deactivated_at is not None:
        raise Problem(
            409,
            "Conflict",
            "this person is a deactivated member: reactivate them instead of inviting them",
            code="member_deactivated",
        )
    raise Problem(409, "Conflict", "this person is already a member", code="already_member")


async def _send(
    request: Request,
    ctx: OrgContext,
    session: DbSession,
    background: BackgroundTasks,
    mailer: Mailer,
    invite: Invite,
    token: str,
) -> None:
    org = await get_org(ctx, session)
    name = org.name if org else "an organization"
    days = _settings(request).invite_days
    queue_email(
        background,
        mailer,
        to=invite.email,
        subject=f"You are invited to {name} on Blocks",
        text=f"{ctx.actor_email or 'An administrator'} invited you to join {name} on Blocks "
        f"as {', '.join(invite.roles)}.\n"
        "Sign in (or sign up at "
        f"{public_link(request, '/auth/signup')}) with this address, then accept:\n"
        f"{public_link(request, '/auth/invite')}?token={token}\n"
        f"The link works once, for {days} days.\n",
    )


@router.post(
    "",
    status_code=201,
    response_model=InviteOut,
    summary="Invite someone to the organization",
    operation_id="invite_member",
)
async def invite(
    body: InviteIn,
    request: Request,
    ctx: CanManageMembers,
    session: DbSession,
    background: BackgroundTasks,
) -> InviteOut:
    """Invite an address with roles; an earlier pending invite of it here stops working."""
    mailer = require_mail(request)
    if Role.OWNER in body.roles:
        await refuse_unless_owner(request, ctx, "invite an owner")
    await _refuse_members(ctx, session, body.email)
    created, token, replaced = await create_invite(
        ctx,
        session,
        email=body.email,
        roles=[Role(r) for r in canonical_roles(body.roles)],
        lifetime=timedelta(days=_settings(request).invite_days),
    )
    await _send(request, ctx, session, background, mailer, created, token)
    await audit_invite(
        request,
        ctx,
        session,
        "invite.created",
        created,
        expires_at=created.expires_at.isoformat(),
        replaced_invite_ids=[str(i) for i in replaced],
    )
    return _out(created)


@router.get(
    "", response_model=list[InviteOut], summary="List pending invites", operation_id="list_invites"
)
async def invites(ctx: CanManageMembers, session: DbSession) -> list[InviteOut]:
    """Pending invites: not accepted, revoked or expired."""
    return [_out(i) for i in await pending_invites(ctx, session)]


@router.post(
    "/{invite_id}/resend",
    response_model=InviteOut,
    summary="Send an invite again",
    operation_id="resend_invite",
)
async def resend(
    invite_id: uuid.UUID,
    request: Request,
    ctx: CanManageMembers,
    session: DbSession,
    background: BackgroundTasks,
) -> InviteOut:
    """A new email with a new token, valid for the full period again; the old token stops."""
    found = await get_invite(ctx, session, invite_id)
    if found is None:
        raise not_found("invite")
    mailer = require_mail(request)
    if invite_state(found) not in (InviteState.PENDING, InviteState.EXPIRED):
        raise _not_pending(found)
    if Role.OWNER.value in found.roles:
        await refuse_unless_owner(request, ctx, "resend an invite with the owner role")
    await _refuse_members(ctx, session, found.email)
    token = await renew_invite(
        ctx, session, found, lifetime=timedelta(days=_settings(request).invite_days)
    )
    await _send(request, ctx, session, background, mailer, found, token)
    await audit_invite(
        request, ctx, session, "invite.resent", found, expires_at=found.expires_at.isoformat()
    )
    return _out(found)


@router.delete(
    "/{invite_id}",
    response_model=InviteOut,
    summary="Revoke an invite",
    operation_id="revoke_invite",
)
async def revoke(
    invite_id: uuid.UUID, request: Request, ctx: CanManageMembers, session: DbSession
) -> InviteOut:
    found = await get_invite(ctx, session, invite_id)
    if found is None:
        raise not_found("invite")
    if invite_state(found) is InviteState.REVOKED:
        return _out(found)  # already withdrawn: nothing changes, nothing to audit
    if not await revoke_invite(ctx, session, found):
        raise _not_pending(found)
    await audit_invite(request, ctx, session, "invite.revoked", found)
    return _out(found)
