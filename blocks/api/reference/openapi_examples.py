"""The examples api.openapi adds where a model cannot carry one: a problem for every error
status, the pages of decision links and the streamed exports, and an operation's JSON example
taken from its model's (`blocks.api.reference.examples.example`)."""

from __future__ import annotations

import re
from typing import Any

from blocks.api.errors import PROBLEM_JSON
from blocks.api.html_pages import page
from blocks.api.reference import examples as ex

HTML = "text/html"
JSON = "application/json"
CSV = "text/csv"
NDJSON = "application/x-ndjson"

# (title, code, detail) of a typical problem of each status.
_PROBLEMS: dict[int, tuple[str, str, str]] = {
    400: ("Malformed JSON", "malformed_json", "the request body is not valid JSON"),
    401: (
        "Unauthorized",
        "unauthorized",
        "sign in, or send an API key (Authorization: Bearer <key>)",
    ),
    403: (
        "Forbidden",
        "csrf",
        "no Origin: state-changing requests signed in by cookie must come from this site",
    ),
    404: ("Not Found", "not_found", "not found"),
    409: ("Conflict", "conflict", "this conflicts with the current state"),
    410: ("Invitation Not Usable", "token_invalid", "this invitation has expired"),
    413: ("Content Too Large", "too_large", "the request body is larger than 1048576 bytes"),
    415: (
        "Unsupported Media Type",
        "unsupported_encoding",
        "a JSON body must be UTF-8 without a byte order mark: found a UTF-16 byte order mark",
    ),
    422: ("Invalid Request", "validation_error", "the request is not valid"),
    429: ("Too Many Requests", "rate_limited", "too many requests; try again in 12 seconds"),
    502: ("Bad Gateway", "slack_unreachable", "Slack could not be reached; try again"),
    503: (
        "Service Unavailable",
        "database_unavailable",
        "the database is unavailable; retry in a few seconds",
    ),
}
# What each operation's own 409 says (the code names the conflict, for programs).
_CONFLICTS: dict[str, tuple[str, str]] = {
    "POST /v1/auth/signup/verify": ("exists", "this address already has an account; sign in"),
    "POST /v1/auth/signin/2fa": ("no_mfa", "this session has no second factor pending"),
    "POST /v1/me/email/confirm": ("exists", "another account uses this address"),
    "POST /v1/me/slack-link": ("slack_not_installed", "this organization has not connected Slack"),
    "POST /v1/orgs": ("slug_taken", "this slug is taken"),
    "POST /v1/me/2fa/setup": ("two_factor_enabled", "two-factor sign-in is already enabled"),
    "POST /v1/me/2fa/enable": ("two_factor_setup_missing", "start with POST /v1/me/2fa/setup"),
    "POST /v1/me/2fa/disable": ("two_factor_not_enabled", "two-factor sign-in is not enabled"),
    "POST /v1/me/2fa/backup-codes": ("two_factor_not_enabled", "two-factor sign-in is not enabled"),
    "PUT /v1/members/{user_id}/roles": (
        "last_owner",
        "an organization keeps at least one active owner: make someone else owner first",
    ),
    "POST /v1/members/{user_id}/deactivate": (
        "member_deactivated",
        "this member is already deactivated",
    ),
    "POST /v1/members/{user_id}/reactivate": ("member_active", "this member is not deactivated"),
    "POST /v1/invites": ("already_member", "this person is already a member"),
    "POST /v1/invites/{invite_id}/resend": (
        "invite_not_pending",
        "this invite is accepted, not pending",
    ),
    "DELETE /v1/invites/{invite_id}": ("invite_not_pending", "this invite is revoked, not pending"),
    "POST /v1/invites/accept": ("already_member", "you are already a member of this organization"),
    "PUT /v1/org/security": (
        "two_factor_missing",
        "set up two-factor sign-in for yourself first (/v1/me/2fa): requiring it without "
        "having it would lock you out",
    ),
    "POST /v1/org/ownership-transfer": (
        "member_deactivated",
        "ownership goes to an active member; this one is deactivated",
    ),
    "POST /v1/runs": ("idempotency_conflict", "retry the request"),
    "POST /v1/runs/{run_id}/steps/{step_id}/decisions": (
        "already_decided",
        "you have already decided on this step",
    ),
    "POST /v1/groups": ("group_exists", "a group named 'finance' exists"),
    "PUT /v1/integrations/slack": (
        "slack_team_taken",
        "this Slack workspace is connected to another organization",
    ),
}
# Stand-ins for path parameters, so a problem's `instance` reads like a real request's path.
_PARAMETERS = {
    "run_id": ex.RUN_ID,
    "step_id": "approve",
    "user_id": ex.APPROVER_ID,
    "key_id": ex.KEY_ID,
    "invite_id": ex.INVITE_ID,
    "group_id": ex.GROUP_ID,
    "delegation_id": ex.DELEGATION_ID,
    "session_id": ex.SESSION_ID,
    "slack_user_id": "U04ALANTURING",
    "token": "dl_6f0c2a9e41d3b7a8_u7Vb2kQ9xLr4TzN1cWm8YpE3oHs6JdG5aFq0KiZ2nRw",
}


def problem_example(
    status: int, route: str, permission: str, invalid: tuple[str, str]
) -> dict[str, Any]:
    """A problem+json body as `status` answers it for `route` ("METHOD /path/{template}"),
    which needs `permission` (api.openapi.permission_of); a 422 names `invalid` (field, reason).
    """
    title, code, detail = _PROBLEMS.get(status, ("Error", "error", "the request failed"))
    path = route.split(" ", 1)[1]
    if status == 403 and ":" in permission:
        code, detail = "forbidden", f"your roles do not grant {permission}"
    if status == 409 and route in _CONFLICTS:
        code, detail = _CONFLICTS[route]
    if status == 404:
        named = re.findall(r"/([a-z-]+?)s?/\{", path) or ["resource"]
        detail = f"{named[-1].replace('-', ' ')} not found"
    if status == 422:
        detail = f"{invalid[0]}: {invalid[1]}"
    instance = re.sub(r"\{(\w+)\}", lambda m: _PARAMETERS.get(m[1], m[1]), path)
    body: dict[str, Any] = {
        "type": f"/problems/{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": instance,
        "code": code,
    }
    if status == 422:
        body["errors"] = [{"field": invalid[0], "reason": invalid[1]}]
    return body


def invalid_example(operation: dict[str, Any], schemas: dict[str, Any]) -> tuple[str, str]:
    """(field, reason) of a typical 422 of `operation`: a body field left out, a parameter of
    the wrong shape, or a NUL character (refused on every route)."""
    body = operation.get("requestBody", {}).get("content", {}).get(JSON, {}).get("schema", {})
    if "$ref" in body:
        body = schemas.get(body["$ref"].rsplit("/", 1)[1], {})
    if body.get("required"):
        return body["required"][0], "Field required"
    for parameter in operation.get("parameters", []):
        schema = parameter.get("schema", {})
        if schema.get("format") == "uuid":
            return parameter["name"], "Input should be a valid UUID"
        if "maximum" in schema:
            return parameter["name"], f"Input should be less than or equal to {schema['maximum']}"
        if "enum" in schema:
            return parameter["name"], "Input should be " + " or ".join(map(repr, schema["enum"]))
    return "path", "must not contain a NUL character"


def _page(title: str, body: str) -> str:
    return bytes(page(title, body).body).decode()


_DECISION_PAGE = _page(
    "Your decision is needed",
    "<p><strong>Expense of 120.50 EUR: Team lunch</strong></p>"
    f"<p>Workflow expense_approval, deadline {ex.DEADLINE}.</p>"
    "<form method='post'><p><label>Comment <input name='comment' maxlength='2000'></label></p>"
    "<button name='decision' value='approve'>Approve</button> "
    "<button name='decision' value='reject'>Reject</button></form>",
)
_DECIDED_PAGE = _page(
    "Decision recorded", "<p>You chose <strong>approve</strong>; the step is now approved.</p>"
)
_CLOSED_PAGE = _page("Nothing to decide", "<p>This step is already closed.</p>")
_USED_PAGE = _page("Link not usable", "<p>this link has already been used.</p>")
_SIGN_IN_PAGE = _page(
    "Sign-in required",
    "<p>Sign in to Blocks as the approver this link was sent to, then use it again.</p>",
)
_EXPORT = (
    '{"type":"header","format":"blocks.audit.export.v1","org_id":"' + ex.ORG_ID + '",'
    '"exported_at":"2025-03-04T11:00:00.000000+00:00","filters":{},"complete":true,'
    '"first_seq":1,"last_seq":42,"head":{"seq":42,"hash":"' + ex.HASH + '"},'
    '"public_keys":{"' + ex.SIGNING_KEY_ID + '":"' + ex.PUBLIC_KEY + '"}}\n'
    '{"type":"event","seq":42,"action":"step.decided","run_id":"' + ex.RUN_ID + '",'
    '"prev_hash":"' + ex.PREV_HASH + '","hash":"' + ex.HASH + '"}\n'
    '{"type":"checkpoint","org_id":"' + ex.ORG_ID + '","seq":42,"hash":"' + ex.HASH + '",'
    '"signed_at":"2025-03-04T11:00:00.000000+00:00","key_id":"' + ex.SIGNING_KEY_ID + '",'
    '"signature":"' + ex.SIGNATURE + '"}\n'
)
_EXPORT_CSV = (
    "type,seq,id,org_id,occurred_at,action,actor_type,actor_id,actor_email,target_type,"
    "target_id,run_id,outcome,reason,ip,user_agent,data,prev_hash,hash,signed_at,key_id,"
    "signature\r\n"
    f"event,42,{ex.EVENT_ID},{ex.ORG_ID},{ex.DECIDED},step.decided,user,{ex.APPROVER_ID},"
    f"{ex.APPROVER_EMAIL},step,approve,{ex.RUN_ID},success,,203.0.113.7,curl/8.5.0,"
    f'"{{""decision"":""approve""}}",{ex.PREV_HASH},{ex.HASH},,,\r\n'
)
_SLA_CSV = (
    "run_id,workflow,step_id,title,opened_at,deadline,closed_at,decided_at,state,outcome,"
    "time_to_decision_seconds,reminders,escalated,escalated_at,breached_at,deciders\r\n"
    f"{ex.RUN_ID},expense_approval,approve,Expense of 120.50 EUR: Team lunch,{ex.STARTED},"
    f"{ex.DEADLINE},{ex.DECIDED},{ex.DECIDED},approved,met,2861.0,0,false,,,"
    f"{ex.APPROVER_ID}:approve\r\n"
)
_NOT_READY = {"status": "unavailable", "checks": {"postgres": "ok", "temporal": "error: RPCError"}}

# Bodies no model describes, by operation, status and media type.
MEDIA_EXAMPLES: dict[str, dict[int, dict[str, Any]]] = {
    "GET /readyz": {503: {JSON: _NOT_READY}},
    "GET /v1/decision-links/{token}": {
        200: {HTML: _DECISION_PAGE},
        409: {HTML: _CLOSED_PAGE},
        410: {HTML: _USED_PAGE},
    },
    "POST /v1/decision-links/{token}": {
        200: {HTML: _DECIDED_PAGE},
        403: {HTML: _SIGN_IN_PAGE},
        409: {HTML: _CLOSED_PAGE},
        410: {HTML: _USED_PAGE},
        404: {HTML: _page("Decision not recorded", "<p>run not found.</p>")},
        422: {HTML: _page("Invalid decision", "<p>Choose approve or reject.</p>")},
        503: {HTML: _page("Decision not recorded", "<p>the engine is unavailable.</p>")},
    },
    "GET /v1/audit/export": {200: {NDJSON: _EXPORT, CSV: _EXPORT_CSV}},
    "GET /v1/reports/sla": {200: {CSV: _SLA_CSV}},
}


def schema_example(schema: dict[str, Any], schemas: dict[str, Any]) -> Any:
    """The example a schema's model names, looking through a reference, a list and `null`;
    None when it names none."""
    if "$ref" in schema:
        schema = schemas.get(schema["$ref"].rsplit("/", 1)[1], {})
    if schema.get("examples"):
        return schema["examples"][0]
    if schema.get("type") == "array" and "items" in schema:
        item = schema_example(schema["items"], schemas)
        return None if item is None else [item]
    for option in schema.get("anyOf", []):
        if option.get("type") != "null":
            return schema_example(option, schemas)
    return None


def media_example(
    route: str,
    permission: str,
    operation: dict[str, Any],
    status: int,
    media: str,
    schemas: dict[str, Any],
) -> Any:
    """What to show as the example of one response body; None if nothing is known."""
    known = MEDIA_EXAMPLES.get(route, {}).get(status, {})
    if media in known:
        return known[media]
    schema = operation["responses"][str(status)]["content"][media].get("schema")
    if media == PROBLEM_JSON:
        return problem_example(status, route, permission, invalid_example(operation, schemas))
    if media == JSON and isinstance(schema, dict):
        return schema_example(schema, schemas)
    return None
