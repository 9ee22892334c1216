"""The sweeper of run history keys: destroys each run's key a grace period after the run closed.

An LLM step's prompt and reply sit in Temporal history sealed under the run's own key
(`infra.crypto.run_keys`). Once the run has closed (its `run.completed` event marked the key) and
`BLOCKS_RUN_KEY_GRACE_SECONDS` have passed, the sweeper destroys the key, so the prompts in that
history can never be read again. Every worker runs one; the rows are taken `SKIP LOCKED`, so two
sweepers never destroy the same key twice, and a pass missed during an outage is made up later.
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from blocks.models.keys.run_keys import destroy_closed_run_keys

_log = logging.getLogger("blocks.run_keys")
_BATCH = 1000


class RunKeySweeper:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        grace_seconds: float,
        interval_seconds: float,
    ) -> None:
        self._sessions = sessions
        self._grace = grace_seconds
        self._interval = interval_seconds

    async def run_forever(self) -> None:
        """Sweep every interval until cancelled; an outage is logged and tried again."""
        while True:
            try:
                destroyed = await self.sweep_once()
                if destroyed:
                    _log.info("destroyed the history keys of %d closed runs", destroyed)
            except Exception as exc:  # PostgreSQL down: the next pass retries
                _log.warning("run key sweep failed (%s); retrying", type(exc).__name__)
            await asyncio.sleep(self._interval)

    async def sweep_once(self) -> int:
        """Destroy every key due now, in batches; how many."""
        total = 0
        while True:
            async with self._sessions() as session, session.begin():
                destroyed = await destroy_closed_run_keys(
                    session, grace_seconds=self._grace, limit=_BATCH
                )
            total += destroyed
            if destroyed < _BATCH:
                return total
