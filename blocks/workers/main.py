"""Build and run the Blocks worker: every registered workflow plus the activities they call."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from blocks.activities.audit import AuditActivities
from blocks.infra.db import create_engine, session_factory
from blocks.infra.settings import Settings
from blocks.infra.temporal import connect
from blocks.workflows.registry import REGISTRY

# Blocks' own modules and pydantic are deterministic and hold no mutable state, so the sandbox may
# share them across runs instead of re-importing them for every workflow run, which dominated the
# CPU cost of starting a run. The sandbox still guards everything else a workflow touches.
SANDBOX = SandboxedWorkflowRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_modules(
        "blocks", "pydantic", "pydantic_core", "annotated_types"
    )
)


def build_worker(client: Client, engine: AsyncEngine, *, task_queue: str) -> Worker:
    audit = AuditActivities(session_factory(engine))
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[entry.workflow for entry in REGISTRY.values()],
        activities=[audit.record],
        workflow_runner=SANDBOX,
    )


async def run_worker(settings: Settings) -> None:
    client = await connect(settings)
    engine = create_engine(settings.require_database_url(), pool_size=settings.db_pool_size)
    try:
        await build_worker(client, engine, task_queue=settings.task_queue).run()
    finally:
        await engine.dispose()
