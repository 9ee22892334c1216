"""The authoring kit serves LLM steps: replies a test scripts, or real calls on a credential it
adds for the local OpenAI-compatible server (tests/servers/openai_compatible.py)."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from blocks.infra.integrations.outbound_http import OutboundURLRefused
from blocks.testing import LlmStepCall, WorkflowKit
from tests.e2e.kit_llm_workflows import TicketTriage

DOWN = {"subject": "The site is down", "body": "Nothing loads since 9:00."}
INVOICE = {"subject": "A copy of my invoice", "body": "For March, please."}


async def _failure(kit: WorkflowKit, params: dict[str, str]) -> ApplicationError:
    """The error the run failed with (a failed LLM step, uncaught)."""
    run = await kit.start(TicketTriage, params)
    with pytest.raises(WorkflowFailureError) as failed:
        await kit.result(run)
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError), cause
    return cause


async def test_scripted_replies_per_step_route_the_run(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    replies = {"classify": "URGENT", "draft": "We are on it."}
    async with WorkflowKit([TicketTriage], env=time_skipping_env, llm_replies=replies) as kit:
        run = await kit.start(TicketTriage, DOWN)
        outcome = await kit.result(run)

        assert (outcome.status, outcome.detail) == (
            "escalated",
            {"reply": "We are on it.", "tokens": 4},
        )
        calls = kit.llm_calls(run)
        assert [(c.step, c.credential, c.model) for c in calls] == [
            ("classify", "default", "gpt-test"),
            ("draft", "default", "gpt-test"),
        ]
        assert [(m.role, m.content) for m in calls[0].messages] == [
            ("system", "Say urgent or routine."),
            ("user", "The site is down\nNothing loads since 9:00."),
        ]
        # The workflow audits each call as it does in production: metadata, no text.
        called = [e for e in kit.audit_events(run) if e.action == "llm.called"]
        assert [(e.data["step"], e.data["output_tokens"]) for e in called] == [
            ("classify", 1),
            ("draft", 4),
        ]
        assert all("We are on it." not in str(e.data) for e in called)

        # A step the mapping does not name fails the run at once, naming the step.
        only_classify = {"classify": "urgent"}
    async with WorkflowKit([TicketTriage], env=time_skipping_env, llm_replies=only_classify) as kit:
        error = await _failure(kit, DOWN)
        assert error.type == "LlmStepFailed"
        assert "no scripted reply for LLM step 'draft'" in error.message


async def test_a_scripted_function_answers_from_the_call(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    def answer(call: LlmStepCall) -> str:
        asked = call.messages[-1].content
        if call.step == "classify":
            return "urgent" if "down" in asked else "routine"
        raise ApplicationError("the model is overloaded", type="LlmCallRefused", non_retryable=True)

    async with WorkflowKit([TicketTriage], env=time_skipping_env, llm_replies=answer) as kit:
        filed = await kit.start(TicketTriage, INVOICE)
        assert (await kit.result(filed)).status == "filed"
        assert [c.step for c in kit.llm_calls(filed)] == ["classify"]

        # The failure the function raises on purpose is the step's failure.
        error = await _failure(kit, DOWN)
        assert error.type == "LlmStepFailed"
        assert "the model is overloaded" in error.message


async def test_without_replies_or_a_database_a_step_fails_saying_what_the_kit_needs(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    async with WorkflowKit([TicketTriage], env=time_skipping_env) as kit:
        error = await _failure(kit, DOWN)
        assert error.type == "LlmStepFailed"
        assert "llm_replies=" in error.message
        assert "add_llm_credential" in error.message


async def test_a_real_call_on_a_credential_the_kit_adds(
    time_skipping_env: WorkflowEnvironment, engine: AsyncEngine, llm_server: str
) -> None:
    async with WorkflowKit([TicketTriage], env=time_skipping_env, database=engine) as kit:
        await kit.add_llm_credential(base_url=llm_server, api_key="sk-ok-kit", models=["gpt-test"])
        # The local server answers "draft: " + the last user message.
        run = await kit.start(TicketTriage, {"subject": "Urgent: the site is down"})
        outcome = await kit.result(run)

        assert outcome.status == "escalated"
        assert outcome.detail["reply"] == "draft: Reply to: Urgent: the site is down"
        usage = await kit.read_llm_usage(run)
        assert [(u.step, u.credential_name, u.outcome) for u in usage] == [
            ("classify", "default", "ok"),
            ("draft", "default", "ok"),
        ]
        assert usage[1].served_model == "gpt-test-local"
        events = await kit.read_audit_events(run)
        assert [e.action for e in events].count("llm.called") == 2

        # Only a server on this machine is allowed for the kit: a LAN address is refused as the
        # API refuses it.
        with pytest.raises(OutboundURLRefused):
            await kit.add_llm_credential(
                name="lan", base_url="http://10.1.2.3:8080/v1", api_key="x", models=["gpt-test"]
            )


async def test_a_model_the_credential_does_not_allow_is_refused(
    time_skipping_env: WorkflowEnvironment, engine: AsyncEngine, llm_server: str
) -> None:
    async with WorkflowKit([TicketTriage], env=time_skipping_env, database=engine) as kit:
        await kit.add_llm_credential(base_url=llm_server, api_key="sk-ok-kit", models=["other"])
        error = await _failure(kit, DOWN)
        assert "model 'gpt-test' is not allowed" in error.message
        with pytest.raises(RuntimeError, match="scripts its LLM replies"):
            async with WorkflowKit(
                [TicketTriage], env=time_skipping_env, database=engine, llm_replies={}
            ) as scripted:
                await scripted.add_llm_credential(
                    base_url=llm_server, api_key="sk-ok-kit", models=["gpt-test"]
                )
