"""Build and run a Blocks worker: the author workflows it was given, Blocks' own, their activities.

At start the worker loads the author modules (`workflow_modules`), publishes what it serves to the
catalogue in PostgreSQL (so the API can list and validate without importing them), then serves.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import sys
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession
from temporalio.client import Client
from temporalio.worker import Interceptor, Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from blocks import __version__
from blocks.activities.access_review import AccessReviewActivities
from blocks.activities.agents import AgentActivities
from blocks.activities.approvers import ApproverActivities, PostgresMemberDirectory
from blocks.activities.audit import AuditActivities
from blocks.activities.checkpoints import CheckpointActivities
from blocks.activities.email_notices import EmailNoticeSender
from blocks.activities.llm import LlmActivities
from blocks.activities.notifications import NoticeSender, NotificationActivities
from blocks.activities.slack_notices import SlackSender
from blocks.activities.webhooks import EventStreamActivities
from blocks.core.approvals.catalogue import CatalogueEntry
from blocks.infra.crypto.field_crypto import install_master_keys, load_master_keys
from blocks.infra.crypto.org_keys import install_org_keys
from blocks.infra.crypto.signing import CheckpointSigner, load_public_keys, load_signer
from blocks.infra.db import create_engine, session_factory
from blocks.infra.integrations.email import Mailer
from blocks.infra.integrations.outbound_http import OutboundPolicy
from blocks.infra.settings import WORKER_CACHE_DEFAULT, WORKER_TASKS_DEFAULT, Settings
from blocks.infra.temporal.client import connect
from blocks.models.approvals.catalogue import mark_seen, publish
from blocks.models.keys.master_keys import check_master_keys
from blocks.models.keys.org_keys import DatabaseOrgKeys
from blocks.workers.event_dispatcher import EventDispatcher
from blocks.workers.run_key_sweeper import RunKeySweeper
from blocks.workers.run_start_reconciler import RunStartReconciler
from blocks.workers.workflow_modules import SYSTEM_WORKFLOWS, load_author_code
from blocks.workflows.cancellation import RunCancellation
from blocks.workflows.catalogue import describe
from blocks.workflows.sdk import BlocksWorkflow

_log = logging.getLogger(__name__)

# Blocks' own modules and pydantic are deterministic and hold no mutable state, so the sandbox may
# share them across runs instead of re-importing them for every workflow run, which dominated the
# CPU cost of starting a run. The sandbox still guards everything else a workflow touches.
SANDBOX = SandboxedWorkflowRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_modules(
        "blocks", "pydantic", "pydantic_core", "annotated_types"
    )
)

# What every worker, replay and test kit runs workflows with, next to SANDBOX: a run's
# cancellation is recorded wherever it lands (blocks.workflows.cancellation). A replay without
# them would not reproduce the commands a cancelled run's history holds.
INTERCEPTORS: tuple[Interceptor, ...] = (RunCancellation(),)


def build_id_of(code: Sequence[Callable[..., Any] | type]) -> str:
    """What this worker runs, for Temporal (recorded with each workflow task it completes):
    Blocks' version and a digest of the source files the served workflows and activities come
    from.

    Given none, the SDK would hash the code of every module the process has loaded: read again
    from disk (and compiled where no .pyc is kept) at every start, and every module imported on
    first use (infra.lazy_modules) loaded for it, some 8 MB that stay.
    """
    digest = hashlib.sha256()
    for module in sorted({obj.__module__ for obj in code}):
        file = getattr(sys.modules.get(module), "__file__", None)
        # By module name, not path: replicas installed elsewhere run the same build.
        digest.update(module.encode() + b"\0" + (Path(file).read_bytes() if file else b""))
    return f"blocks-{__version__}-{digest.hexdigest()[:16]}"


def build_worker(
    client: Client,
    engine: AsyncEngine,
    *,
    task_queue: str,
    signer: CheckpointSigner,
    workflows: Sequence[type[BlocksWorkflow]],
    author_activities: Sequence[Callable[..., Any]] = (),
    notice_senders: Sequence[NoticeSender] = (),
    max_cached_workflows: int = WORKER_CACHE_DEFAULT,
    max_concurrent_workflow_tasks: int = WORKER_TASKS_DEFAULT,
    outbound_policy: OutboundPolicy | None = None,
    public_keys: dict[str, str] | None = None,
    mailer: Mailer | None = None,
    destination_disable_after: timedelta = timedelta(hours=72),
) -> Worker:
    sessions = session_factory(engine)
    audit = AuditActivities(sessions, delivers_notices=bool(notice_senders))
    checkpoints = CheckpointActivities(sessions, signer)
    notifications = NotificationActivities(notice_senders)
    approvers = ApproverActivities(PostgresMemberDirectory(sessions))
    llm = LlmActivities(sessions, outbound_policy)
    agents = AgentActivities(sessions)
    access_reviews = AccessReviewActivities(sessions)
    events = EventStreamActivities(
        sessions,
        policy=outbound_policy or OutboundPolicy(),
        # What SIEMs and witnesses are told checks the checkpoints they are sent.
        public_keys=public_keys or {signer.key_id: signer.public().b64()},
        task_queue=task_queue,
        disable_after=destination_disable_after,
        mailer=mailer,
    )
    return Worker(
        client,
        task_queue=task_queue,
        # Workflows organizations start by name, plus the system ones they cannot start.
        workflows=[*workflows, *SYSTEM_WORKFLOWS],
        activities=[
            audit.record,
            checkpoints.checkpoint_all,
            checkpoints.checkpoint_org,
            notifications.notify_step,
            approvers.check_members,
            llm.call_model,
            agents.dispatch,
            agents.answer,
            agents.cancel,
            access_reviews.list_items,
            access_reviews.revoke,
            access_reviews.record_report,
            access_reviews.open_scheduled,
            access_reviews.settle_started,
            events.advance_stream,
            events.attempt_delivery,
            *author_activities,
        ],
        workflow_runner=SANDBOX,
        interceptors=INTERCEPTORS,
        max_cached_workflows=max_cached_workflows,
        max_concurrent_workflow_tasks=max_concurrent_workflow_tasks,
        # A workflow task waits for its local activity (the audit append): one slot each.
        max_concurrent_local_activities=max_concurrent_workflow_tasks,
        build_id=build_id_of([*workflows, *author_activities]),
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


def catalogue_entries(
    workflows: Sequence[type[BlocksWorkflow]], *, task_queue: str
) -> list[CatalogueEntry]:
    return [describe(cls, task_queue=task_queue) for cls in workflows]


class CataloguePublisher:
    """Publishes what this worker serves, then says it is still serving it every `interval`."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        entries: Sequence[CatalogueEntry],
        *,
        worker: str,
        interval_seconds: float,
    ) -> None:
        self._sessions = sessions
        self._entries = list(entries)
        self._worker = worker
        self._interval = interval_seconds

    async def publish(self) -> None:
        async with self._sessions() as session, session.begin():
            await publish(session, self._entries, worker=self._worker)

    async def run_forever(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                async with self._sessions() as session, session.begin():
                    await mark_seen(session, worker=self._worker)
            except (OSError, SQLAlchemyError) as err:  # PostgreSQL away: try again next time
                _log.warning("could not refresh the workflow catalogue: %s", err)


async def run_worker(settings: Settings) -> None:
    # Author code is imported first: a module that fails stops the worker before it connects.
    author = load_author_code(settings.workflow_modules)
    workflows = author.workflows
    if not workflows:
        _log.warning(
            "no workflow modules given (--workflows / BLOCKS_WORKFLOW_MODULES): serving"
            " only Blocks' own workflows"
        )
    client = await connect(settings)
    engine = create_engine(settings.require_database_url(), pool_size=settings.db_pool_size)
    # A master key that does not match the database's stops the worker here (MasterKeyError).
    master_keys = load_master_keys(settings)
    install_master_keys(master_keys)
    await check_master_keys(engine, master_keys)
    # The payload codec seals each run's payloads under its organization's key from here.
    install_org_keys(DatabaseOrgKeys(engine))
    try:
        worker = build_worker(
            client,
            engine,
            task_queue=settings.task_queue,
            signer=load_signer(settings),
            workflows=workflows,
            author_activities=author.activities,
            notice_senders=notice_senders_for(settings, engine),
            max_cached_workflows=settings.worker_max_cached_workflows,
            max_concurrent_workflow_tasks=settings.worker_max_concurrent_workflow_tasks,
            outbound_policy=OutboundPolicy.from_settings(settings),
            public_keys=load_public_keys(settings).by_id(),
            mailer=Mailer(settings) if settings.smtp_host is not None else None,
            destination_disable_after=timedelta(hours=settings.destination_disable_after_hours),
        )
        publisher = CataloguePublisher(
            session_factory(engine),
            catalogue_entries(workflows, task_queue=settings.task_queue),
            worker=client.identity,
            interval_seconds=settings.catalogue_heartbeat_seconds,
        )
        await publisher.publish()
        reconciler = RunStartReconciler(
            session_factory(engine),
            client,
            bound_seconds=settings.run_start_bound_seconds,
            interval_seconds=settings.run_start_reconcile_seconds,
        )
        sweeper = RunKeySweeper(
            session_factory(engine),
            grace_seconds=settings.run_key_grace_seconds,
            interval_seconds=settings.run_key_sweep_seconds,
        )
        dispatcher = EventDispatcher(
            session_factory(engine),
            client,
            task_queue=settings.task_queue,
            interval_seconds=settings.event_dispatch_seconds,
        )
        async with asyncio.TaskGroup() as tasks:
            background = [
                tasks.create_task(reconciler.run_forever()),
                tasks.create_task(dispatcher.run_forever()),
                tasks.create_task(publisher.run_forever()),
                tasks.create_task(sweeper.run_forever()),
            ]
            await worker.run()
            for task in background:
                task.cancel()
    finally:
        await engine.dispose()
