"""Example workflow: a purchase needs finance and legal (quorum across groups), then a director."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

from blocks.workflows.sdk import (
    ApprovalPolicy,
    ApproverGroup,
    BlocksWorkflow,
    BreachAction,
    BusinessCalendar,
    Escalation,
    OnBreach,
    RunInput,
    RunOutcome,
    StepState,
)

with workflow.unsafe.imports_passed_through():
    from blocks_examples.models import DirectorSignOff, PurchaseRequest


@workflow.defn(name="purchase_approval")
class PurchaseApproval(BlocksWorkflow):
    """Two of finance and one of legal (reminders every 8 h, escalation to the director 4 h
    before the SLA, rejection at breach), then the director signs off with a budget code."""

    INPUT = PurchaseRequest
    FORMS = {"director": DirectorSignOff}

    @workflow.run
    async def run(self, run_input: RunInput) -> RunOutcome:
        self.begin(run_input)
        request = self.parse_input(PurchaseRequest)
        calendar = (
            BusinessCalendar(time_zone=request.business_hours_time_zone)
            if request.business_hours_time_zone
            else None
        )
        review = await self.request_approval(
            "review",
            title=f"Purchase of {request.amount}: {request.description}",
            policy=ApprovalPolicy(
                (
                    ApproverGroup(
                        "finance",
                        tuple(request.finance),
                        required=2,
                        member_groups=(request.finance_group,) if request.finance_group else (),
                    ),
                    ApproverGroup("legal", tuple(request.legal), required=1),
                )
            ),
            sla=timedelta(hours=request.sla_hours),
            calendar=calendar,
            remind_every=timedelta(hours=8),
            escalation=Escalation(before=timedelta(hours=4), users=(request.director,)),
            on_breach=OnBreach(BreachAction.REJECT),
        )
        if review.state is not StepState.APPROVED:
            return await self.finish(review.state.value, step="review")
        sign_off = await self.request_approval(
            "director",
            title=f"Sign off the purchase of {request.amount}",
            policy=ApprovalPolicy.any_of(users=[request.director]),
            sla=timedelta(hours=48),
            form=DirectorSignOff,
        )
        if sign_off.state is not StepState.APPROVED:
            return await self.finish(sign_off.state.value, step="director")
        budget_code = (sign_off.votes[-1].form or {}).get("budget_code")
        return await self.finish("approved", budget_code=budget_code)
