"""Access review activities: list what a review covers, apply a revocation, keep the signed report,
and open the run of a review the organization's schedule started.

Each reads or writes PostgreSQL under the organization's binding (the org comes from the run's
input or the schedule's, never from anything a client said), and each change commits with its
audit event, whose id is derived from the run, so a retried activity writes no event twice.
"""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession
from temporalio import activity

from blocks.core.audit.ids import workflow_event_id
from blocks.core.audit.records import ActorType, AuditRecord, Outcome
from blocks.core.context import AuthMethod, OrgContext, OrgId
from blocks.core.identity.access_review import (
    REVOKE_ACTIONS,
    WORKFLOW_NAME,
    Applied,
    Inventory,
    ReportRequest,
    ReviewStart,
    RevocationRequest,
    RevocationResult,
    Trigger,
    build_inventory,
    report_json,
    report_sha256,
    summary,
)
from blocks.models.approvals.runs import (
    StartState,
    create_run,
    run_by_idempotency_key,
    settle_start,
    workflow_id_for,
)
from blocks.models.audit.events import append_events
from blocks.models.identity.access_reviews.items import apply_revocation, list_review_items
from blocks.models.identity.access_reviews.reviews import (
    create_review,
    get_settings,
    recorded_event_data,
    review_params,
    store_report,
)
from blocks.models.identity.members import get_org


def _context(org_id: str) -> OrgContext:
    return OrgContext(
        org_id=OrgId(uuid.UUID(org_id)), user_id=None, roles=(), auth=AuthMethod.WORKFLOW
    )


class AccessReviewActivities:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    @activity.defn(name="blocks.access_review.list_items")
    async def list_items(self, org_id: str) -> Inventory:
        """Every item of the organization to review (capped, see core MAX_ITEMS)."""
        ctx = _context(org_id)
        async with self._sessions() as session, session.begin():
            items, admin_count = await list_review_items(ctx, session)
        return build_inventory(items, admin_count=admin_count)

    @activity.defn(name="blocks.access_review.revoke")
    async def revoke(self, request: RevocationRequest) -> RevocationResult:
        """Apply a rejected item's revocation and audit it, in one transaction."""
        ctx = _context(request.org_id)
        item = request.item
        event_id = workflow_event_id(
            workflow_id_for(uuid.UUID(request.run_id)), f"access_review:revoke:{item.step_id}"
        )
        async with self._sessions() as session, session.begin():
            # A retry after the commit: what the first attempt did, not "already gone".
            recorded = await recorded_event_data(ctx, session, event_id)
            if recorded is not None:
                return RevocationResult(Applied(recorded["applied"]), recorded.get("note", ""))
            result = await apply_revocation(ctx, session, item)
            action = {
                Applied.REVOKED: "access_review.revoked",
                Applied.REFUSED: "access_review.revocation_refused",
            }.get(result.applied, "access_review.revocation_skipped")
            await append_events(
                ctx,
                session,
                [
                    AuditRecord(
                        action=action,
                        actor_type=ActorType.USER if request.decided_by else ActorType.SYSTEM,
                        actor_id=request.decided_by,
                        target_type=item.kind.value,
                        target_id=item.target_id,
                        run_id=request.run_id,
                        outcome=Outcome.SUCCESS
                        if result.applied is not Applied.REFUSED
                        else Outcome.FAILURE,
                        reason=result.note or None,
                        data={
                            "item": item.label,
                            "kind": item.kind.value,
                            "revocation": REVOKE_ACTIONS[item.kind],
                            "applied": result.applied.value,
                            "note": result.note,
                            "step_id": item.step_id,
                        },
                        event_id=str(event_id),
                    )
                ],
            )
        return result

    @activity.defn(name="blocks.access_review.record_report")
    async def record_report(self, request: ReportRequest) -> str:
        """Keep the report and append `access_review.report` (its summary and SHA-256) in one
        transaction; returns the SHA-256. The audit chain, and the signed checkpoints over it,
        are the report's signature."""
        ctx = _context(request.org_id)
        report = request.report
        sha256 = report_sha256(report)
        async with self._sessions() as session, session.begin():
            await store_report(
                ctx, session, uuid.UUID(report.run_id), report=report_json(report), sha256=sha256
            )
            await append_events(
                ctx,
                session,
                [
                    AuditRecord(
                        action="access_review.report",
                        actor_type=ActorType.SYSTEM,
                        target_type="access_review",
                        target_id=report.run_id,
                        run_id=report.run_id,
                        data={
                            "format": "blocks.access_review.v1",
                            "report_sha256": sha256,
                            "status": report.status,
                            "trigger": report.trigger,
                            "started_at": report.started_at,
                            "finished_at": report.finished_at,
                            "summary": summary(report),
                        },
                        event_id=str(
                            workflow_event_id(
                                workflow_id_for(uuid.UUID(report.run_id)), "access_review:report"
                            )
                        ),
                    )
                ],
            )
        return sha256

    @activity.defn(name="blocks.access_review.open_scheduled")
    async def open_scheduled(self, org_id: str, start_key: str) -> ReviewStart | None:
        """The run of a scheduled review, made once per schedule action (`start_key`, the
        starting workflow's id, is the run's idempotency key); None when the organization
        turned its schedule off or was closed meanwhile."""
        ctx = _context(org_id)
        async with self._sessions() as session, session.begin():
            org = await get_org(ctx, session)
            settings = await get_settings(ctx, session)
            if org is None or org.closed_at is not None or not settings:
                return None
            if not settings.schedule_enabled:
                return None
            run = await create_run(
                ctx,
                session,
                workflow_name=WORKFLOW_NAME,
                workflow_version="1",
                idempotency_key=f"schedule:{start_key}"[:255],
            )
            if run is None:
                run = await run_by_idempotency_key(ctx, session, f"schedule:{start_key}"[:255])
                assert run is not None
            await create_review(
                ctx, session, run_id=run.id, trigger=Trigger.SCHEDULE.value, started_by=None
            )
            params = review_params(settings, trigger=Trigger.SCHEDULE.value, started_by=None)
            await append_events(
                ctx,
                session,
                [
                    AuditRecord(
                        action="access_review.started",
                        actor_type=ActorType.SYSTEM,
                        actor_id="access-review-schedule",
                        target_type="access_review",
                        target_id=str(run.id),
                        data={
                            "trigger": Trigger.SCHEDULE.value,
                            "reviewers": params["reviewers"],
                            "sla_hours": params["sla_hours"],
                        },
                        event_id=str(workflow_event_id(start_key, "access_review:started")),
                    )
                ],
            )
        return ReviewStart(run_id=str(run.id), params=params)

    @activity.defn(name="blocks.access_review.settle_started")
    async def settle_started(self, org_id: str, run_id: str) -> None:
        """The scheduled review's workflow was started: its run row says so."""
        ctx = _context(org_id)
        async with self._sessions() as session, session.begin():
            await settle_start(ctx, session, uuid.UUID(run_id), StartState.STARTED)
