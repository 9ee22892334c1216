"""Rate limits on sign-in, sign-up, tokens, 2FA and API requests: 429 with Retry-After, audited.

`enforce(request, rule, *identifiers)` counts one hit of `rule` for each identifier. A rule is
named after its setting `rate_limit_<rule>` (see blocks.infra.rate_limits for the list):
"signin_ip", "signin_account", "token_ip", "2fa_account", "slack_link_user", "api_credential",
"api_ip", "invalid_ip". Rule "api_credential" also counts "api_ip" for the client address, so
callers of the API rules pass only the credential.

When the counters' storage is down, the rules that guard secrets (sign-in, tokens, 2FA, Slack
link codes) answer 503 with Retry-After rather than let guesses through unlimited; the others
let the request through (blocks.infra.rate_limits logs it).

Identifiers are "<kind>:<value>", e.g. "ip:203.0.113.7", "credential:<uuid>",
"account:<email>", "user:<uuid>". The kind goes into the audit event's data; the value only
for a credential or user id. An address is not copied there: the event's own `ip` field holds
the client address, which the audit log seals under the person's key when a user is the actor
(so erasing their personal data covers it); a copy in `data` would escape that. Nor is an
email address ever copied.

The client address is `request.client.host`: the app is wrapped in uvicorn's
ProxyHeadersMiddleware, which believes X-Forwarded-For only from `trusted_proxies`.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from math import ceil
from typing import Any

from fastapi import FastAPI, Request

from blocks.api.errors import Problem, service_unavailable
from blocks.api.security_audit import client_ip, record_security_event, request_audit_fields
from blocks.core.audit.records import AuditRecord, Outcome
from blocks.core.context import OrgContext
from blocks.infra.rate_limits import RateLimiter, RateLimitUnavailable
from blocks.models.audit.events import append_events

ACTION = "rate_limit.exceeded"

# What the 429's detail says is being limited, per rule.
_WHAT = {
    "signin_ip": "sign-in attempts from this address",
    "signin_account": "sign-in attempts for this account",
    "token_ip": "requests of this kind from this address",
    "2fa_account": "second-factor attempts for this account",
    "api_credential": "requests with this credential",
    "api_ip": "requests from this address",
    "invalid_ip": "invalid requests from this address",
    "slack_link_user": "Slack link codes tried by this Slack user",
}
# Seconds a client is asked to wait when the counters' storage is down (a guess: it is usually
# a restart away).
UNAVAILABLE_RETRY_AFTER = 30
# Identifier kinds whose value may be written into an audit event's data as it is (not
# personal data; see the module's docstring).
_LOGGABLE_KINDS = frozenset({"credential", "user"})


@dataclass(frozen=True)
class _Refusal:
    rule: str
    identifier: str
    seconds: float


def limiter(app: FastAPI) -> RateLimiter:
    """The app's limiter, built with the app (api.app.create_app), so a bad rule fails at start."""
    return app.state.rate_limiter  # type: ignore[no-any-return]


def address(request: Request) -> str:
    """The identifier of the client's address."""
    return f"ip:{client_ip(request) or 'unknown'}"


async def enforce_per_address(request: Request, rule: str) -> None:
    """`enforce` of `rule` for the client's address."""
    await enforce(request, rule, address(request))


async def enforce(request: Request, rule: str, *identifiers: str) -> None:
    """Count one hit of `rule` for each identifier (an IP, an account); 429 if any is over."""
    counter = limiter(request.app)
    checks = [(rule, identifier) for identifier in identifiers]
    ip = client_ip(request)
    if rule == "api_credential" and ip:
        checks.append(("api_ip", f"ip:{ip}"))
    refusals: list[_Refusal] = []
    for checked_rule, identifier in checks:
        seconds = await _counted(counter.hit(checked_rule, identifier))
        if seconds is not None:
            refusals.append(_Refusal(checked_rule, identifier, seconds))
    await _refuse(request, counter, refusals)


async def refuse_if_over(request: Request, rule: str, *identifiers: str) -> None:
    """429 if `rule` is already used up for any identifier, counting nothing: with `count`
    after a failure, a limit on failures only (a person signing in correctly never meets it)."""
    counter = limiter(request.app)
    refusals: list[_Refusal] = []
    for identifier in identifiers:
        seconds = await _counted(counter.over(rule, identifier))
        if seconds is not None:
            refusals.append(_Refusal(rule, identifier, seconds))
    await _refuse(request, counter, refusals)


async def count(request: Request, rule: str, *identifiers: str) -> None:
    """Count one hit of `rule` for each identifier without refusing this request."""
    counter = limiter(request.app)
    for identifier in identifiers:
        await _counted(counter.hit(rule, identifier))


async def _counted(check: Awaitable[float | None]) -> float | None:
    """The limiter's answer; 503 with Retry-After when a fail-closed rule cannot be counted."""
    try:
        return await check
    except RateLimitUnavailable:
        raise service_unavailable(
            "this request cannot be checked against its rate limit right now; try again later",
            code="rate_limit_unavailable",
            retry_after=UNAVAILABLE_RETRY_AFTER,
        ) from None


async def _refuse(request: Request, counter: RateLimiter, refusals: list[_Refusal]) -> None:
    if not refusals:
        return
    retry_after = ceil(max(r.seconds for r in refusals))
    for refusal in refusals:
        # Audited once per (rule, identifier) and period, not once per refused request: an
        # attack hammering a limit must not turn into an audit-log flood (see first_refusal).
        if counter.first_refusal(refusal.rule, refusal.identifier):
            await _audit(request, refusal, retry_after)
    worst = max(refusals, key=lambda r: r.seconds)
    unit = "second" if retry_after == 1 else "seconds"
    raise Problem(
        429,
        "Too Many Requests",
        f"too many {_WHAT.get(worst.rule, 'requests')}; try again in {retry_after} {unit}",
        code="rate_limited",
        headers={"Retry-After": str(retry_after)},
    )


def _event_data(refusal: _Refusal, retry_after: int) -> dict[str, Any]:
    kind, sep, value = refusal.identifier.partition(":")
    data: dict[str, Any] = {
        "rule": refusal.rule,
        "identifier_kind": kind if sep else "unspecified",
        "retry_after": retry_after,
    }
    if sep and kind in _LOGGABLE_KINDS and "@" not in value:
        data["identifier"] = value[:200]
    return data


async def _audit(request: Request, refusal: _Refusal, retry_after: int) -> None:
    """One `rate_limit.exceeded` event, in its own transaction (the request is refused): in the
    caller's organization once it is known, else in the platform chain."""
    reason = f"rate limit {refusal.rule} exceeded"
    target_id = f"{request.method} {request.url.path}"
    data = _event_data(refusal, retry_after)
    ctx = getattr(request.state, "ctx", None)
    if isinstance(ctx, OrgContext):
        if ctx.credential_id is not None:
            data["credential_id"] = str(ctx.credential_id)
        async with request.app.state.sessions() as session, session.begin():
            await append_events(
                ctx,
                session,
                [
                    AuditRecord(
                        action=ACTION,
                        target_type="route",
                        target_id=target_id,
                        outcome=Outcome.DENIED,
                        reason=reason,
                        data=data,
                        **request_audit_fields(request, ctx),
                    )
                ],
            )
        return
    await record_security_event(
        request,
        action=ACTION,
        outcome=Outcome.DENIED,
        reason=reason,
        target_type="route",
        target_id=target_id,
        data=data,
    )
