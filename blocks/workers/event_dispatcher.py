"""The event dispatcher: wakes the stream of every destination with something to send.

Every `interval` it asks PostgreSQL which enabled destinations are behind their organization's
audit chain or checkpoints (`blocks_event_destinations_behind`, the one cross-tenant read, ids
only) and starts each one's stream workflow, unless it is already running (Temporal's
USE_EXISTING conflict policy: a running stream, a SIEM's retrying through an outage included,
is left alone and nothing is added to its history). Every worker runs one; the workflow id makes
them safe together. The stream itself does the work, durably; this loop only wakes it.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession
from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy

from blocks.core.integrations.streams import (
    EVENT_STREAM_WORKFLOW,
    StreamRequest,
    stream_workflow_id,
)

_log = logging.getLogger("blocks.events")
_BATCH = 1000
_BEHIND = text("SELECT org_id, destination_id FROM blocks_event_destinations_behind(:limit)")


class EventDispatcher:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        client: Client,
        *,
        task_queue: str,
        interval_seconds: float,
        only_orgs: set[uuid.UUID] | None = None,
    ) -> None:
        """`only_orgs`: wake only these organizations' streams (None: all), for a worker that
        serves some organizations alone (tests scope theirs this way)."""
        self._sessions = sessions
        self._only_orgs = only_orgs
        self._client = client
        self._task_queue = task_queue
        self._interval = interval_seconds

    async def run_forever(self) -> None:
        """Dispatch every interval until cancelled; an outage is logged and tried again."""
        while True:
            try:
                await self.dispatch_once()
            except Exception as exc:  # PostgreSQL or Temporal down: the next pass retries
                _log.warning("event dispatch failed (%s); retrying", type(exc).__name__)
            await asyncio.sleep(self._interval)

    async def dispatch_once(self) -> int:
        """Start the stream of each destination behind; returns how many were behind."""
        async with self._sessions() as session, session.begin():
            rows = (await session.exec(_BEHIND.bindparams(limit=_BATCH))).all()  # type: ignore[call-overload]
        if self._only_orgs is not None:
            rows = [row for row in rows if row[0] in self._only_orgs]
        for org_id, destination_id in rows:
            await self._client.start_workflow(
                EVENT_STREAM_WORKFLOW,
                StreamRequest(str(org_id), str(destination_id)),
                id=stream_workflow_id(str(destination_id)),
                task_queue=self._task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            )
        return len(rows)
