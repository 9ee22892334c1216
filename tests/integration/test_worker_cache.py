"""How many runs a worker keeps in memory: Blocks' own default, or BLOCKS_WORKER_MAX_CACHED_WORKFLOWS.

The SDK's default (1,000 runs, about 130 KB each) would let a worker whose runs wait on approvals
grow by some 130 MB; an evicted run is replayed from its history when its next task comes.
"""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment

from blocks.infra.crypto.signing import parse_signing_key
from blocks.infra.settings import WORKER_CACHE_DEFAULT, Settings
from blocks.workers.main import build_worker
from tests.support import EXAMPLE_WORKFLOWS, SIGNING_KEY


@pytest.fixture
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [k for k in os.environ if k.startswith("BLOCKS_")]:
        monkeypatch.delenv(name)


@pytest.mark.usefixtures("_clean_environment")
def test_the_cache_size_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().worker_max_cached_workflows == WORKER_CACHE_DEFAULT
    monkeypatch.setenv("BLOCKS_WORKER_MAX_CACHED_WORKFLOWS", "40")
    assert Settings().worker_max_cached_workflows == 40
    monkeypatch.setenv("BLOCKS_WORKER_MAX_CACHED_WORKFLOWS", "-1")
    with pytest.raises(ValidationError, match="worker_max_cached_workflows"):
        Settings()


async def test_a_worker_caches_blocks_default_not_the_sdks(
    temporal_env: WorkflowEnvironment, engine: AsyncEngine
) -> None:
    def cache_of(**size: int) -> int | None:
        # Each its own queue: the SDK refuses two workers of one queue in one process.
        worker = build_worker(
            temporal_env.client,
            engine,
            task_queue=f"cache-size-{size}",
            signer=parse_signing_key(SIGNING_KEY),
            workflows=EXAMPLE_WORKFLOWS,
            **size,
        )
        return worker.config().get("max_cached_workflows")

    assert cache_of() == WORKER_CACHE_DEFAULT < 1000
    assert cache_of(max_cached_workflows=7) == 7
