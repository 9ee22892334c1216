"""The pending-steps projection (migration 0016) as the audit appends keep it: exactly once per
inserted event, in the append's transaction, per organization; and the inbox's seat rule over it.

Events are appended through the workers' own writer (`CombiningAppender`) with the shapes the SDK
writes (blocks/workflows/sdk.py, step_timers.py, step_approvers.py).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import select
from temporalio.client import WorkflowFailureError

from blocks.core.audit.records import ActorType, AuditRecord
from blocks.core.audit.sealed_content import CONTENT_PREFIX
from blocks.core.context import AuthMethod, OrgContext, OrgId
from blocks.infra.db import bind_org, session_factory
from blocks.models.approvals.pending_steps import PendingStep, Seat, pending_steps_for
from blocks.models.audit.combining import CombiningAppender
from blocks.models.audit.content import ContentKeys
from blocks.testing import KitFactory, workflow_kit
from tests.integration.breach_workflows import BreachEscalation, FailsWhileAStepWaits
from tests.integration.step_events import T0, StepRun, policy, workflow_ctx
from tests.support import Org, make_org, run_sql

__all__ = ["workflow_kit"]  # the kit's fixture, used by name below


async def _rows(engine: AsyncEngine, org: Org | uuid.UUID) -> dict[tuple[str, str], PendingStep]:
    """The organization's pending steps, read as the application role under RLS."""
    async with session_factory(engine)() as session, session.begin():
        await bind_org(session, org.id if isinstance(org, Org) else org)
        found = (await session.exec(select(PendingStep))).all()
        return {(row.run_id, row.step_id): row for row in found}


async def _opened_events(engine: AsyncEngine, org: Org, run: StepRun) -> int:
    async with session_factory(engine)() as session, session.begin():
        await bind_org(session, org.id)
        return int(
            (
                await session.exec(  # type: ignore[call-overload]
                    text(
                        "SELECT count(*) FROM audit_events "
                        "WHERE run_id = :run AND action = 'step.opened'"
                    ).bindparams(run=run.run_id)
                )
            ).one()[0]
        )


async def _inbox(
    engine: AsyncEngine, org: Org, caller: str, *seats: Seat, limit: int = 50
) -> list[tuple[str, str]]:
    ctx = OrgContext(
        org_id=OrgId(org.id), user_id=uuid.UUID(caller), roles=(), auth=AuthMethod.API_KEY
    )
    async with session_factory(engine)() as session, session.begin():
        steps = await pending_steps_for(ctx, session, seats, limit=limit)
    return [(s.run_id, s.step_id) for s in steps]


def _seat(user: uuid.UUID | str, *roles: str) -> Seat:
    return Seat(str(user), (f"user:{user}", *(f"role:{r}" for r in roles)))


async def test_each_event_changes_the_row_as_the_step_changes(engine: AsyncEngine) -> None:
    org = await make_org(engine)
    appender = CombiningAppender(session_factory(engine))
    alice, bob, carol = (str(org[n].user_id) for n in ("approver", "approver2", "admin"))
    run = StepRun(requester=str(org["operator"].user_id))
    due = T0 + timedelta(hours=24)
    await appender.append(
        workflow_ctx(org.id), [run.started(), run.opened("review", policy([alice, bob]), due=due)]
    )
    row = (await _rows(engine, org))[(run.run_id, "review")]
    assert (row.workflow, row.requested_by) == ("tests_projection", str(org["operator"].user_id))
    # The title is run content: sealed in the log, so in its projection too.
    assert row.title.startswith(CONTENT_PREFIX)
    async with session_factory(engine)() as session, session.begin():
        await bind_org(session, org.id)
        assert await ContentKeys(session, org.id).reveal(None, "title", row.title) == "Step review"
    assert (row.approvers, row.deciders, row.opened_at, row.deadline) == (
        [f"user:{alice}", f"user:{bob}"],
        [],
        T0,
        due,
    )

    await appender.append(workflow_ctx(org.id), [run.decided("review", alice)])
    assert (await _rows(engine, org))[(run.run_id, "review")].deciders == [alice]

    later = due + timedelta(hours=4)
    await appender.append(
        workflow_ctx(org.id), [run.escalated("review", [f"user:{bob}", f"user:{carol}"], later)]
    )
    row = (await _rows(engine, org))[(run.run_id, "review")]
    assert (row.approvers, row.deadline, row.deciders) == (
        [f"user:{bob}", f"user:{carol}"],
        later,
        [alice],
    )

    # The vote that decides the step removes it at once (its `step.closed` follows).
    await appender.append(workflow_ctx(org.id), [run.decided("review", bob, state="approved")])
    assert (run.run_id, "review") not in await _rows(engine, org)
    await appender.append(workflow_ctx(org.id), [run.closed("review")])

    # A run's end removes whatever it left open.
    await appender.append(
        workflow_ctx(org.id),
        [run.opened("sign", policy([carol])), run.opened("file", policy([bob]))],
    )
    assert {(run.run_id, "sign"), (run.run_id, "file")} <= set(await _rows(engine, org))
    await appender.append(workflow_ctx(org.id), [run.completed()])
    assert not [key for key in await _rows(engine, org) if key[0] == run.run_id]


async def test_a_retried_append_does_not_apply_twice(engine: AsyncEngine) -> None:
    org = await make_org(engine)
    appender = CombiningAppender(session_factory(engine))
    alice = str(org["approver"].user_id)
    run = StepRun(requester=None)
    opening = [run.started(), run.opened("review", policy([alice], ["approver"]))]
    vote = [run.decided("review", alice)]

    first = await appender.append(workflow_ctx(org.id), opening)
    assert (
        await appender.append(workflow_ctx(org.id), opening) == first
    )  # the activity's retry: same ids
    await appender.append(workflow_ctx(org.id), vote)
    await appender.append(workflow_ctx(org.id), vote)
    assert (await _rows(engine, org))[(run.run_id, "review")].deciders == [alice]

    await appender.append(workflow_ctx(org.id), [run.closed("review")])
    # A late retry of the opening is deduplicated by the log, so it reopens nothing: the
    # projection follows the events inserted, not the appends made.
    await appender.append(workflow_ctx(org.id), opening)
    assert (run.run_id, "review") not in await _rows(engine, org)
    assert await _opened_events(engine, org, run) == 1


async def test_a_failed_combined_transaction_projects_each_append_once(
    engine: AsyncEngine,
) -> None:
    org = await make_org(engine)
    appender = CombiningAppender(session_factory(engine))
    run = StepRun(requester=None)
    good = [run.started(), run.opened("review", policy(roles=["approver"]))]
    # Too long for its column: fails the transaction it shares, which is then retried one
    # append at a time (the good one alone succeeds; the first attempt left nothing behind).
    bad = [AuditRecord(action="x" * 101, actor_type=ActorType.SYSTEM)]

    outcomes = await asyncio.gather(
        appender.append(workflow_ctx(org.id), good),
        appender.append(workflow_ctx(org.id), bad),
        return_exceptions=True,
    )

    assert isinstance(outcomes[0], list)
    assert len(outcomes[0]) == 2
    assert isinstance(outcomes[1], DBAPIError)
    assert list(await _rows(engine, org)) == [(run.run_id, "review")]
    assert await _opened_events(engine, org, run) == 1


async def test_another_organizations_steps_never_show(engine: AsyncEngine) -> None:
    mine, theirs = await make_org(engine), await make_org(engine)
    appender = CombiningAppender(session_factory(engine))
    approvers = policy(roles=["approver"])
    my_run, their_run = StepRun(requester=None), StepRun(requester=None)
    await appender.append(
        workflow_ctx(mine.id), [my_run.started(), my_run.opened("review", approvers)]
    )
    await appender.append(
        workflow_ctx(theirs.id), [their_run.started(), their_run.opened("review", approvers)]
    )

    me = mine["approver"].user_id
    assert await _inbox(engine, mine, str(me), _seat(me, "approver")) == [(my_run.run_id, "review")]
    assert list(await _rows(engine, mine)) == [(my_run.run_id, "review")]
    async with session_factory(engine)() as session, session.begin():
        unbound = (await session.exec(text("SELECT count(*) FROM approval_pending_steps"))).one()  # type: ignore[call-overload]
    assert unbound[0] == 0

    # Only the audit log changes the projection: the application role may read it, no more.
    for statement in (
        "DELETE FROM approval_pending_steps",
        "UPDATE approval_pending_steps SET approvers = '{role:approver}'",
        "INSERT INTO approval_pending_steps (org_id, run_id, step_id, title, approvers, "
        "opened_at) SELECT org_id, run_id, 'forged', title, approvers, opened_at "
        "FROM approval_pending_steps",
    ):
        with pytest.raises(DBAPIError, match="permission denied"):
            await run_sql(engine, statement, org=mine.id)
    assert list(await _rows(engine, theirs)) == [(their_run.run_id, "review")]


async def test_the_seat_rule_requester_votes_and_delegators(engine: AsyncEngine) -> None:
    org = await make_org(engine)
    appender = CombiningAppender(session_factory(engine))
    delegate, delegator, requester = (
        org[n].user_id for n in ("approver", "approver2", "operator_approver")
    )
    theirs = StepRun(requester=str(requester))  # asked for by someone else
    own = StepRun(requester=str(delegate))  # asked for by the caller
    for run in (theirs, own):
        await appender.append(
            workflow_ctx(org.id), [run.started(), run.opened("review", policy(roles=["approver"]))]
        )
    as_delegate = _seat(delegate, "approver")
    as_delegator = _seat(delegator, "approver")

    # The caller's own request is never theirs to decide, in person or for someone else.
    assert await _inbox(engine, org, str(delegate), as_delegate, as_delegator) == [
        (theirs.run_id, "review")
    ]
    # The requester holds the label but may not decide their own run.
    assert await _inbox(engine, org, str(requester), _seat(requester, "approver")) == [
        (own.run_id, "review")
    ]

    # The delegate votes for the delegator: that seat is filled, the delegate's own is open.
    await appender.append(
        workflow_ctx(org.id), [theirs.decided("review", str(delegate), on_behalf_of=str(delegator))]
    )
    assert (await _rows(engine, org))[(theirs.run_id, "review")].deciders == [str(delegator)]
    # The delegator sees only the delegate's request now (which the delegate may not decide).
    assert await _inbox(engine, org, str(delegator), as_delegator) == [(own.run_id, "review")]
    assert await _inbox(engine, org, str(delegate), as_delegate) == [(theirs.run_id, "review")]
    assert await _inbox(engine, org, str(delegate), as_delegate, as_delegator) == [
        (theirs.run_id, "review")
    ]
    await appender.append(workflow_ctx(org.id), [theirs.decided("review", str(delegate))])
    assert await _inbox(engine, org, str(delegate), as_delegate, as_delegator) == []


async def test_soonest_due_first_then_oldest_and_the_limit(engine: AsyncEngine) -> None:
    org = await make_org(engine)
    appender = CombiningAppender(session_factory(engine))
    approvers = policy(roles=["approver"])
    runs = [StepRun(requester=None) for _ in range(4)]
    shapes = [
        (T0, None),
        (T0 + timedelta(hours=1), T0 + timedelta(hours=30)),
        (T0 - timedelta(hours=1), None),
        (T0 + timedelta(hours=2), T0 + timedelta(hours=10)),
    ]
    for run, (at, due) in zip(runs, shapes, strict=True):
        await appender.append(
            workflow_ctx(org.id), [run.started(), run.opened("s", approvers, at=at, due=due)]
        )
    me = org["approver"].user_id

    listed = await _inbox(engine, org, str(me), _seat(me, "approver"))
    assert listed == [(runs[i].run_id, "s") for i in (3, 1, 2, 0)]
    assert await _inbox(engine, org, str(me), _seat(me, "approver"), limit=2) == listed[:2]


async def _step_when(
    engine: AsyncEngine,
    org_id: uuid.UUID,
    key: tuple[str, str],
    ready: Callable[[PendingStep | None], bool],
) -> PendingStep | None:
    # The workflow writes its events moments after the server's clock moves.
    for _ in range(200):
        row = (await _rows(engine, org_id)).get(key)
        if ready(row):
            return row
        await asyncio.sleep(0.05)
    raise AssertionError(f"the step {key} never reached the expected state")


async def test_an_escalating_breach_widens_and_extends_the_step(
    engine: AsyncEngine, workflow_kit: KitFactory
) -> None:
    kit = await workflow_kit([BreachEscalation], database=engine)
    run = await kit.start(BreachEscalation, as_=kit.member("rita", roles=["operator"]))
    org_id, key = uuid.UUID(kit.org_id), (run.run_id, "review")
    row = await _step_when(engine, org_id, key, lambda r: r is not None)
    assert row is not None
    assert (row.approvers, row.deadline) == (["role:approver"], row.opened_at + timedelta(hours=2))

    await kit.sleep(hours=3)  # breached at 2 h: admins may decide too, for 3 h more
    row = await _step_when(engine, org_id, key, lambda r: r is None or "role:admin" in r.approvers)
    assert row is not None
    breach = next(e for e in await kit.read_audit_events(run) if e.action == "step.sla_breached")
    assert (row.approvers, row.deadline) == (
        ["role:approver", "role:admin"],
        datetime.fromisoformat(breach.data["at"]) + timedelta(hours=3),
    )

    assert (await kit.result(run)).status == "expired"  # the second breach closes it
    assert await _step_when(engine, org_id, key, lambda r: r is None) is None


async def test_a_run_its_code_fails_closes_its_steps_and_records_its_end(
    engine: AsyncEngine, workflow_kit: KitFactory
) -> None:
    kit = await workflow_kit([FailsWhileAStepWaits], database=engine)
    run = await kit.start(FailsWhileAStepWaits, as_=kit.member("rita", roles=["operator"]))
    org_id, key = uuid.UUID(kit.org_id), (run.run_id, "review")
    assert await _step_when(engine, org_id, key, lambda r: r is not None) is not None

    await kit.sleep(hours=2)
    with pytest.raises(WorkflowFailureError):
        await kit.result(run)
    # No inbox keeps offering a step of a run that can no longer take a decision.
    assert await _step_when(engine, org_id, key, lambda r: r is None) is None
    events = {e.action: e for e in await kit.read_audit_events(run)}
    assert events["step.closed"].data["state"] == "cancelled"
    assert events["run.completed"].data == {"status": "failed", "error_type": "ledger_refused"}
    assert "4711" not in str(events["run.completed"].data)  # the message may quote input
