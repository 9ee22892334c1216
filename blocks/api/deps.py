"""Request dependencies: the transaction, the caller's OrgContext, and permission checks."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession
from temporalio.client import Client

from blocks.api import rate_limit
from blocks.api.errors import Problem
from blocks.api.identity.sessions import SESSION_COOKIE, SignedIn, session_org_context, signed_in
from blocks.api.security_audit import request_audit_fields
from blocks.core.audit.records import AuditRecord, Outcome
from blocks.core.context import OrgContext
from blocks.core.roles import Permission
from blocks.models.audit.events import append_events
from blocks.models.identity.api_keys import SsoRequired, TwoFactorRequired, resolve_api_key


def _sessions(request: Request) -> async_sessionmaker[AsyncSession]:
    return request.app.state.sessions  # type: ignore[no-any-return]


async def db_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One transaction per request: committed when the route returns, rolled back if it raises."""
    async with _sessions(request)() as session:
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise
        else:
            await session.commit()


DbSession = Annotated[AsyncSession, Depends(db_session, scope="function")]


async def temporal_client(request: Request) -> Client:
    # async: FastAPI runs a plain `def` dependency on a thread of its pool, one per request.
    return request.app.state.temporal  # type: ignore[no-any-return]


TemporalClient = Annotated[Client, Depends(temporal_client)]


def _bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def unauthorized(detail: str, code: str = "unauthorized") -> Problem:
    return Problem(401, "Unauthorized", detail, code=code, headers={"WWW-Authenticate": "Bearer"})


async def org_context(request: Request, session: DbSession) -> OrgContext:
    """The caller's organization, person and roles: from an API key, or from a session cookie
    scoped to an organization (then a state-changing request must also pass the origin check)."""
    token = _bearer_token(request)
    if token is not None:
        try:
            ctx = await resolve_api_key(session, token)
        except TwoFactorRequired as refused:
            request.state.ctx = refused.ctx
            await record_denial(request, refused.ctx, "organization requires two-factor sign-in")
            raise Problem(
                403,
                "Forbidden",
                "this organization requires two-factor sign-in: the key's member must set it "
                "up (/v1/me/2fa) before the key works",
                code="two_factor_required",
            ) from None
        except SsoRequired as refused:
            request.state.ctx = refused.ctx
            await record_denial(
                request,
                refused.ctx,
                "organization enforces single sign-on: its identity provider does not have the "
                "key's member",
            )
            raise Problem(
                403,
                "Forbidden",
                "this organization enforces single sign-on: an API key works only for a member "
                "its identity provider has (signed in through it, or provisioned by SCIM)",
                code="sso_required",
            ) from None
        if ctx is None:
            # Guessing keys is hopeless (256 bits), but a flood of them is still cut off.
            await rate_limit.enforce_per_address(request, "invalid_ip")
            raise unauthorized("this API key is not valid, has expired or was revoked")
    elif request.cookies.get(SESSION_COOKIE):
        signed = await signed_in(request, session)
        ctx = await session_org_context(request, session, signed)
    else:
        raise unauthorized("sign in, or send an API key (Authorization: Bearer <key>)")
    request.state.ctx = ctx
    await rate_limit.enforce(
        request,
        "api_credential",
        f"credential:{ctx.credential_id}",
    )
    return ctx


OrgCtx = Annotated[OrgContext, Depends(org_context)]


async def signed_in_person(request: Request, session: DbSession) -> SignedIn:
    signed = await signed_in(request, session)
    await rate_limit.enforce(request, "api_credential", f"credential:{signed.session.id}")
    return signed


async def person_mid_sign_in(request: Request, session: DbSession) -> SignedIn:
    signed = await signed_in(request, session, allow_mfa_pending=True)
    await rate_limit.enforce(request, "api_credential", f"credential:{signed.session.id}")
    return signed


# The signed-in person (session cookie), whatever organization the session is in, if any.
# As dependencies they run before the body is validated: no credential is a 401, not a 422.
Person = Annotated[SignedIn, Depends(signed_in_person)]
# The same, also while the second factor is still owed (the 2FA step itself, sign-out).
PersonMidSignIn = Annotated[SignedIn, Depends(person_mid_sign_in)]


async def record_change(
    request: Request,
    ctx: OrgContext,
    session: AsyncSession,
    action: str,
    *,
    target_type: str,
    target_id: str,
    data: dict[str, Any] | None = None,
) -> None:
    """Audit what a route changes, in the route's own transaction: it commits with the change."""
    await append_events(
        ctx,
        session,
        [
            AuditRecord(
                action=action,
                target_type=target_type,
                target_id=target_id,
                data=data or {},
                **request_audit_fields(request, ctx),
            )
        ],
    )


async def record_denial(request: Request, ctx: OrgContext, reason: str) -> None:
    """Audit a refused request in its own transaction, so the refusal survives the rollback."""
    async with _sessions(request)() as session, session.begin():
        await append_events(
            ctx,
            session,
            [
                AuditRecord(
                    action="access.denied",
                    target_type="route",
                    target_id=f"{request.method} {request.url.path}",
                    outcome=Outcome.DENIED,
                    reason=reason,
                    data={"credential_id": str(ctx.credential_id) if ctx.credential_id else None},
                    **request_audit_fields(request, ctx),
                )
            ],
        )


def forbidden(detail: str) -> Problem:
    return Problem(403, "Forbidden", detail, code="forbidden")


def require(permission: Permission) -> Callable[..., Coroutine[Any, Any, OrgContext]]:
    """A dependency that passes the caller's context on only if its roles grant `permission`;
    it carries `permission` (as `.permission`) for the OpenAPI document to state."""

    async def check(request: Request, ctx: OrgCtx) -> OrgContext:
        if not ctx.can(permission):
            await record_denial(request, ctx, f"missing permission {permission.value}")
            raise forbidden(f"your roles do not grant {permission.value}")
        return ctx

    check.permission = permission  # type: ignore[attr-defined]
    return check


CanStartRuns = Annotated[OrgContext, Depends(require(Permission.RUN_START))]
CanReadRuns = Annotated[OrgContext, Depends(require(Permission.RUN_READ))]
CanCancelRuns = Annotated[OrgContext, Depends(require(Permission.RUN_CANCEL))]
CanManageWorkflows = Annotated[OrgContext, Depends(require(Permission.WORKFLOW_MANAGE))]
CanDecide = Annotated[OrgContext, Depends(require(Permission.STEP_DECIDE))]
CanReadAudit = Annotated[OrgContext, Depends(require(Permission.AUDIT_READ))]
CanReadOrg = Annotated[OrgContext, Depends(require(Permission.ORG_READ))]
CanManageMembers = Annotated[OrgContext, Depends(require(Permission.MEMBER_MANAGE))]
CanManageSecurity = Annotated[OrgContext, Depends(require(Permission.ORG_SECURITY))]
CanManageOwnKeys = Annotated[OrgContext, Depends(require(Permission.API_KEY_OWN))]
CanOwn = Annotated[OrgContext, Depends(require(Permission.ORG_OWN))]
CanManageIntegrations = Annotated[OrgContext, Depends(require(Permission.INTEGRATION_MANAGE))]
CanErase = Annotated[OrgContext, Depends(require(Permission.PRIVACY_ERASE))]
