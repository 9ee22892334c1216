"""Temporal Schedules Blocks relies on, created or brought up to date idempotently."""

from __future__ import annotations

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
    ScheduleUpdate,
    ScheduleUpdateInput,
)

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
