"""An organization's runs as Temporal holds them: terminating every one still going (closing it)."""

from __future__ import annotations

import asyncio
import uuid

from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from blocks.core.approvals.search_attributes import ORG_ID

# Terminations in flight at once: enough to close a large organization quickly, few enough
# not to crowd out the other clients of the Temporal frontend.
_CONCURRENCY = 20


async def terminate_org_runs(client: Client, org_id: uuid.UUID, *, reason: str) -> int:
    """Terminate every running workflow of `org_id` (found by its `BlocksOrgId` search
    attribute, which every run carries from its start); how many. A run that ended meanwhile
    is skipped; Temporal unreachable raises RPCError (the API answers 503)."""
    query = f"{ORG_ID.name} = '{org_id}' AND ExecutionStatus = 'Running'"
    slots = asyncio.Semaphore(_CONCURRENCY)

    async def terminate(workflow_id: str, run_id: str | None) -> bool:
        async with slots:
            try:
                await client.get_workflow_handle(workflow_id, run_id=run_id).terminate(
                    reason=reason
                )
            except RPCError as err:
                if err.status == RPCStatusCode.NOT_FOUND:  # it ended meanwhile
                    return False
                raise
            return True

    running = [(w.id, w.run_id) async for w in client.list_workflows(query)]
    done = await asyncio.gather(*(terminate(w, r) for w, r in running))
    return sum(done)
