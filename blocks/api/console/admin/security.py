"""Console pages for the organization's security settings (two-factor requirement, decision-link
policy, approvers named in a run's input) and a read-only overview of its integrations (Slack,
LLM credentials, identity providers), through the API's own routes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import BaseModel, ValidationError

from blocks.api.approvals.approval_settings import (
    ApprovalSettingsIn,
    approval_settings,
    set_approval_settings,
)
from blocks.api.approvals.decision_links import LinkPolicyIn, set_policy
from blocks.api.console.admin.common import ADMIN, as_bool, back_to, notice, refused
from blocks.api.console.forms import FormErrors, from_validation, read_form
from blocks.api.console.pages import render
from blocks.api.console.time_text import when
from blocks.api.deps import CanManageIntegrations, CanManageSecurity, DbSession
from blocks.api.errors import Problem
from blocks.api.identity.org_settings import SecurityIn, organization, security
from blocks.api.identity.sso.enforcement import read_sso_settings
from blocks.api.identity.sso.providers import list_sso_providers
from blocks.api.integrations.slack import SlackInstallationOut, read_installation
from blocks.api.integrations.webhooks import list_webhook_destinations
from blocks.api.llm.credentials import list_llm_credentials
from blocks.core.context import OrgContext

router = APIRouter()

PAGE = f"{ADMIN}/security"
NOTICES = {"saved": "Setting saved."}


async def _page(
    request: Request,
    ctx: OrgContext,
    session: DbSession,
    *,
    errors: FormErrors | None = None,
    status: int = 200,
) -> HTMLResponse:
    return render(
        request,
        "admin_security.html",
        ctx=ctx,
        status=status,
        notice=notice(request, NOTICES),
        org=await organization(ctx=ctx, session=session),
        approvals=await approval_settings(ctx=ctx, session=session),
        sso=await read_sso_settings(ctx=ctx, session=session),
        errors=errors,
    )


@router.get(PAGE)
async def security_page(
    request: Request, ctx: CanManageSecurity, session: DbSession
) -> HTMLResponse:
    return await _page(request, ctx, session)


async def _save(
    request: Request,
    ctx: OrgContext,
    session: DbSession,
    model: type[BaseModel],
    field: str,
    change: Callable[[Any], Awaitable[object]],
) -> HTMLResponse | RedirectResponse:
    """One setting from its form: validated by the API's body model, changed by its route."""
    value = as_bool((await read_form(request)).get(field))
    try:
        await change(model.model_validate({field: value}))
    except ValidationError as invalid:
        return await _page(request, ctx, session, errors=from_validation(invalid), status=422)
    except Problem as problem:
        errors = await refused(session, problem)
        return await _page(request, ctx, session, errors=errors, status=problem.status)
    return back_to(PAGE, "saved")


@router.post(f"{PAGE}/two-factor", response_model=None)
async def two_factor_page(
    request: Request, ctx: CanManageSecurity, session: DbSession
) -> HTMLResponse | RedirectResponse:
    async def change(body: Any) -> object:
        return await security(body=body, request=request, ctx=ctx, session=session)

    return await _save(request, ctx, session, SecurityIn, "require_2fa", change)


@router.post(f"{PAGE}/decision-links", response_model=None)
async def decision_links_page(
    request: Request, ctx: CanManageSecurity, session: DbSession
) -> HTMLResponse | RedirectResponse:
    async def change(body: Any) -> object:
        return await set_policy(body=body, request=request, session=session, ctx=ctx)

    return await _save(request, ctx, session, LinkPolicyIn, "link_only_decisions", change)


@router.post(f"{PAGE}/approvals", response_model=None)
async def approvals_page(
    request: Request, ctx: CanManageSecurity, session: DbSession
) -> HTMLResponse | RedirectResponse:
    async def change(body: Any) -> object:
        return await set_approval_settings(body=body, request=request, ctx=ctx, session=session)

    return await _save(request, ctx, session, ApprovalSettingsIn, "approvers_from_input", change)


@router.get(f"{ADMIN}/integrations")
async def integrations_page(
    request: Request,
    ctx: CanManageIntegrations,
    security_ctx: CanManageSecurity,
    session: DbSession,
) -> HTMLResponse:
    """Read-only: what is connected, each secret shown only by its last four characters.
    Identity providers are the security permission's, so the page asks for both."""
    slack: SlackInstallationOut | None
    try:
        slack = await read_installation(ctx=ctx, session=session)
    except Problem as problem:
        if problem.status != 404:
            raise
        slack = None
    return render(
        request,
        "admin_integrations.html",
        ctx=ctx,
        slack=slack,
        credentials=await list_llm_credentials(ctx=ctx, session=session),
        providers=await list_sso_providers(request=request, ctx=security_ctx, session=session),
        destinations=await list_webhook_destinations(ctx=ctx, session=session),
        when=when,
    )
