"""Accepting an invite: its signed-in addressee joins once, with the invited roles; every refusal
is audited (in the platform chain, and in the invite's organization once it is known)."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from sqlalchemy.exc import IntegrityError

from blocks.api import rate_limit
from blocks.api.deps import DbSession, Person
from blocks.api.errors import Problem
from blocks.api.identity.invites import audit_invite, refused
from blocks.api.reference import examples as ex
from blocks.api.reference.examples import example
from blocks.api.schemas import StrictModel
from blocks.api.security_audit import record_security_event
from blocks.core.audit.records import Outcome
from blocks.core.context import AuthMethod, OrgContext, OrgId
from blocks.core.roles import parse_roles
from blocks.models.identity.invites import (
    Invite,
    InviteProblem,
    find_invite,
    mark_accepted,
    usable_or_raise,
)
from blocks.models.identity.members import add_membership, get_member
from blocks.models.identity.orgs import Organization

router = APIRouter(prefix="/v1/invites", tags=["identity"])


class AcceptIn(StrictModel):
    model_config = example(token=ex.INVITE_TOKEN)

    token: str = Field(min_length=1, max_length=200, description="inv_... from the email")


class AcceptedOut(BaseModel):
    model_config = example(
        org_id=ex.ORG_ID,
        org_slug=ex.ORG_SLUG,
        org_name=ex.ORG_NAME,
        roles=["approver"],
        next="POST /v1/auth/org with this org_id to enter the organization",
    )

    org_id: uuid.UUID
    org_slug: str
    org_name: str
    roles: list[str]
    next: str = Field(description="What to do now: enter the organization")


async def _refuse_acceptance(
    request: Request,
    problem: Problem,
    *,
    user_id: uuid.UUID,
    email: str,
    invite: Invite | None,
    outcome: Outcome = Outcome.FAILURE,
) -> Problem:
    """Audit a refused acceptance (platform chain, and the invite's organization once known) and
    hand back the problem to raise."""
    await record_security_event(
        request,
        action="invite.accept_refused",
        outcome=outcome,
        reason=f"{problem.code}: {problem.detail}",
        user_id=user_id,
        email=email,
        target_type="invite" if invite else "route",
        target_id=str(invite.id) if invite else f"{request.method} {request.url.path}",
        org_ids=[invite.org_id] if invite else (),
    )
    return problem


async def _open_org(db: DbSession, invite: Invite) -> Organization:
    org = await db.get(Organization, invite.org_id)
    if org is None or org.closed_at is not None:
        # Closing revokes pending invites too; this covers one racing the closure.
        raise InviteProblem("invite_revoked", "this organization has been closed")
    return org


@router.post(
    "/accept",
    response_model=AcceptedOut,
    summary="Accept an invite addressed to you",
    operation_id="accept_invite",
)
async def accept(signed: Person, body: AcceptIn, request: Request, db: DbSession) -> AcceptedOut:
    """Accept an invite: the caller must be signed in (session cookie) as its addressee."""
    await rate_limit.enforce_per_address(request, "token_ip")
    user = signed.user
    try:
        found = await find_invite(db, body.token)
    except InviteProblem as problem:
        raise await _refuse_acceptance(
            request, refused(problem), user_id=user.id, email=user.email, invite=None
        ) from None
    # The addressee only: checked before the invite's state, which is none of anyone else's
    # business. Addresses are stored normalized (lowercase) on both sides.
    if found.email != user.email.lower():
        raise await _refuse_acceptance(
            request,
            Problem(
                403,
                "Forbidden",
                "this invitation was sent to another email address: sign in as that address "
                "to accept it",
                code="invite_other_address",
            ),
            user_id=user.id,
            email=user.email,
            invite=found,
            outcome=Outcome.DENIED,
        )
    ctx = OrgContext(
        org_id=OrgId(found.org_id),
        user_id=user.id,
        roles=parse_roles(found.roles),
        auth=AuthMethod.SESSION,
        actor_email=user.email,
        credential_id=signed.session.id,
    )
    try:
        usable_or_raise(found)
        org = await _open_org(db, found)
    except InviteProblem as problem:
        raise await _refuse_acceptance(
            request, refused(problem), user_id=user.id, email=user.email, invite=found
        ) from None
    # Single use, taken first: a concurrent acceptance of the same token waits on this row, then
    # misses, and is told so (not that it is now a member). Refusals below roll the use back.
    if not await mark_accepted(ctx, db, found, user.id):
        raise await _refuse_acceptance(
            request,
            refused(InviteProblem("invite_used", "this invitation has already been used")),
            user_id=user.id,
            email=user.email,
            invite=found,
        )
    existing = await get_member(ctx, db, user.id)
    if existing is not None:
        deactivated = existing.membership.deactivated_at is not None
        raise await _refuse_acceptance(
            request,
            Problem(
                409,
                "Conflict",
                "your membership here was deactivated: an administrator must reactivate it"
                if deactivated
                else "you are already a member of this organization",
                code="member_deactivated" if deactivated else "already_member",
            ),
            user_id=user.id,
            email=user.email,
            invite=found,
        )
    try:
        async with db.begin_nested():
            await add_membership(ctx, db, user_id=user.id, roles=list(found.roles))
    except IntegrityError:
        # Another invite of the same address was accepted at the same moment.
        raise Problem(
            409, "Conflict", "you are already a member of this organization", code="already_member"
        ) from None
    await audit_invite(request, ctx, db, "invite.accepted", found, user_id=str(user.id))
    return AcceptedOut(
        org_id=org.id,
        org_slug=org.slug,
        org_name=org.name,
        roles=list(found.roles),
        next="POST /v1/auth/org with this org_id to enter the organization",
    )
