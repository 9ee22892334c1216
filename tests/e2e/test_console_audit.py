"""The auditors' console pages over HTTP (as a browser sends them): the events with a run filter
and paging, a run's chain of custody with every link verified, "verify now", the export links
to the API's own route, the SLA report with its chart; a role without `audit:read` gets the
403 page and an audit event."""

from __future__ import annotations

import re
import uuid
from urllib.parse import parse_qsl, urlsplit

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support import (
    EXPENSE,
    Org,
    Stack,
    audit_actions,
    make_org,
    signed_in_headers,
    wait_for_status,
)

RUN_ACTIONS = ["run.started", "step.opened", "step.decided", "step.closed", "run.completed"]


async def _approved_run(http: httpx.AsyncClient, org: Org) -> str:
    started = await http.post(
        "/v1/runs",
        json={"workflow": "expense_approval", "input": EXPENSE},
        headers=org["operator"].headers,
    )
    assert started.status_code == 201, started.text
    run_id: str = started.json()["id"]
    await wait_for_status(
        http, run_id, org["operator"].headers, status="running", stage="awaiting_approval"
    )
    decided = await http.post(
        f"/v1/runs/{run_id}/steps/approve/decisions",
        json={"decision": "approve", "comment": "fine"},
        headers=org["approver"].headers,
    )
    assert decided.status_code == 200, decided.text
    await wait_for_status(http, run_id, org["operator"].headers, status="completed")
    return run_id


async def test_a_role_without_audit_read_gets_the_403_page_and_is_audited(
    stack: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    operator = await signed_in_headers(stack, org, "operator")
    paths = (
        "/console/audit",
        "/console/audit/verify",
        "/console/audit/sla",
        "/console/audit/export",
        f"/console/runs/{uuid.uuid4()}/custody",
    )
    async with stack.http() as http:
        for path in paths:
            page = await http.get(path, headers=operator)
            assert page.status_code == 403, (path, page.text)
            assert "your roles do not grant audit:read" in page.text
    denied = [
        reason
        for action, _, reason in await audit_actions(engine, org.id)
        if action == "access.denied"
    ]
    assert denied == ["missing permission audit:read"] * len(paths)


async def test_events_custody_verification_export_and_sla(
    stack: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    auditor = await signed_in_headers(stack, org, "auditor")
    async with stack.http() as http:
        run_id = await _approved_run(http, org)

        events = await http.get("/console/audit", params={"run_id": run_id}, headers=auditor)
        assert events.status_code == 200, events.text
        shown = re.findall(r"<td>(run\.\w+|step\.\w+)", events.text)
        assert shown == RUN_ACTIONS
        assert f'href="/v1/audit/export?format=jsonl&amp;run_id={run_id}"' in events.text
        bad = await http.get("/console/audit", params={"run_id": "nope"}, headers=auditor)
        assert bad.status_code == 422
        assert "run_id: not a run id" in bad.text
        other = await http.get(
            "/console/audit", params={"run_id": str(uuid.uuid4())}, headers=auditor
        )
        assert other.status_code == 404
        assert "run not found" in other.text

        custody = await http.get(f"/console/runs/{run_id}/custody", headers=auditor)
        assert custody.status_code == 200, custody.text
        assert "✓ Intact" in custody.text
        assert custody.text.count('<span class="verified">✓ verified</span>') == len(RUN_ACTIONS)
        assert "✗" not in custody.text.replace("✗ Not intact", "")
        verify = await http.get("/console/audit/verify", params={"run_id": run_id}, headers=auditor)
        assert verify.status_code == 200
        assert "✓ The audit chain verifies" in verify.text
        assert f'href="/console/runs/{run_id}/custody"' in verify.text

        # The export link downloads with the session cookie alone, as a browser's GET.
        download = await http.get(
            f"/v1/audit/export?format=jsonl&run_id={run_id}",
            headers={"Cookie": auditor["Cookie"]},
        )
        assert download.status_code == 200, download.text
        assert download.headers["content-disposition"].startswith("attachment;")
        assert sum('"step.decided"' in line for line in download.text.splitlines()) == 1
        # The export form: the API's URL with the filled-in filters only.
        chosen = await http.get(
            "/console/audit/export",
            params={"format": "csv", "from": "", "to": "", "action": "step.decided", "run_id": ""},
            headers=auditor,
        )
        assert chosen.status_code == 303
        target = urlsplit(chosen.headers["location"])
        assert target.path == "/v1/audit/export"
        assert parse_qsl(target.query) == [("format", "csv"), ("action", "step.decided")]

        sla = await http.get("/console/audit/sla", headers=auditor)
        assert sla.status_code == 200, sla.text
        assert "<svg" in sla.text
        assert "Steps met and breached per week: expense_approval" in sla.text
        assert 'class="bar met"' in sla.text
        assert "style=" not in sla.text
        bad_window = await http.get(
            "/console/audit/sla",
            params={"from": "2026-12-02T10:00", "to": "2026-12-01T10:00"},
            headers=auditor,
        )
        assert bad_window.status_code == 422
        assert "must be later than from" in bad_window.text
