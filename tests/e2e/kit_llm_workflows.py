"""The kit's LLM tests' workflow: a ticket routed on what a model says of it
(tests/e2e/test_kit_llm_steps.py). Only what a workflow needs is imported here: the sandbox
imports this module again for every run."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from temporalio import workflow

from blocks.workflows.sdk import BlocksWorkflow, RunInput, RunOutcome


class Ticket(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    subject: str
    body: str = ""


@workflow.defn(name="tests_kit_ticket_triage")
class TicketTriage(BlocksWorkflow):
    """Asks a model whether a ticket is urgent; an urgent one gets a drafted reply too."""

    INPUT = Ticket

    @workflow.run
    async def run(self, run_input: RunInput) -> RunOutcome:
        self.begin(run_input)
        ticket = self.parse_input(Ticket)
        label = await self.llm(
            f"{ticket.subject}\n{ticket.body}".strip(),
            system="Say urgent or routine.",
            model="gpt-test",
            step="classify",
        )
        if "urgent" not in label.text.lower():
            return await self.finish("filed")
        draft = await self.llm(f"Reply to: {ticket.subject}", model="gpt-test", step="draft")
        return await self.finish("escalated", reply=draft.text, tokens=draft.output_tokens)
