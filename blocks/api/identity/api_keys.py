"""Routes for API keys: every member makes, lists and revokes their own; admins see and revoke all.

A key is made for its caller and never with a role the caller does not hold through the
credential in use (a key cannot mint a stronger key); it also never grants more than its member
holds on the day it is used (see models.api_keys.resolve_api_key). The plaintext key is in the
creation response only: the database keeps a hash, and no list shows it.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from fastapi import APIRouter, Query, Request, Response
from pydantic import AwareDatetime, BaseModel, Field
from sqlmodel import col, select

from blocks.api.deps import (
    CanManageOwnKeys,
    DbSession,
    forbidden,
    record_change,
    record_denial,
)
from blocks.api.errors import invalid_field, not_found
from blocks.api.reference import examples as ex
from blocks.api.reference.examples import example
from blocks.api.schemas import StrictModel
from blocks.core.context import OrgContext
from blocks.core.roles import Permission, Role
from blocks.infra.db import bind_org
from blocks.models.base import utcnow
from blocks.models.identity.api_keys import ApiKey, create_api_key, revoke_api_key

router = APIRouter(prefix="/v1/api-keys", tags=["identity"])

_KEY = {
    "id": ex.KEY_ID,
    "user_id": ex.OPERATOR_ID,
    "name": "expense importer",
    "roles": ["operator"],
    "created_at": ex.CREATED,
    "expires_at": ex.LATER,
    "last_used_at": ex.STARTED,
    "revoked_at": None,
}


class ApiKeyIn(StrictModel):
    model_config = example(name="expense importer", roles=["operator"], expires_at=ex.LATER)

    name: str = Field(min_length=1, max_length=200, description="What the key is for")
    roles: list[str] = Field(
        max_length=len(Role),
        description="The key's roles: one or more of the roles you hold",
    )
    expires_at: AwareDatetime | None = Field(
        default=None, description="When the key stops working (in the future, with a timezone)"
    )


class ApiKeyOut(BaseModel):
    model_config = example(**_KEY)

    id: uuid.UUID
    user_id: uuid.UUID = Field(description="The member the key acts as")
    name: str
    roles: list[str]
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


class NewApiKeyOut(ApiKeyOut):
    model_config = example(**_KEY | {"last_used_at": None}, key=ex.API_KEY)

    key: str = Field(description="The key itself; shown only in this response")


def _out(key: ApiKey) -> ApiKeyOut:
    return ApiKeyOut(
        id=key.id,
        user_id=key.user_id,
        name=key.name,
        roles=list(key.roles),
        created_at=key.created_at,
        expires_at=key.expires_at,
        last_used_at=key.last_used_at,
        revoked_at=key.revoked_at,
    )


def _requested_roles(ctx: OrgContext, requested: list[str]) -> list[Role]:
    """The requested roles, in a stable order, if each is one the caller holds; else a 422."""
    if not requested:
        raise invalid_field("roles", "name at least one role")
    held = {role.value for role in ctx.roles}
    beyond = sorted(set(requested) - held)
    if beyond:
        raise invalid_field(
            "roles",
            f"a key can only hold roles you hold ({', '.join(sorted(held)) or 'none'});"
            f" not {', '.join(beyond)}",
        )
    return [role for role in Role if role.value in set(requested)]


async def _audit(
    request: Request, ctx: OrgContext, session: DbSession, action: str, key: ApiKey
) -> None:
    await record_change(
        request,
        ctx,
        session,
        action,
        target_type="api_key",
        target_id=str(key.id),
        data={
            "name": key.name,
            "owner_user_id": str(key.user_id),
            "roles": list(key.roles),
            "expires_at": key.expires_at.isoformat() if key.expires_at else None,
        },
    )


@router.post(
    "",
    status_code=201,
    response_model=NewApiKeyOut,
    summary="Create an API key for yourself",
    operation_id="create_api_key",
)
async def create(
    body: ApiKeyIn, request: Request, ctx: CanManageOwnKeys, session: DbSession
) -> NewApiKeyOut:
    """A new key for yourself; the response holds the key, which cannot be shown again."""
    if ctx.user_id is None:
        await record_denial(request, ctx, "no member behind this credential")
        raise forbidden("only a member can hold API keys")
    roles = _requested_roles(ctx, body.roles)
    if body.expires_at is not None and body.expires_at <= utcnow():
        raise invalid_field("expires_at", "must be in the future")
    key, plaintext = await create_api_key(
        ctx, session, user_id=ctx.user_id, name=body.name, roles=roles, expires_at=body.expires_at
    )
    await _audit(request, ctx, session, "api_key.created", key)
    return NewApiKeyOut(**_out(key).model_dump(), key=plaintext)


@router.get(
    "", response_model=list[ApiKeyOut], summary="List API keys", operation_id="list_api_keys"
)
async def keys(
    request: Request,
    ctx: CanManageOwnKeys,
    session: DbSession,
    all_keys: bool = Query(
        default=False, alias="all", description="Every key of the organization (admins)"
    ),
) -> list[ApiKeyOut]:
    """Your own keys, newest first (revoked ones too); with `all=true`, every member's."""
    if all_keys and not ctx.can(Permission.API_KEY_MANAGE):
        await record_denial(request, ctx, f"missing permission {Permission.API_KEY_MANAGE.value}")
        raise forbidden(f"your roles do not grant {Permission.API_KEY_MANAGE.value}")
    await bind_org(session, ctx.org_id)
    statement = select(ApiKey).where(ApiKey.org_id == ctx.org_id)
    if not all_keys:
        statement = statement.where(ApiKey.user_id == ctx.user_id)
    statement = statement.order_by(col(ApiKey.created_at).desc(), col(ApiKey.id))
    return [_out(key) for key in (await session.exec(statement)).all()]


@router.delete(
    "/{key_id}", status_code=204, summary="Revoke an API key", operation_id="revoke_api_key"
)
async def revoke(
    key_id: uuid.UUID, request: Request, ctx: CanManageOwnKeys, session: DbSession
) -> Response:
    """Revoke a key: your own, or (admins) any of the organization's. Revoking a revoked key
    answers 204 again and changes nothing."""
    await bind_org(session, ctx.org_id)
    statement = select(ApiKey).where(ApiKey.org_id == ctx.org_id, ApiKey.id == key_id)
    key = (await session.exec(statement)).first()
    if key is None:
        raise not_found("API key")
    if key.user_id != ctx.user_id and not ctx.can(Permission.API_KEY_MANAGE):
        await record_denial(
            request, ctx, f"another member's key needs {Permission.API_KEY_MANAGE.value}"
        )
        raise forbidden(
            f"this key is not yours, and your roles do not grant {Permission.API_KEY_MANAGE.value}"
        )
    if await revoke_api_key(ctx, session, key.id):
        await _audit(request, ctx, session, "api_key.revoked", key)
    return Response(status_code=204)
