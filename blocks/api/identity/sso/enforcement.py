"""Routes for enforced SSO (with its break-glass admins) and for the table from identity-provider
groups to roles and member groups.

Enforcing SSO needs an enabled provider and a way back in should the provider fail: either
break-glass admins (active owners or admins with two-factor sign-in, who keep password sign-in),
or, with none, proof that SSO works: the caller's own session signed in through an enabled
provider of this organization. Both settings change under the organization's lock, as a
provider's disabling and deletion check them.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field, StrictBool, StringConstraints

from blocks.api.deps import CanManageSecurity, DbSession, record_change, record_denial
from blocks.api.deps import forbidden as forbidden_problem
from blocks.api.errors import PROBLEM_JSON, Problem, invalid_field, not_found
from blocks.api.reference import examples as ex
from blocks.api.reference.examples import example
from blocks.api.schemas import StrictModel
from blocks.core.context import AuthMethod, OrgContext
from blocks.core.roles import Permission, Role
from blocks.models.approvals.groups import get_group
from blocks.models.identity.members import get_org, lock_org, members_by_ids
from blocks.models.identity.orgs import Organization
from blocks.models.identity.sessions import UserSession
from blocks.models.identity.sso.idp_groups import IdpGroupMapping, list_mappings, replace_mappings
from blocks.models.identity.sso.providers import get_provider, list_providers

router = APIRouter(prefix="/v1/org/sso", tags=["identity"])

MAX_BREAK_GLASS = 10
MAX_MAPPINGS = 500
_BREAK_GLASS_ROLES = frozenset({Role.OWNER, Role.ADMIN})
IdpGroup = Annotated[str, StringConstraints(min_length=1, max_length=255)]


class SsoIn(StrictModel):
    model_config = example(enforced=True, break_glass_user_ids=[ex.OWNER_ID])

    enforced: StrictBool = Field(description="Sign-in only through the organization's providers")
    break_glass_user_ids: list[uuid.UUID] = Field(
        default_factory=list,
        max_length=MAX_BREAK_GLASS,
        description="Owners or admins with two-factor sign-in who may still sign in with a "
        "password while SSO is enforced (audited at every use)",
    )


class SsoOut(BaseModel):
    model_config = example(enforced=True, break_glass_user_ids=[ex.OWNER_ID], enabled_providers=1)

    enforced: bool
    break_glass_user_ids: list[uuid.UUID]
    enabled_providers: int


class MappingRow(StrictModel):
    model_config = example(idp_group="finance-approvers", roles=["approver"], member_group_id=None)

    idp_group: IdpGroup = Field(description="The group's name exactly as the provider sends it")
    roles: list[Role] = Field(default_factory=list, max_length=len(Role))
    member_group_id: uuid.UUID | None = Field(
        default=None, description="A member group of this organization to put its members in"
    )


class MappingsIn(StrictModel):
    model_config = example(
        mappings=[
            {"idp_group": "blocks-admins", "roles": ["admin"], "member_group_id": None},
            {
                "idp_group": "finance-approvers",
                "roles": ["approver"],
                "member_group_id": ex.GROUP_ID,
            },
        ]
    )

    mappings: list[MappingRow] = Field(max_length=MAX_MAPPINGS)


class MappingsOut(BaseModel):
    model_config = example(
        mappings=[{"idp_group": "blocks-admins", "roles": ["admin"], "member_group_id": None}]
    )

    mappings: list[MappingRow]


_CONFLICT = {
    409: {
        "description": "Enforcing needs an enabled provider and a way back in",
        "content": {
            PROBLEM_JSON: {
                "schema": {"$ref": "#/components/schemas/ProblemOut"},
                "example": {
                    "type": "/problems/no_enabled_provider",
                    "title": "Conflict",
                    "status": 409,
                    "detail": "enforcing SSO needs an enabled identity provider: add or enable "
                    "one first (/v1/org/sso/providers)",
                    "instance": "/v1/org/sso",
                    "code": "no_enabled_provider",
                },
            }
        },
    }
}


def _conflict(detail: str, code: str) -> Problem:
    return Problem(409, "Conflict", detail, code=code)


async def _check_break_glass(
    ctx: OrgContext, session: DbSession, user_ids: list[uuid.UUID]
) -> None:
    """Each break-glass id an active owner or admin with two-factor sign-in (422 naming which)."""
    members = await members_by_ids(ctx, session, user_ids)
    for index, user_id in enumerate(user_ids):
        field = f"break_glass_user_ids.{index}"
        member = members.get(user_id)
        if member is None:
            raise invalid_field(field, "is not a member of this organization")
        if not member.active:
            raise invalid_field(field, "is a deactivated member")
        if not _BREAK_GLASS_ROLES & set(member.roles):
            raise invalid_field(field, "must be an owner or admin")
        if member.user.totp_enabled_at is None:
            raise invalid_field(
                field,
                "has no two-factor sign-in: a break-glass admin signs in with password "
                "and a second factor",
            )


async def _signed_in_through_sso(ctx: OrgContext, session: DbSession) -> bool:
    """Whether the caller is a session that signed in through an enabled provider of this
    organization: proof that SSO lets someone in before it is the only way."""
    if ctx.auth is not AuthMethod.SESSION or ctx.credential_id is None:
        return False
    row = await session.get(UserSession, ctx.credential_id)
    if row is None or row.sso_org_id != ctx.org_id or row.sso_provider_id is None:
        return False
    provider = await get_provider(ctx, session, row.sso_provider_id)
    return provider is not None and provider.enabled


async def _sso_out(ctx: OrgContext, session: DbSession, org: Organization) -> SsoOut:
    enabled = [p for p in await list_providers(ctx, session) if p.enabled]
    return SsoOut(
        enforced=org.sso_enforced,
        break_glass_user_ids=list(org.sso_break_glass),
        enabled_providers=len(enabled),
    )


@router.get("", response_model=SsoOut, summary="Read the SSO enforcement settings")
async def read_sso_settings(ctx: CanManageSecurity, session: DbSession) -> SsoOut:
    org = await get_org(ctx, session)
    if org is None:
        raise not_found("organization")
    return await _sso_out(ctx, session, org)


@router.put(
    "",
    response_model=SsoOut,
    responses=_CONFLICT,
    summary="Enforce SSO, or stop; name the break-glass admins",
)
async def set_sso_settings(
    body: SsoIn, request: Request, ctx: CanManageSecurity, session: DbSession
) -> SsoOut:
    """Enforce sign-in through the organization's identity providers (or stop). Each break-glass
    id must be an active owner or admin with two-factor sign-in (422 naming which). Enforcing
    needs an enabled provider (409 `no_enabled_provider`), and, without break-glass admins, a
    caller whose own session signed in through one of them (409 `sso_unproven`)."""
    org = await lock_org(ctx, session)
    wanted = list(dict.fromkeys(body.break_glass_user_ids))
    await _check_break_glass(ctx, session, wanted)
    if body.enforced:
        if not any(p.enabled for p in await list_providers(ctx, session)):
            raise _conflict(
                "enforcing SSO needs an enabled identity provider: add or enable one first "
                "(/v1/org/sso/providers)",
                "no_enabled_provider",
            )
        if not wanted and not await _signed_in_through_sso(ctx, session):
            raise _conflict(
                "name a break-glass admin, or enforce SSO from a session signed in through one "
                "of this organization's providers: otherwise a broken provider locks everyone out",
                "sso_unproven",
            )
    enforced_before, glass_before = org.sso_enforced, list(org.sso_break_glass)
    org.sso_enforced = body.enforced
    org.sso_break_glass = wanted
    session.add(org)
    await session.flush()
    if enforced_before != body.enforced:
        await _audit_org(
            request,
            ctx,
            session,
            "org.sso_enforcement_changed",
            {"enforced": {"before": enforced_before, "after": body.enforced}},
        )
    if glass_before != wanted:
        await _audit_org(
            request,
            ctx,
            session,
            "org.sso_break_glass_changed",
            {
                "before": [str(u) for u in glass_before],
                "after": [str(u) for u in wanted],
                "added": [str(u) for u in wanted if u not in glass_before],
                "removed": [str(u) for u in glass_before if u not in wanted],
            },
        )
    return await _sso_out(ctx, session, org)


async def _audit_org(
    request: Request, ctx: OrgContext, session: DbSession, action: str, data: dict[str, object]
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


def _row(mapping: IdpGroupMapping) -> MappingRow:
    return MappingRow(
        idp_group=mapping.idp_group,
        roles=[Role(r) for r in mapping.roles],
        member_group_id=mapping.member_group_id,
    )


def _owner_groups(rows: list[MappingRow]) -> set[str]:
    return {row.idp_group for row in rows if Role.OWNER in row.roles}


def _plain(rows: list[MappingRow]) -> list[dict[str, object]]:
    return [row.model_dump(mode="json") for row in rows]


@router.get("/group-mappings", response_model=MappingsOut, summary="Read the IdP group mappings")
async def read_group_mappings(ctx: CanManageSecurity, session: DbSession) -> MappingsOut:
    """Which provider group grants which roles and member group (a group no row names grants
    nothing)."""
    return MappingsOut(mappings=[_row(m) for m in await list_mappings(ctx, session)])


@router.put("/group-mappings", response_model=MappingsOut, summary="Replace the IdP group mappings")
async def replace_group_mappings(
    body: MappingsIn, request: Request, ctx: CanManageSecurity, session: DbSession
) -> MappingsOut:
    """Replace the whole table. Each provider group appears once; a member group must be one of
    this organization's; a row grants roles, a member group, or both. Only an owner may map a
    group to the owner role (an admin gets 403, audited; rows an owner made stay)."""
    await lock_org(ctx, session)
    current = [_row(m) for m in await list_mappings(ctx, session)]
    seen: set[str] = set()
    for index, row in enumerate(body.mappings):
        where = f"mappings.{index}"
        if row.idp_group in seen:
            raise invalid_field(f"{where}.idp_group", f"{row.idp_group!r} appears twice")
        seen.add(row.idp_group)
        if not row.roles and row.member_group_id is None:
            raise invalid_field(where, "grants nothing: give roles, a member_group_id, or both")
        if row.member_group_id is not None and (
            await get_group(ctx, session, row.member_group_id) is None
        ):
            raise invalid_field(
                f"{where}.member_group_id", "is not a member group of this organization"
            )
    if _owner_groups(body.mappings) - _owner_groups(current) and not ctx.can(Permission.ORG_OWN):
        # A group granting the owner role: an admin in that group at the IdP would become one.
        await record_denial(request, ctx, "mapping an IdP group to the owner role needs org:own")
        raise forbidden_problem("only an owner may map a provider group to the owner role")
    before = _plain(sorted(current, key=lambda r: r.idp_group))
    saved = await replace_mappings(
        ctx,
        session,
        [(row.idp_group, list(row.roles), row.member_group_id) for row in body.mappings],
    )
    answer = MappingsOut(mappings=sorted((_row(m) for m in saved), key=lambda r: r.idp_group))
    after = _plain(answer.mappings)
    if after != before:
        await record_change(
            request,
            ctx,
            session,
            "sso.group_mappings_changed",
            target_type="organization",
            target_id=str(ctx.org_id),
            data={"before": before, "after": after},
        )
    return answer
