"""The OpenAPI document as the API behaves: every error an operation can answer, with the
problem+json schema, and the two credentials (an API key, the session cookie).

FastAPI documents only 2xx answers and its own 422. `install_openapi` completes the generated
document, once per set of routes. Most errors follow from what a route depends on, so a new
route gets them by itself:

- every operation: 413 and 422 (api.request_limits: body size, NUL characters) and 429 (the
  invalid-request limit per address); one that is not GET also 400 (malformed JSON) and 415;
- an API key or session (`deps.org_context`): 401 and 403 (roles, two-factor requirement, the
  origin check); the session alone (`deps.Person`): 401, and 403 unless GET (origin check);
- the database or Temporal: 503; with a credential, a path parameter: 404.

An operation's own errors beyond these (a 409 on a conflict, a 404 of something named in the
body, the HTML pages of decision links) are listed in ROUTE_ERRORS, or declared on the route
with `responses=` (which this leaves as the route wrote it). tests/e2e/test_schemathesis.py
fails on any answer the document does not promise.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts

from blocks.api import deps
from blocks.api.errors import PROBLEM_JSON
from blocks.api.identity.sessions import SESSION_COOKIE
from blocks.api.schemas import ProblemOut

HTML = "text/html"
JSON = "application/json"

API_KEY_SCHEME = "apiKey"
SESSION_SCHEME = "session"
SECURITY_SCHEMES: dict[str, Any] = {
    API_KEY_SCHEME: {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "blk_<lookup>_<secret>",
        "description": "An API key: `Authorization: Bearer blk_...` (POST /v1/api-keys)",
    },
    SESSION_SCHEME: {
        "type": "apiKey",
        "in": "cookie",
        "name": SESSION_COOKIE,
        "description": "The session cookie set by sign-in; a state-changing request must also "
        "carry an Origin (or Referer) of this site",
    },
}

_DESCRIPTIONS = {
    400: "Malformed: the body is not valid JSON, or a token or code is not usable",
    401: "No valid credential",
    403: "The credential does not allow this (audited)",
    404: "Not found, or belongs to another organization",
    409: "Conflicts with the current state",
    410: "The link or invitation is no longer usable",
    413: "The body is larger, deeper or has more members than the server accepts",
    415: "A JSON body that is not UTF-8",
    422: "Invalid parameters or body; `errors` names each field and why",
    429: "Too many requests; retry after Retry-After seconds",
    502: "An outside service could not be reached",
    503: "A dependency (PostgreSQL, Temporal, email) is unavailable; retry later",
}
_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "Bearer"}},
    429: {"Retry-After": {"schema": {"type": "string"}, "description": "Seconds to wait"}},
    503: {"Retry-After": {"schema": {"type": "string"}, "description": "Seconds to wait"}},
}
_SCHEMAS = {
    PROBLEM_JSON: {"$ref": "#/components/schemas/ProblemOut"},
    HTML: {"type": "string"},
    JSON: {"type": "object"},
}


def _problems(*statuses: int) -> dict[int, set[str]]:
    return {status: {PROBLEM_JSON} for status in statuses}


def _pages(*statuses: int) -> dict[int, set[str]]:
    return {status: {HTML} for status in statuses}


# Each operation's own errors, beyond those its dependencies and the edge give it (see above).
ROUTE_ERRORS: dict[str, dict[int, set[str]]] = {
    "GET /readyz": {503: {JSON}},
    "POST /v1/auth/signup": _problems(403),
    "POST /v1/auth/signup/verify": _problems(400, 403, 409),
    "POST /v1/auth/signin": _problems(401, 403),
    "POST /v1/auth/signin-link": _problems(403),
    "POST /v1/auth/signin-link/verify": _problems(400, 401, 403),
    "POST /v1/auth/signin/2fa": _problems(409),
    "POST /v1/auth/org": _problems(404),
    "POST /v1/auth/password-reset": _problems(403),
    "POST /v1/auth/password-reset/confirm": _problems(400, 403),
    "POST /v1/me/email/confirm": _problems(400, 409),
    "POST /v1/me/slack-link": _problems(409),
    "POST /v1/orgs": _problems(409),
    "POST /v1/me/2fa/setup": _problems(409),
    "POST /v1/me/2fa/enable": _problems(400, 409),
    "POST /v1/me/2fa/disable": _problems(400, 409),
    "POST /v1/me/2fa/backup-codes": _problems(400, 409),
    "PUT /v1/members/{user_id}/roles": _problems(409),
    "POST /v1/members/{user_id}/deactivate": _problems(409),
    "POST /v1/members/{user_id}/reactivate": _problems(409),
    "POST /v1/invites": _problems(409),
    "POST /v1/invites/{invite_id}/resend": _problems(409),
    "DELETE /v1/invites/{invite_id}": _problems(409),
    "POST /v1/invites/accept": _problems(409, 410),
    "GET /v1/org": _problems(404),
    "PUT /v1/org/security": _problems(409),
    "POST /v1/org/ownership-transfer": _problems(404, 409),
    "POST /v1/runs": _problems(409),
    "POST /v1/runs/{run_id}/steps/{step_id}/decisions": _problems(409),
    "POST /v1/delegations": _problems(404),
    "POST /v1/groups": _problems(409),
    "GET /v1/decision-links/{token}": _pages(409, 410),
    # A refused decision is a page with the decision path's status.
    "POST /v1/decision-links/{token}": _pages(403, 404, 409, 410, 422, 503),
    "GET /v1/audit-events": _problems(404),
    "GET /v1/audit/export": _problems(404),
    "GET /v1/integrations/slack": _problems(404),
    "PUT /v1/integrations/slack": _problems(409, 502),
    "POST /v1/integrations/slack/interactions": _problems(401),
}

_CREDENTIALS = {deps.org_context}
_SESSION_ONLY = {deps.signed_in_person, deps.person_mid_sign_in}
_DEPENDENCIES = {deps.db_session, deps.temporal_client}
_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})


def install_openapi(app: FastAPI) -> None:
    """Replace `app.openapi` with the completed document (computed again if routes change)."""
    generate = app.openapi
    cache: dict[str, Any] = {}

    def openapi() -> dict[str, Any]:
        generated = generate()
        if cache.get("from") is not generated:
            cache["document"] = complete(app, copy.deepcopy(generated))
            cache["from"] = generated
        return cache["document"]  # type: ignore[no-any-return]

    app.openapi = openapi  # type: ignore[method-assign]


def complete(app: FastAPI, document: dict[str, Any]) -> dict[str, Any]:
    """`document` (FastAPI's) with every operation's errors and credentials."""
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    problem = ProblemOut.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(problem.pop("$defs", {}))
    schemas["ProblemOut"] = problem
    components["securitySchemes"] = SECURITY_SCHEMES
    for route, method in _operations(app):
        operation = document["paths"][route.path_format][method.lower()]
        declared = {str(status) for status in route.responses}
        for status, media in sorted(errors_of(route, method).items()):
            if str(status) not in declared:
                operation["responses"][str(status)] = _response(status, media)
        security = _security(route)
        if security:
            operation["security"] = security
    # FastAPI's own 422 schemas, now referenced by nothing.
    for name in ("HTTPValidationError", "ValidationError"):
        if f'"#/components/schemas/{name}"' not in json.dumps(document["paths"]):
            schemas.pop(name, None)
    return document


def _operations(app: FastAPI) -> Iterator[tuple[RouteContext, str]]:
    """Each documented (route, method); a route as included, with its router's prefix."""
    for route in iter_route_contexts(app.routes):
        if isinstance(route.original_route, APIRoute) and route.include_in_schema:
            for method in sorted(route.methods or ()):
                yield route, method


def _calls(dependant: Dependant | None) -> set[Callable[..., Any]]:
    if dependant is None:
        return set()
    found: set[Callable[..., Any]] = set()
    for sub in dependant.dependencies:
        if sub.call is not None:
            found.add(sub.call)
        found |= _calls(sub)
    return found


def errors_of(route: RouteContext, method: str) -> dict[int, set[str]]:
    """The statuses an operation may answer with an error, each with its media types."""
    calls = _calls(route.dependant)
    statuses = {413, 422, 429}
    if method not in _SAFE:
        statuses |= {400, 415}
    if calls & _CREDENTIALS:
        statuses |= {401, 403}
    elif calls & _SESSION_ONLY:
        statuses |= {401} if method in _SAFE else {401, 403}
    if calls & _DEPENDENCIES:
        statuses.add(503)
    if route.param_convertors and calls & (_CREDENTIALS | _SESSION_ONLY):
        statuses.add(404)  # the path names something of the caller's organization or account
    errors = {status: {PROBLEM_JSON} for status in statuses}
    for status, media in ROUTE_ERRORS.get(f"{method} {route.path_format}", {}).items():
        errors[status] = errors.get(status, set()) | media
    return errors


def _security(route: RouteContext) -> list[dict[str, list[str]]]:
    calls = _calls(route.dependant)
    if calls & _CREDENTIALS:
        return [{API_KEY_SCHEME: []}, {SESSION_SCHEME: []}]
    if calls & _SESSION_ONLY:
        return [{SESSION_SCHEME: []}]
    return []


def _response(status: int, media: set[str]) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": _DESCRIPTIONS.get(status, "Error"),
        "content": {kind: {"schema": _SCHEMAS[kind]} for kind in sorted(media)},
    }
    if status in _HEADERS:
        response["headers"] = _HEADERS[status]
    return response
