"""Build and run the Blocks worker: every registered workflow plus the activities they call."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from blocks.activities.audit import AuditActivities
from blocks.activities.checkpoints import CheckpointActivities
from blocks.activities.email_notices import EmailNoticeSender
from blocks.activities.notifications import NoticeSender, NotificationActivities
from blocks.activities.slack_notices import SlackSender
from blocks.infra.crypto.signing import CheckpointSigner, load_signer
from blocks.infra.db import create_engine, session_factory
from blocks.infra.integrations.email import Mailer
from blocks.infra.settings import Settings
from blocks.infra.temporal.client import connect
from blocks.workers.run_start_reconciler import RunStartReconciler
from blocks.workflows.checkpoints import AuditCheckpointWorkflow, OrgCheckpointWorkflow
from blocks.workflows.registry import REGISTRY

# Blocks' own modules and pydantic are deterministic and hold no mutable state, so the sandbox may
# share them across runs instead of re-importing them for every workflow run, which dominated the
# CPU cost of starting a run. The sandbox still guards everything else a workflow touches.
SANDBOX = SandboxedWorkflowRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_modules(
        "blocks", "pydantic", "pydantic_core", "annotated_types"
    )
)


def build_worker(
    client: Client,
    engine: AsyncEngine,
    *,
    task_queue: str,
    signer: CheckpointSigner,
    notice_senders: Sequence[NoticeSender] = (),
) -> Worker:
    sessions = session_factory(engine)
    audit = AuditActivities(sessions)
    checkpoints = CheckpointActivities(sessions, signer)
    notifications = NotificationActivities(notice_senders)
    return Worker(
        client,
        task_queue=task_queue,
        # Workflows organizations start by name, plus the system ones they cannot start.
        workflows=[
            *(entry.workflow for entry in REGISTRY.values()),
            AuditCheckpointWorkflow,
            OrgCheckpointWorkflow,
        ],
        activities=[
            audit.record,
            checkpoints.checkpoint_all,
            checkpoints.checkpoint_org,
            notifications.notify_step,
        ],
        workflow_runner=SANDBOX,
    )


def notice_senders_for(settings: Settings, engine: AsyncEngine) -> list[NoticeSender]:
    """The notification channels this deployment has configured."""
    senders: list[NoticeSender] = []
    # Without the signing secret no click could be verified, so no buttons are posted either.
    if settings.slack_signing_secret is not None:
        senders.append(SlackSender(session_factory(engine), api_url=settings.slack_api_url))
    if settings.smtp_host is not None:
        senders.append(
            EmailNoticeSender(
                session_factory(engine),
                Mailer(settings),
                public_url=settings.public_url,
                link_ttl=timedelta(hours=settings.decision_link_hours),
            )
        )
    return senders


async def run_worker(settings: Settings) -> None:
    client = await connect(settings)
    engine = create_engine(settings.require_database_url(), pool_size=settings.db_pool_size)
    try:
        worker = build_worker(
            client,
            engine,
            task_queue=settings.task_queue,
            signer=load_signer(settings),
            notice_senders=notice_senders_for(settings, engine),
        )
        reconciler = RunStartReconciler(
            session_factory(engine),
            client,
            bound_seconds=settings.run_start_bound_seconds,
            interval_seconds=settings.run_start_reconcile_seconds,
        )
        async with asyncio.TaskGroup() as tasks:
            reconciling = tasks.create_task(reconciler.run_forever())
            await worker.run()
            reconciling.cancel()
    finally:
        await engine.dispose()
