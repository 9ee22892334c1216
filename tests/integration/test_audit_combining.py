"""Concurrent appends of one organization share transactions, and keep every guarantee."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from blocks.core.audit.chain import first_broken_link
from blocks.core.audit.records import ActorType, AuditRecord
from blocks.core.context import AuthMethod, OrgContext, OrgId
from blocks.infra.db import session_factory
from blocks.models.audit.combining import CombiningAppender
from blocks.models.audit.events import hashed_payload
from tests.integration.test_audit_log import _events
from tests.support import make_org


def _ctx(org_id: uuid.UUID) -> OrgContext:
    return OrgContext(org_id=OrgId(org_id), user_id=None, roles=(), auth=AuthMethod.WORKFLOW)


def _record(n: int, **fields: object) -> AuditRecord:
    return AuditRecord(
        action=str(fields.pop("action", "combining.probe")),
        actor_type=ActorType.SYSTEM,
        data={"n": n},
        **fields,  # type: ignore[arg-type]
    )


async def test_a_burst_of_appends_is_written_in_fewer_transactions(engine: AsyncEngine) -> None:
    org = await make_org(engine)
    appender = CombiningAppender(session_factory(engine))
    ids = await asyncio.gather(
        *(appender.append(_ctx(org.id), [_record(n), _record(n + 1000)]) for n in range(40))
    )
    assert all(len(pair) == 2 for pair in ids)
    events = await _events(engine, org.id)
    assert [e.seq for e in events] == list(range(1, 81))
    # Each caller's events stay together and in its order, and each caller gets its own ids.
    by_id = {e.id: e for e in events}
    for n, (first, second) in enumerate(ids):
        assert (by_id[first].data["n"], by_id[second].data["n"]) == (n, n + 1000)
        assert by_id[second].seq == by_id[first].seq + 1
    # One transaction stamps its events with one time: fewer times than appends means shared
    # transactions (the first append is written alone, the rest queue behind it).
    assert len({e.occurred_at for e in events}) < 40
    links = [(hashed_payload(e.model_dump()), e.prev_hash, e.hash) for e in events]
    assert first_broken_link(links) is None


async def test_an_append_that_fails_fails_alone(engine: AsyncEngine) -> None:
    org = await make_org(engine)
    appender = CombiningAppender(session_factory(engine))
    # The column holds 100 characters: PostgreSQL refuses this one inside the shared insert.
    bad = _record(-1, action="x" * 101)
    outcomes = await asyncio.gather(
        *(appender.append(_ctx(org.id), [_record(n)]) for n in range(10)),
        appender.append(_ctx(org.id), [bad]),
        *(appender.append(_ctx(org.id), [_record(n)]) for n in range(10, 20)),
        return_exceptions=True,
    )
    failed = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(failed) == 1
    assert outcomes.index(failed[0]) == 10
    events = await _events(engine, org.id)
    assert sorted(e.data["n"] for e in events) == list(range(20))
    assert [e.seq for e in events] == list(range(1, 21))


async def test_a_retried_append_is_written_once(engine: AsyncEngine) -> None:
    org = await make_org(engine)
    appender = CombiningAppender(session_factory(engine))
    event_id = str(uuid.uuid4())
    # The same batch twice at once (an activity retried while its first attempt still writes)
    # and once more later: one event.
    first, second = await asyncio.gather(
        appender.append(_ctx(org.id), [_record(1, event_id=event_id)]),
        appender.append(_ctx(org.id), [_record(1, event_id=event_id)]),
    )
    third = await appender.append(_ctx(org.id), [_record(1, event_id=event_id)])
    assert first == second == third == [uuid.UUID(event_id)]
    assert len(await _events(engine, org.id)) == 1


async def test_a_personal_field_too_long_is_refused_before_it_joins(engine: AsyncEngine) -> None:
    org = await make_org(engine)
    appender = CombiningAppender(session_factory(engine))
    with pytest.raises(ValueError, match="actor_email"):
        await appender.append(
            _ctx(org.id),
            [
                AuditRecord(
                    action="combining.probe",
                    actor_type=ActorType.USER,
                    actor_id=str(uuid.uuid4()),
                    actor_email="a" * 400,
                )
            ],
        )
    assert await _events(engine, org.id) == []
