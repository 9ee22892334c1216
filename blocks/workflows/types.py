"""The inputs and views every Blocks workflow shares: how a run starts and how it reports itself."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import Field, StringConstraints, WithJsonSchema

from blocks.core.approvals.catalogue import APPROVER_MARK
from blocks.core.approvals.eligibility import ApprovalStep, Delegator
from blocks.core.audit.records import RequestOrigin


@dataclass(frozen=True)
class RunInput:
    """What the API hands a workflow: the organization and requester it resolved, and the params."""

    org_id: str
    run_id: str
    workflow_name: str
    requested_by: str | None
    params: dict[str, Any] = field(default_factory=dict)
    # How the requester asked (email, address, user agent, credential) for the run.started event
    # the workflow writes itself; absent in runs started before it existed.
    origin: RequestOrigin | None = None


@dataclass(frozen=True)
class StepView:
    step_id: str
    title: str
    state: str
    approvers: list[str]
    opened_at: datetime
    deadline: datetime | None
    decided_by: str | None
    decided_at: datetime | None
    decision_comment: str | None
    deciders: list[str] = field(default_factory=list)
    # What the approver sees to decide (`request_approval(context=...)`), e.g. a model's draft;
    # None, with `context_hidden`, where the step has one the reader may not see.
    context: dict[str, Any] | None = None
    context_hidden: bool = False

    @classmethod
    def of(
        cls,
        step: ApprovalStep,
        *,
        context: dict[str, Any] | None = None,
        context_hidden: bool = False,
    ) -> StepView:
        last = step.votes[-1] if step.votes else None
        return cls(
            step_id=step.step_id,
            title=step.title,
            state=step.state.value,
            approvers=step.policy.labels(),
            opened_at=step.opened_at,
            deadline=step.deadline,
            decided_by=last.user_id if last else None,
            decided_at=step.decided_at,
            decision_comment=last.comment if last else None,
            deciders=step.deciders,
            context=context,
            context_hidden=context_hidden,
        )


@dataclass(frozen=True)
class StatusViewer:
    """Who reads the status query (resolved by the API, as for a decision): a step's context is
    shown to them only while they may decide the step."""

    user_id: str
    roles: tuple[str, ...]  # role names and `group:<name>` memberships (`policy_memberships`)
    delegators: tuple[Delegator, ...] = ()


@dataclass(frozen=True)
class RunView:
    status: str
    steps: list[StepView]
    requested_by: str | None = None
    workflow_name: str | None = None


@dataclass(frozen=True)
class RunOutcome:
    status: str
    detail: dict[str, Any] = field(default_factory=dict)


def approver_field(*, group: str | None = None, **field_options: Any) -> Any:
    """A pydantic Field for an input value that names an approver (or a list of them) by member id.

    The server checks each named member when the run starts and again when the step opens: an
    active member of the organization, allowed to decide (and in `group`, if given), never the
    requester. `field_options` are passed to `pydantic.Field` (e.g. `min_length` for a list).
    """
    mark: dict[str, Any] = {"group": group} if group else {}
    return Field(json_schema_extra={APPROVER_MARK: mark}, **field_options)


# One member id naming an approver: `director: MemberId`, `legal: list[MemberId]`.
MemberId = Annotated[str, StringConstraints(min_length=1, max_length=64), approver_field()]


# A positive amount of money with at most two decimals, as a JSON number or a decimal string. Its
# published schema says all of that (pydantic's own Decimal schema accepts any string), so the API
# refuses "-5" or "abc" at the start rather than the run failing later.
_AMOUNT_PATTERN = r"^(?!0+(\.0+)?$)\d{1,12}(\.\d{1,2})?$"
PositiveAmount = Annotated[
    Decimal,
    Field(gt=0, max_digits=14, decimal_places=2),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "exclusiveMinimum": 0, "maximum": 999_999_999_999.99},
                {"type": "string", "pattern": _AMOUNT_PATTERN},
            ],
            "description": "A positive amount with at most two decimals",
        }
    ),
]
