"""The audit append path against real PostgreSQL: chained, deduplicated, concurrent, append-only."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from blocks.core.audit.chain import first_broken_link
from blocks.core.audit.records import ActorType, AuditRecord
from blocks.core.context import AuthMethod, OrgContext, OrgId
from blocks.infra.db import bind_org, create_engine, session_factory
from blocks.infra.embedded.postgres import PostgresCredentials
from blocks.models.audit import events as audit_model
from blocks.models.audit.events import AuditEvent, append_events, hashed_payload, list_events
from tests.support import make_org


def _ctx(org_id: uuid.UUID) -> OrgContext:
    return OrgContext(org_id=OrgId(org_id), user_id=None, roles=(), auth=AuthMethod.SYSTEM)


def _record(action: str, event_id: str | None = None) -> AuditRecord:
    return AuditRecord(
        action=action, actor_type=ActorType.SYSTEM, data={"n": action}, event_id=event_id
    )


async def _events(engine: AsyncEngine, org_id: uuid.UUID) -> list[AuditEvent]:
    async with session_factory(engine)() as session, session.begin():
        return await list_events(_ctx(org_id), session, limit=100_000)


def _links(events: list[AuditEvent]) -> list[tuple[dict[str, object], str, str]]:
    return [(hashed_payload(e.model_dump()), e.prev_hash, e.hash) for e in events]


async def test_events_form_a_verifiable_chain_and_tampering_is_caught(engine: AsyncEngine) -> None:
    org = await make_org(engine)
    async with session_factory(engine)() as session, session.begin():
        await append_events(_ctx(org.id), session, [_record(f"a{i}") for i in range(5)])
    events = await _events(engine, org.id)
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    assert first_broken_link(_links(events)) is None

    links = _links(events)
    changed = list(links)
    changed[2] = ({**links[2][0], "action": "forged"}, links[2][1], links[2][2])
    assert first_broken_link(changed) == 2
    assert first_broken_link(links[:1] + links[2:]) == 1  # a deleted event
    assert first_broken_link([links[1], links[0], *links[2:]]) == 0  # a reordering


async def test_a_retried_append_with_the_same_ids_writes_nothing_twice(engine: AsyncEngine) -> None:
    org = await make_org(engine)
    ids = [str(uuid.uuid4()) for _ in range(3)]
    for _ in range(3):
        async with session_factory(engine)() as session, session.begin():
            await append_events(_ctx(org.id), session, [_record(f"e{i}", ids[i]) for i in range(3)])
    events = await _events(engine, org.id)
    assert [str(e.id) for e in events] == ids
    assert first_broken_link(_links(events)) is None


async def test_concurrent_appends_stay_one_linear_chain(engine: AsyncEngine) -> None:
    org = await make_org(engine)

    async def writer(n: int) -> None:
        for i in range(10):
            async with session_factory(engine)() as session, session.begin():
                await append_events(_ctx(org.id), session, [_record(f"w{n}-{i}")])

    await asyncio.gather(*(writer(n) for n in range(8)))
    events = await _events(engine, org.id)
    assert [e.seq for e in events] == list(range(1, 81))
    assert first_broken_link(_links(events)) is None


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_events SET action = 'forged'",
        "DELETE FROM audit_events",
        "TRUNCATE audit_events",
    ],
)
async def test_the_audit_table_refuses_changes(
    engine: AsyncEngine, postgres: PostgresCredentials, statement: str
) -> None:
    """Two layers: the app role lacks the privilege; the owner (who has it) meets the trigger."""
    org = await make_org(engine)
    async with session_factory(engine)() as session, session.begin():
        await append_events(_ctx(org.id), session, [_record("kept")])

    async def attempt(on: AsyncEngine) -> None:
        async with session_factory(on)() as session, session.begin():
            await bind_org(session, org.id)
            await session.exec(text(statement))  # type: ignore[call-overload]

    with pytest.raises(DBAPIError, match="permission denied"):
        await attempt(engine)
    owner_engine = create_engine(postgres.url(owner=True), pool_size=1)
    try:
        with pytest.raises(DBAPIError, match="append-only"):
            await attempt(owner_engine)
    finally:
        await owner_engine.dispose()
    assert [e.action for e in await _events(engine, org.id)] == ["kept"]


async def test_a_stale_remembered_head_falls_back_to_the_lock(engine: AsyncEngine) -> None:
    """One-statement appends trust a remembered head only if the database still has it."""
    org = await make_org(engine)
    for action in ("first", "second"):
        async with session_factory(engine)() as session, session.begin():
            await append_events(_ctx(org.id), session, [_record(action)])
    # Another process appended meanwhile: what this process remembers is now one behind.
    audit_model._HEADS[org.id] = (1, _events_hash_at(await _events(engine, org.id), 1))
    async with session_factory(engine)() as session, session.begin():
        await append_events(_ctx(org.id), session, [_record("third")])
    events = await _events(engine, org.id)
    assert [e.action for e in events][-3:] == ["first", "second", "third"]
    assert first_broken_link(_links(events)) is None
    # A rolled-back append leaves the remembered head ahead of the database; still no fork.
    async with session_factory(engine)() as session:
        await append_events(_ctx(org.id), session, [_record("rolled back")])
        await session.rollback()
    async with session_factory(engine)() as session, session.begin():
        await append_events(_ctx(org.id), session, [_record("fourth")])
    events = await _events(engine, org.id)
    assert [e.action for e in events][-4:] == ["first", "second", "third", "fourth"]
    assert first_broken_link(_links(events)) is None


def _events_hash_at(events: list[AuditEvent], seq: int) -> str:
    return next(e.hash for e in events if e.seq == seq)
