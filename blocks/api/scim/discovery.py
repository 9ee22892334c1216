"""SCIM discovery (RFC 7644 §4): ServiceProviderConfig, ResourceTypes and Schemas, as
scim2-models' ScimProvider describes the service; and the answers for what the service does
not serve (404, 405, and 501 for a search across resource types)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.routing import iter_route_contexts
from scim2_models import (
    Context,
    Error,
    ListResponse,
    Meta,
    NotImplementedException,
    Resource,
    ResourceType,
    Schema,
)

from blocks.api.scim.auth import ScimCtx
from blocks.api.scim.protocol import (
    CONFIG,
    PROVIDER,
    SCHEMAS,
    SCIM_PATH,
    ScimRoute,
    base_url,
    error_response,
    not_found,
    scim_response,
)

router = APIRouter(prefix=SCIM_PATH, route_class=ScimRoute, include_in_schema=False)


def _located(request: Request, resource: Resource[Any], kind: str, path: str) -> Resource[Any]:
    return resource.model_copy(
        update={"meta": Meta(resource_type=kind, location=f"{base_url(request)}{path}")}
    )


def _resource_types(request: Request) -> list[ResourceType]:
    return [
        _located(request, rt, "ResourceType", f"/ResourceTypes/{rt.id}")  # type: ignore[misc]
        for rt in PROVIDER.resource_types
    ]


def _schemas(request: Request) -> list[Schema]:
    return [
        _located(request, schema, "Schema", f"/Schemas/{schema.id}")  # type: ignore[misc]
        for schema in SCHEMAS
    ]


def _listed(resources: list[Any], model: type[Resource[Any]]) -> Response:
    listed = ListResponse[model](  # type: ignore[valid-type]
        total_results=len(resources),
        start_index=1,
        items_per_page=len(resources),
        resources=resources,
    )
    return scim_response(listed.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE))


@router.get("/ServiceProviderConfig")
async def service_provider_config(request: Request, ctx: ScimCtx) -> Response:
    config = _located(request, CONFIG, "ServiceProviderConfig", "/ServiceProviderConfig")
    return scim_response(config.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE))


@router.get("/ResourceTypes")
async def resource_types(request: Request, ctx: ScimCtx) -> Response:
    return _listed(_resource_types(request), ResourceType)


@router.get("/ResourceTypes/{name}")
async def resource_type(name: str, request: Request, ctx: ScimCtx) -> Response:
    for found in _resource_types(request):
        if found.id == name:
            return scim_response(found.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE))
    raise not_found("ResourceType")


@router.get("/Schemas")
async def schemas(request: Request, ctx: ScimCtx) -> Response:
    return _listed(_schemas(request), Schema)


@router.get("/Schemas/{schema_id}")
async def schema(schema_id: str, request: Request, ctx: ScimCtx) -> Response:
    for found in _schemas(request):
        if found.id == schema_id:
            return scim_response(found.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE))
    raise not_found("Schema")


@router.post("/.search")
async def search_everything(ctx: ScimCtx) -> Response:
    raise NotImplementedException(
        detail="searching several resource types at once is not supported: query /Users or /Groups"
    )


def allowed_methods(request: Request, skip: Callable[..., Any]) -> list[str]:
    """The methods some SCIM route (other than `skip`) answers at this request's path."""
    path = request.url.path
    methods: set[str] = set()
    for route in iter_route_contexts(request.app.router.routes):
        if route.endpoint is skip or not (route.path or "").startswith(SCIM_PATH):
            continue
        pattern = getattr(route, "path_regex", None)
        if pattern is not None and pattern.match(path):
            methods |= route.methods or set()
    return sorted(methods)


def unmatched(request: Request, skip: Callable[..., Any]) -> Response:
    """A path no SCIM route serves: 404; a method its path does not take: 405 (both SCIM
    errors). Answered after the credential is checked, so nothing is told to a stranger."""
    allowed = allowed_methods(request, skip)
    if allowed:
        error = Error(status=405, detail=f"{request.method} is not allowed here")
        return error_response(error, {"Allow": ", ".join(allowed)})
    return error_response(Error(status=404, detail=f"{request.url.path} is not a SCIM endpoint"))
