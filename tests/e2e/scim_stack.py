"""A stack serving SCIM (`/scim/v2` and `/v1/org/scim`) for the SCIM tests, and their helpers."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client

from blocks.api.scim.protocol import SCIM_JSON
from tests.support import Org, Stack, running_stack


@asynccontextmanager
async def scim_stack(
    *, engine: AsyncEngine, temporal: Client, database_url: str
) -> AsyncIterator[Stack]:
    async with running_stack(
        engine=engine,
        temporal=temporal,
        database_url=database_url,
        task_queue=f"blocks-scim-{uuid.uuid4().hex[:8]}",
        with_worker=False,
        extra_settings={"public_url": "https://blocks.test"},
    ) as stack:
        yield stack


async def issue_scim_token(http: httpx.AsyncClient, org: Org) -> str:
    """The organization's SCIM token, issued by its owner through the admin API."""
    response = await http.post("/v1/org/scim/token", headers=org["owner"].headers)
    assert response.status_code == 201, response.text
    token: str = response.json()["token"]
    return token


def scim_headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": SCIM_JSON}
