"""What a run under the kit writes: audit events (in memory, or read back from PostgreSQL) and the
notices sent to its approvers."""

from __future__ import annotations

import uuid
from collections import defaultdict

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession
from temporalio import activity

from blocks.activities.audit import AuditActivities
from blocks.core.approvals.notifications import StepNotice
from blocks.core.audit.records import ActorType, AuditBatch, AuditRecord, Outcome
from blocks.core.context import AuthMethod, OrgContext, OrgId
from blocks.models.audit.events import list_events

# The name the SDK calls the audit activity by, taken from the real one so the two never drift.
_AUDIT_ACTIVITY = activity._Definition.must_from_callable(AuditActivities.record).name
_PAGE = 500


class MemoryAuditLog:
    """The audit activity in memory: what the workflows appended, per run, each event once."""

    def __init__(self) -> None:
        self._events: dict[str, list[AuditRecord]] = defaultdict(list)
        self._seen: set[str] = set()

    @activity.defn(name=_AUDIT_ACTIVITY)
    async def record(self, batch: AuditBatch) -> int:
        for record in batch.records:
            # As the real append path does: an event id already written is skipped (a retry).
            if record.event_id is not None:
                if record.event_id in self._seen:
                    continue
                self._seen.add(record.event_id)
            self._events[record.run_id or ""].append(record)
        return len(batch.records)

    def events(self, run_id: str) -> list[AuditRecord]:
        return list(self._events.get(run_id, ()))


class NoticeRecorder:
    """A notification channel that keeps every notice, per run."""

    name = "kit"

    def __init__(self) -> None:
        self._notices: dict[str, list[StepNotice]] = defaultdict(list)

    async def send(self, notice: StepNotice) -> None:
        self._notices[notice.run_id].append(notice)

    def notices(self, run_id: str) -> list[StepNotice]:
        return list(self._notices.get(run_id, ()))


async def stored_events(
    sessions: async_sessionmaker[AsyncSession], org_id: str, run_id: str
) -> list[AuditRecord]:
    """A run's events as the organization's chain holds them, in chain order. `event_id` is the
    stored id; the personal fields (email, address, user agent) are stored sealed, left out."""
    ctx = OrgContext(
        org_id=OrgId(uuid.UUID(org_id)), user_id=None, roles=(), auth=AuthMethod.SYSTEM
    )
    found: list[AuditRecord] = []
    after = 0
    async with sessions() as session, session.begin():
        while True:
            rows = await list_events(ctx, session, run_id=run_id, after_seq=after, limit=_PAGE)
            found += [
                AuditRecord(
                    action=row.action,
                    actor_type=ActorType(row.actor_type),
                    actor_id=row.actor_id,
                    target_type=row.target_type,
                    target_id=row.target_id,
                    run_id=row.run_id,
                    outcome=Outcome(row.outcome),
                    reason=row.reason,
                    data=row.data,
                    event_id=str(row.id),
                )
                for row in rows
            ]
            if len(rows) < _PAGE:
                return found
            after = rows[-1].seq
