"""The inputs and decision forms of the example workflows.

Kept apart from the workflows and imported through `workflow.unsafe.imports_passed_through()`:
the worker's sandbox then loads these pydantic models once, instead of building them again for
every run (Temporal's advice for modules of models), while each workflow module stays sandboxed.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from blocks.workflows.sdk import MemberId, PositiveAmount, approver_field


class ExpenseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    amount: PositiveAmount
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    description: str = Field(min_length=1, max_length=500)
    sla_hours: float = Field(default=24.0, gt=0, le=24 * 90)


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


class ContractRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    counterparty: str = Field(min_length=1, max_length=200)
    legal: list[MemberId] = approver_field(min_length=1, max_length=50)
    security: list[MemberId] = approver_field(min_length=1, max_length=50)
    sla_hours: float = Field(default=72.0, gt=0, le=24 * 90)


class ReplyRequest(BaseModel):
    """A customer's message for a model to draft the reply to (drafted_reply)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    message: str = Field(min_length=1, max_length=5_000)
    customer: str = Field(default="a customer", min_length=1, max_length=200)
    # The organization's LLM credential (POST /v1/llm/credentials) and a model it allows.
    credential: str = Field(default="default", min_length=1, max_length=100)
    model: str = Field(default="gpt-4o-mini", min_length=1, max_length=200)
    sla_hours: float = Field(default=24.0, gt=0, le=24 * 90)


class ReplyReview(BaseModel):
    """What the reviewer's decision may carry: the reply to send instead of the draft."""

    model_config = ConfigDict(extra="forbid")

    reply: str | None = Field(
        default=None,
        min_length=1,
        max_length=10_000,
        description="The reply as edited by the reviewer; leave it out to send the draft as is",
    )
