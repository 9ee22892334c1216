"""The one path a step decision takes from every channel (API, Slack): Update, refusals, audit.

A channel resolves who is acting (an API key, a linked Slack user) into an OrgContext and calls
`submit_decision`; the `blocks.decide` Update's validator applies the eligibility rule, and each
refusal becomes the same Problem (404 / 409 / 422, or 403 audited as `access.denied`) whatever the
channel.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from fastapi import Request
from sqlmodel.ext.asyncio.session import AsyncSession
from temporalio.client import (
    Client,
    WorkflowHandle,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from blocks.api.deps import forbidden, record_denial
from blocks.api.errors import Problem, invalid_field, not_found, service_unavailable
from blocks.api.schemas import DecisionOut
from blocks.api.security_audit import request_origin
from blocks.core.approvals.eligibility import (
    AttachedFile,
    Decision,
    DecisionRequest,
    DecisionResult,
    RefusalReason,
)
from blocks.core.approvals.policy import policy_memberships
from blocks.core.context import OrgContext
from blocks.core.roles import Permission
from blocks.infra.content.rich_text import sanitize
from blocks.models.approvals.attachments import attachments_by_ids, mark_decided
from blocks.models.approvals.delegations import active_delegators
from blocks.models.approvals.groups import group_names_of
from blocks.models.approvals.runs import get_run
from blocks.workflows.sdk import DECIDE_UPDATE

_FORBIDDEN_DETAIL = {
    RefusalReason.SELF_APPROVAL: "the run's requester cannot approve their own request",
    RefusalReason.NOT_AN_APPROVER: "you are not an approver of this step",
    RefusalReason.APPROVED_EARLIER_IN_CHAIN: (
        "you approved an earlier step of this run; one person cannot approve twice"
    ),
}


async def submit_decision(
    request: Request,
    ctx: OrgContext,
    session: AsyncSession,
    client: Client,
    run_id: uuid.UUID,
    step_id: str,
    decision: Decision,
    *,
    channel: str,
    comment: str | None = None,
    form: dict[str, Any] | None = None,
    attachment_ids: Sequence[uuid.UUID] = (),
) -> DecisionOut:
    """Decide a step as `ctx`'s member; raises Problem for every refusal (403s audited).

    The comment is sanitized here, whatever the channel, before the workflow records it."""
    if not ctx.can(Permission.STEP_DECIDE):
        # The API route checked this already (a dependency); other channels rely on this check.
        await record_denial(request, ctx, f"missing permission {Permission.STEP_DECIDE.value}")
        raise forbidden(f"your roles do not grant {Permission.STEP_DECIDE.value}")
    run = await get_run(ctx, session, run_id)
    if run is None:
        raise not_found("run")
    if ctx.user_id is None:
        raise forbidden("only a member can decide a step")
    if comment is not None:
        comment = sanitize(comment).strip() or None
    files = await _attached_files(ctx, session, run.id, step_id, attachment_ids)
    handle = client.get_workflow_handle(run.workflow_id)
    delegators = tuple(await active_delegators(ctx, session))
    memberships = policy_memberships(
        (role.value for role in ctx.roles), await group_names_of(ctx, session, ctx.user_id)
    )
    # The reads are done: end the transaction so its pooled connection goes back before the
    # Update, which waits for the workflow. Held across it, a burst of decisions would queue on
    # the pool behind the slowest workflows. A later write (a denial's audit event, a link
    # marked used) opens a transaction of its own, bound to the same organization.
    await session.commit()
    try:
        result = await _execute(
            handle,
            ctx,
            timedelta(seconds=request.app.state.settings.decision_wait_seconds),
            DecisionRequest(
                step_id=step_id,
                actor_user_id=str(ctx.user_id),
                actor_roles=memberships,
                decision=decision,
                comment=comment,
                channel=channel,
                form=form,
                delegators=delegators,
                origin=request_origin(request, ctx),
                attachments=files,
            ),
        )
    except _Refused as refused:
        if refused.reason is RefusalReason.STEP_NOT_FOUND:
            raise not_found("step") from None
        if refused.reason is RefusalReason.FORM_INVALID:
            raise Problem(
                422,
                "Invalid Request",
                "the decision form is invalid",
                code="form_invalid",
                errors=[
                    {"field": f"form.{e['field']}", "reason": e["reason"]} for e in refused.details
                ],
            ) from None
        if refused.reason is RefusalReason.ALREADY_VOTED:
            raise Problem(
                409, "Conflict", "you have already decided on this step", code="already_decided"
            ) from None
        if refused.reason is RefusalReason.STEP_CLOSED:
            raise Problem(
                409, "Conflict", "the step is already closed", code="step_closed"
            ) from None
        await record_denial(request, ctx, f"decision refused: {refused.reason.value}")
        raise forbidden(_FORBIDDEN_DETAIL[refused.reason]) from None
    if result.decision is not decision:
        # Same person, same step, other answer: the first decision stands (the Update id dedupes).
        raise Problem(
            409,
            "Conflict",
            f"you already decided {result.decision.value} on this step",
            code="already_decided",
        )
    if files:
        await mark_decided(
            ctx,
            session,
            (uuid.UUID(file.id) for file in files),
            step_id=result.step_id,
            decision=decision.value,
        )
    return DecisionOut(
        run_id=run.id,
        step_id=result.step_id,
        state=result.state.value,
        decision=result.decision.value,
        decided_by=result.decided_by,
    )


async def _attached_files(
    ctx: OrgContext,
    session: AsyncSession,
    run_id: uuid.UUID,
    step_id: str,
    attachment_ids: Sequence[uuid.UUID],
) -> tuple[AttachedFile, ...]:
    """The files a decision names: the run's, uploaded by the decider, named by no other step."""
    wanted = list(dict.fromkeys(attachment_ids))
    found = await attachments_by_ids(ctx, session, run_id, wanted)
    files = []
    for index, attachment_id in enumerate(wanted):
        field = f"attachment_ids.{index}"
        attachment = found.get(attachment_id)
        if attachment is None:
            raise invalid_field(field, "no attachment of this run has this id")
        if attachment.uploaded_by != ctx.user_id:
            raise invalid_field(field, "a decision names only files its decider uploaded")
        if attachment.step_id is not None and attachment.step_id != step_id:
            raise Problem(
                409,
                "Conflict",
                f"{field}: the file is already named by the decision on step "
                f"{attachment.step_id!r}",
                code="attachment_used",
            )
        files.append(
            AttachedFile(
                id=str(attachment.id),
                name=attachment.file_name,
                sha256=attachment.sha256,
                size=attachment.size_bytes,
                media_type=attachment.media_type,
            )
        )
    return tuple(files)


class _Refused(Exception):
    def __init__(self, reason: RefusalReason, details: list[dict[str, str]] | None = None) -> None:
        self.reason = reason
        self.details = details or []


async def _execute(
    handle: WorkflowHandle[object, object],
    ctx: OrgContext,
    wait: timedelta,
    request: DecisionRequest,
) -> DecisionResult:
    step_id = request.step_id
    try:
        # One Update id per person and step, whatever the channel: a retried request (or the
        # same answer given in Slack after the API) is the same decision, recorded once.
        return await handle.execute_update(
            DECIDE_UPDATE,
            request,
            id=f"decide:{step_id}:{ctx.user_id}",
            result_type=DecisionResult,
            rpc_timeout=wait,
        )
    except WorkflowUpdateRPCTimeoutOrCancelledError as err:
        # The worker did not answer the Update in time (overloaded, or restarting). The Update
        # stays in Temporal under its id: a retry returns its result, and never decides twice.
        raise service_unavailable(
            "the run did not answer in time; retry (the same decision is never taken twice)",
            code="run_busy",
        ) from err
    except WorkflowUpdateFailedError as err:
        cause = err.cause
        if isinstance(cause, ApplicationError) and cause.type in RefusalReason._value2member_map_:
            details = list(cause.details[0]) if cause.details else []
            raise _Refused(RefusalReason(cause.type), details) from err
        raise
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            # The workflow has already closed: every step of it is closed too.
            raise _Refused(RefusalReason.STEP_CLOSED) from err
        if err.status == RPCStatusCode.FAILED_PRECONDITION:
            # Temporal's "workflow not ready": the run's last workflow task failed or timed out
            # (a worker died, or was overloaded) and is being retried. The decision was not
            # taken; a retry (same Update id, so never twice) succeeds once the run moves again.
            raise service_unavailable(
                "the run is recovering from a failed workflow task; retry in a few seconds",
                code="run_not_ready",
            ) from err
        raise
