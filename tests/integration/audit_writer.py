"""A separate process that appends audit events: run by the concurrency test, several at once."""

from __future__ import annotations

import asyncio
import sys
import uuid

from blocks.core.audit.records import ActorType, AuditRecord
from blocks.core.context import AuthMethod, OrgContext, OrgId
from blocks.infra.db import create_engine, session_factory
from blocks.models.audit.combining import CombiningAppender
from blocks.models.audit.events import append_events


async def main(database_url: str, org_id: str, writer: str, count: int) -> None:
    engine = create_engine(database_url, pool_size=4)
    ctx = OrgContext(
        org_id=OrgId(uuid.UUID(org_id)), user_id=None, roles=(), auth=AuthMethod.SYSTEM
    )
    sessions = session_factory(engine)
    # Half the tasks append as the API does (a transaction each), half as the workflows' audit
    # activity does (combined with this process's other appends of the org).
    combining = CombiningAppender(sessions)

    async def one_task(task: int) -> None:
        for i in range(count):
            record = AuditRecord(
                action="concurrency.probe",
                actor_type=ActorType.SYSTEM,
                data={"w": writer, "t": task, "i": i},
            )
            if task % 2:
                await combining.append(ctx, [record])
                continue
            async with sessions() as session, session.begin():
                await append_events(ctx, session, [record])

    try:
        await asyncio.gather(*(one_task(t) for t in range(4)))
    finally:
        await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
