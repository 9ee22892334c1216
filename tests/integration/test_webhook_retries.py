"""Webhook delivery workflows on the time-skipping server: retries, 410, 3xx, Retry-After, rotation."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.api.testservice.v1 import LockTimeSkippingRequest, UnlockTimeSkippingRequest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from blocks.core.audit.records import ActorType, AuditRecord
from blocks.core.audit.sealed_content import CONTENT_PREFIX
from blocks.core.context import AuthMethod, OrgContext, OrgId
from blocks.core.integrations.events import message_id
from blocks.core.integrations.streams import (
    EVENT_STREAM_WORKFLOW,
    WEBHOOK_DELIVERY_WORKFLOW,
    DeliveryRequest,
    StreamRequest,
    stream_workflow_id,
)
from blocks.infra.crypto.signing import parse_signing_key
from blocks.infra.db import bind_org, session_factory
from blocks.infra.integrations.email import Mailer
from blocks.infra.integrations.webhooks import RETRY_SCHEDULE
from blocks.infra.settings import Settings
from blocks.models.audit.events import AuditEvent, append_events
from blocks.models.audit.reads import verify_chain
from blocks.models.integrations.webhook_deliveries import (
    NewMessage,
    WebhookDelivery,
    add_deliveries,
)
from blocks.models.integrations.webhooks import (
    WebhookDestination,
    create_destination,
    rotate_secret,
)
from blocks.workers.main import build_worker
from tests.mail import Inbox, SmtpServer
from tests.support import SIGNING_KEY, Org, make_org
from tests.webhook_receiver import Answer, WebhookReceiver, running_receiver, verifies

# Shorter than the whole schedule (75 h 35 min from the first attempt to the tenth), so a
# receiver failing every attempt has the destination disabled at the last one, not before.
DISABLE_AFTER = timedelta(hours=72)
SCHEDULE_SPAN = sum(RETRY_SCHEDULE, timedelta(0))


@dataclass
class Rig:
    client: Client
    engine: AsyncEngine
    receiver: WebhookReceiver
    inbox: Inbox
    task_queue: str


@pytest.fixture(scope="module")
async def served_rig(
    engine: AsyncEngine, time_skipping_env: WorkflowEnvironment, smtp_server: SmtpServer
) -> AsyncIterator[Rig]:
    async with running_receiver() as receiver:
        task_queue = f"webhook-retries-{uuid.uuid4().hex[:8]}"
        worker = build_worker(
            time_skipping_env.client,
            engine,
            task_queue=task_queue,
            signer=parse_signing_key(SIGNING_KEY),
            workflows=[],
            outbound_policy=receiver.policy,
            mailer=Mailer(Settings(env="test", **smtp_server.settings)),  # type: ignore[arg-type]
            destination_disable_after=DISABLE_AFTER,
        )
        running = asyncio.create_task(worker.run())
        try:
            yield Rig(time_skipping_env.client, engine, receiver, smtp_server.inbox, task_queue)
        finally:
            await worker.shutdown()
            await running


@pytest.fixture
def rig(served_rig: Rig) -> Rig:
    """The module's rig, its receiver's record and script cleared for this test."""
    served_rig.receiver.reset()
    return served_rig


def _ctx(org: Org) -> OrgContext:
    return OrgContext(org_id=OrgId(org.id), user_id=None, roles=(), auth=AuthMethod.SYSTEM)


async def _destination(rig: Rig, org: Org, event_types: Sequence[str]) -> WebhookDestination:
    """A webhook at the receiver, which from now on verifies with its secret (and only that)."""
    async with session_factory(rig.engine)() as session, session.begin():
        destination, secret = await create_destination(
            _ctx(org), session, url=rig.receiver.url, description="", event_types=list(event_types)
        )
    rig.receiver.secrets = [secret]
    return destination


async def _append(rig: Rig, org: Org, *records: AuditRecord) -> list[uuid.UUID]:
    async with session_factory(rig.engine)() as session, session.begin():
        return await append_events(_ctx(org), session, list(records))


def _event(action: str, **data: Any) -> AuditRecord:
    return AuditRecord(
        action=action, actor_type=ActorType.SYSTEM, target_type="run", target_id="r-1", data=data
    )


async def _deliveries(rig: Rig, org: Org, destination_id: uuid.UUID) -> list[WebhookDelivery]:
    async with session_factory(rig.engine)() as session:
        await bind_org(session, org.id)
        statement = (
            select(WebhookDelivery)
            .where(WebhookDelivery.destination_id == destination_id)
            .order_by(col(WebhookDelivery.event_seq))
        )
        return list((await session.exec(statement)).all())


async def _load_destination(rig: Rig, org: Org, destination_id: uuid.UUID) -> WebhookDestination:
    async with session_factory(rig.engine)() as session:
        await bind_org(session, org.id)
        return (
            await session.exec(
                select(WebhookDestination).where(WebhookDestination.id == destination_id)
            )
        ).one()


async def _pass(rig: Rig, org: Org, destination: WebhookDestination) -> None:
    """Run the destination's stream until it has nothing more to hand over."""
    await rig.client.execute_workflow(
        EVENT_STREAM_WORKFLOW,
        StreamRequest(str(org.id), str(destination.id)),
        id=stream_workflow_id(str(destination.id)),
        task_queue=rig.task_queue,
    )


async def _stream(rig: Rig, org: Org, destination: WebhookDestination) -> list[str]:
    """Run the destination's stream (it starts a delivery workflow per wanted event), then wait
    for every delivery workflow: their final statuses, in event order. Time skips meanwhile."""
    await _pass(rig, org, destination)
    rows = await _deliveries(rig, org, destination.id)
    assert all(row.started for row in rows)
    async with _time_skipping(rig.client):
        return list(
            await asyncio.gather(
                *(rig.client.get_workflow_handle(row.workflow_id()).result() for row in rows)
            )
        )


@asynccontextmanager
async def _time_skipping(client: Client) -> AsyncIterator[None]:
    """Let the server skip time while we wait (what the env's own handles do around `result`;
    a handle from `get_workflow_handle` does not)."""
    await client.test_service.unlock_time_skipping(UnlockTimeSkippingRequest())
    try:
        yield
    finally:
        await client.test_service.lock_time_skipping(LockTimeSkippingRequest())


async def _disabled_events(rig: Rig, org: Org) -> list[AuditEvent]:
    async with session_factory(rig.engine)() as session:
        await bind_org(session, org.id)
        statement = select(AuditEvent).where(
            AuditEvent.org_id == org.id, AuditEvent.action == "integration.destination_disabled"
        )
        return list((await session.exec(statement)).all())


async def _chain_verifies(rig: Rig, org: Org) -> bool:
    async with session_factory(rig.engine)() as session:
        report = await verify_chain(_ctx(org), session, {})
    return report.ok


async def _mail_to_owners_and_admins(rig: Rig, org: Org) -> list[str]:
    """The bodies of the mails the owner and the admin got; nobody else of the org got one."""
    bodies = [
        body
        for who in ("owner", "admin")
        for body in await rig.inbox.wait_for(org[who].email, within=10)
    ]
    others = [m for m in org.members if m not in ("owner", "admin")]
    assert all(rig.inbox.to(org[who].email) == [] for who in others)
    assert all(rig.receiver.url in body for body in bodies)
    assert all("disabled" in body for body in bodies)
    return bodies


def _timer_seconds(events: Sequence[HistoryEvent]) -> list[float]:
    return [
        e.timer_started_event_attributes.start_to_fire_timeout.ToTimedelta().total_seconds()
        for e in events
        if e.event_type == EventType.EVENT_TYPE_TIMER_STARTED
    ]


# --------------------------------------------------------------------------------------------


async def test_three_500s_then_200_is_delivered_once_under_one_webhook_id(
    rig: Rig,
) -> None:
    org = await make_org(rig.engine)
    destination = await _destination(rig, org, ["step.decided"])
    approver = org["approver"]
    [event_id] = await _append(
        rig,
        org,
        AuditRecord(
            action="step.decided",
            actor_type=ActorType.USER,
            actor_id=str(approver.user_id),
            actor_email=approver.email,
            target_type="step",
            target_id="approve",
            run_id="run-1",
            data={"decision": "approve", "comment": "a sealed comment", "step_id": "approve"},
        ),
    )
    rig.receiver.answer(500, 500, 500, 200)

    assert await _stream(rig, org, destination) == ["delivered"]

    # Four requests, the script's 500, 500, 500 and one 200: a fifth would have been answered too.
    received = rig.receiver.received
    assert len(received) == 4
    assert all(r.verified for r in received)
    assert all(verifies(rig.receiver.secrets[0], r.headers, r.body) for r in received)
    assert set(rig.receiver.ids()) == {message_id(event_id)}
    # The same message each time: the bytes do not change from one attempt to the next.
    assert len({r.body for r in received}) == 1
    [row] = await _deliveries(rig, org, destination.id)
    assert (row.status, row.attempts, row.last_status_code) == ("delivered", 4, 200)
    assert row.last_error is None
    assert row.next_attempt_at is None
    # What the chain holds sealed (the comment) and the approver's email stay in Blocks.
    async with session_factory(rig.engine)() as session:
        await bind_org(session, org.id)
        stored = (await session.exec(select(AuditEvent).where(AuditEvent.id == event_id))).one()
    assert str(stored.data["comment"]).startswith(CONTENT_PREFIX)
    body = received[0].body
    assert CONTENT_PREFIX.encode() not in body
    assert b"a sealed comment" not in body
    assert b"actor_email" not in body
    assert approver.email.encode() not in body
    message = json.loads(body)
    assert message["type"] == "step.decided"
    assert message["data"]["id"] == str(event_id)
    assert message["data"]["hash"] == stored.hash
    assert "comment" not in message["data"]["data"]
    assert message["data"]["data"]["decision"] == "approve"
    assert (await _load_destination(rig, org, destination.id)).failing_since is None


async def test_410_disables_the_destination_and_tells_owners_and_admins(rig: Rig) -> None:
    org = await make_org(rig.engine)
    destination = await _destination(rig, org, ["audit.*"])
    await _append(rig, org, _event("invoice.paid"))
    rig.receiver.answer(410, 200)

    assert await _stream(rig, org, destination) == ["gone"]

    assert len(rig.receiver.received) == 1  # a 410 is not retried
    [row] = await _deliveries(rig, org, destination.id)
    assert (row.status, row.attempts, row.last_status_code) == ("gone", 1, 410)
    state = await _load_destination(rig, org, destination.id)
    assert (state.enabled, state.disabled_reason) == (False, "gone")
    [disabled] = await _disabled_events(rig, org)
    assert disabled.target_id == str(destination.id)
    assert disabled.data["reason"] == "gone"
    assert disabled.data["status_code"] == 410
    assert await _chain_verifies(rig, org)
    bodies = await _mail_to_owners_and_admins(rig, org)
    assert all("410" in body for body in bodies)

    # A later message to the disabled destination is skipped without a request.
    [later] = await _append(rig, org, _event("invoice.refunded"))
    async with session_factory(rig.engine)() as session, session.begin():
        await bind_org(session, org.id)
        seq = (await session.exec(select(AuditEvent.seq).where(AuditEvent.id == later))).one()
        await add_deliveries(
            _ctx(org), session, destination.id, [NewMessage(later, seq, "invoice.refunded")]
        )
    [_, fresh] = await _deliveries(rig, org, destination.id)
    status = await rig.client.execute_workflow(
        WEBHOOK_DELIVERY_WORKFLOW,
        DeliveryRequest(str(org.id), str(fresh.id)),
        id=fresh.workflow_id(),
        task_queue=rig.task_queue,
    )
    assert status == "skipped"
    assert len(rig.receiver.received) == 1
    [_, skipped] = await _deliveries(rig, org, destination.id)
    assert (skipped.status, skipped.attempts) == ("skipped", 0)
    # The stream hands the disabled destination nothing more.
    await _append(rig, org, _event("invoice.voided"))
    await _pass(rig, org, destination)
    assert len(await _deliveries(rig, org, destination.id)) == 2
    assert len(rig.receiver.received) == 1


async def test_a_302_is_a_failure_never_followed_and_retried(rig: Rig) -> None:
    org = await make_org(rig.engine)
    destination = await _destination(rig, org, ["audit.*"])
    await _append(rig, org, _event("invoice.paid"))
    # The Location is on the receiver itself, which the policy admits: only "no redirects" stops it.
    rig.receiver.answer(Answer(302, {"location": rig.receiver.url + "/elsewhere"}), 200)

    assert await _stream(rig, org, destination) == ["delivered"]

    assert [r.path for r in rig.receiver.received] == ["/hooks", "/hooks"]
    assert all(r.verified for r in rig.receiver.received)
    assert len(set(rig.receiver.ids())) == 1
    [row] = await _deliveries(rig, org, destination.id)
    assert (row.status, row.attempts, row.last_status_code) == ("delivered", 2, 200)


async def test_retry_after_lengthens_the_wait_before_the_next_attempt(rig: Rig) -> None:
    org = await make_org(rig.engine)
    destination = await _destination(rig, org, ["audit.*"])
    await _append(rig, org, _event("invoice.paid"))
    rig.receiver.answer(Answer(429, {"retry-after": "7200"}), 200)

    assert await _stream(rig, org, destination) == ["delivered"]

    assert len(rig.receiver.received) == 2
    [row] = await _deliveries(rig, org, destination.id)
    assert (row.status, row.attempts, row.last_status_code) == ("delivered", 2, 200)
    # The workflow waited 7200 s of its own time (the schedule alone says 5 s) between attempts.
    history = await rig.client.get_workflow_handle(row.workflow_id()).fetch_history()
    events = list(history.events)
    assert _timer_seconds(events) == [7200.0]
    completed = [
        e.event_time.ToDatetime()
        for e in events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED
    ]
    scheduled = [
        e.event_time.ToDatetime()
        for e in events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    assert len(scheduled) == len(completed) == 2
    assert scheduled[1] - completed[0] >= timedelta(seconds=7200)


async def test_a_receiver_failing_every_attempt_fails_the_delivery_and_disables_it(
    rig: Rig,
) -> None:
    org = await make_org(rig.engine)
    destination = await _destination(rig, org, ["audit.*"])
    await _append(rig, org, _event("invoice.paid"))
    rig.receiver.answer(*[Answer(503)] * (len(RETRY_SCHEDULE) + 5))

    assert await _stream(rig, org, destination) == ["failed"]

    assert len(rig.receiver.received) == len(RETRY_SCHEDULE) == 10
    assert len(set(rig.receiver.ids())) == 1
    [row] = await _deliveries(rig, org, destination.id)
    assert (row.status, row.attempts, row.last_status_code) == ("failed", 10, 503)
    assert row.next_attempt_at is None
    history = await rig.client.get_workflow_handle(row.workflow_id()).fetch_history()
    waits = [timedelta(seconds=s) for s in _timer_seconds(list(history.events))]
    assert waits == list(RETRY_SCHEDULE[1:])
    # Failing for longer than DISABLE_AFTER (the schedule spans more): disabled at the last one.
    assert SCHEDULE_SPAN > DISABLE_AFTER
    state = await _load_destination(rig, org, destination.id)
    assert (state.enabled, state.disabled_reason) == (False, "failing")
    [disabled] = await _disabled_events(rig, org)
    assert disabled.data["reason"] == "failing"
    assert disabled.target_id == str(destination.id)
    assert await _chain_verifies(rig, org)
    bodies = await _mail_to_owners_and_admins(rig, org)
    assert all("failed since" in body for body in bodies)


async def test_during_a_rotation_every_attempt_carries_both_signatures(rig: Rig) -> None:
    org = await make_org(rig.engine)
    destination = await _destination(rig, org, ["audit.*"])
    [old] = rig.receiver.secrets
    async with session_factory(rig.engine)() as session, session.begin():
        await bind_org(session, org.id)
        current = (
            await session.exec(
                select(WebhookDestination).where(WebhookDestination.id == destination.id)
            )
        ).one()
        _, new = await rotate_secret(_ctx(org), session, current, overlap=timedelta(hours=1))
    rig.receiver.secrets = [new]  # a receiver already moved to the new secret
    await _append(rig, org, _event("invoice.paid"), _event("invoice.sent"))
    rig.receiver.answer(500, 200, 200)

    assert await _stream(rig, org, destination) == ["delivered", "delivered"]

    received = rig.receiver.received
    assert len(received) == 3
    assert len(set(rig.receiver.ids())) == 2
    for got in received:
        signatures = got.headers["webhook-signature"].split(" ")
        assert len(signatures) == 2
        assert all(s.startswith("v1,") for s in signatures)
        assert verifies(old, got.headers, got.body)
        assert verifies(new, got.headers, got.body)
        for signature in signatures:  # each one alone verifies under exactly one secret
            alone = {**got.headers, "webhook-signature": signature}
            assert verifies(old, alone, got.body) != verifies(new, alone, got.body)


async def test_event_types_filter_and_a_failed_run_is_run_failed(rig: Rig) -> None:
    org = await make_org(rig.engine)
    decisions = await _destination(rig, org, ["step.decided"])
    decisions_secret = rig.receiver.secrets[0]
    failures = await _destination(rig, org, ["run.failed"])
    rig.receiver.secrets = [decisions_secret, rig.receiver.secrets[0]]
    ids = await _append(
        rig,
        org,
        _event("run.started"),
        _event("step.opened", title="Approve", step_id="approve"),
        _event("step.decided", decision="approve", step_id="approve"),
        _event("run.completed", status="completed"),
        _event("step.decided", decision="reject", step_id="approve"),
        _event("run.completed", status="failed", error_type="ValueError"),
        _event("run.completed", status="cancelled"),
    )

    assert await _stream(rig, org, decisions) == ["delivered", "delivered"]
    assert await _stream(rig, org, failures) == ["delivered"]

    decided = await _deliveries(rig, org, decisions.id)
    assert [(d.event_type, d.event_id) for d in decided] == [
        ("step.decided", ids[2]),
        ("step.decided", ids[4]),
    ]
    [failed] = await _deliveries(rig, org, failures.id)
    assert (failed.event_type, failed.event_id) == ("run.failed", ids[5])
    bodies = {r.headers["webhook-id"]: json.loads(r.body) for r in rig.receiver.received}
    assert len(rig.receiver.received) == 3
    assert all(r.verified for r in rig.receiver.received)
    assert {message_id(ids[2]), message_id(ids[4]), message_id(ids[5])} == set(bodies)
    assert bodies[message_id(ids[5])]["type"] == "run.failed"
    assert bodies[message_id(ids[5])]["data"]["action"] == "run.completed"
    assert bodies[message_id(ids[5])]["data"]["data"]["status"] == "failed"
    assert {bodies[message_id(i)]["type"] for i in (ids[2], ids[4])} == {"step.decided"}
