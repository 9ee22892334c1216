"""Test helpers: free ports, organizations with a key per role, a running API + worker stack."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from google.protobuf.message import Message
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.api.common.v1 import Payload, SearchAttributes
from temporalio.client import Client
from temporalio.worker import Worker

from blocks.activities.notifications import NoticeSender
from blocks.api.app import create_app
from blocks.api.identity.sessions import SESSION_COOKIE
from blocks.core.context import AuthMethod, OrgContext, OrgId
from blocks.core.roles import Role
from blocks.infra.crypto.field_crypto import MasterKeys, install_master_keys
from blocks.infra.crypto.key_specs import new_payload_key_spec
from blocks.infra.crypto.signing import new_signing_key_spec, parse_signing_key
from blocks.infra.db import bind_org, create_engine, session_factory
from blocks.infra.embedded.postgres import EmbeddedPostgres, PostgresCredentials
from blocks.infra.migrate import upgrade_database
from blocks.infra.settings import Settings
from blocks.infra.temporal.client import encrypting_data_converter
from blocks.models.approvals.catalogue import publish
from blocks.models.identity.api_keys import create_api_key
from blocks.models.identity.orgs import add_member, create_org_with_owner
from blocks.models.identity.sessions import start_session
from blocks.workers.main import build_worker, catalogue_entries
from blocks.workers.workflow_modules import load_workflows

# The example workflows, loaded the way `blocks worker --workflows blocks_examples` loads them.
EXAMPLE_WORKFLOWS = load_workflows(["blocks_examples"])

# One payload key for the whole session: API, in-process and subprocess workers share it.
PAYLOAD_KEYS = new_payload_key_spec("test")
DATA_CONVERTER = encrypting_data_converter(PAYLOAD_KEYS)
SIGNING_KEY = new_signing_key_spec("test")
# One master key too, installed now so direct append_events calls and every stack agree on it.
MASTER_KEYS = new_payload_key_spec("test-master")
install_master_keys(MasterKeys.parse(MASTER_KEYS))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Member:
    user_id: uuid.UUID
    email: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@dataclass
class Org:
    id: uuid.UUID
    slug: str
    members: dict[str, Member] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Member:
        return self.members[name]


async def make_org(engine: AsyncEngine) -> Org:
    """An organization with one member per role (named after it) plus a second approver."""
    slug = f"org-{uuid.uuid4().hex[:12]}"
    sessions = session_factory(engine)
    async with sessions() as session, session.begin():
        org, owner, _ = await create_org_with_owner(
            session, slug=slug, name=slug, owner_email=f"owner@{slug}.test", owner_name="Owner"
        )
        ctx = OrgContext(
            org_id=OrgId(org.id), user_id=owner.id, roles=(Role.OWNER,), auth=AuthMethod.SYSTEM
        )
        result = Org(id=org.id, slug=slug)
        _, key = await create_api_key(
            ctx, session, user_id=owner.id, name="owner", roles=[Role.OWNER]
        )
        result.members["owner"] = Member(owner.id, owner.email, key)
        for name, roles in {
            "admin": [Role.ADMIN],
            "operator": [Role.OPERATOR],
            "approver": [Role.APPROVER],
            "approver2": [Role.APPROVER],
            "auditor": [Role.AUDITOR],
            "operator_approver": [Role.OPERATOR, Role.APPROVER],
            "nobody": [],
        }.items():
            user, _ = await add_member(
                ctx, session, email=f"{name}@{slug}.test", display_name=name, roles=roles
            )
            _, key = await create_api_key(ctx, session, user_id=user.id, name=name, roles=roles)
            result.members[name] = Member(user.id, user.email, key)
    return result


async def start_test_session(
    engine: AsyncEngine, user_id: uuid.UUID, org_id: uuid.UUID | None = None
) -> str:
    """A live session for a member, as sign-in would make it (for tests of other routes)."""
    async with session_factory(engine)() as session, session.begin():
        row, token = await start_session(
            session,
            user_id=user_id,
            mfa_pending=False,
            lifetime=timedelta(hours=12),
            ip="127.0.0.1",
            user_agent="tests",
        )
        row.org_id = org_id
        session.add(row)
    return token


def cookie_headers(settings: Settings, token: str) -> dict[str, str]:
    """A browser's headers for a session: the cookie, and this site as the request's origin."""
    return {"Cookie": f"{SESSION_COOKIE}={token}", "Origin": settings.public_url}


async def signed_in_headers(stack: Stack, org: Org, who: str) -> dict[str, str]:
    """A browser's headers for member `who` of `org`: a live session in it, this site's origin."""
    token = await start_test_session(stack.engine, org[who].user_id, org.id)
    return cookie_headers(stack.settings, token)


@dataclass
class Stack:
    base_url: str
    settings: Settings
    temporal: Client
    engine: AsyncEngine
    worker: Worker | None

    def http(self) -> httpx.AsyncClient:
        # Idle connections are dropped well before uvicorn's 5 s keep-alive closes them: reusing
        # one the server is closing at that moment fails as a ReadError.
        limits = httpx.Limits(keepalive_expiry=2.0)
        return httpx.AsyncClient(base_url=self.base_url, timeout=30, limits=limits)


# Every test of the session calls from 127.0.0.1: only tests of the limits themselves (which
# start a stack of their own with low ones) should ever meet one.
GENEROUS_RATE_LIMITS = {
    name: "100000/minute"
    for name in (
        "rate_limit_signin_ip",
        "rate_limit_signin_account",
        "rate_limit_token_ip",
        "rate_limit_2fa_account",
        "rate_limit_api_credential",
        "rate_limit_api_ip",
        "rate_limit_invalid_ip",
    )
}


@asynccontextmanager
async def running_stack(
    *,
    engine: AsyncEngine,
    temporal: Client,
    database_url: str,
    task_queue: str,
    with_worker: bool = True,
    notice_senders: Sequence[NoticeSender] = (),
    extra_settings: Mapping[str, Any] | None = None,
    publish: bool = True,
) -> AsyncIterator[Stack]:
    """The real API on a loopback port (uvicorn) and, optionally, an in-process worker.

    `extra_settings` are further Settings fields (e.g. `slack_signing_secret`); `publish=False`
    leaves the catalogue alone (a stack whose database is meant to be down)."""
    port = free_port()
    public_url = (extra_settings or {}).get(
        "public_url", Settings.model_fields["public_url"].default
    )
    settings = Settings(
        **{
            "env": "test",
            "database_url": database_url,
            "temporal_address": temporal.service_client.config.target_host,
            "task_queue": task_queue,
            "demo_org": False,
            "payload_keys": PAYLOAD_KEYS,
            "audit_signing_key": SIGNING_KEY,
            "master_keys": MASTER_KEYS,
            **GENEROUS_RATE_LIMITS,
            # A browser on the stack's own address posts its forms from there; tests that play a
            # browser with headers (`cookie_headers`) name the configured public URL.
            "allowed_origins": [public_url, f"http://127.0.0.1:{port}"],
            **(extra_settings or {}),
        }
    )
    app = create_app(settings, engine=engine, temporal=temporal)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="on",
            proxy_headers=False,
        )
    )
    server_task = asyncio.create_task(server.serve())
    while not server.started:
        if server_task.done():
            server_task.result()
        await asyncio.sleep(0.02)
    # The examples, published for this stack's task queue as a worker publishes them, whether or
    # not a worker runs (a start without one stays pending in Temporal, as in production).
    if publish:
        await publish_examples(engine, task_queue)
    worker = (
        build_worker(
            temporal,
            engine,
            task_queue=task_queue,
            signer=parse_signing_key(SIGNING_KEY),
            workflows=EXAMPLE_WORKFLOWS,
            notice_senders=notice_senders,
        )
        if with_worker
        else None
    )
    worker_task = asyncio.create_task(worker.run()) if worker else None
    try:
        yield Stack(f"http://127.0.0.1:{port}", settings, temporal, engine, worker)
    finally:
        if worker is not None and worker_task is not None:
            await worker.shutdown()
            await worker_task
        server.should_exit = True
        await server_task


async def publish_examples(engine: AsyncEngine, task_queue: str) -> None:
    entries = catalogue_entries(EXAMPLE_WORKFLOWS, task_queue=task_queue)
    async with session_factory(engine)() as session, session.begin():
        await publish(session, entries, worker=f"tests@{task_queue}")


async def wait_for_status(
    http: httpx.AsyncClient,
    run_id: str,
    headers: dict[str, str],
    *,
    status: str,
    stage: str | None = None,
    within: float = 20,
) -> dict[str, object]:
    """Poll a run until it reaches `status` (and `stage`), returning its last body.

    A 503 (no worker polling yet, e.g. a worker process still starting; the engine slow to
    answer on a loaded machine) is what a client retries, so it is retried here too until
    `within` runs out."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        response = await http.get(f"/v1/runs/{run_id}", headers=headers)
        if response.status_code == 503 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.2)
            continue
        assert response.status_code == 200, response.text
        body = response.json()
        if body["status"] == status and (stage is None or body["stage"] == stage):
            return body
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"run {run_id} stayed at {body['status']}/{body['stage']}")
        await asyncio.sleep(0.05)


async def run_sql(
    engine: AsyncEngine, statement: str, org: uuid.UUID | None = None, **params: object
) -> None:
    """One statement in a transaction of its own, as the app role (bound to `org` if given)."""
    async with session_factory(engine)() as session, session.begin():
        if org is not None:
            await bind_org(session, org)
        await session.exec(text(statement).bindparams(**params))  # type: ignore[call-overload]


async def row_counts(engine: AsyncEngine, org_id: uuid.UUID) -> tuple[int, int]:
    """(runs, audit events) of one organization, read as the application role under RLS."""
    async with session_factory(engine)() as session, session.begin():
        await bind_org(session, org_id)
        runs = (await session.exec(text("SELECT count(*) FROM runs"))).one()[0]  # type: ignore[call-overload]
        events = (await session.exec(text("SELECT count(*) FROM audit_events"))).one()[0]  # type: ignore[call-overload]
    return int(runs), int(events)


async def audit_actions(
    engine: AsyncEngine, org_id: uuid.UUID
) -> list[tuple[str, str, str | None]]:
    """(action, outcome, reason) of every event of one organization, in chain order."""
    async with session_factory(engine)() as session, session.begin():
        await bind_org(session, org_id)
        rows = await session.exec(  # type: ignore[call-overload]
            text("SELECT action, outcome, reason FROM audit_events ORDER BY seq")
        )
        return [(r[0], r[1], r[2]) for r in rows.all()]


EXPENSE = {"amount": "120.50", "currency": "EUR", "description": "Team lunch"}


async def wait_for_audit(
    engine: AsyncEngine, org_id: uuid.UUID, action: str, *, run_id: str, within: float = 20
) -> None:
    """Poll until the run's `action` event is in the log (workflow events land asynchronously,
    e.g. `run.started`, which the workflow writes itself at its first flush)."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        async with session_factory(engine)() as session, session.begin():
            await bind_org(session, org_id)
            found = (
                await session.exec(  # type: ignore[call-overload]
                    text(
                        "SELECT count(*) FROM audit_events WHERE action = :action AND run_id = :run"
                    ).bindparams(action=action, run=run_id)
                )
            ).one()[0]
        if found:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"no {action} event for run {run_id} within {within} s")
        await asyncio.sleep(0.05)


def blocks_process_env(
    database_url: str, temporal_address: str, task_queue: str, **extra: str
) -> dict[str, str]:
    """The environment of a `blocks` process a test starts (`blocks api`, `blocks worker`) on the
    session's servers; `extra` adds BLOCKS_* variables by their full name."""
    return {
        **os.environ,
        "BLOCKS_ENV": "test",
        "BLOCKS_DATABASE_URL": database_url,
        "BLOCKS_TEMPORAL_ADDRESS": temporal_address,
        "BLOCKS_TASK_QUEUE": task_queue,
        "BLOCKS_WORKFLOW_MODULES": "blocks_examples",
        "BLOCKS_PAYLOAD_KEYS": PAYLOAD_KEYS,
        # The session's master keys, so the personal fields a process seals the in-process API
        # reads back (the signing key stays the worker's: `extra` gives it where needed).
        "BLOCKS_MASTER_KEYS": MASTER_KEYS,
        **extra,
    }


@contextmanager
def running_process(
    args: Sequence[str], *, env: Mapping[str, str], cwd: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A process a test starts (a `blocks` worker, say), killed if still running at the end."""
    process = subprocess.Popen(list(args), env=dict(env), cwd=cwd)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


def history_payloads(message: Message) -> list[Payload]:
    """Every Payload inside a history event, except search attributes (indexed, not encoded)."""
    if isinstance(message, Payload):
        return [message]
    if isinstance(message, SearchAttributes):
        return []
    found: list[Payload] = []
    for descriptor, value in message.ListFields():
        if descriptor.message_type is None:
            continue
        if descriptor.message_type.GetOptions().map_entry:
            items = list(value.values())
        elif isinstance(value, Message):
            items = [value]
        else:  # a repeated field
            items = list(value)
        for item in items:
            if isinstance(item, Message):
                found.extend(history_payloads(item))
    return found


@asynccontextmanager
async def migrated_database(
    data_dir: Path, *, revision: str = "head", pool_size: int = 2
) -> AsyncIterator[tuple[PostgresCredentials, AsyncEngine]]:
    """A PostgreSQL of a test's own (not the session's), migrated to `revision`: for tests that
    change what every other test relies on (master keys, the schema's revision)."""
    server = EmbeddedPostgres(data_dir, port=free_port())
    credentials = await asyncio.to_thread(server.start)
    engine = create_engine(credentials.url(), pool_size=pool_size)
    try:
        await asyncio.to_thread(upgrade_database, credentials.url(owner=True), revision)
        yield credentials, engine
    finally:
        await engine.dispose()
        await asyncio.to_thread(server.stop)
