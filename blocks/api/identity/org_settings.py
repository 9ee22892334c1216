"""Routes for the organization itself: its settings, security rule, ownership transfer, closing."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field, StrictBool

from blocks.api.deps import (
    CanManageSecurity,
    CanOwn,
    CanReadOrg,
    DbSession,
    TemporalClient,
    record_change,
)
from blocks.api.errors import Problem, invalid_field, not_found
from blocks.api.identity.members import MEMBER_EXAMPLE, MemberOut, member_out
from blocks.api.reference import examples as ex
from blocks.api.reference.examples import example
from blocks.api.schemas import StrictModel
from blocks.core.context import OrgContext
from blocks.core.roles import Role
from blocks.infra.temporal.org_runs import terminate_org_runs
from blocks.models.identity.members import (
    canonical_roles,
    close_org,
    get_member,
    get_org,
    lock_org,
    set_require_2fa,
    set_roles,
)
from blocks.models.identity.orgs import Organization, User
from blocks.models.keys.org_keys import destroy_org_keys, process_org_keys

router = APIRouter(prefix="/v1/org", tags=["identity"])

_ORG = {
    "id": ex.ORG_ID,
    "slug": ex.ORG_SLUG,
    "name": ex.ORG_NAME,
    "require_2fa": True,
    "link_only_decisions": False,
    "created_at": ex.CREATED,
    "closed_at": None,
}

Confirmation = Annotated[
    str,
    Field(min_length=1, max_length=63, description="The organization's slug, typed out to confirm"),
]


class OrgOut(BaseModel):
    model_config = example(**_ORG)

    id: uuid.UUID
    slug: str
    name: str
    require_2fa: bool
    link_only_decisions: bool
    created_at: datetime
    closed_at: datetime | None


class SecurityIn(StrictModel):
    model_config = example(require_2fa=True)

    # Strict: "yes" or 1 is a mistake to point out, not a value to guess at.
    require_2fa: StrictBool


class TransferIn(StrictModel):
    model_config = example(user_id=ex.APPROVER_ID, confirm=ex.ORG_SLUG)

    user_id: uuid.UUID = Field(description="The active member who becomes owner")
    confirm: Confirmation


class TransferOut(BaseModel):
    model_config = example(
        org_id=ex.ORG_ID,
        new_owner=MEMBER_EXAMPLE | {"roles": ["approver", "owner"]},
        previous_owner=MEMBER_EXAMPLE
        | {
            "id": ex.OWNER_ID,
            "email": ex.OWNER_EMAIL,
            "display_name": "Ada Lovelace",
            "roles": ["admin"],
        },
    )

    org_id: uuid.UUID
    new_owner: MemberOut
    previous_owner: MemberOut


class CloseIn(StrictModel):
    model_config = example(confirm=ex.ORG_SLUG)

    confirm: Confirmation


class ClosedOut(OrgOut):
    model_config = example(
        **_ORG | {"closed_at": ex.DECIDED},
        api_keys_revoked=6,
        sessions_revoked=4,
        invites_revoked=1,
        data_keys_destroyed=1,
        runs_terminated=2,
    )

    api_keys_revoked: int
    # The organization's data keys, destroyed: its runs' Temporal history and the run content of
    # its audit log can never be read again (the chain still verifies). Export first.
    data_keys_destroyed: int
    sessions_revoked: int
    invites_revoked: int
    # Its runs still going, terminated first: none is left running on keys that are gone.
    runs_terminated: int


def _org_out(org: Organization) -> OrgOut:
    return OrgOut(
        id=org.id,
        slug=org.slug,
        name=org.name,
        require_2fa=org.require_2fa,
        link_only_decisions=org.link_only_decisions,
        created_at=org.created_at,
        closed_at=org.closed_at,
    )


def _check_confirmation(org: Organization, confirm: str) -> None:
    # Exact: the point is that the owner typed which organization they mean.
    if confirm != org.slug:
        raise invalid_field("confirm", "must be this organization's slug, typed exactly")


async def _audit(
    request: Request, ctx: OrgContext, session: DbSession, action: str, data: dict[str, Any]
) -> None:
    await record_change(
        request,
        ctx,
        session,
        action,
        target_type="organization",
        target_id=str(ctx.org_id),
        data=data,
    )


@router.get(
    "", response_model=OrgOut, summary="Read the organization", operation_id="read_organization"
)
async def organization(ctx: CanReadOrg, session: DbSession) -> OrgOut:
    org = await get_org(ctx, session)
    if org is None:
        raise not_found("organization")
    return _org_out(org)


@router.put(
    "/security",
    response_model=OrgOut,
    summary="Require two-factor sign-in, or stop requiring it",
    operation_id="set_org_security",
)
async def security(
    body: SecurityIn, request: Request, ctx: CanManageSecurity, session: DbSession
) -> OrgOut:
    """Require two-factor sign-in of every member: their sessions and API keys are refused
    until they set it up. Whoever turns it on must have it, or they would lock themselves out."""
    org = await lock_org(ctx, session)
    before = org.require_2fa
    if body.require_2fa and not before:
        caller = await session.get(User, ctx.user_id) if ctx.user_id else None
        if caller is None or caller.totp_enabled_at is None:
            raise Problem(
                409,
                "Conflict",
                "set up two-factor sign-in for yourself first (/v1/me/2fa): requiring it "
                "without having it would lock you out",
                code="two_factor_missing",
            )
    if before != body.require_2fa:
        await set_require_2fa(ctx, session, org, body.require_2fa)
        await _audit(
            request,
            ctx,
            session,
            "org.security_changed",
            {"require_2fa": {"before": before, "after": body.require_2fa}},
        )
    return _org_out(org)


@router.post(
    "/ownership-transfer", response_model=TransferOut, summary="Transfer ownership to a member"
)
async def transfer_ownership(
    body: TransferIn, request: Request, ctx: CanOwn, session: DbSession
) -> TransferOut:
    """Make another active member owner; the caller steps down to admin (and may be made
    co-owner again through roles by any owner)."""
    org = await lock_org(ctx, session)
    _check_confirmation(org, body.confirm)
    if ctx.user_id is None or body.user_id == ctx.user_id:
        raise invalid_field("user_id", "must be another member: you are owner already")
    target = await get_member(ctx, session, body.user_id)
    if target is None:
        raise not_found("member")
    if not target.active:
        raise Problem(
            409,
            "Conflict",
            "ownership goes to an active member; this one is deactivated",
            code="member_deactivated",
        )
    caller = await get_member(ctx, session, ctx.user_id)
    if caller is None:
        raise not_found("member")
    target_before, caller_before = list(target.membership.roles), list(caller.membership.roles)
    target_after = canonical_roles([*target.roles, Role.OWNER])
    caller_after = canonical_roles([*(r for r in caller.roles if r is not Role.OWNER), Role.ADMIN])
    await set_roles(ctx, session, target, target_after)
    await set_roles(ctx, session, caller, caller_after)
    await _audit(
        request,
        ctx,
        session,
        "org.ownership_transferred",
        {
            "from_user_id": str(caller.user.id),
            "to_user_id": str(target.user.id),
            "from_roles": {"before": caller_before, "after": caller_after},
            "to_roles": {"before": target_before, "after": target_after},
        },
    )
    return TransferOut(
        org_id=org.id, new_owner=member_out(target), previous_owner=member_out(caller)
    )


@router.post(
    "/close",
    response_model=ClosedOut,
    summary="Close the organization for good",
    operation_id="close_organization",
)
async def close(
    body: CloseIn, request: Request, ctx: CanOwn, session: DbSession, client: TemporalClient
) -> ClosedOut:
    """Close the organization for good: its runs still going are terminated, every API key,
    session and pending invite of it is revoked at once, and its data keys are destroyed, so
    its runs' history in Temporal and the run content of its audit log (titles, comments,
    forms, results) can never be read again. The audit chain stays and still verifies; export
    the log first if it must be kept readable. Temporal unreachable: 503, nothing closed."""
    org = await lock_org(ctx, session)
    _check_confirmation(org, body.confirm)
    # First, while the keys still open their history: a run left going would fail on every
    # workflow task once they are gone. A retried close finds the rest.
    terminated = await terminate_org_runs(client, ctx.org_id, reason="organization closed")
    revoked = await close_org(ctx, session, org)
    destroyed = await destroy_org_keys(ctx, session)
    # This process stops using them now; every other process within KEY_CACHE_SECONDS.
    codec_keys = process_org_keys()
    if codec_keys is not None:
        codec_keys.forget_org(ctx.org_id)
    await _audit(
        request,
        ctx,
        session,
        "org.closed",
        {
            "api_keys_revoked": revoked.api_keys,
            "sessions_revoked": revoked.sessions,
            "invites_revoked": revoked.invites,
            "data_keys_destroyed": destroyed,
            "runs_terminated": terminated,
        },
    )
    return ClosedOut(
        **_org_out(org).model_dump(),
        api_keys_revoked=revoked.api_keys,
        sessions_revoked=revoked.sessions,
        invites_revoked=revoked.invites,
        data_keys_destroyed=destroyed,
        runs_terminated=terminated,
    )
