"""SCIM Groups (RFC 7644 §3): a name and its member Users. Every change of who is in which group
(or of a group's name) re-applies the admin's mapping table to the members it touched."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request, Response
from scim2_models import Context, Group, InvalidValueException, PatchOp

from blocks.api.deps import DbSession
from blocks.api.scim.audit import audit_group, audit_group_changes
from blocks.api.scim.auth import ScimCtx
from blocks.api.scim.listing import list_response, narrowing, response_parameters, search_request
from blocks.api.scim.protocol import (
    GROUP_SCHEMA,
    POLICY,
    SCIM_PATH,
    ScimRoute,
    base_url,
    check_if_match,
    conflict,
    json_body,
    not_found,
    scim_response,
    weak_etag,
)
from blocks.core.context import OrgContext
from blocks.models.identity.scim.groups import (
    create_group,
    delete_group,
    get_group,
    list_groups,
    member_ids,
    members_of_groups,
    update_group,
)
from blocks.models.identity.scim.provisioning import ScimConflict, UnknownScimUser
from blocks.models.identity.scim.tables import ScimGroup, ScimUser

router = APIRouter(prefix=SCIM_PATH, route_class=ScimRoute, include_in_schema=False)


def _resource(request: Request, group: ScimGroup, members: list[ScimUser]) -> Group:
    base = base_url(request)
    data: dict[str, Any] = {
        "schemas": [GROUP_SCHEMA],
        "id": str(group.id),
        "displayName": group.display_name,
        "externalId": group.external_id,
        "members": [
            {"value": str(user.id), "$ref": f"{base}/Users/{user.id}", "type": "User"}
            for user in members
        ]
        or None,
        "meta": {
            "resourceType": "Group",
            "created": group.created_at.isoformat(),
            "lastModified": group.updated_at.isoformat(),
            "location": f"{base}/Groups/{group.id}",
            "version": weak_etag(group.version),
        },
    }
    return Group.model_validate(data, scim_policy=POLICY)


async def _resources(
    request: Request, ctx: OrgContext, db: DbSession, groups: list[ScimGroup]
) -> list[Group]:
    members = await members_of_groups(ctx, db, [group.id for group in groups])
    return [_resource(request, group, members[group.id]) for group in groups]


def _answer(request: Request, resource: Group, scim_ctx: Context, *, status: int = 200) -> Response:
    meta = resource.meta
    headers = {"ETag": str(meta.version)} if meta is not None else {}
    if status == 201 and meta is not None:
        headers["Location"] = str(meta.location)
    body = resource.model_dump(
        scim_ctx=scim_ctx, response_parameters=response_parameters(Group, request)
    )
    return scim_response(body, status=status, headers=headers)


def _fields(resource: Group) -> dict[str, Any]:
    if not resource.display_name:
        raise InvalidValueException(detail="displayName is required")
    return {
        "display_name": resource.display_name,
        "external_id": resource.external_id,
        "members": [str(member.value) for member in resource.members or [] if member.value],
    }


async def _group_or_404(ctx: OrgContext, db: DbSession, group_id: str) -> ScimGroup:
    try:
        scim_id = uuid.UUID(group_id)
    except ValueError:
        raise not_found("Group") from None
    group = await get_group(ctx, db, scim_id)
    if group is None:
        raise not_found("Group")
    return group


def _refusal(exc: Exception) -> Exception:
    if isinstance(exc, ScimConflict):
        return conflict(str(exc))
    return InvalidValueException(detail=f"members: {exc}")


async def _write(
    request: Request, ctx: OrgContext, db: DbSession, group: ScimGroup, resource: Group
) -> Group:
    """Apply the group's new state (PUT or PATCH), audited, and answer with it."""
    before = {str(user_id) for user_id in await member_ids(ctx, db, group.id)}
    fields = _fields(resource)
    try:
        changed, changes = await update_group(ctx, db, group, **fields)
    except (ScimConflict, UnknownScimUser) as refused:
        raise _refusal(refused) from None
    if changed:
        after = set(fields["members"])
        data = {
            "display_name": group.display_name,
            "members_added": len(after - before),
            "members_removed": len(before - after),
        }
        await audit_group(request, ctx, db, "scim.group_updated", str(group.id), data)
    await audit_group_changes(request, ctx, db, changes)
    (updated,) = await _resources(request, ctx, db, [group])
    return updated


@router.post("/Groups")
async def create(request: Request, ctx: ScimCtx, db: DbSession) -> Response:
    resource = Group.model_validate(
        await json_body(request), scim_ctx=Context.RESOURCE_CREATION_REQUEST, scim_policy=POLICY
    )
    fields = _fields(resource)
    try:
        group, changes = await create_group(ctx, db, **fields)
    except (ScimConflict, UnknownScimUser) as refused:
        raise _refusal(refused) from None
    data = {"display_name": group.display_name, "members_added": len(set(fields["members"]))}
    await audit_group(request, ctx, db, "scim.group_created", str(group.id), data)
    await audit_group_changes(request, ctx, db, changes)
    (created,) = await _resources(request, ctx, db, [group])
    return _answer(request, created, Context.RESOURCE_CREATION_RESPONSE, status=201)


@router.get("/Groups")
async def search(request: Request, ctx: ScimCtx, db: DbSession) -> Response:
    query = search_request(Group, request)
    narrowed = narrowing(
        query, GROUP_SCHEMA, {"displayname": "display_name", "externalid": "external_id"}
    )
    groups = [] if narrowed is None else await list_groups(ctx, db, **narrowed)
    resources = await _resources(request, ctx, db, groups)
    return scim_response(list_response(Group, query, list(resources)))


@router.get("/Groups/{group_id}")
async def read(group_id: str, request: Request, ctx: ScimCtx, db: DbSession) -> Response:
    group = await _group_or_404(ctx, db, group_id)
    (resource,) = await _resources(request, ctx, db, [group])
    return _answer(request, resource, Context.RESOURCE_QUERY_RESPONSE)


@router.put("/Groups/{group_id}")
async def replace(group_id: str, request: Request, ctx: ScimCtx, db: DbSession) -> Response:
    group = await _group_or_404(ctx, db, group_id)
    check_if_match(request, group.version)
    (current,) = await _resources(request, ctx, db, [group])
    replacement = Group.model_validate(
        await json_body(request),
        scim_ctx=Context.RESOURCE_REPLACEMENT_REQUEST,
        scim_policy=POLICY,
    )
    replacement.replace(current)
    updated = await _write(request, ctx, db, group, replacement)
    return _answer(request, updated, Context.RESOURCE_REPLACEMENT_RESPONSE)


@router.patch("/Groups/{group_id}")
async def patch(group_id: str, request: Request, ctx: ScimCtx, db: DbSession) -> Response:
    group = await _group_or_404(ctx, db, group_id)
    check_if_match(request, group.version)
    (resource,) = await _resources(request, ctx, db, [group])
    operations = PatchOp[Group].model_validate(
        await json_body(request), scim_ctx=Context.RESOURCE_PATCH_REQUEST, scim_policy=POLICY
    )
    operations.patch(resource, POLICY)
    updated = await _write(request, ctx, db, group, resource)
    return _answer(request, updated, Context.RESOURCE_PATCH_RESPONSE)


@router.delete("/Groups/{group_id}", status_code=204)
async def remove(group_id: str, request: Request, ctx: ScimCtx, db: DbSession) -> Response:
    group = await _group_or_404(ctx, db, group_id)
    check_if_match(request, group.version)
    data = {"display_name": group.display_name}
    group_id_text = str(group.id)
    changes = await delete_group(ctx, db, group)
    await audit_group(request, ctx, db, "scim.group_deleted", group_id_text, data)
    await audit_group_changes(request, ctx, db, changes)
    return Response(status_code=204)
