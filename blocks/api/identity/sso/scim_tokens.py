"""Routes for the organization's SCIM token (permission `org:security`): issue or rotate it (the
old one stops working at once; the new one is shown once), revoke it, and see whether one is
live and where the SCIM service is."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from blocks.api.deps import CanManageSecurity, DbSession, record_change
from blocks.api.errors import Problem
from blocks.api.reference import examples as ex
from blocks.api.reference.examples import example
from blocks.api.scim.protocol import SCIM_PATH
from blocks.core.context import OrgContext
from blocks.models.identity.scim.tables import (
    ScimToken,
    TokenRace,
    issue_scim_token,
    live_token,
    revoke_token,
)

router = APIRouter(prefix="/v1/org/scim", tags=["identity"])

_SCIM_URL = "https://blocks.example/scim/v2"
_TOKEN = "blkscim_4f3e2d1c0b9a8776_Vb5Nm8Qw2Er6Ty1Ui4Op7As0Df3Gh6Jk9Lz2Xc5Vb8N"  # noqa: S105


class ScimStatusOut(BaseModel):
    model_config = example(
        token_live=True, created_at=ex.CREATED, last_used_at=ex.STARTED, base_url=_SCIM_URL
    )

    token_live: bool = Field(description="Whether a SCIM token works now")
    created_at: datetime | None = Field(description="When the live token was issued")
    last_used_at: datetime | None = Field(description="When it was last used (to the minute)")
    base_url: str = Field(description="The SCIM 2.0 base URL to give the identity provider")


class ScimTokenOut(ScimStatusOut):
    model_config = example(
        token_live=True,
        created_at=ex.CREATED,
        last_used_at=None,
        base_url=_SCIM_URL,
        token=_TOKEN,
    )

    token: str = Field(description="The token itself; shown only in this response")


def _base_url(request: Request) -> str:
    return f"{request.app.state.settings.public_url.rstrip('/')}{SCIM_PATH}"


def _status(request: Request, token: ScimToken | None) -> ScimStatusOut:
    return ScimStatusOut(
        token_live=token is not None,
        created_at=token.created_at if token else None,
        last_used_at=token.last_used_at if token else None,
        base_url=_base_url(request),
    )


async def _audit(
    request: Request, ctx: OrgContext, db: DbSession, action: str, token: ScimToken
) -> None:
    await record_change(request, ctx, db, action, target_type="scim_token", target_id=str(token.id))


@router.get(
    "", response_model=ScimStatusOut, summary="SCIM provisioning status", operation_id="scim"
)
async def status(request: Request, ctx: CanManageSecurity, db: DbSession) -> ScimStatusOut:
    """Whether a SCIM token is live, when it was issued and last used, and the base URL."""
    return _status(request, await live_token(ctx, db))


@router.post(
    "/token",
    status_code=201,
    response_model=ScimTokenOut,
    summary="Issue or rotate the SCIM token",
    operation_id="issue_scim_token",
)
async def issue(request: Request, ctx: CanManageSecurity, db: DbSession) -> ScimTokenOut:
    """A new SCIM token; the live one, if any, is revoked at once. The token is in this
    response only: the database keeps a hash."""
    previous = await live_token(ctx, db)
    try:
        issued = await issue_scim_token(ctx, db)
    except TokenRace:
        raise Problem(
            409, "Conflict", "another SCIM token was issued at the same moment", code="conflict"
        ) from None
    if previous is not None:
        await _audit(request, ctx, db, "scim.token_revoked", previous)
    await _audit(request, ctx, db, "scim.token_issued", issued.token)
    return ScimTokenOut(**_status(request, issued.token).model_dump(), token=issued.plaintext)


@router.delete(
    "/token", status_code=204, summary="Revoke the SCIM token", operation_id="revoke_scim_token"
)
async def revoke(request: Request, ctx: CanManageSecurity, db: DbSession) -> Response:
    """Provisioning stops until a new token is issued. With no live token: 204, no change."""
    revoked = await revoke_token(ctx, db)
    if revoked is not None:
        await _audit(request, ctx, db, "scim.token_revoked", revoked)
    return Response(status_code=204)
