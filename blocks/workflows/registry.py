"""The workflows an organization can start by name, each with the model that validates its input."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from blocks.workflows.contract import ContractRequest, ContractReview
from blocks.workflows.expense import ExpenseApproval, ExpenseRequest
from blocks.workflows.purchase import PurchaseApproval, PurchaseRequest
from blocks.workflows.sdk import BlocksWorkflow


@dataclass(frozen=True)
class RegisteredWorkflow:
    name: str
    workflow: type[BlocksWorkflow]
    params_model: type[BaseModel]
    description: str


REGISTRY: dict[str, RegisteredWorkflow] = {
    entry.name: entry
    for entry in (
        RegisteredWorkflow(
            name="expense_approval",
            workflow=ExpenseApproval,
            params_model=ExpenseRequest,
            description="An expense waits for one approver's decision within an SLA.",
        ),
        RegisteredWorkflow(
            name="purchase_approval",
            workflow=PurchaseApproval,
            params_model=PurchaseRequest,
            description=(
                "Two of finance and one of legal (reminders every 8 h, escalation to the director"
                " 4 h before the SLA, rejection at breach), then the director signs off with a"
                " budget code."
            ),
        ),
        RegisteredWorkflow(
            name="contract_review",
            workflow=ContractReview,
            params_model=ContractRequest,
            description="Legal and security review a contract in parallel; both must approve.",
        ),
    )
}
