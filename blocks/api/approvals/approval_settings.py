"""The organization's approval settings: whether a run's input may name its approvers by member id.

On (the default), a workflow's input may name approvers, each checked on the server
(blocks.api.approvals.approver_checks); off, only roles and member groups decide, and a start that
names anyone is refused. Changing it needs `org:security` and is audited with before and after.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field, StrictBool

from blocks.api.deps import CanManageSecurity, CanReadOrg, DbSession, record_change
from blocks.api.errors import not_found
from blocks.api.reference.examples import example
from blocks.api.schemas import StrictModel
from blocks.models.identity.members import get_org, lock_org

router = APIRouter(prefix="/v1/org/approvals", tags=["approvals"])

_FROM_INPUT = (
    "Whether a run's input may name its approvers by member id (each checked: an active member "
    "allowed to decide, never the requester); false lets only roles and member groups decide"
)


class ApprovalSettingsIn(StrictModel):
    model_config = example(approvers_from_input=False)

    # Strict: "no" or 0 is a mistake to point out, not a value to guess at.
    approvers_from_input: StrictBool = Field(description=_FROM_INPUT)


class ApprovalSettingsOut(BaseModel):
    model_config = example(approvers_from_input=False)

    approvers_from_input: bool = Field(description=_FROM_INPUT)


@router.get(
    "",
    response_model=ApprovalSettingsOut,
    summary="Read the organization's approval settings",
    operation_id="read_approval_settings",
)
async def approval_settings(ctx: CanReadOrg, session: DbSession) -> ApprovalSettingsOut:
    org = await get_org(ctx, session)
    if org is None:
        raise not_found("organization")
    return ApprovalSettingsOut(approvers_from_input=org.approvers_from_input)


@router.put(
    "",
    response_model=ApprovalSettingsOut,
    summary="Allow or forbid approvers named in a run's input",
    operation_id="set_approval_settings",
)
async def set_approval_settings(
    body: ApprovalSettingsIn, request: Request, ctx: CanManageSecurity, session: DbSession
) -> ApprovalSettingsOut:
    """Runs already started keep the approvers they named; the setting applies to new starts."""
    org = await lock_org(ctx, session)
    before = org.approvers_from_input
    if before != body.approvers_from_input:
        org.approvers_from_input = body.approvers_from_input
        session.add(org)
        await session.flush()
        await record_change(
            request,
            ctx,
            session,
            "org.approvals_changed",
            target_type="organization",
            target_id=str(ctx.org_id),
            data={"approvers_from_input": {"before": before, "after": body.approvers_from_input}},
        )
    return ApprovalSettingsOut(approvers_from_input=org.approvers_from_input)
