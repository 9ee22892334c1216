"""The reconciler of run starts: settles every run a crash left `starting`.

A run's row is committed before its workflow is started; an API process killed in between leaves
the row `starting`. Past a bound, the reconciler takes each such row's lock (`SKIP LOCKED`: a start
still under way holds it) and asks Temporal: a workflow exists -> the run is `started` (the
workflow wrote its own `run.started`); none -> `run.start_abandoned` is recorded and the run is
closed as `abandoned`, and the API never starts it afterwards (it re-reads the state under the
same lock). Every worker runs one; the row locks make them safe together.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession
from temporalio.client import Client

from blocks.core.audit.ids import workflow_event_id
from blocks.core.audit.records import ActorType, AuditRecord, Outcome
from blocks.core.context import AuthMethod, OrgContext, OrgId
from blocks.infra.temporal.client import find_execution
from blocks.models.approvals.runs import (
    StartState,
    lock_unsettled_start,
    set_start_state,
    unsettled_start_ids,
)
from blocks.models.audit.events import append_events

_log = logging.getLogger("blocks.reconciler")
ACTOR = "run-start-reconciler"
_BATCH = 200


@dataclass(frozen=True)
class ReconcileReport:
    confirmed: int = 0
    abandoned: int = 0


class RunStartReconciler:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        client: Client,
        *,
        bound_seconds: float,
        interval_seconds: float,
    ) -> None:
        self._sessions = sessions
        self._client = client
        self._bound = bound_seconds
        self._interval = interval_seconds

    async def run_forever(self) -> None:
        """Reconcile every interval until cancelled; an outage is logged and tried again."""
        while True:
            try:
                report = await self.reconcile_once()
                if report.confirmed or report.abandoned:
                    _log.warning(
                        "settled interrupted run starts: %d confirmed, %d abandoned",
                        report.confirmed,
                        report.abandoned,
                    )
            except Exception as exc:  # PostgreSQL or Temporal down: the next pass retries
                _log.warning("run-start reconciliation failed (%s); retrying", type(exc).__name__)
            await asyncio.sleep(self._interval)

    async def reconcile_once(self) -> ReconcileReport:
        async with self._sessions() as session, session.begin():
            candidates = await unsettled_start_ids(
                session, older_than_seconds=self._bound, limit=_BATCH
            )
        confirmed = abandoned = 0
        for org_id, run_id in candidates:
            ctx = OrgContext(org_id=OrgId(org_id), user_id=None, roles=(), auth=AuthMethod.SYSTEM)
            # One transaction per run, holding its lock while Temporal is asked.
            async with self._sessions() as session, session.begin():
                run = await lock_unsettled_start(ctx, session, run_id)
                if run is None:
                    continue  # settled meanwhile, or a start under way holds it
                if await find_execution(self._client, run.workflow_id) is not None:
                    await set_start_state(ctx, session, run, StartState.STARTED)
                    confirmed += 1
                    continue
                await set_start_state(ctx, session, run, StartState.ABANDONED)
                await append_events(
                    ctx,
                    session,
                    [
                        AuditRecord(
                            action="run.start_abandoned",
                            actor_type=ActorType.SYSTEM,
                            actor_id=ACTOR,
                            target_type="run",
                            target_id=str(run.id),
                            run_id=str(run.id),
                            outcome=Outcome.FAILURE,
                            reason=(
                                f"no workflow was started within {self._bound:g} s "
                                "(the request that asked for it was interrupted)"
                            ),
                            data={"workflow": run.workflow_name},
                            event_id=str(workflow_event_id(run.workflow_id, "start:abandoned")),
                        )
                    ],
                )
                abandoned += 1
        return ReconcileReport(confirmed=confirmed, abandoned=abandoned)
