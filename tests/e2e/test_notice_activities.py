"""A worker with no notification channel starts no notice activity: a step that opens costs one
workflow task, not an activity task and a second workflow task that would find nothing to send."""

from __future__ import annotations

from temporalio.api.enums.v1 import EventType

from tests.support import EXPENSE, Stack, make_org, wait_for_status


async def test_a_step_opens_without_a_notice_activity_when_no_channel_is_configured(
    stack: Stack,
) -> None:
    assert stack.worker is not None
    org = await make_org(stack.engine)
    async with stack.http() as http:
        started = await http.post(
            "/v1/runs",
            json={"workflow": "expense_approval", "input": EXPENSE},
            headers=org["operator"].headers,
        )
        assert started.status_code == 201, started.text
        run_id = started.json()["id"]
        await wait_for_status(
            http, run_id, org["operator"].headers, status="running", stage="awaiting_approval"
        )
    history = await stack.temporal.get_workflow_handle(f"run-{run_id}").fetch_history()
    kinds = [event.event_type for event in history.events]
    assert EventType.EVENT_TYPE_MARKER_RECORDED in kinds  # the audit events were written
    assert EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED not in kinds
    assert kinds.count(EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED) == 1
