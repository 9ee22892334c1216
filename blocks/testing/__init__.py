"""The authoring kit: test a Blocks workflow on Temporal's time-skipping server, without a stack.

    from blocks.testing import WorkflowKit

    async def test_invoice_needs_an_approver():
        async with WorkflowKit([InvoiceApproval]) as kit:
            alice = kit.member("alice", roles=["approver"])
            bob = kit.member("bob", roles=["operator"])
            run = await kit.start(InvoiceApproval, {"amount": "120.00"}, as_=bob)
            await kit.sleep(hours=20)
            await kit.decide(run, "approve", as_=alice, decision="approve")
            assert (await kit.result(run)).status == "approved"
            assert "step.reminded" in [e.action for e in kit.audit_events(run)]

The kit serves the author's workflows with Blocks' sandbox and data converter (a throwaway payload
key) and the activities a Blocks workflow calls: audit events go to memory (or, given
`database=`, through the real append path to PostgreSQL), notices are kept for `kit.notices(run)`,
and the step's approver check asks the kit's members. LLM steps answer from `llm_replies=`
(scripted), or call a model server on a credential the test adds (`kit.add_llm_credential`);
blocks.testing.llm says how. Starts and decisions are made as the API makes them. Or take the
`workflow_kit` fixture (`pytest_plugins = ["blocks.testing"]` in a conftest.py). Install with
`pip install blocks[testing]`; Blocks' own code never imports this.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack
from typing import Any, Protocol

import pytest_asyncio

from blocks.activities.llm import LlmReply, LlmStepCall
from blocks.testing.kit import KitRun, WorkflowKit
from blocks.testing.llm import LlmScript
from blocks.testing.members import KitMember
from blocks.testing.refusals import DecisionRefused, Refused, StartRefused
from blocks.testing.server import time_skipping_server_path
from blocks.workflows.sdk import BlocksWorkflow

__all__ = [
    "DecisionRefused",
    "KitFactory",
    "KitMember",
    "KitRun",
    "LlmReply",
    "LlmScript",
    "LlmStepCall",
    "Refused",
    "StartRefused",
    "WorkflowKit",
    "time_skipping_server_path",
    "workflow_kit",
]


class KitFactory(Protocol):
    async def __call__(
        self, workflows: Sequence[type[BlocksWorkflow]], **options: Any
    ) -> WorkflowKit: ...


@pytest_asyncio.fixture
async def workflow_kit() -> AsyncIterator[KitFactory]:
    """`kit = await workflow_kit([MyWorkflow], database=engine)`; every kit closes after the test."""
    async with AsyncExitStack() as stack:

        async def make(workflows: Sequence[type[BlocksWorkflow]], **options: Any) -> WorkflowKit:
            return await stack.enter_async_context(WorkflowKit(workflows, **options))

        yield make
