"""The authoring kit (blocks.testing) runs the example workflows as an author's test would."""

from __future__ import annotations

import uuid
from datetime import datetime

import pytest
from blocks_examples.expense import ExpenseApproval
from blocks_examples.purchase import PurchaseApproval
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from blocks.core.audit.records import AuditRecord
from blocks.infra.temporal.client import find_execution
from blocks.testing import DecisionRefused, KitFactory, StartRefused, WorkflowKit, workflow_kit
from tests.support import EXPENSE, audit_actions

__all__ = ["workflow_kit"]  # the kit's fixture, used by name below

_EXPIRED = ["run.started", "step.opened", "step.sla_breached", "step.closed", "run.completed"]
_DECIDED = ["run.started", "step.opened", "step.decided", "step.closed", "run.completed"]


def _event(events: list[AuditRecord], action: str) -> AuditRecord:
    return next(e for e in events if e.action == action)


def _minutes_after_opening(events: list[AuditRecord], action: str) -> int:
    """When the workflow's own clock says `action` happened, in minutes after its step opened."""
    opened = datetime.fromisoformat(_event(events, "step.opened").data["opened_at"])
    at = datetime.fromisoformat(_event(events, action).data["at"])
    return round((at - opened).total_seconds() / 60)


async def test_a_24h_sla_passes_on_the_workflows_clock() -> None:
    async with WorkflowKit([ExpenseApproval]) as kit:
        bob = kit.member("bob", roles=["operator"])
        kit.member("alice", roles=["approver"])
        run = await kit.start(ExpenseApproval, {**EXPENSE, "sla_hours": 24}, as_=bob)

        outcome = await kit.result(run)  # nobody decides: the server skips to the deadline

        assert outcome.status == "expired"
        events = kit.audit_events(run)
        assert [e.action for e in events] == _EXPIRED
        assert _minutes_after_opening(events, "step.sla_breached") == 24 * 60
        assert _event(events, "run.started").actor_id == bob.id
        assert [(n.kind, n.approvers) for n in kit.notices(run)] == [("opened", ["role:approver"])]


async def test_reminders_and_escalation_fire_as_the_clock_is_skipped() -> None:
    async with WorkflowKit([PurchaseApproval]) as kit:
        requester = kit.member("rita", roles=["operator"])
        finance = [kit.member(n, roles=["approver"]) for n in ("fin1", "fin2")]
        legal = kit.member("lee", roles=["approver"])
        director = kit.member("dora", roles=["approver"])
        run = await kit.start(
            PurchaseApproval,
            {
                "amount": "900.00",
                "description": "Laptops",
                "finance": [m.id for m in finance],
                "legal": [legal.id],
                "director": director.id,
            },
            as_=requester,
        )

        await kit.sleep(hours=21)  # reminders at 8 h and 16 h, escalation to the director at 20 h

        events = kit.audit_events(run)
        assert _minutes_after_opening(events, "step.escalated") == 20 * 60
        assert [e.data["reminder"] for e in events if e.action == "step.reminded"] == [1, 2]
        assert [n.kind for n in kit.notices(run)] == ["opened", "reminder", "reminder", "escalated"]
        for member in (*finance, legal):
            await kit.decide(run, "review", as_=member, decision="approve")
        await kit.decide(
            run, "director", as_=director, decision="approve", form={"budget_code": "FI-2026"}
        )
        outcome = await kit.result(run)
        assert (outcome.status, outcome.detail) == ("approved", {"budget_code": "FI-2026"})


async def test_decisions_are_refused_as_the_api_refuses_them() -> None:
    async with WorkflowKit([ExpenseApproval]) as kit:
        both = kit.member("bea", roles=["operator", "approver"])
        owner = kit.member("olga", roles=["owner"])
        auditor = kit.member("abe", roles=["auditor"])
        alice = kit.member("alice", roles=["approver"])
        late = kit.member("lou", roles=["approver"])
        run = await kit.start(ExpenseApproval, EXPENSE, as_=both)

        with pytest.raises(DecisionRefused) as refused:
            await kit.decide(run, "approve", as_=both, decision="approve")
        assert refused.value.reason == "self_approval"
        with pytest.raises(DecisionRefused) as refused:
            await kit.decide(run, "approve", as_=owner, decision="approve")
        assert refused.value.reason == "not_an_approver"  # the policy wants the approver role
        with pytest.raises(DecisionRefused) as refused:
            await kit.decide(run, "approve", as_=auditor, decision="approve")
        assert refused.value.reason == "missing_permission"

        decided = await kit.decide(run, "approve", as_=alice, decision="approve", comment="ok")
        assert decided.state == "approved"
        assert (await kit.result(run)).detail == {"approved_by": alice.id}
        with pytest.raises(DecisionRefused) as refused:  # her first answer stands (the API: 409)
            await kit.decide(run, "approve", as_=alice, decision="reject")
        assert refused.value.reason == "already_voted"
        with pytest.raises(DecisionRefused) as refused:
            await kit.decide(run, "approve", as_=late, decision="approve")
        assert refused.value.reason == "step_closed"

        events = kit.audit_events(run)
        assert [e.action for e in events] == _DECIDED
        vote = _event(events, "step.decided")
        assert (vote.actor_id, vote.data["channel"], vote.data["comment"]) == (
            alice.id,
            "api",
            "ok",
        )


async def test_starts_are_checked_as_the_api_checks_them() -> None:
    async with WorkflowKit([ExpenseApproval, PurchaseApproval]) as kit:
        rita = kit.member("rita", roles=["operator"])
        approver = kit.member("al", roles=["approver"])
        auditor = kit.member("abe", roles=["auditor"])

        with pytest.raises(StartRefused) as refused:
            await kit.start(ExpenseApproval, {**EXPENSE, "currency": "euro"}, as_=rita)
        assert (refused.value.reason, refused.value.errors[0]["field"]) == (
            "validation_error",
            "input.currency",
        )
        with pytest.raises(StartRefused) as refused:
            await kit.start(ExpenseApproval, EXPENSE, as_=approver)
        assert refused.value.reason == "missing_permission"
        purchase = {
            "amount": "10",
            "description": "Pens",
            "finance": [rita.id, approver.id],
            "legal": [auditor.id],
            "director": approver.id,
        }
        with pytest.raises(StartRefused) as refused:
            await kit.start(PurchaseApproval, purchase, as_=rita)
        assert refused.value.reason == "invalid_approver"
        assert [e["field"] for e in refused.value.errors] == ["input.finance.0", "input.legal.0"]


async def test_a_member_deactivated_while_a_run_waits_no_longer_counts() -> None:
    async with WorkflowKit([PurchaseApproval]) as kit:
        rita = kit.member("rita", roles=["operator"])
        finance = [kit.member(n, roles=["approver"]) for n in ("fin1", "fin2")]
        legal = kit.member("lee", roles=["approver"])
        director = kit.member("dora", roles=["approver"])
        purchase = {
            "amount": "10",
            "description": "Pens",
            "finance": [m.id for m in finance],
            "legal": [legal.id],
            "director": director.id,
        }
        run = await kit.start(PurchaseApproval, purchase, as_=rita)
        for member in finance:
            await kit.decide(run, "review", as_=member, decision="approve")
        kit.deactivate(director)  # while the review waits; the director's step opens after it
        await kit.decide(run, "review", as_=legal, decision="approve")

        outcome = await kit.result(run)

        assert (outcome.status, outcome.detail) == ("expired", {"step": "director"})
        dropped = [e for e in kit.audit_events(run) if e.action == "step.approvers_dropped"]
        assert [(e.target_id, e.data["dropped"][0]["user_id"]) for e in dropped] == [
            ("director", director.id)
        ]
        with pytest.raises(DecisionRefused) as refused:
            await kit.decide(run, "director", as_=director, decision="approve")
        assert refused.value.reason == "deactivated"


async def test_with_a_database_the_events_are_read_back_from_postgresql(
    engine: AsyncEngine, workflow_kit: KitFactory
) -> None:
    kit = await workflow_kit([ExpenseApproval], database=engine)
    bob = kit.member("bob", roles=["operator"])
    alice = kit.member("alice", roles=["approver"])
    run = await kit.start(ExpenseApproval, {**EXPENSE, "sla_hours": 24}, as_=bob)
    await kit.sleep(hours=23)
    await kit.decide(run, "approve", as_=alice, decision="approve")
    assert (await kit.result(run)).status == "approved"

    events = await kit.read_audit_events(run)

    assert [e.action for e in events] == _DECIDED
    assert _minutes_after_opening(events, "step.decided") == 23 * 60
    # The same chain, read by the suite's own helper as the application role under RLS.
    stored = await audit_actions(engine, uuid.UUID(kit.org_id))
    assert [action for action, _, _ in stored] == _DECIDED
    with pytest.raises(RuntimeError, match="read_audit_events"):
        kit.audit_events(run)


async def test_a_kit_can_share_a_running_time_skipping_server(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    async with WorkflowKit([ExpenseApproval], env=time_skipping_env) as kit:
        bob = kit.member("bob", roles=["operator"])
        run = await kit.start(ExpenseApproval, {**EXPENSE, "sla_hours": 2}, as_=bob)
        assert (await kit.result(run)).status == "expired"
        assert kit.client is time_skipping_env.client
    # The shared server outlives the kit: the session's other tests still use it.
    state = await find_execution(time_skipping_env.client, run.workflow_id)
    assert state is not None
    assert state.status is WorkflowExecutionStatus.COMPLETED
