"""Example workflow: a model drafts a reply, and an approver approves, edits or rejects it before
anything is sent (an approval gate on model output).

The run asks the organization's own model (`self.llm`, credential `default` unless the input
names another) for a reply to the customer's message, then opens the `review` step with the draft
as the step's context. Only a member who may decide the step sees the draft (`GET /v1/runs/{id}`
shows it in `pending_steps[].context`; to anyone else it is null with `context_hidden: true`), and
the audit log keeps only its SHA-256. Approving finishes the run with the reply to send: the
reviewer's edit (the decision form's `reply`) or else the draft. Rejecting finishes it with no
reply: nothing acts on the draft. Sending is left to whoever reads the result.

To try it (`make dev` serves it; the demo organization has no LLM credential, and a run started
without one fails at its LLM step, naming the missing credential):

    POST /v1/llm/credentials   {"name": "default", "provider": "openai-compatible",
                                "base_url": "https://api.openai.com/v1",
                                "allowed_models": ["gpt-4o-mini"], "api_key": "sk-..."}
    POST /v1/runs              {"workflow": "drafted_reply",
                                "input": {"message": "My order #123 arrived broken."}}
    GET  /v1/runs/{id}         as an approver: the draft is in pending_steps[0].context.draft
    POST /v1/runs/{id}/steps/review/decisions
                               {"decision": "approve", "form": {"reply": "Sorry! A new one ..."}}
                               or {"decision": "approve"} to send the draft, or "reject"
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

from blocks.workflows.sdk import (
    ApprovalPolicy,
    BlocksWorkflow,
    RunInput,
    RunOutcome,
    StepState,
)

with workflow.unsafe.imports_passed_through():
    from blocks_examples.models import ReplyRequest, ReplyReview

_SYSTEM = (
    "You draft replies for a customer support team. Write a short, courteous reply to the "
    "customer's message. A person reviews the draft before it is sent."
)


@workflow.defn(name="drafted_reply")
class DraftedReply(BlocksWorkflow):
    """A model drafts a reply to a customer's message; an approver approves it, edits it or
    rejects it before it is sent."""

    INPUT = ReplyRequest
    FORMS = {"review": ReplyReview}

    @workflow.run
    async def run(self, run_input: RunInput) -> RunOutcome:
        self.begin(run_input)
        request = self.parse_input(ReplyRequest)
        draft = await self.llm(
            request.message,
            system=_SYSTEM,
            credential=request.credential,
            model=request.model,
            max_output_tokens=1000,
            step="draft",
        )
        step = await self.request_approval(
            "review",
            title=f"Reply to {request.customer}: review the model's draft before it is sent",
            policy=ApprovalPolicy.any_of(roles=["approver"]),
            sla=timedelta(hours=request.sla_hours),
            form=ReplyReview,
            context={"message": request.message, "draft": draft.text, "model": draft.model},
        )
        if step.state is StepState.APPROVED:
            edited = ReplyReview.model_validate(step.votes[-1].form or {}).reply
            return await self.finish(
                "approved",
                reply=edited if edited is not None else draft.text,
                edited=edited is not None,
                approved_by=step.deciders[-1],
            )
        if step.state is StepState.REJECTED:
            return await self.finish("rejected", rejected_by=step.deciders[-1])
        return await self.finish("expired")
