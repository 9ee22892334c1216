"""The SLA report's pages over HTTP: `limit` and `cursor` walk every step exactly once, each page
with the summaries of the whole filtered window; a walk keeps reading the report it began while
the log grows, also when its page has to be computed again; a cursor it may not use is a 422
problem naming `cursor`; the CSV still holds every step.

The steps are written straight into the audit log (the report reads nothing else), so there are
enough of them for many pages without running a workflow for each.
"""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from blocks.api.approvals.sla import pages as sla_pages
from blocks.core.audit.records import ActorType, AuditRecord
from blocks.core.context import AuthMethod, OrgContext, OrgId
from blocks.infra.db import session_factory
from blocks.models.audit.events import append_events
from tests.support import Org, Stack, make_org

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
STEPS = 23


def _step(run: str, workflow: str, index: int) -> list[AuditRecord]:
    """One run with one step: met, breached or still open by its index."""
    opened = T0 + timedelta(hours=index)
    deadline = opened + timedelta(hours=4)

    def event(action: str, data: dict[str, Any], **extra: Any) -> AuditRecord:
        target = run if action == "run.started" else "approve"
        return AuditRecord(
            action=action,
            actor_type=ActorType.WORKFLOW,
            target_type="step",
            target_id=target,
            run_id=run,
            data=data,
            **extra,
        )

    records = [
        event("run.started", {"workflow": workflow}),
        event(
            "step.opened",
            {
                "title": f"Step {index} — für Ärger 😀",
                "opened_at": opened.isoformat(),
                "deadline": deadline.isoformat(),
                "sla_seconds": 14400.0,
                "business_hours": False,
            },
        ),
    ]
    if index % 3 == 2:
        return records  # still open (past its deadline by now: overdue)
    decided = opened + timedelta(hours=1 if index % 3 == 0 else 6)
    records += [
        event("step.decided", {"at": decided.isoformat(), "decision": "approve"}, actor_id="u1"),
        event("step.closed", {"state": "approved", "decided_at": decided.isoformat()}),
    ]
    return records


async def _log_steps(engine: AsyncEngine, org: Org, count: int, first: int = 0) -> list[str]:
    ctx = OrgContext(org_id=OrgId(org.id), user_id=None, roles=(), auth=AuthMethod.WORKFLOW)
    runs = [str(uuid.uuid4()) for _ in range(count)]
    records = [
        record
        for index, run in enumerate(runs, start=first)
        for record in _step(run, "expense_approval" if index % 4 else "purchase_approval", index)
    ]
    async with session_factory(engine)() as session, session.begin():
        await append_events(ctx, session, records)
    return runs


async def _get(http: httpx.AsyncClient, org: Org, **params: Any) -> httpx.Response:
    return await http.get("/v1/reports/sla", params=params, headers=org["auditor"].headers)


async def _page(http: httpx.AsyncClient, org: Org, **params: Any) -> dict[str, Any]:
    response = await _get(http, org, **params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    return response.json()  # type: ignore[no-any-return]


async def _walk(http: httpx.AsyncClient, org: Org, **params: Any) -> list[dict[str, Any]]:
    pages = [await _page(http, org, **params)]
    while pages[-1]["next_cursor"] is not None:
        pages.append(await _page(http, org, **params, cursor=pages[-1]["next_cursor"]))
    return pages


def _same_report(pages: list[dict[str, Any]], whole: dict[str, Any]) -> None:
    keys = ("org_id", "generated_at", "through_seq", "filters", "summary", "overall")
    for page in pages:
        assert {k: page[k] for k in keys} == {k: whole[k] for k in keys}


async def test_a_cursor_walks_every_step_once_and_every_page_sums_up_the_whole_window(
    stack: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    runs = await _log_steps(engine, org, STEPS)
    async with stack.http() as http:
        pages = await _walk(http, org, limit=5)
        assert [len(p["steps"]) for p in pages] == [5, 5, 5, 5, 3]
        rows = [row for page in pages for row in page["steps"]]
        assert [row["run_id"] for row in rows] == runs  # opening order, each once
        assert pages[0]["overall"]["steps"] == STEPS
        assert sum(s["steps"] for s in pages[0]["summary"]) == STEPS
        _same_report(pages, pages[0])
        assert {row["outcome"] for row in rows} == {"met", "breached", "overdue"}

        # The default page holds up to 1,000 steps: all of these, and no cursor.
        everything = await _page(http, org)
        assert everything["next_cursor"] is None
        assert everything["steps"] == rows
        assert (everything["summary"], everything["overall"]) == (
            pages[0]["summary"],
            pages[0]["overall"],
        )

        # Filtered: the summaries cover the filtered window only, on every page.
        filtered = await _walk(http, org, limit=4, workflow="purchase_approval")
        purchase = [row for page in filtered for row in page["steps"]]
        assert {row["workflow"] for row in purchase} == {"purchase_approval"}
        assert [r["run_id"] for r in purchase] == runs[::4]
        _same_report(filtered, filtered[0])
        assert filtered[0]["overall"]["steps"] == len(purchase)
        assert [s["workflow"] for s in filtered[0]["summary"]] == ["purchase_approval"]


async def test_a_walk_reads_the_report_it_began_while_the_log_grows_and_after_it_is_let_go(
    stack: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    runs = await _log_steps(engine, org, 9)
    async with stack.http() as http:
        first = await _page(http, org, limit=4)
        later = await _log_steps(engine, org, 2, first=9)
        second = await _page(http, org, limit=4, cursor=first["next_cursor"])
        sla_pages.forget_all()  # as if the next page went to another API process
        third = await _page(http, org, limit=4, cursor=second["next_cursor"])
        assert third["next_cursor"] is None
        walked = [row["run_id"] for page in (first, second, third) for row in page["steps"]]
        assert walked == runs
        _same_report([second, third], first)
        # A new report (no cursor) sees the steps logged since.
        fresh = await _page(http, org)
        assert [row["run_id"] for row in fresh["steps"]] == runs + later
        assert fresh["through_seq"] > first["through_seq"]
        # The CSV holds every step, unpaged.
        response = await _get(http, org, format="csv")
        assert response.status_code == 200, response.text
        assert [r["run_id"] for r in csv.DictReader(io.StringIO(response.text))] == runs + later


async def test_cursors_and_limits_it_may_not_use_are_problems_naming_the_field(
    stack: Stack, engine: AsyncEngine
) -> None:
    org, other = await make_org(engine), await make_org(engine)
    await _log_steps(engine, org, 3)
    await _log_steps(engine, other, 3)
    async with stack.http() as http:
        cursor = (await _page(http, org, limit=1))["next_cursor"]
        theirs = (await _page(http, other, limit=1))["next_cursor"]
        refused: list[tuple[Org, dict[str, Any], str]] = [
            (org, {"cursor": "not-a-cursor!"}, "cursor"),
            (org, {"cursor": cursor[:-6]}, "cursor"),
            (org, {"cursor": theirs}, "cursor"),  # another organization's
            (other, {"cursor": cursor}, "cursor"),
            (org, {"cursor": cursor, "workflow": "expense_approval"}, "cursor"),
            (org, {"cursor": cursor, "from": "2026-01-01T00:00:00Z"}, "cursor"),
            (org, {"cursor": "x" * 101}, "cursor"),
            (org, {"limit": 0}, "limit"),
            (org, {"limit": 10_001}, "limit"),
            (org, {"limit": "many"}, "limit"),
            (org, {"format": "csv", "cursor": cursor}, "cursor"),
            (org, {"format": "csv", "limit": 5}, "limit"),
        ]
        for who, params, field in refused:
            response = await _get(http, who, **params)
            assert response.status_code == 422, (params, response.text)
            assert response.headers["content-type"] == "application/problem+json"
            assert [e["field"] for e in response.json()["errors"]] == [field], params
        # The same cursor still works with its own filters.
        assert (await _page(http, org, cursor=cursor))["steps"]


@pytest.mark.parametrize("limit", [1, 10_000])
async def test_the_limits_bounds_are_accepted(
    stack: Stack, engine: AsyncEngine, limit: int
) -> None:
    org = await make_org(engine)
    await _log_steps(engine, org, 2)
    async with stack.http() as http:
        page = await _page(http, org, limit=limit)
    assert len(page["steps"]) == min(limit, 2)
    assert (page["next_cursor"] is None) == (limit >= 2)
