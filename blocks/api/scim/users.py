"""SCIM Users (RFC 7644 §3): create, read, list, replace, patch and delete the organization's
provisioned people. Shapes, filters and patches are scim2-models'; what a write does to the
person and their membership is blocks.models.identity.scim.provisioning's."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request, Response
from scim2_models import Context, InvalidValueException, PatchOp, SearchRequest

from blocks.api.deps import DbSession
from blocks.api.identity.email_field import normalize_email
from blocks.api.scim.audit import audit_group_changes, audit_user, revoked_data
from blocks.api.scim.auth import ScimCtx
from blocks.api.scim.listing import list_response, narrowing, response_parameters, search_request
from blocks.api.scim.protocol import (
    POLICY,
    SCIM_PATH,
    USER_SCHEMA,
    ScimRoute,
    UserResource,
    base_url,
    check_if_match,
    conflict,
    json_body,
    not_found,
    scim_response,
    weak_etag,
)
from blocks.core.context import OrgContext
from blocks.models.identity.scim.provisioning import (
    LastOwner,
    Provisioned,
    ScimConflict,
    UserWrite,
    create_user,
    delete_user,
    get_user,
    groups_of_users,
    list_users,
    update_user,
)
from blocks.models.identity.scim.tables import ScimGroup, ScimUser

router = APIRouter(prefix=SCIM_PATH, route_class=ScimRoute, include_in_schema=False)

# Attributes kept in their own columns, or computed, or never kept (the password: Blocks signs
# people in through its own credentials or single sign-on, never a provider-set password).
_NOT_STORED = ("id", "meta", "userName", "externalId", "active", "groups", "password")


def _resource(request: Request, row: ScimUser, groups: list[ScimGroup]) -> UserResource:
    base = base_url(request)
    data: dict[str, Any] = {
        **row.attributes,
        "id": str(row.id),
        "userName": row.user_name,
        "externalId": row.external_id,
        "active": row.active,
        "groups": [
            {"value": str(g.id), "$ref": f"{base}/Groups/{g.id}", "display": g.display_name}
            for g in groups
        ]
        or None,
        "meta": {
            "resourceType": "User",
            "created": row.created_at.isoformat(),
            "lastModified": row.updated_at.isoformat(),
            "location": f"{base}/Users/{row.id}",
            "version": weak_etag(row.version),
        },
    }
    data.setdefault("schemas", [USER_SCHEMA])
    resource: UserResource = UserResource.model_validate(data, scim_policy=POLICY)
    return resource


async def _resources(
    request: Request, ctx: OrgContext, db: DbSession, rows: list[ScimUser]
) -> list[UserResource]:
    groups = await groups_of_users(ctx, db, [row.id for row in rows])
    return [_resource(request, row, groups[row.id]) for row in rows]


def _answer(
    request: Request,
    resource: UserResource,
    scim_ctx: Context,
    *,
    status: int = 200,
    params: SearchRequest[Any] | None = None,
) -> Response:
    meta = resource.meta
    headers = {"ETag": str(meta.version)} if meta is not None else {}
    if status == 201 and meta is not None:
        headers["Location"] = str(meta.location)
    body = resource.model_dump(
        scim_ctx=scim_ctx, response_parameters=params or response_parameters(UserResource, request)
    )
    return scim_response(body, status=status, headers=headers)


def _account_email(resource: UserResource) -> str:
    """The address the person's account has: the primary email, a work one, any, or userName."""
    emails = list(resource.emails or [])
    emails.sort(key=lambda e: (not e.primary, str(e.type or "") != "work"))
    for candidate in [*(str(e.value) for e in emails if e.value), resource.user_name or ""]:
        try:
            return normalize_email(candidate)
        except ValueError:
            continue
    raise InvalidValueException(
        detail="a User needs an email address: in emails, or as its userName"
    )


def _display_name(resource: UserResource) -> str:
    name = resource.name
    parts = [name.given_name, name.family_name] if name is not None else []
    joined = " ".join(part for part in parts if part)
    formatted = name.formatted if name is not None else None
    return resource.display_name or formatted or joined or str(resource.user_name)


def _write(resource: UserResource, *, active: bool, email: str | None) -> UserWrite:
    stored = resource.model_dump(scim_ctx=Context.DEFAULT)
    for name in _NOT_STORED:
        stored.pop(name, None)
    if not resource.user_name:
        raise InvalidValueException(detail="userName is required")
    return UserWrite(
        user_name=resource.user_name,
        external_id=resource.external_id,
        active=active,
        attributes=stored,
        email=email,
        display_name=_display_name(resource),
    )


async def _row_or_404(ctx: OrgContext, db: DbSession, user_id: str) -> ScimUser:
    try:
        scim_id = uuid.UUID(user_id)
    except ValueError:
        raise not_found("User") from None
    row = await get_user(ctx, db, scim_id)
    if row is None:
        raise not_found("User")
    return row


async def _provision(
    request: Request,
    ctx: OrgContext,
    db: DbSession,
    row: ScimUser | None,
    write: UserWrite,
) -> Provisioned:
    """Create or update, the model's refusals as SCIM errors, and the audit events."""
    before = (row.user_name, row.external_id, row.attributes) if row is not None else None
    try:
        if row is None:
            done = await create_user(ctx, db, write)
        else:
            done = await update_user(ctx, db, row, write)
    except ScimConflict as refused:
        raise conflict(str(refused)) from None
    except LastOwner:
        raise conflict(
            "this member is the organization's last active owner: the identity provider "
            "cannot deactivate them",
            scim_type=None,
        ) from None
    scim_id = str(done.row.id)
    if row is None:
        data = {"scim_id": scim_id, "new_account": done.created_account}
        await audit_user(request, ctx, db, "scim.user_created", done.member, data)
    elif before != (done.row.user_name, done.row.external_id, done.row.attributes):
        await audit_user(request, ctx, db, "scim.user_updated", done.member, {"scim_id": scim_id})
    if done.deactivated is not None:
        data = {"scim_id": scim_id, **revoked_data(done.deactivated)}
        await audit_user(request, ctx, db, "scim.user_deactivated", done.member, data)
    if done.reactivated:
        await audit_user(
            request, ctx, db, "scim.user_reactivated", done.member, {"scim_id": scim_id}
        )
    await audit_group_changes(request, ctx, db, done.group_changes)
    return done


@router.post("/Users")
async def create(request: Request, ctx: ScimCtx, db: DbSession) -> Response:
    resource = UserResource.model_validate(
        await json_body(request), scim_ctx=Context.RESOURCE_CREATION_REQUEST, scim_policy=POLICY
    )
    write = _write(
        resource,
        active=resource.active if resource.active is not None else True,
        email=_account_email(resource),
    )
    done = await _provision(request, ctx, db, None, write)
    created = _resource(request, done.row, [])
    return _answer(request, created, Context.RESOURCE_CREATION_RESPONSE, status=201)


@router.get("/Users")
async def search(request: Request, ctx: ScimCtx, db: DbSession) -> Response:
    query = search_request(UserResource, request)
    narrowed = narrowing(query, USER_SCHEMA, {"username": "user_name", "externalid": "external_id"})
    rows = [] if narrowed is None else await list_users(ctx, db, **narrowed)
    resources = await _resources(request, ctx, db, rows)
    return scim_response(list_response(UserResource, query, list(resources)))


@router.get("/Users/{user_id}")
async def read(user_id: str, request: Request, ctx: ScimCtx, db: DbSession) -> Response:
    row = await _row_or_404(ctx, db, user_id)
    (resource,) = await _resources(request, ctx, db, [row])
    return _answer(request, resource, Context.RESOURCE_QUERY_RESPONSE)


@router.put("/Users/{user_id}")
async def replace(user_id: str, request: Request, ctx: ScimCtx, db: DbSession) -> Response:
    row = await _row_or_404(ctx, db, user_id)
    check_if_match(request, row.version)
    (current,) = await _resources(request, ctx, db, [row])
    replacement = UserResource.model_validate(
        await json_body(request),
        scim_ctx=Context.RESOURCE_REPLACEMENT_REQUEST,
        scim_policy=POLICY,
    )
    replacement.replace(current)
    # Okta and Entra send the profile with PUT; one without `active` leaves it as it is.
    active = replacement.active if replacement.active is not None else row.active
    write = _write(replacement, active=active, email=None)
    done = await _provision(request, ctx, db, row, write)
    (updated,) = await _resources(request, ctx, db, [done.row])
    return _answer(request, updated, Context.RESOURCE_REPLACEMENT_RESPONSE)


@router.patch("/Users/{user_id}")
async def patch(user_id: str, request: Request, ctx: ScimCtx, db: DbSession) -> Response:
    row = await _row_or_404(ctx, db, user_id)
    check_if_match(request, row.version)
    (resource,) = await _resources(request, ctx, db, [row])
    operations = PatchOp[UserResource].model_validate(  # type: ignore[misc]
        await json_body(request), scim_ctx=Context.RESOURCE_PATCH_REQUEST, scim_policy=POLICY
    )
    operations.patch(resource, POLICY)
    active = resource.active if resource.active is not None else row.active
    done = await _provision(request, ctx, db, row, _write(resource, active=active, email=None))
    (updated,) = await _resources(request, ctx, db, [done.row])
    return _answer(request, updated, Context.RESOURCE_PATCH_RESPONSE)


@router.delete("/Users/{user_id}", status_code=204)
async def remove(user_id: str, request: Request, ctx: ScimCtx, db: DbSession) -> Response:
    row = await _row_or_404(ctx, db, user_id)
    check_if_match(request, row.version)
    scim_id = str(row.id)
    try:
        member, revoked = await delete_user(ctx, db, row)
    except LastOwner:
        raise conflict(
            "this member is the organization's last active owner: the identity provider "
            "cannot remove them",
            scim_type=None,
        ) from None
    if member is not None:
        data = {"scim_id": scim_id, **revoked_data(revoked)}
        await audit_user(request, ctx, db, "scim.user_deleted", member, data)
    return Response(status_code=204)
