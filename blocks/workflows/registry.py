"""The workflows an organization can start by name, each with the model that validates its input."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from blocks.workflows.expense import ExpenseApproval, ExpenseRequest
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
    )
}
