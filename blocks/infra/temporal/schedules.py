"""Temporal Schedules Blocks relies on, created or brought up to date idempotently."""

from __future__ import annotations

import uuid
from datetime import timedelta

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.service import RPCError, RPCStatusCode

from blocks.core.identity.access_review import ScheduledReviewRequest
from blocks.infra.settings import Settings

CHECKPOINT_SCHEDULE_ID = "blocks-audit-checkpoints"


def _checkpoint_schedule(settings: Settings, workflow_name: str) -> Schedule:
    return Schedule(
        action=ScheduleActionStartWorkflow(
            workflow_name, id=CHECKPOINT_SCHEDULE_ID, task_queue=settings.task_queue
        ),
        spec=ScheduleSpec(
            intervals=[
                ScheduleIntervalSpec(every=timedelta(minutes=settings.audit_checkpoint_minutes))
            ]
        ),
        # A slow round must not pile up behind itself.
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )


async def ensure_checkpoint_schedule(
    client: Client, settings: Settings, workflow_name: str
) -> None:
    schedule = _checkpoint_schedule(settings, workflow_name)
    try:
        await client.create_schedule(CHECKPOINT_SCHEDULE_ID, schedule)
    except ScheduleAlreadyRunningError:

        def replace(_: ScheduleUpdateInput) -> ScheduleUpdate:
            return ScheduleUpdate(schedule=schedule)

        await client.get_schedule_handle(CHECKPOINT_SCHEDULE_ID).update(replace)


# --- access reviews: one schedule per organization that turned its quarterly review on ---------

# 09:00 UTC on the first day of each quarter.
ACCESS_REVIEW_CRON = "0 9 1 1,4,7,10 *"


def access_review_schedule_id(org_id: uuid.UUID) -> str:
    return f"blocks-access-review-{org_id}"


def _access_review_schedule(
    settings: Settings, org_id: uuid.UUID, workflow_name: str, request: ScheduledReviewRequest
) -> Schedule:
    return Schedule(
        action=ScheduleActionStartWorkflow(
            workflow_name,
            request,
            id=access_review_schedule_id(org_id),
            task_queue=settings.task_queue,
        ),
        spec=ScheduleSpec(cron_expressions=[ACCESS_REVIEW_CRON]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
        state=ScheduleState(note=f"quarterly access review of organization {org_id}"),
    )


async def ensure_access_review_schedule(
    client: Client, settings: Settings, org_id: uuid.UUID, workflow_name: str
) -> None:
    """Create the organization's quarterly review schedule, or bring it up to date."""
    schedule_id = access_review_schedule_id(org_id)
    schedule = _access_review_schedule(
        settings, org_id, workflow_name, ScheduledReviewRequest(org_id=str(org_id))
    )
    try:
        await client.create_schedule(schedule_id, schedule)
    except ScheduleAlreadyRunningError:

        def replace(_: ScheduleUpdateInput) -> ScheduleUpdate:
            return ScheduleUpdate(schedule=schedule)

        await client.get_schedule_handle(schedule_id).update(replace)


async def delete_access_review_schedule(client: Client, org_id: uuid.UUID) -> bool:
    """Remove the organization's review schedule; False when it had none."""
    try:
        await client.get_schedule_handle(access_review_schedule_id(org_id)).delete()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True
