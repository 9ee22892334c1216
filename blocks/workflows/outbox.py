"""What a workflow queues for the outside world — audit events, search attributes, notices — and
sends in one go before it waits, so history stays small and the log is current when it matters."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeUpdate
from temporalio.exceptions import is_cancelled_exception

from blocks.core.approvals.notifications import StepNotice
from blocks.core.audit.ids import workflow_event_id
from blocks.core.audit.records import (
    ActorType,
    AuditBatch,
    AuditRecord,
    AuditRecorded,
    Outcome,
    RequestOrigin,
)

with workflow.unsafe.imports_passed_through():
    from blocks.activities.audit import AuditActivities
    from blocks.activities.notifications import NotificationActivities

_AUDIT_TIMEOUT = timedelta(seconds=30)
_AUDIT_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(seconds=10)
)
_NOTIFY_TIMEOUT = timedelta(seconds=30)
# Runs that flushed before this existed started notice activities before their audit events were
# written, whether or not a channel was configured; they replay that way.
NOTICES_AFTER_AUDIT = "blocks.notices-after-audit"
# Delivery is retried for a while, then given up: an unreachable chat service must not hold a run.
_NOTIFY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(minutes=1),
    maximum_attempts=10,
)


class Outbox:
    def __init__(self) -> None:
        self._audit: list[AuditRecord] = []
        self._attributes: dict[str, SearchAttributeUpdate[Any]] = {}
        self._notices: list[StepNotice] = []
        self._in_flight = 0

    def audit(
        self,
        *,
        run_id: str,
        key: str,
        action: str,
        actor_type: ActorType = ActorType.WORKFLOW,
        actor_id: str | None = None,
        target_id: str | None = None,
        outcome: Outcome = Outcome.SUCCESS,
        reason: str | None = None,
        data: dict[str, object] | None = None,
        origin: RequestOrigin | None = None,
    ) -> None:
        """Queue an event with an id derived from the run and `key`.

        A crash before the flush loses nothing: replay re-creates the same event with the same id,
        and the append skips ids already written. `origin` adds the fields of the request that
        caused the event (who, from where, with which credential), as API events carry them.
        """
        workflow_id = workflow.info().workflow_id
        data = dict(data or {})
        if origin is not None:
            data["credential"] = origin.credential()
        self._audit.append(
            AuditRecord(
                action=action,
                actor_type=actor_type,
                actor_id=actor_id or (workflow_id if actor_type is ActorType.WORKFLOW else None),
                target_type="step" if target_id else "run",
                target_id=target_id or run_id,
                run_id=run_id,
                outcome=outcome,
                reason=reason,
                data=data,
                actor_email=origin.actor_email if origin else None,
                ip=origin.ip if origin else None,
                user_agent=origin.user_agent if origin else None,
                event_id=str(workflow_event_id(workflow_id, key)),
            )
        )

    def notify(self, notice: StepNotice) -> None:
        self._notices.append(notice)

    def set_attributes(self, *updates: SearchAttributeUpdate[Any]) -> None:
        """The last value of each key is sent at the next flush."""
        for update in updates:
            self._attributes[update.key.name] = update

    async def flush(self, org_id: str) -> None:
        """Search attributes (one command), audit events (one local activity), then notices
        (started, not awaited: the step waits for decisions, not for chat delivery) when the
        worker that wrote the events has a channel to send them through."""
        if self._attributes:
            workflow.upsert_search_attributes(list(self._attributes.values()))
            self._attributes = {}
        notices, self._notices = self._notices, []
        if notices and not (self._audit and workflow.patched(NOTICES_AFTER_AUDIT)):
            self._start_notices(notices)  # as before the patch, or nothing to ask the worker
            notices = []
        if not self._audit:
            return
        batch, self._audit = self._audit, []
        self._in_flight += 1
        try:
            recorded = await self._record(org_id, batch)
        except (Exception, asyncio.CancelledError) as err:
            # The run is being cancelled (or the author cancelled this task): the events taken
            # are written all the same (an id already in the log is skipped), then it goes on.
            # A cancelled local activity reports it as an ActivityError caused by the cancel.
            if is_cancelled_exception(err):
                await self._record(org_id, batch)
            raise
        finally:
            self._in_flight -= 1
        if notices and recorded.notices:
            self._start_notices(notices)

    def _start_notices(self, notices: list[StepNotice]) -> None:
        for notice in notices:
            workflow.start_activity_method(
                NotificationActivities.notify_step,
                notice,
                start_to_close_timeout=_NOTIFY_TIMEOUT,
                retry_policy=_NOTIFY_RETRY,
            )

    @property
    def busy(self) -> bool:
        """Whether a batch of events is being written (a cancelled run waits for it)."""
        return self._in_flight > 0

    async def _record(self, org_id: str, batch: list[AuditRecord]) -> AuditRecorded:
        recorded = await workflow.execute_local_activity_method(
            AuditActivities.record,
            AuditBatch(org_id=org_id, records=batch),
            start_to_close_timeout=_AUDIT_TIMEOUT,
            retry_policy=_AUDIT_RETRY,
        )
        # An int is what the activity answered before it said whether notices have a channel.
        return recorded if isinstance(recorded, AuditRecorded) else AuditRecorded(count=recorded)
