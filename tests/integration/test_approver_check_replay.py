"""A run parked on a step before steps re-checked their approvers at open replays unchanged.

The history was recorded with the code of commit 517a213 (before `blocks.approvers-checked-at-open`):
a purchase_approval whose review was decided and whose director step then opened and waited.
Today's code must replay it command for command; without the `workflow.patched` guard it would
not (the approver check's local activity would be a command the history never had)."""

from __future__ import annotations

import json
from pathlib import Path

from blocks_examples.purchase import PurchaseApproval
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from blocks.workers.main import INTERCEPTORS, SANDBOX

HISTORY = Path(__file__).parents[1] / "fixtures" / "histories"


async def test_a_purchase_parked_before_the_check_replays_unchanged() -> None:
    text = (HISTORY / "purchase_parked_before_approver_check.json").read_text()
    events = json.loads(text)["events"]
    # The director step had opened: the history ends with the run waiting on it, no patch marker.
    assert [e["eventType"] for e in events].count(
        "EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED"
    ) == 3
    history = WorkflowHistory.from_json("purchase-parked", text)
    # With the worker's interceptors: recording a cancellation adds nothing to other histories.
    replayer = Replayer(
        workflows=[PurchaseApproval], workflow_runner=SANDBOX, interceptors=INTERCEPTORS
    )
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None
