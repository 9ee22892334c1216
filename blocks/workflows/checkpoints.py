"""System workflows that sign audit checkpoints where the signing key lives (the worker): every
organization with new events on a Temporal Schedule, or one organization on demand (the API's
`POST /v1/audit/checkpoints`, which holds no signing key)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from blocks.activities.checkpoints import CheckpointActivities

CHECKPOINT_WORKFLOW = "blocks.audit_checkpoints"
ORG_CHECKPOINT_WORKFLOW = "blocks.audit_checkpoint_org"


@dataclass(frozen=True)
class OrgCheckpointRequest:
    """The organization the API resolved from the caller (never what the client says)."""

    org_id: str


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


@workflow.defn(name=ORG_CHECKPOINT_WORKFLOW)
class OrgCheckpointWorkflow:
    @workflow.run
    async def run(self, request: OrgCheckpointRequest) -> str:
        """Returns the new checkpoint's id."""
        return await workflow.execute_activity_method(
            CheckpointActivities.checkpoint_org,
            request.org_id,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=5), maximum_attempts=5),
        )
