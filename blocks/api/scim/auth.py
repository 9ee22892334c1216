"""The SCIM routes' credential: the organization's SCIM token, as a bearer token. It resolves to a
context of that organization with no person and no role (`AuthMethod.SCIM`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from blocks.api import rate_limit
from blocks.api.deps import DbSession, unauthorized
from blocks.core.context import OrgContext
from blocks.models.identity.scim.tables import resolve_scim_token


def _bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def scim_context(request: Request, db: DbSession) -> OrgContext:
    token = _bearer(request)
    if token is None:
        raise unauthorized("send the organization's SCIM token (Authorization: Bearer <token>)")
    ctx = await resolve_scim_token(db, token)
    if ctx is None:
        # As for API keys: guessing is hopeless (256 bits), a flood is still cut off.
        await rate_limit.enforce_per_address(request, "invalid_ip")
        raise unauthorized("this SCIM token is not valid or was revoked")
    request.state.ctx = ctx
    await rate_limit.enforce(request, "api_credential", f"credential:{ctx.credential_id}")
    return ctx


ScimCtx = Annotated[OrgContext, Depends(scim_context)]
