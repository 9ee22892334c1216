"""System workflow run on a Temporal Schedule: sign audit checkpoints at a fixed interval."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from blocks.activities.checkpoints import CheckpointActivities

CHECKPOINT_WORKFLOW = "blocks.audit_checkpoints"


@workflow.defn(name=CHECKPOINT_WORKFLOW)
class AuditCheckpointWorkflow:
    @workflow.run
    async def run(self) -> int:
        return await workflow.execute_activity_method(
            CheckpointActivities.checkpoint_all,
            start_to_close_timeout=timedelta(minutes=10),
            heartbeat_timeout=timedelta(minutes=1),
            retry_policy=RetryPolicy(maximum_interval=timedelta(minutes=1)),
        )
