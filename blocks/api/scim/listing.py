"""SCIM list queries (RFC 7644 §3.4.2): `filter`, `sortBy`/`sortOrder`, `startIndex`/`count`,
`attributes`/`excludedAttributes`, read by scim2-models' SearchRequest and answered as a
ListResponse. An equality on an indexed attribute narrows the query in SQL; every filter is
then evaluated on the resources by scim2-models itself."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from fastapi import Request
from scim2_models import Context, ListResponse, Resource, SearchRequest
from scim2_models.path.expressions import CompareOperator, Comparison

from blocks.api.scim.protocol import DEFAULT_COUNT, MAX_RESULTS

_PARAMETERS = (
    "filter",
    "sortBy",
    "sortOrder",
    "startIndex",
    "count",
    "attributes",
    "excludedAttributes",
)


def search_request(model: type[Resource[Any]], request: Request) -> SearchRequest[Any]:
    """The query's parameters (a ValidationError, answered as SCIM's 400, if malformed)."""
    params = request.query_params
    data = {name: params[name] for name in _PARAMETERS if name in params}
    search: SearchRequest[Any] = SearchRequest[model].model_validate(data)  # type: ignore[valid-type]
    return search


def response_parameters(model: type[Resource[Any]], request: Request) -> SearchRequest[Any]:
    """`attributes`/`excludedAttributes` of a request for one resource."""
    params = request.query_params
    data = {name: params[name] for name in ("attributes", "excludedAttributes") if name in params}
    search: SearchRequest[Any] = SearchRequest[model].model_validate(data)  # type: ignore[valid-type]
    return search


def equality(search: SearchRequest[Any], schema: str, names: set[str]) -> tuple[str, str] | None:
    """(attribute, value) when the filter is one `eq` on one of `names` (lowercase), else None."""
    node = search.filter.ast if search.filter is not None else None
    if not isinstance(node, Comparison) or node.op != CompareOperator.eq:
        return None
    path = node.attr_path
    if path.sub_attr is not None or (path.uri is not None and path.uri.lower() != schema.lower()):
        return None
    name = path.attr.lower()
    if name not in names or not isinstance(node.value, str):
        return None
    return name, node.value


def narrowing(
    search: SearchRequest[Any], schema: str, keywords: Mapping[str, str]
) -> dict[str, Any] | None:
    """The list function's keyword arguments for a filter that is one `eq` on an attribute the
    database matches (`keywords`: attribute, lowercase -> keyword; `id` always): {} for any other
    filter (every row is read, then matched here), None for one that matches nothing (an id that
    is no UUID)."""
    found = equality(search, schema, {*keywords, "id"})
    if found is None:
        return {}
    name, value = found
    if name != "id":
        return {keywords[name]: value}
    try:
        return {"ids": [uuid.UUID(value)]}
    except ValueError:
        return None


def list_response(
    model: type[Resource[Any]], search: SearchRequest[Any], resources: list[Resource[Any]]
) -> dict[str, Any]:
    """The ListResponse of the resources the filter matches, sorted, the page asked for."""
    if search.filter is not None:
        resources = [resource for resource in resources if search.filter.match(resource)]
    if search.sort_by is not None:
        resources = search.sort(resources)
    count = min(search.count if search.count is not None else DEFAULT_COUNT, MAX_RESULTS)
    start = search.start_index_0 or 0
    page = resources[start : start + count]
    listed = ListResponse[model](  # type: ignore[valid-type]
        total_results=len(resources),
        start_index=start + 1,
        items_per_page=len(page),
        resources=page,
    )
    body: dict[str, Any] = listed.model_dump(
        scim_ctx=Context.SEARCH_RESPONSE, response_parameters=search
    )
    return body
