"""The SLA report's computation from audit events: outcomes, times, filters, summaries and CSV."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from blocks.core.approvals.sla import (
    LoggedEvent,
    ReportFilters,
    SlaOutcome,
    SlaReportBuilder,
    StepRow,
    percentile,
    summarize,
    summarize_by_workflow,
)
from blocks.core.approvals.sla_csv import CSV_COLUMNS, csv_cell, csv_header, csv_rows

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


class Log:
    """Builds audit events the way the SDK writes them, with increasing seq."""

    def __init__(self) -> None:
        self.events: list[LoggedEvent] = []

    def add(
        self,
        action: str,
        run: str,
        step: str | None,
        data: dict[str, Any],
        actor: str | None = None,
    ) -> None:
        self.events.append(
            LoggedEvent(
                seq=len(self.events) + 1,
                action=action,
                run_id=run,
                target_id=step or run,
                actor_id=actor,
                # The row's insert time, deliberately far from the workflow clock in the data.
                occurred_at=T0 + timedelta(days=365),
                data=data,
            )
        )

    def started(self, run: str, workflow: str) -> None:
        self.add("run.started", run, None, {"workflow": workflow})

    def opened(self, run: str, step: str, at: datetime, sla: timedelta | None) -> None:
        self.add(
            "step.opened",
            run,
            step,
            {
                "title": f"{step} of {run}",
                "opened_at": at.isoformat(),
                "deadline": (at + sla).isoformat() if sla else None,
                "sla_seconds": sla.total_seconds() if sla else None,
                "business_hours": False,
            },
        )

    def decided(self, run: str, step: str, who: str, decision: str, at: datetime) -> None:
        self.add(
            "step.decided",
            run,
            step,
            {"at": at.isoformat(), "decision": decision, "workflow": "expense_approval"},
            actor=who,
        )

    def closed(self, run: str, step: str, state: str, at: datetime | None, **extra: Any) -> None:
        self.add(
            "step.closed",
            run,
            step,
            {"state": state, "decided_at": at.isoformat() if at else None, **extra},
        )

    def rows(self, now: datetime, filters: ReportFilters | None = None) -> list[StepRow]:
        builder = SlaReportBuilder(filters)
        for event in self.events:
            builder.add(event)
        return builder.rows(now)


def _one(rows: list[StepRow]) -> StepRow:
    assert len(rows) == 1
    return rows[0]


def test_decided_within_sla_is_met_with_decider_and_time() -> None:
    log = Log()
    log.started("r1", "expense_approval")
    log.opened("r1", "approve", T0, timedelta(hours=24))
    log.decided("r1", "approve", "alice", "approve", T0 + timedelta(minutes=90))
    log.closed("r1", "approve", "approved", T0 + timedelta(minutes=90))
    row = _one(log.rows(T0 + timedelta(days=30)))
    assert row.outcome is SlaOutcome.MET
    assert row.state == "approved"
    assert row.workflow == "expense_approval"
    assert row.time_to_decision_seconds == 5400
    assert row.decided_at == row.closed_at == T0 + timedelta(minutes=90)
    assert [(v.user_id, v.decision) for v in row.deciders] == [("alice", "approve")]
    assert row.deadline == T0 + timedelta(hours=24)
    assert (row.reminders, row.escalated, row.breached_at) == (0, False, None)


def test_expired_by_the_sla_is_breached_without_a_decision_time() -> None:
    log = Log()
    log.started("r1", "expense_approval")
    log.opened("r1", "approve", T0, timedelta(hours=1))
    log.add(
        "step.sla_breached",
        "r1",
        "approve",
        {"at": (T0 + timedelta(hours=1)).isoformat(), "action": "expire"},
    )
    log.closed("r1", "approve", "expired", T0 + timedelta(hours=1))
    row = _one(log.rows(T0))
    assert row.outcome is SlaOutcome.BREACHED
    assert row.state == "expired"
    assert row.breached_at == row.closed_at == T0 + timedelta(hours=1)
    assert row.decided_at is None
    assert row.time_to_decision_seconds is None
    assert row.deciders == ()


def test_failing_breach_closes_at_the_breach_even_without_decided_at() -> None:
    log = Log()
    log.opened("r1", "s", T0, timedelta(hours=2))
    log.add(
        "step.sla_breached",
        "r1",
        "s",
        {"at": (T0 + timedelta(hours=2)).isoformat(), "action": "fail"},
    )
    log.add("step.closed", "r1", "s", {"state": "expired", "deciders": []})
    row = _one(log.rows(T0))
    assert row.closed_at == T0 + timedelta(hours=2)
    assert row.outcome is SlaOutcome.BREACHED


def test_reminders_and_escalation_are_counted_and_timed() -> None:
    log = Log()
    log.started("r1", "purchase_approval")
    log.opened("r1", "review", T0, timedelta(hours=24))
    for n in (1, 2):
        log.add(
            "step.reminded",
            "r1",
            "review",
            {"reminder": n, "at": (T0 + timedelta(hours=8 * n)).isoformat()},
        )
    log.add("step.escalated", "r1", "review", {"at": (T0 + timedelta(hours=20)).isoformat()})
    log.add(
        "step.sla_breached",
        "r1",
        "review",
        {"at": (T0 + timedelta(hours=24)).isoformat(), "action": "reject"},
    )
    log.closed("r1", "review", "rejected", T0 + timedelta(hours=24), reminders=2, escalated=True)
    row = _one(log.rows(T0))
    assert (row.reminders, row.escalated) == (2, True)
    assert row.escalated_at == T0 + timedelta(hours=20)
    assert row.state == "rejected"
    assert row.outcome is SlaOutcome.BREACHED
    assert row.time_to_decision_seconds is None  # rejected by the SLA, not by a person


def test_escalating_breach_then_approval_is_breached_but_decided() -> None:
    log = Log()
    log.opened("r1", "s", T0, timedelta(hours=4))
    log.add(
        "step.sla_breached",
        "r1",
        "s",
        {"at": (T0 + timedelta(hours=4)).isoformat(), "action": "escalate"},
    )
    log.decided("r1", "s", "boss", "approve", T0 + timedelta(hours=5))
    log.closed("r1", "s", "approved", T0 + timedelta(hours=5))
    row = _one(log.rows(T0))
    assert row.outcome is SlaOutcome.BREACHED
    assert row.escalated is True
    assert row.escalated_at == T0 + timedelta(hours=4)
    assert row.time_to_decision_seconds == 5 * 3600


def test_pending_is_open_before_the_deadline_and_overdue_after() -> None:
    log = Log()
    log.opened("r1", "s", T0, timedelta(hours=4))
    log.decided("r1", "s", "alice", "approve", T0 + timedelta(hours=1))  # one of two votes
    log.add(
        "step.reminded", "r1", "s", {"reminder": 1, "at": (T0 + timedelta(hours=2)).isoformat()}
    )
    assert _one(log.rows(T0 + timedelta(hours=3))).outcome is SlaOutcome.OPEN
    row = _one(log.rows(T0 + timedelta(hours=5)))
    assert row.outcome is SlaOutcome.OVERDUE
    assert row.state == "pending"
    assert row.closed_at is None
    assert [v.user_id for v in row.deciders] == ["alice"]
    assert row.reminders == 1  # only the events say so while the step is open


def test_closing_after_the_deadline_without_a_breach_event_is_breached() -> None:
    log = Log()
    log.opened("r1", "s", T0, timedelta(hours=1))
    log.closed("r1", "s", "approved", T0 + timedelta(hours=2))
    assert _one(log.rows(T0)).outcome is SlaOutcome.BREACHED


def _cancelled(log: Log, run: str, step: str, at: datetime) -> None:
    """As the SDK closes a step whose run was cancelled: no decision, the time it closed."""
    log.add(
        "step.closed",
        run,
        step,
        {"state": "cancelled", "decided_at": None, "closed_at": at.isoformat(), "deciders": []},
    )


def test_cancelled_before_the_deadline_is_its_own_outcome_without_a_decision_time() -> None:
    log = Log()
    log.opened("r1", "s", T0, timedelta(hours=4))
    log.decided("r1", "s", "alice", "approve", T0 + timedelta(hours=1))  # one of two votes
    _cancelled(log, "r1", "s", T0 + timedelta(hours=2))
    row = _one(log.rows(T0 + timedelta(days=1)))
    assert (row.state, row.outcome) == ("cancelled", SlaOutcome.CANCELLED)
    assert row.closed_at == T0 + timedelta(hours=2)
    assert (row.decided_at, row.time_to_decision_seconds) == (None, None)
    assert [v.user_id for v in row.deciders] == ["alice"]


def test_a_deadline_missed_before_the_cancel_is_still_breached() -> None:
    # Breach recorded, then the run cancelled: cancelling an overdue run does not hide the miss.
    log = Log()
    log.opened("r1", "s", T0, timedelta(hours=1))
    log.add(
        "step.sla_breached",
        "r1",
        "s",
        {"at": (T0 + timedelta(hours=1)).isoformat(), "action": "escalate"},
    )
    _cancelled(log, "r1", "s", T0 + timedelta(hours=3))
    assert _one(log.rows(T0)).outcome is SlaOutcome.BREACHED
    # No breach recorded (no worker ran the timer), cancelled after the deadline: breached too.
    late = Log()
    late.opened("r2", "s", T0, timedelta(hours=1))
    _cancelled(late, "r2", "s", T0 + timedelta(hours=2))
    assert _one(late.rows(T0)).outcome is SlaOutcome.BREACHED


def test_closed_undecided_before_the_deadline_is_expired_without_a_decision_time() -> None:
    # As the step-open approver check closes a step nobody left can decide (decided_at is set).
    log = Log()
    log.opened("r1", "s", T0, timedelta(hours=24))
    log.closed("r1", "s", "expired", T0, reason="no_eligible_approvers", deciders=[])
    row = _one(log.rows(T0 + timedelta(days=2)))
    assert (row.state, row.outcome) == ("expired", SlaOutcome.EXPIRED)
    assert row.closed_at == T0
    assert (row.decided_at, row.time_to_decision_seconds) == (None, None)


def test_no_deadline_is_no_sla() -> None:
    log = Log()
    log.opened("r1", "s", T0, None)
    log.closed("r1", "s", "approved", T0 + timedelta(days=9))
    row = _one(log.rows(T0))
    assert row.outcome is SlaOutcome.NO_SLA
    assert row.time_to_decision_seconds == 9 * 86400


def test_filters_by_workflow_and_opening_time() -> None:
    log = Log()
    log.started("r1", "expense_approval")
    log.started("r2", "purchase_approval")
    log.opened("r1", "approve", T0, timedelta(hours=1))
    log.opened("r2", "review", T0 + timedelta(hours=2), timedelta(hours=1))
    log.opened("r2", "director", T0 + timedelta(hours=3), timedelta(hours=1))
    log.add("step.opened", "r3", "s", {"opened_at": T0.isoformat()})  # no run.started
    log.decided("r3", "s", "x", "approve", T0)  # names the workflow in its data
    now = T0
    by_workflow = log.rows(now, ReportFilters(workflow="purchase_approval"))
    assert [(r.run_id, r.step_id) for r in by_workflow] == [("r2", "review"), ("r2", "director")]
    fallback = log.rows(now, ReportFilters(workflow="expense_approval"))
    assert [r.run_id for r in fallback] == ["r1", "r3"]
    window = log.rows(
        now, ReportFilters(opened_from=T0 + timedelta(hours=2), opened_to=T0 + timedelta(hours=3))
    )
    assert [r.step_id for r in window] == ["review"]  # from inclusive, to exclusive
    assert log.rows(now, ReportFilters(workflow="nothing")) == []


def test_events_of_unknown_steps_and_runless_events_are_ignored() -> None:
    log = Log()
    log.decided("r9", "s", "alice", "approve", T0)
    log.closed("r9", "s", "approved", T0)
    log.events.append(
        LoggedEvent(1000, "step.opened", None, "s", None, T0, {"opened_at": T0.isoformat()})
    )
    assert log.rows(T0) == []


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 50) is None
    assert percentile([5.0], 90) == 5.0
    values = [float(v) for v in range(1, 11)]  # 1..10
    assert percentile(values, 50) == 5.0
    assert percentile(values, 90) == 9.0
    assert percentile(list(reversed(values)), 100) == 10.0


def test_summary_counts_and_compliance() -> None:
    log = Log()
    for run, workflow in (("a", "w1"), ("b", "w1"), ("c", "w1"), ("d", "w2")):
        log.started(run, workflow)
        log.opened(run, "s", T0, timedelta(hours=1))
    log.closed("a", "s", "approved", T0 + timedelta(minutes=10))
    log.add(
        "step.sla_breached",
        "b",
        "s",
        {"at": (T0 + timedelta(hours=1)).isoformat(), "action": "expire"},
    )
    log.closed("b", "s", "expired", T0 + timedelta(hours=1))
    rows = log.rows(T0 + timedelta(minutes=30))  # c and d still open
    w1, w2 = summarize_by_workflow(rows)
    assert (w1.workflow, w1.steps, w1.met, w1.breached, w1.open, w1.overdue) == (
        "w1",
        3,
        1,
        1,
        1,
        0,
    )
    assert w1.compliance_percent == 50.0
    assert w1.p50_seconds == w1.p90_seconds == 600.0
    assert (w2.workflow, w2.open, w2.compliance_percent, w2.p50_seconds) == ("w2", 1, None, None)
    overall = summarize(rows)
    assert (overall.workflow, overall.steps, overall.compliance_percent) == (None, 4, 50.0)
    assert (overall.cancelled, overall.expired) == (0, 0)


def test_summary_counts_cancelled_and_expired_steps_but_judges_neither() -> None:
    log = Log()
    for run in ("a", "b", "c"):
        log.started(run, "w1")
        log.opened(run, "s", T0, timedelta(hours=1))
    log.decided("a", "s", "alice", "approve", T0 + timedelta(minutes=5))
    log.closed("a", "s", "approved", T0 + timedelta(minutes=5))
    _cancelled(log, "b", "s", T0 + timedelta(minutes=10))
    log.closed("c", "s", "expired", T0, reason="no_eligible_approvers")
    [w1] = summarize_by_workflow(log.rows(T0 + timedelta(days=1)))
    counts = (w1.steps, w1.met, w1.breached, w1.cancelled, w1.expired, w1.open, w1.no_sla)
    assert counts == (3, 1, 0, 1, 1, 0, 0)
    assert w1.compliance_percent == 100.0
    # Only the decided step has a decision time.
    assert w1.p50_seconds == w1.p90_seconds == 300.0


@pytest.mark.parametrize("text", ["=HYPERLINK(1)", "+1", "-1", "@SUM(A1)", "\tx", "\rx"])
def test_formula_cells_get_an_apostrophe(text: str) -> None:
    assert csv_cell(text) == "'" + text


def test_plain_cells_are_unchanged() -> None:
    assert csv_cell("Team lunch") == "Team lunch"
    assert csv_cell(None) == ""
    assert csv_cell(True) == "true"
    assert csv_cell(3) == 3
    assert csv_cell(-2.5) == -2.5  # numbers are ours, and a sign is not a formula
    assert csv_cell(T0) == T0.isoformat()


def test_csv_round_trips_the_rows() -> None:
    log = Log()
    log.started("r1", "expense_approval")
    log.add(
        "step.opened",
        "r1",
        "approve",
        {
            "title": '=cmd|"/c calc"!A1, with "quotes"\nand a newline',
            "opened_at": T0.isoformat(),
            "deadline": (T0 + timedelta(hours=1)).isoformat(),
        },
    )
    log.decided("r1", "approve", "alice", "reject", T0 + timedelta(minutes=1))
    log.closed("r1", "approve", "rejected", T0 + timedelta(minutes=1))
    rows = log.rows(T0)
    parsed = list(csv.DictReader(io.StringIO(csv_header() + csv_rows(rows))))
    assert tuple(parsed[0]) == CSV_COLUMNS
    assert len(parsed) == 1
    assert parsed[0]["title"] == '\'=cmd|"/c calc"!A1, with "quotes"\nand a newline'
    assert parsed[0]["outcome"] == "met"
    assert parsed[0]["deciders"] == "alice:reject"
    assert parsed[0]["time_to_decision_seconds"] == "60.0"
    assert parsed[0]["escalated"] == "false"
    assert parsed[0]["opened_at"] == T0.isoformat()


def test_csv_names_the_new_outcomes() -> None:
    log = Log()
    log.opened("r1", "s", T0, timedelta(hours=1))
    _cancelled(log, "r1", "s", T0 + timedelta(minutes=1))
    log.opened("r2", "s", T0, timedelta(hours=1))
    log.closed("r2", "s", "expired", T0)
    parsed = list(csv.DictReader(io.StringIO(csv_header() + csv_rows(log.rows(T0)))))
    assert [(r["state"], r["outcome"], r["decided_at"]) for r in parsed] == [
        ("cancelled", "cancelled", ""),
        ("expired", "expired", ""),
    ]
