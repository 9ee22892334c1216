"""The SCIM service against an outside compliance suite: scim2-tester runs every check it has
(discovery, create, read, attribute selection, replace, patch add/replace/remove, delete, errors)
over Users and Groups through a real HTTP client, and none may end in ERROR or CRITICAL."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

import httpx2
import pytest
from scim2_client.engines.httpx2 import SyncSCIMClient
from scim2_tester import CheckResult, Status, check_server
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment

from blocks.api.scim.protocol import SCIM_PATH
from blocks.infra.embedded.postgres import PostgresCredentials
from tests.e2e.scim_stack import issue_scim_token, scim_stack
from tests.support import Stack, make_org


@pytest.fixture(scope="module")
async def scim(
    engine: AsyncEngine, temporal_env: WorkflowEnvironment, postgres: PostgresCredentials
) -> AsyncIterator[Stack]:
    async with scim_stack(
        engine=engine, temporal=temporal_env.client, database_url=postgres.url()
    ) as stack:
        yield stack


def _run_suite(base_url: str, token: str) -> list[CheckResult]:
    http = httpx2.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"})
    with http:
        client = SyncSCIMClient(http)
        client.discover()
        return check_server(client, resource_types=["User", "Group"])


async def test_scim2_tester_finds_no_error(scim: Stack, engine: AsyncEngine) -> None:
    org = await make_org(engine)
    async with scim.http() as http:
        token = await issue_scim_token(http, org)
    results = await asyncio.to_thread(_run_suite, f"{scim.base_url}{SCIM_PATH}", token)
    counts = Counter(result.status.name for result in results)
    print(f"\nscim2-tester: {dict(sorted(counts.items()))}")
    for result in results:
        if result.status != Status.SUCCESS:
            print(
                f"  {result.status.name} {result.resource_type or ''} {result.title}: "
                f"{result.reason}"
            )
    failed = [r for r in results if r.status in (Status.ERROR, Status.CRITICAL)]
    assert counts[Status.SUCCESS.name] > 50
    assert not failed, "\n".join(f"{r.title}: {r.reason}" for r in failed)
