"""Session-wide real servers: one PostgreSQL, one Temporal dev server, one time-skipping server."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment

from blocks.core.approvals.search_attributes import ALL_KEYS
from blocks.infra.crypto.org_keys import install_org_keys
from blocks.infra.db import create_engine
from blocks.infra.embedded.postgres import EmbeddedPostgres, PostgresCredentials
from blocks.infra.embedded.temporal import temporal_cli_path
from blocks.infra.migrate import upgrade_database
from blocks.infra.temporal.search_attributes import ensure_registered
from blocks.models.keys.org_keys import DatabaseOrgKeys
from blocks.testing import time_skipping_server_path
from tests.mail import SmtpServer
from tests.support import DATA_CONVERTER, Stack, free_port, running_stack

# `make test` runs two test processes (pytest-xdist, `-n 2 --dist loadgroup`), each starting its
# servers once. A file's tests stay together in one process (its module fixtures are made once);
# the files that start `blocks dev` or several Blocks processes of their own also stay together,
# one after another in one process, so two of them never load the two cores at once.
PROCESS_HEAVY = frozenset(
    {
        "test_dev_command.py",
        "test_dev_supervision.py",
        "test_rotation_in_flight.py",
        "test_workflow_upgrade.py",
        "test_chaos_run_starts.py",
        "test_worker_restart.py",
        "test_audit_export_cli_revealed.py",
        # An API and a worker of its own, each timed to serve within a bound.
        "test_process_memory.py",
    }
)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        group = "processes" if item.path.name in PROCESS_HEAVY else str(item.path)
        item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresCredentials]:
    server = EmbeddedPostgres(tmp_path_factory.mktemp("blocks-pg"), port=free_port())
    credentials = server.start()
    upgrade_database(credentials.url(owner=True))
    yield credentials
    server.stop()


@pytest.fixture(scope="session")
async def engine(postgres: PostgresCredentials) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(postgres.url(), pool_size=10)
    # What the API and the worker install at start: the codec finds each run's organization key.
    install_org_keys(DatabaseOrgKeys(engine))
    yield engine
    install_org_keys(None)
    await engine.dispose()


@pytest.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli_path(),
        search_attributes=ALL_KEYS,
        data_converter=DATA_CONVERTER,
    )
    yield env
    await env.shutdown()


@pytest.fixture(scope="session")
async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=time_skipping_server_path(), data_converter=DATA_CONVERTER
    )
    await ensure_registered(env.client)
    yield env
    await env.shutdown()


@pytest.fixture(scope="session")
async def stack(
    engine: AsyncEngine, temporal_env: WorkflowEnvironment, postgres: PostgresCredentials
) -> AsyncIterator[Stack]:
    async with running_stack(
        engine=engine,
        temporal=temporal_env.client,
        database_url=postgres.url(),
        task_queue=f"blocks-test-{uuid.uuid4().hex[:8]}",
    ) as running:
        yield running


@pytest.fixture(scope="session")
async def skipping_stack(
    engine: AsyncEngine, time_skipping_env: WorkflowEnvironment, postgres: PostgresCredentials
) -> AsyncIterator[Stack]:
    async with running_stack(
        engine=engine,
        temporal=time_skipping_env.client,
        database_url=postgres.url(),
        task_queue=f"blocks-skip-{uuid.uuid4().hex[:8]}",
    ) as running:
        yield running


@pytest.fixture(scope="session")
def smtp_server() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
async def identity_stack(
    engine: AsyncEngine,
    temporal_env: WorkflowEnvironment,
    postgres: PostgresCredentials,
    smtp_server: SmtpServer,
) -> AsyncIterator[Stack]:
    """The API with email on (sign-up, sign-in links, resets, invites reach `smtp_server`)."""
    async with running_stack(
        engine=engine,
        temporal=temporal_env.client,
        database_url=postgres.url(),
        task_queue=f"blocks-id-{uuid.uuid4().hex[:8]}",
        with_worker=False,
        extra_settings={
            **smtp_server.settings,
            "public_url": "https://blocks.test",
        },
    ) as running:
        yield running
