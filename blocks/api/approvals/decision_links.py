"""Decision links from email: GET only shows the request (so mail scanners decide nothing);
a POST from the page decides, once, as the one approver the link was sent to.

Tries of links that do not work (unknown, tampered, used, expired) count per client address
against the `token_ip` rate limit, like the other emailed tokens; an address over it gets a 429
before any lookup, so guessing links is cut off while a working link never counts.
"""

from __future__ import annotations

import html
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel
from temporalio.service import RPCError

from blocks.api import rate_limit
from blocks.api.approvals.decisions import submit_decision
from blocks.api.deps import (
    CanManageSecurity,
    DbSession,
    TemporalClient,
    forbidden,
    record_denial,
)
from blocks.api.errors import Problem
from blocks.api.html_pages import page
from blocks.api.identity.sessions import SESSION_COOKIE, signed_in
from blocks.api.reference.examples import example
from blocks.api.schemas import StrictModel
from blocks.api.security_audit import request_audit_fields
from blocks.core.approvals.eligibility import Decision
from blocks.core.audit.records import AuditRecord
from blocks.core.context import AuthMethod, OrgContext, OrgId
from blocks.core.roles import parse_roles
from blocks.models.approvals.decision_links import (
    DecisionLink,
    LinkProblem,
    OpenLink,
    open_link,
    use_link,
)
from blocks.models.audit.events import append_events
from blocks.models.identity.orgs import Organization, User, get_membership
from blocks.workflows.sdk import STATUS_QUERY
from blocks.workflows.types import RunView

router = APIRouter(tags=["approvals"])


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return page(title, body, status)


def _refused(problem: LinkProblem) -> HTMLResponse:
    return _page("Link not usable", f"<p>{html.escape(str(problem))}.</p>", status=410)


async def _member_context(session: DbSession, link: DecisionLink) -> OrgContext | None:
    """The link's approver as they are now: a removed or deactivated member decides nothing."""
    probe = OrgContext(org_id=OrgId(link.org_id), user_id=None, roles=(), auth=AuthMethod.LINK)
    membership = await get_membership(probe, session, link.user_id)
    user = await session.get(User, link.user_id)
    if membership is None or user is None or user.deactivated_at is not None:
        return None
    if membership.deactivated_at is not None:
        return None
    return OrgContext(
        org_id=OrgId(link.org_id),
        user_id=user.id,
        roles=parse_roles(membership.roles),
        auth=AuthMethod.LINK,
        actor_email=user.email,
    )


async def _signed_in_as(request: Request, session: DbSession, ctx: OrgContext) -> bool:
    """Whether the request carries a live session of the link's approver in its organization
    (`signed_in` also refuses a cross-site POST carrying that cookie)."""
    if not request.cookies.get(SESSION_COOKIE):
        return False
    try:
        signed = await signed_in(request, session)
    except Problem:
        return False
    return signed.user.id == ctx.user_id and signed.session.org_id == ctx.org_id


async def _open(request: Request, session: DbSession, token: str) -> OpenLink:
    """`open_link`, refused (429) for an address over its budget of failed tries, and counting
    a failed try against it."""
    where = rate_limit.address(request)
    await rate_limit.refuse_if_over(request, "token_ip", where)
    try:
        return await open_link(session, token)
    except LinkProblem:
        await rate_limit.count(request, "token_ip", where)
        raise


@router.get(
    "/v1/decision-links/{token}",
    response_class=HTMLResponse,
    summary="Show an emailed decision link's page",
    operation_id="show_decision_link",
)
async def show(
    token: str, request: Request, session: DbSession, client: TemporalClient
) -> HTMLResponse:
    try:
        opened = await _open(request, session, token)
    except LinkProblem as problem:
        return _refused(problem)
    link = opened.link
    try:
        view = await client.get_workflow_handle(f"run-{link.run_id}").query(
            STATUS_QUERY, result_type=RunView
        )
    except RPCError:
        # The run is gone from Temporal (retention passed): nothing is left to decide.
        return _page("Nothing to decide", "<p>This request is no longer open.</p>", status=409)
    step = next((s for s in view.steps if s.step_id == link.step_id), None)
    if step is None or step.state != "pending":
        return _page("Nothing to decide", "<p>This step is already closed.</p>", status=409)
    deadline = step.deadline.isoformat() if step.deadline else "none"
    body = (
        f"<p><strong>{html.escape(step.title)}</strong></p>"
        f"<p>Workflow {html.escape(view.workflow_name or '')}, deadline {html.escape(deadline)}.</p>"
        "<form method='post'>"
        "<p><label>Comment <input name='comment' maxlength='2000'></label></p>"
        "<button name='decision' value='approve'>Approve</button> "
        "<button name='decision' value='reject'>Reject</button>"
        "</form>"
    )
    return _page("Your decision is needed", body)


@router.post(
    "/v1/decision-links/{token}",
    response_class=HTMLResponse,
    summary="Decide with an emailed decision link",
    operation_id="decide_with_link",
)
async def decide(
    token: str, request: Request, session: DbSession, client: TemporalClient
) -> HTMLResponse:
    form = parse_qs((await request.body()).decode("utf-8", "replace"), max_num_fields=4)
    choice = (form.get("decision") or [""])[0]
    comment = (form.get("comment") or [""])[0][:2000] or None
    if choice not in ("approve", "reject"):
        return _page("Invalid decision", "<p>Choose approve or reject.</p>", status=422)
    try:
        opened = await _open(request, session, token)
    except LinkProblem as problem:
        return _refused(problem)
    ctx = await _member_context(session, opened.link)
    if ctx is None:
        return _page("Link not usable", "<p>You are no longer a member.</p>", status=403)
    if not opened.link_only_allowed and not await _signed_in_as(request, session, ctx):
        # Policy wants the approver signed in too: a forwarded email alone decides nothing.
        await record_denial(request, ctx, "decision link used without the approver's sign-in")
        return _page(
            "Sign-in required",
            "<p>Sign in to Blocks as the approver this link was sent to, then use it again.</p>",
            403,
        )
    try:
        outcome = await submit_decision(
            request,
            ctx,
            session,
            client,
            opened.link.run_id,
            opened.link.step_id,
            Decision(choice),
            channel="link",
            comment=comment,
        )
    except Problem as problem:
        return _page(
            "Decision not recorded", f"<p>{html.escape(problem.detail)}.</p>", problem.status
        )
    await use_link(ctx, session, opened.link)
    return _page(
        "Decision recorded",
        f"<p>You chose <strong>{html.escape(outcome.decision)}</strong>; "
        f"the step is now {html.escape(outcome.state)}.</p>",
    )


class LinkPolicyIn(StrictModel):
    model_config = example(link_only_decisions=False)

    link_only_decisions: bool


class LinkPolicyOut(BaseModel):
    model_config = example(link_only_decisions=False)

    link_only_decisions: bool


@router.put(
    "/v1/org/decision-link-policy",
    response_model=LinkPolicyOut,
    summary="Allow decision links without sign-in, or not",
    operation_id="set_decision_link_policy",
)
async def set_policy(
    body: LinkPolicyIn,
    request: Request,
    session: DbSession,
    ctx: CanManageSecurity,
) -> LinkPolicyOut:
    org = await session.get(Organization, ctx.org_id)
    if org is None:
        raise forbidden("organization not found")
    org.link_only_decisions = body.link_only_decisions
    session.add(org)
    await append_events(
        ctx,
        session,
        [
            AuditRecord(
                action="org.decision_link_policy_changed",
                target_type="organization",
                target_id=str(ctx.org_id),
                data={"link_only_decisions": body.link_only_decisions},
                **request_audit_fields(request, ctx),
            )
        ],
    )
    return LinkPolicyOut(link_only_decisions=org.link_only_decisions)
