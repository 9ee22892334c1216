"""The OpenAPI document as the API behaves: every error an operation can answer, with the
problem+json schema, the credentials it takes (or `security: []`), the permission it needs, its
domain's tag, and an example of every body.

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

Each operation also gets `x-blocks-permission` (and a sentence of its description saying it):
the permission its `deps.require(...)` checks, `session` for the signed-in person's own routes,
`public` for those without a credential, `agent` for a remote agent's own token, `member` for
any member's credential, `refused` for one that refuses everyone. Its
operationId is the route's `operation_id=`, else its function's name: what a generated client
calls it. Its summary is the route's own `summary=`; FastAPI's made-up one is dropped, so a
route without one shows (and tests/unit/test_openapi_document.py fails). Examples come from the
models (`blocks.api.reference.examples.example`) and, for problems and bodies no model describes, from
api.openapi_examples.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from pydantic import TypeAdapter
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue

from blocks.api import deps
from blocks.api.agents.auth import agent_principal
from blocks.api.errors import PROBLEM_JSON
from blocks.api.identity.sessions import SESSION_COOKIE
from blocks.api.reference.openapi_examples import HTML, JSON, media_example, schema_example
from blocks.api.schemas import ProblemOut
from blocks.core.roles import ROLE_PERMISSIONS, Permission

API_KEY_SCHEME = "apiKey"
SESSION_SCHEME = "session"
AGENT_SCHEME = "agentToken"
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
    AGENT_SCHEME: {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "blkagent_<lookup>_<secret>",
        "description": "A remote agent's token: `Authorization: Bearer blkagent_...` (POST "
        "/v1/agents/{agent_id}/tokens); it opens only the agent's own routes",
    },
}

# The domains (blocks/api/<domain>/), one tag each, in the order the reference shows them.
TAGS: list[dict[str, str]] = [
    {"name": "health", "description": "Liveness and readiness probes; no credential."},
    {
        "name": "identity",
        "description": "Sign-up and sign-in (password, emailed link, second factor), your own "
        "account and sessions, organizations, members, invites, API keys and the "
        "organization's security settings.",
    },
    {
        "name": "approvals",
        "description": "Runs of registered workflows: start, list, read; their approval steps, "
        "decided through the API, the inbox, emailed decision links or a delegate; approver "
        "groups and SLA reports.",
    },
    {
        "name": "audit",
        "description": "The organization's hash-chained audit log: events, export, "
        "verification, signed checkpoints, a run's chain of custody, and erasure of a "
        "member's personal data.",
    },
    {
        "name": "integrations",
        "description": "Slack: installation, approval buttons in a channel, and linking a "
        "member's own Slack account; LLM credentials; remote agents: the registry of A2A agent "
        "cards, agent tokens, metrics, public cards and the agent's own session.",
    },
]

PUBLIC = "public"
SESSION = "session"
MEMBER = "member"  # any member of the organization, whatever their roles
REFUSED = "refused"
AGENT = "agent"  # a remote agent's own token (api.agents.auth), no member
PERMISSION_FIELD = "x-blocks-permission"

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
_SCHEMAS: dict[str, dict[str, Any]] = {
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
    # Single sign-on: an unknown organization or provider is a 404; a refused sign-in a 400 (the
    # protocol) or 403 (the account's rules); a first sign-in raced by another 409; the identity
    # provider unreachable a 503.
    "GET /v1/sso/{org_slug}": _problems(404),
    "GET /v1/sso/{org_slug}/{provider_id}/start": _problems(400, 404, 503),
    "GET /v1/sso/{org_slug}/{provider_id}/oidc/callback": _problems(400, 403, 404, 409, 503),
    "POST /v1/sso/{org_slug}/{provider_id}/saml/acs": _problems(400, 403, 404, 409, 503),
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
    "POST /v1/agents": _problems(409),
    "POST /v1/agents/{agent_id}/tokens/{token_id}/rotate": _problems(409),
    "GET /v1/orgs/{org_slug}/agents/{name}/.well-known/agent-card.json": _problems(404),
    # Another agent's task (audited), a task not delivered to it, an input already gone.
    "GET /v1/agents/tasks/{task_id}/input": _problems(403, 404, 410),
}

_REF = "#/components/schemas/{model}"
_CREDENTIALS = {deps.org_context}
_SESSION_ONLY = {deps.signed_in_person, deps.person_mid_sign_in}
_AGENT_CREDENTIALS = {agent_principal}
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
    """`document` (FastAPI's) with every operation's errors, credentials, permission, name and
    examples."""
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    problem = ProblemOut.model_json_schema(ref_template=_REF)
    if "ProblemOut" in schemas and schemas["ProblemOut"].get("title") != problem.get("title"):
        raise ValueError("another model is named ProblemOut: rename it")
    schemas.update(problem.pop("$defs", {}))
    schemas["ProblemOut"] = problem
    components["securitySchemes"] = SECURITY_SCHEMES
    document["tags"] = TAGS
    for name, examples in _model_examples(app).items():
        if name in schemas:
            schemas[name]["examples"] = examples
    for route, method in _operations(app):
        key = f"{method} {route.path_format}"
        operation = document["paths"][route.path_format][method.lower()]
        operation["operationId"] = route.operation_id or route.name
        if route.summary is None:
            operation.pop("summary", None)
        permission = permission_of(route)
        operation[PERMISSION_FIELD] = permission
        operation["description"] = "\n\n".join(
            filter(None, [operation.get("description"), _permission_sentence(permission)])
        )
        declared = {str(status) for status in route.responses}
        for status, media in sorted(errors_of(route, method).items()):
            if str(status) not in declared:
                operation["responses"][str(status)] = _response(status, media)
        operation["security"] = _security(route)
        _add_examples(key, permission, operation, schemas)
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


class _AsWritten(GenerateJsonSchema):
    """Keeps each example's keys in the order its model wrote them (pydantic sorts them)."""

    def sort(self, value: JsonSchemaValue, parent_key: str | None = None) -> JsonSchemaValue:
        return value


def _model_examples(app: FastAPI) -> dict[str, list[Any]]:
    """Each body model's `examples`, as the model states them: FastAPI drops every null from the
    document it makes, and with them the example values of nullable fields."""
    found: dict[str, list[Any]] = {}
    for route, _ in _operations(app):
        shapes = [(route.response_model, "serialization")]
        shapes += [(r.get("model"), "serialization") for r in route.responses.values()]
        if route.body_field is not None:
            shapes.append((route.body_field.field_info.annotation, "validation"))
        for shape, mode in shapes:
            if shape is None:
                continue
            schema = TypeAdapter(shape).json_schema(
                mode=mode, ref_template=_REF, schema_generator=_AsWritten
            )
            named = [(getattr(shape, "__name__", ""), schema), *schema.get("$defs", {}).items()]
            found.update((name, sub["examples"]) for name, sub in named if "examples" in sub)
    return found


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
    elif calls & _AGENT_CREDENTIALS:
        statuses.add(401)
    if calls & _DEPENDENCIES:
        statuses.add(503)
    if route.param_convertors and calls & (_CREDENTIALS | _SESSION_ONLY):
        statuses.add(404)  # the path names something of the caller's organization or account
    errors = {status: {PROBLEM_JSON} for status in statuses}
    for status, media in ROUTE_ERRORS.get(f"{method} {route.path_format}", {}).items():
        errors[status] = errors.get(status, set()) | media
    return errors


def permission_of(route: RouteContext) -> str:
    """What the caller needs: a permission, their own session, nothing, or nothing will do."""
    if route.status_code is not None and route.status_code >= 400:
        return REFUSED  # a route whose answer is a refusal, whoever asks
    calls = _calls(route.dependant)
    required = {_required(call) for call in calls} - {None}
    if len(required) > 1:
        raise ValueError(f"{route.path_format} requires several permissions: {required}")
    if required:
        return str(required.pop())
    if calls & _CREDENTIALS:
        return MEMBER
    if calls & _SESSION_ONLY:
        return SESSION
    if calls & _AGENT_CREDENTIALS:
        return AGENT
    return PUBLIC


def _required(call: Callable[..., Any]) -> Permission | None:
    """The permission a `deps.require(...)` dependency checks (None for any other)."""
    permission = getattr(call, "permission", None)
    return permission if isinstance(permission, Permission) else None


def _permission_sentence(permission: str) -> str:
    if permission == PUBLIC:
        return "**Permission:** `public`: no credential is needed."
    if permission == SESSION:
        return (
            "**Permission:** `session`: the signed-in person's session cookie; it acts on "
            "their own account, whatever their roles."
        )
    if permission == MEMBER:
        return "**Permission:** `member`: an API key or session of any member, whatever roles."
    if permission == REFUSED:
        return "**Permission:** `refused`: no role allows this; every call is a 403, audited."
    if permission == AGENT:
        return "**Permission:** `agent`: a remote agent's own token, not a member's credential."
    roles = [
        role.value
        for role, granted in ROLE_PERMISSIONS.items()
        if Permission(permission) in granted
    ]
    return (
        f"**Permission:** `{permission}`, which the roles {', '.join(roles)} grant; without it "
        "the answer is 403, audited."
    )


def _add_examples(
    key: str, permission: str, operation: dict[str, Any], schemas: dict[str, Any]
) -> None:
    """An example on each body of `operation` that has none yet (where one is known)."""
    bodies = [(None, operation.get("requestBody", {}))]
    bodies += [(int(status), response) for status, response in operation["responses"].items()]
    for status, body in bodies:
        for media, content in body.get("content", {}).items():
            if not media.endswith("json"):
                content.setdefault("schema", {"type": "string"})  # a page, CSV, JSON Lines
            if "example" in content or "examples" in content:
                continue
            schema = content.get("schema")
            if status is None:
                found = schema_example(schema, schemas) if isinstance(schema, dict) else None
            else:
                found = media_example(key, permission, operation, status, media, schemas)
            if found is not None:
                content["example"] = found


def _security(route: RouteContext) -> list[dict[str, list[str]]]:
    calls = _calls(route.dependant)
    if calls & _CREDENTIALS:
        return [{API_KEY_SCHEME: []}, {SESSION_SCHEME: []}]
    if calls & _SESSION_ONLY:
        return [{SESSION_SCHEME: []}]
    if calls & _AGENT_CREDENTIALS:
        return [{AGENT_SCHEME: []}]
    return []


def _response(status: int, media: set[str]) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": _DESCRIPTIONS.get(status, "Error"),
        "content": {kind: {"schema": _SCHEMAS[kind]} for kind in sorted(media)},
    }
    if status in _HEADERS:
        response["headers"] = _HEADERS[status]
    return response
