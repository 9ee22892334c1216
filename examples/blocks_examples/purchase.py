"""Example workflow: a purchase needs finance and legal (quorum across groups), then a director."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, ConfigDict, Field, model_validator
from temporalio import workflow

from blocks.workflows.sdk import (
    ApprovalPolicy,
    ApproverGroup,
    BlocksWorkflow,
    BreachAction,
    BusinessCalendar,
    Escalation,
    MemberId,
    OnBreach,
    PositiveAmount,
    RunInput,
    RunOutcome,
    StepState,
    approver_field,
)


class PurchaseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    amount: PositiveAmount
    description: str = Field(min_length=1, max_length=500)
    # Approvers computed from the run's input: member ids chosen by the requester's tooling.
    finance: list[MemberId] = approver_field(default_factory=list, max_length=50)
    # Or name an organization member group instead of listing finance people.
    finance_group: str | None = Field(default=None, min_length=1, max_length=63)
    legal: list[MemberId] = approver_field(min_length=1, max_length=50)
    director: MemberId
    sla_hours: float = Field(default=24.0, gt=0, le=24 * 90)
    business_hours_time_zone: str | None = Field(
        default=None, description="Count the SLA in working hours (Mon-Fri 9-17) of this zone"
    )

    @model_validator(mode="after")
    def _finance_named_once(self) -> PurchaseRequest:
        if (self.finance_group is None) == (len(self.finance) == 0):
            raise ValueError("give either finance (two or more member ids) or finance_group")
        if self.finance_group is None and len(set(self.finance)) < 2:
            raise ValueError("finance needs at least two members")
        return self


class DirectorSignOff(BaseModel):
    """What the director's decision must carry."""

    model_config = ConfigDict(extra="forbid")

    budget_code: str = Field(pattern=r"^[A-Z]{2}-\d{4}$")


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
