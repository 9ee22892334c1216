"""Closing an organization destroys its data keys: its runs' history in Temporal and the run
content of its audit log become unreadable for good, while its audit chain still verifies."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import WorkflowExecutionStatus

from blocks.core.context import AuthMethod, OrgContext, OrgId
from blocks.core.roles import Role
from blocks.infra.crypto.key_specs import parse_payload_keys
from blocks.infra.crypto.org_keys import OrgKeyUnavailable
from blocks.infra.db import session_factory
from blocks.infra.temporal.payload_codec import EncryptionCodec, payload_org
from blocks.models.audit.content import DESTROYED, with_content
from blocks.models.audit.events import list_events
from blocks.models.audit.reads import snapshot, verify_chain
from blocks.models.keys.org_keys import DatabaseOrgKeys
from tests.support import (
    EXPENSE,
    PAYLOAD_KEYS,
    Stack,
    history_payloads,
    make_org,
    wait_for_status,
)

MARKER = "Shredded offsite dinner"


async def test_closing_an_organization_shreds_its_history_and_content(
    stack: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    async with stack.http() as http:
        started = await http.post(
            "/v1/runs",
            json={"workflow": "expense_approval", "input": {**EXPENSE, "description": MARKER}},
            headers=org["operator"].headers,
        )
        assert started.status_code == 201, started.text
        run_id = started.json()["id"]
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

        history = await stack.temporal.get_workflow_handle(f"run-{run_id}").fetch_history()
        sealed = [
            p for e in history.events for p in history_payloads(e) if payload_org(p) == org.id
        ]
        assert sealed
        before = EncryptionCodec(
            *parse_payload_keys(PAYLOAD_KEYS), org_keys=DatabaseOrgKeys(engine)
        )
        opened = await before.decode(sealed)
        assert any(MARKER.encode() in p.data for p in opened)

        # A second run still waits for its approver when the organization closes.
        waiting = await http.post(
            "/v1/runs",
            json={"workflow": "expense_approval", "input": EXPENSE},
            headers=org["operator"].headers,
        )
        assert waiting.status_code == 201, waiting.text
        waiting_id = waiting.json()["id"]
        await wait_for_status(
            http, waiting_id, org["operator"].headers, status="running", stage="awaiting_approval"
        )

        closed = await http.post(
            "/v1/org/close", json={"confirm": org.slug}, headers=org["owner"].headers
        )
        assert closed.status_code == 200, closed.text
        assert closed.json()["data_keys_destroyed"] == 1
        assert closed.json()["runs_terminated"] == 1

    # The waiting run was ended, not left failing on keys that are gone; and no fresh key is
    # made for the closed organization, whatever asks for one.
    described = await stack.temporal.get_workflow_handle(f"run-{waiting_id}").describe()
    assert described.status == WorkflowExecutionStatus.TERMINATED
    with pytest.raises(OrgKeyUnavailable, match="destroyed"):
        await DatabaseOrgKeys(engine).active_key(org.id)

    after = EncryptionCodec(*parse_payload_keys(PAYLOAD_KEYS), org_keys=DatabaseOrgKeys(engine))
    for payload in sealed:
        with pytest.raises(OrgKeyUnavailable, match="destroyed"):
            await after.decode([payload])

    ctx = OrgContext(
        org_id=OrgId(org.id), user_id=None, roles=(Role.AUDITOR,), auth=AuthMethod.SYSTEM
    )
    async with session_factory(engine)() as session, session.begin():
        events = await list_events(ctx, session, run_id=run_id)
        shown = await with_content(session, org.id, events)
    by_action = {e.action: e.data for e in shown}
    assert by_action["step.opened"]["title"] == DESTROYED
    assert by_action["step.decided"]["comment"] == DESTROYED
    async with snapshot(ctx, session_factory(engine)) as session:
        report = await verify_chain(ctx, session, {})
    assert report.ok, report.problem
