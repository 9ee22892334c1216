"""Audit appends that share work: what arrives while an org's append is being written joins the next.

Every append to one organization's chain must pass its head one at a time, so appends that each
take the head in their own transaction queue behind each other (at 32 concurrent writers, 32
commits in a row). `CombiningAppender` keeps, per process and organization, one writer at a time:
appends that arrive while it writes wait in a queue, and the next transaction takes them all (one
head lock or compare-and-set, one multi-row insert, one commit). Under no load an append is
written at once, as before; under load the transactions per event fall with the load.

The guarantees are those of `append_events`, which does the writing: one linear chain per
organization across processes (the head's lock), retries deduplicated by event id, no gap. An
append's events are committed when its call returns. A combined transaction that fails is tried
again one append at a time, so one caller's bad event fails that caller alone.

Only appends that need no other write in their transaction come here (the workflows' audit
activity): an API route that changes state and records it in one transaction keeps calling
`append_events` on its own session.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from blocks.core.audit.records import AuditRecord
from blocks.core.context import OrgContext
from blocks.models.audit.events import append_events
from blocks.models.audit.personal_data import check_personal_fields

# Events in one combined transaction, at most: bounds the statement's size and a retry's cost.
MAX_EVENTS_PER_TRANSACTION = 1_000


@dataclass
class _Append:
    ctx: OrgContext
    records: Sequence[AuditRecord]
    done: asyncio.Future[list[uuid.UUID]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class CombiningAppender:
    """Appends to the audit log, combining concurrent appends of one organization (see above)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._queues: dict[uuid.UUID, list[_Append]] = {}
        # The writer task of each organization with a queue; held so it is not collected.
        self._writers: dict[uuid.UUID, asyncio.Task[None]] = {}

    async def append(self, ctx: OrgContext, records: Sequence[AuditRecord]) -> list[uuid.UUID]:
        """Append `records` in order to `ctx`'s chain; returns their ids once committed."""
        for record in records:
            check_personal_fields(record)  # a bad record fails its caller before it joins others
        pending = _Append(ctx, records)
        self._queues.setdefault(ctx.org_id, []).append(pending)
        if ctx.org_id not in self._writers:
            self._writers[ctx.org_id] = asyncio.create_task(self._write_queue(ctx.org_id))
        # A cancelled caller stops waiting; its events are written (or not) all the same, as a
        # cancelled transaction's commit may have been sent. Its retry is deduplicated by id.
        return await asyncio.shield(pending.done)

    async def _write_queue(self, org_id: uuid.UUID) -> None:
        try:
            while queue := self._queues.get(org_id):
                taken = _take(queue)
                if not queue:
                    del self._queues[org_id]
                await self._write(taken)
        finally:
            del self._writers[org_id]
            for pending in self._queues.pop(org_id, []):  # only if this task itself failed
                if not pending.done.done():
                    pending.done.set_exception(RuntimeError("the audit writer stopped"))

    async def _write(self, taken: list[_Append]) -> None:
        try:
            ids = await self._transaction(taken[0].ctx, [r for p in taken for r in p.records])
        except Exception as err:
            if len(taken) == 1:
                _settle(taken[0], err)
                return
            for pending in taken:  # find whose events the combined transaction failed on
                try:
                    _settle(pending, await self._transaction(pending.ctx, pending.records))
                except Exception as own_err:
                    _settle(pending, own_err)
            return
        start = 0
        for pending in taken:
            _settle(pending, ids[start : start + len(pending.records)])
            start += len(pending.records)

    async def _transaction(
        self, ctx: OrgContext, records: Sequence[AuditRecord]
    ) -> list[uuid.UUID]:
        async with self._sessions() as session, session.begin():
            return await append_events(ctx, session, records)


def _take(queue: list[_Append]) -> list[_Append]:
    """The queue's first appends, up to MAX_EVENTS_PER_TRANSACTION events (at least one)."""
    count, events = 0, 0
    for pending in queue:
        if count and events + len(pending.records) > MAX_EVENTS_PER_TRANSACTION:
            break
        count += 1
        events += len(pending.records)
    taken = queue[:count]
    del queue[:count]
    return taken


def _settle(pending: _Append, outcome: list[uuid.UUID] | Exception) -> None:
    if pending.done.done():
        return
    if isinstance(outcome, Exception):
        pending.done.set_exception(outcome)
        # Read even if its caller stopped waiting (cancelled), so asyncio does not log it.
        pending.done.add_done_callback(lambda done: done.exception())
    else:
        pending.done.set_result(outcome)
