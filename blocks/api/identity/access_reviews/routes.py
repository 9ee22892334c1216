"""Routes for access reviews: the organization's review settings (reviewers, SLA, the quarterly
schedule), starting a review now, reading reviews, and a finished review's report as CSV.

A review is a run of the built-in `access_review` workflow (blocks.workflows.access_review): its
items are approval steps decided through the runs' own decision route, inbox and channels. Owners
and admins manage reviews (`org:security`); auditors, owners and admins read them (`audit:read`).
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request, Response
from temporalio.client import Client
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from blocks.api.deps import (
    CanManageSecurity,
    CanReadAudit,
    DbSession,
    TemporalClient,
    record_change,
)
from blocks.api.errors import PROBLEM_JSON, Problem, invalid_field, not_found, service_unavailable
from blocks.api.identity.access_reviews.schemas import (
    CSV_EXAMPLE,
    AccessReviewListOut,
    AccessReviewOut,
    AccessReviewSettingsIn,
    AccessReviewSettingsOut,
    AccessReviewSummaryOut,
)
from blocks.core.approvals import search_attributes as sa
from blocks.core.context import OrgContext
from blocks.core.identity.access_review import (
    SCHEDULED_WORKFLOW_NAME,
    WORKFLOW_NAME,
    Trigger,
    csv_text,
    report_from_json,
    summary,
)
from blocks.core.roles import Permission, Role, has_permission
from blocks.infra.temporal.schedules import (
    access_review_schedule_id,
    delete_access_review_schedule,
    ensure_access_review_schedule,
)
from blocks.models.approvals.groups import list_groups
from blocks.models.approvals.runs import Run, StartState, create_run, get_run, settle_start
from blocks.models.identity.access_reviews.reviews import (
    DEFAULT_REVIEWER_ROLES,
    AccessReview,
    AccessReviewSettings,
    create_review,
    default_settings,
    get_review,
    get_settings,
    list_reviews,
    review_params,
    save_settings,
)
from blocks.models.identity.members import members_by_ids
from blocks.models.keys.org_keys import process_org_keys
from blocks.workflows.types import RunInput

router = APIRouter(tags=["identity"])

_START_RPC_TIMEOUT = timedelta(seconds=10)


def _problem_doc(status: int, description: str, code: str, detail: str) -> dict[str, Any]:
    return {
        status: {
            "description": description,
            "content": {
                PROBLEM_JSON: {
                    "schema": {"$ref": "#/components/schemas/ProblemOut"},
                    "example": {
                        "type": f"/problems/{code}",
                        "title": "Conflict",
                        "status": status,
                        "detail": detail,
                        "code": code,
                    },
                }
            },
        }
    }


_CSV_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The report, one row per item with its decision and what was applied",
        "content": {"text/csv": {"schema": {"type": "string"}, "example": CSV_EXAMPLE}},
    },
    **_problem_doc(
        409, "The review has not finished yet", "review_running", "the review is still running"
    ),
}


def _settings_out(settings: AccessReviewSettings, *, saved: bool) -> AccessReviewSettingsOut:
    named = bool(settings.reviewer_ids) or settings.reviewer_group is not None
    return AccessReviewSettingsOut(
        reviewers=list(settings.reviewer_ids),
        reviewer_group=settings.reviewer_group,
        sla_hours=settings.sla_hours,
        schedule_enabled=settings.schedule_enabled,
        default_reviewer_roles=[] if named else [Role(r) for r in DEFAULT_REVIEWER_ROLES],
        schedule_id=access_review_schedule_id(settings.org_id)
        if settings.schedule_enabled
        else None,
        saved=saved,
        updated_at=settings.updated_at if saved else None,
    )


def _review_out(review: AccessReview, run: Run | None) -> AccessReviewOut:
    if review.report is not None:
        status = str(review.report.get("status", "completed"))
    elif run is not None and run.start_state in (StartState.ABANDONED, StartState.START_FAILED):
        status = "not_started"
    else:
        status = "running"
    counts = summary(report_from_json(review.report)) if review.report is not None else None
    return AccessReviewOut(
        id=review.id,
        run_id=review.id,
        trigger=review.trigger,
        started_by=review.started_by,
        created_at=review.created_at,
        finished_at=review.finished_at,
        status=status,
        report_sha256=review.report_sha256,
        summary=AccessReviewSummaryOut(**counts) if counts is not None else None,
    )


@router.get(
    "/v1/org/access-review-settings",
    response_model=AccessReviewSettingsOut,
    summary="Read the access review settings",
)
async def read_access_review_settings(
    ctx: CanManageSecurity, session: DbSession
) -> AccessReviewSettingsOut:
    """Who reviews, the SLA of each item and whether the quarterly schedule is on; the
    defaults (the owners review, 14 days, no schedule) until something is saved."""
    saved = await get_settings(ctx, session)
    return _settings_out(saved or default_settings(ctx), saved=saved is not None)


async def _check_reviewers(
    ctx: OrgContext, session: DbSession, body: AccessReviewSettingsIn
) -> None:
    found = await members_by_ids(ctx, session, body.reviewers)
    for position, user_id in enumerate(body.reviewers):
        member = found.get(user_id)
        if member is None or not member.active:
            raise invalid_field(f"reviewers.{position}", "not an active member")
        if not has_permission(member.roles, Permission.STEP_DECIDE):
            raise invalid_field(f"reviewers.{position}", "this member's roles cannot decide steps")
    if body.reviewer_group is not None:
        names = {group.name for group, _ in await list_groups(ctx, session)}
        if body.reviewer_group not in names:
            raise invalid_field("reviewer_group", "no member group of that name")


@router.put(
    "/v1/org/access-review-settings",
    response_model=AccessReviewSettingsOut,
    summary="Set who reviews access, within what time, and the quarterly schedule",
)
async def set_access_review_settings(
    body: AccessReviewSettingsIn,
    request: Request,
    ctx: CanManageSecurity,
    session: DbSession,
    client: TemporalClient,
) -> AccessReviewSettingsOut:
    """Reviewers are active members allowed to decide steps, and/or a member group; naming
    neither leaves the review to the owners. Turning the schedule on creates (or updates) the
    organization's Temporal Schedule; off deletes it. Audited as `access_review.settings_changed`."""
    await _check_reviewers(ctx, session, body)
    before = await get_settings(ctx, session)
    # Read now: the row saved below is the same object, refreshed.
    was_enabled = before.schedule_enabled if before is not None else None
    saved = await save_settings(
        ctx,
        session,
        reviewer_ids=list(dict.fromkeys(body.reviewers)),
        reviewer_group=body.reviewer_group,
        sla_hours=body.sla_hours,
        schedule_enabled=body.schedule_enabled,
    )
    settings = request.app.state.settings
    try:
        if body.schedule_enabled:
            await ensure_access_review_schedule(
                client, settings, ctx.org_id, SCHEDULED_WORKFLOW_NAME
            )
        elif was_enabled:
            # (A schedule left behind anyway starts nothing: its workflow reads the setting.)
            await delete_access_review_schedule(client, ctx.org_id)
    except RPCError as err:
        raise service_unavailable(
            "the workflow engine did not answer; nothing was saved", code="engine_unavailable"
        ) from err
    await record_change(
        request,
        ctx,
        session,
        "access_review.settings_changed",
        target_type="organization",
        target_id=str(ctx.org_id),
        data={
            "reviewers": [str(u) for u in saved.reviewer_ids],
            "reviewer_group": saved.reviewer_group,
            "sla_hours": saved.sla_hours,
            "schedule_enabled": saved.schedule_enabled,
            "schedule_enabled_before": was_enabled,
        },
    )
    return _settings_out(saved, saved=True)


@router.post(
    "/v1/access-reviews",
    status_code=201,
    response_model=AccessReviewOut,
    summary="Start an access review now",
)
async def start_access_review(
    request: Request, ctx: CanManageSecurity, session: DbSession, client: TemporalClient
) -> AccessReviewOut:
    """A run of the built-in `access_review` workflow under the organization's settings: every
    owner and admin, API key, integration, SSO/SCIM connection, webhook destination and agent
    token becomes a step (approve keeps, reject revokes at once) for the reviewers. Audited as
    `access_review.started`; the report lands in the audit log as `access_review.report`."""
    settings = await get_settings(ctx, session) or default_settings(ctx)
    params = review_params(settings, trigger=Trigger.MANUAL.value, started_by=ctx.user_id)
    run = await create_run(ctx, session, workflow_name=WORKFLOW_NAME, workflow_version="1")
    assert run is not None  # no idempotency key: the insert always happens
    review = await create_review(
        ctx, session, run_id=run.id, trigger=Trigger.MANUAL.value, started_by=ctx.user_id
    )
    await record_change(
        request,
        ctx,
        session,
        "access_review.started",
        target_type="access_review",
        target_id=str(run.id),
        data={
            "trigger": Trigger.MANUAL.value,
            **{k: params[k] for k in ("reviewers", "sla_hours")},
        },
    )
    # The rows exist before the workflow does (as for any run): a crash leaves a `starting` run
    # that the worker's reconciler settles.
    await session.commit()
    await _start(request, ctx, client, run, params)
    settled, _ = await settle_start(ctx, session, run.id, StartState.STARTED)
    return _review_out(review, settled)


async def _start(
    request: Request, ctx: OrgContext, client: Client, run: Run, params: dict[str, Any]
) -> None:
    codec_keys = process_org_keys()
    if codec_keys is not None:
        codec_keys.remember_run(run.workflow_id, ctx.org_id)
    run_input = RunInput(
        org_id=str(ctx.org_id),
        run_id=str(run.id),
        workflow_name=WORKFLOW_NAME,
        # The organization's review, not a request of the admin's own: whoever started it may
        # review too (`access_review.started` says who started it).
        requested_by=None,
        params=params,
    )
    try:
        await client.start_workflow(
            WORKFLOW_NAME,
            run_input,
            id=run.workflow_id,
            task_queue=request.app.state.settings.task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            search_attributes=sa.at_start(str(ctx.org_id), WORKFLOW_NAME, None),
            rpc_timeout=_START_RPC_TIMEOUT,
        )
    except WorkflowAlreadyStartedError:
        pass
    except RPCError as err:
        raise service_unavailable(
            "the workflow engine did not answer; the review was not started",
            code="engine_unavailable",
        ) from err


@router.get("/v1/access-reviews", response_model=AccessReviewListOut, summary="List access reviews")
async def list_access_reviews(ctx: CanReadAudit, session: DbSession) -> AccessReviewListOut:
    """The organization's latest 100 reviews, newest first."""
    reviews = await list_reviews(ctx, session)
    return AccessReviewListOut(
        reviews=[_review_out(r, await get_run(ctx, session, r.id)) for r in reviews]
    )


async def _review(ctx: OrgContext, session: DbSession, review_id: uuid.UUID) -> AccessReview:
    review = await get_review(ctx, session, review_id)
    if review is None:
        raise not_found("access review")
    return review


@router.get(
    "/v1/access-reviews/{review_id}",
    response_model=AccessReviewOut,
    summary="Read an access review",
)
async def read_access_review(
    review_id: uuid.UUID, ctx: CanReadAudit, session: DbSession
) -> AccessReviewOut:
    """A review, with its summary and the report's SHA-256 once it finished."""
    review = await _review(ctx, session, review_id)
    return _review_out(review, await get_run(ctx, session, review.id))


@router.get(
    "/v1/access-reviews/{review_id}/report.csv",
    response_class=Response,
    responses=_CSV_RESPONSES,
    summary="Download a finished access review's report as CSV",
)
async def access_review_csv(
    review_id: uuid.UUID, ctx: CanReadAudit, session: DbSession
) -> Response:
    """One row per item: what it is, its facts, the decision, what was applied and who decided
    when. Cells that a spreadsheet would run as a formula are defused. `X-Report-SHA256` is the
    hash the `access_review.report` audit event carries."""
    review = await _review(ctx, session, review_id)
    if review.report is None or review.report_sha256 is None:
        raise Problem(409, "Conflict", "the review is still running", code="review_running")
    headers = {
        "Content-Disposition": f'attachment; filename="access-review-{review.id}.csv"',
        "X-Report-SHA256": review.report_sha256,
    }
    return Response(
        csv_text(report_from_json(review.report)),
        media_type="text/csv; charset=utf-8",
        headers=headers,
    )
