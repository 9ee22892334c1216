"""The drafted_reply example under the authoring kit, its model scripted: the status query shows
the review step's context whole to the worker's own callers and, given a viewer, only to one who
may decide the step; a draft too large for a step's context fails the run at once, before any
step opens."""

from __future__ import annotations

import asyncio

import pytest
from blocks_examples.drafted_reply import DraftedReply
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from blocks.testing import WorkflowKit
from blocks.testing.kit import KitRun
from blocks.workflows.sdk import STATUS_QUERY
from blocks.workflows.step_context import INVALID_CONTEXT, MAX_CONTEXT_BYTES
from blocks.workflows.types import RunView, StatusViewer

MESSAGE = {"message": "My order arrived broken", "customer": "Acme", "model": "gpt-test"}


async def _view(run: KitRun, viewer: StatusViewer) -> RunView:
    """The status query as the API asks it for a caller who may decide steps."""
    view: RunView = await run.handle.query(STATUS_QUERY, viewer, result_type=RunView)
    return view


async def _opened(kit: WorkflowKit, run: KitRun) -> RunView:
    """The run's view once its review step is open (after the scripted model answered)."""
    for _ in range(200):
        try:
            view = await kit.status(run)
        except RPCError:  # not answerable before the run's first workflow task
            view = None
        if view is not None and view.steps:
            return view
        await asyncio.sleep(0.05)
    raise AssertionError("the review step did not open")


async def test_the_status_query_shows_the_draft_to_who_may_decide_it() -> None:
    async with WorkflowKit([DraftedReply], llm_replies={"draft": "Dear Acme, sorry!"}) as kit:
        rita = kit.member("rita", roles=["operator", "approver"])
        alan = kit.member("alan", roles=["approver"])
        run = await kit.start(DraftedReply, MESSAGE, as_=rita)
        context = {"message": MESSAGE["message"], "draft": "Dear Acme, sorry!", "model": "gpt-test"}
        [whole] = (await _opened(kit, run)).steps
        assert (whole.context, whole.context_hidden) == (context, False)
        [for_alan] = (await _view(run, StatusViewer(alan.id, ("approver",)))).steps
        assert (for_alan.context, for_alan.context_hidden) == (context, False)
        # The requester holds the approver role, and still may not decide their own run.
        [for_rita] = (await _view(run, StatusViewer(rita.id, ("operator", "approver")))).steps
        assert (for_rita.context, for_rita.context_hidden) == (None, True)

        await kit.decide(run, "review", as_=alan, decision="approve")
        outcome = await kit.result(run)
        assert outcome.detail["reply"] == "Dear Acme, sorry!"
        assert outcome.detail["edited"] is False


async def test_a_draft_too_large_for_the_context_fails_the_run_before_the_step_opens() -> None:
    huge = "word " * (MAX_CONTEXT_BYTES // 5 + 1)
    async with WorkflowKit([DraftedReply], llm_replies={"draft": huge}) as kit:
        rita = kit.member("rita", roles=["operator"])
        run = await kit.start(DraftedReply, MESSAGE, as_=rita)
        with pytest.raises(WorkflowFailureError) as failed:
            await kit.result(run)
        cause = failed.value.cause
        assert isinstance(cause, ApplicationError)
        assert cause.type == INVALID_CONTEXT
        assert "invalid context for step 'review'" in cause.message
        assert f"at most {MAX_CONTEXT_BYTES}" in cause.message
        assert "step.opened" not in [e.action for e in kit.audit_events(run)]
