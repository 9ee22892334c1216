"""Many writers in several processes append to one organization's chain at once: one linear chain."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from blocks.core.audit.chain import first_broken_link
from blocks.infra.embedded.postgres import PostgresCredentials
from blocks.models.audit.events import hashed_payload
from tests.integration.test_audit_log import _events
from tests.support import make_org

_WRITER = Path(__file__).with_name("audit_writer.py")


async def test_processes_appending_at_once_make_one_gapless_chain(
    engine: AsyncEngine, postgres: PostgresCredentials
) -> None:
    org = await make_org(engine)
    processes, per_task, tasks = 4, 25, 4
    writers = [
        await asyncio.create_subprocess_exec(
            sys.executable, str(_WRITER), postgres.url(), str(org.id), f"p{n}", str(per_task)
        )
        for n in range(processes)
    ]
    for writer in writers:
        assert await asyncio.wait_for(writer.wait(), timeout=120) == 0
    events = await _events(engine, org.id)
    total = processes * tasks * per_task
    assert [e.seq for e in events] == list(range(1, total + 1))
    assert len({(e.data["w"], e.data["t"], e.data["i"]) for e in events}) == total
    links = [(hashed_payload(e.model_dump()), e.prev_hash, e.hash) for e in events]
    assert first_broken_link(links) is None
