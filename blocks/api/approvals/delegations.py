"""Routes for delegations: a member hands their approvals to another member for a period."""

from __future__ import annotations

import uuid
from datetime import datetime

from fastapi import APIRouter, Request
from pydantic import AwareDatetime, BaseModel, model_validator

from blocks.api.deps import CanDecide, DbSession
from blocks.api.errors import invalid_field, not_found
from blocks.api.reference import examples as ex
from blocks.api.reference.examples import example
from blocks.api.schemas import StrictModel
from blocks.api.security_audit import request_audit_fields
from blocks.core.audit.records import AuditRecord
from blocks.models.approvals.delegations import (
    Delegation,
    create_delegation,
    is_member,
    my_delegations,
    revoke_delegation,
)
from blocks.models.audit.events import append_events
from blocks.models.base import utcnow

router = APIRouter(prefix="/v1/delegations", tags=["approvals"])


class DelegationIn(StrictModel):
    model_config = example(
        delegate_user_id=ex.OPERATOR_ID, starts_at=ex.STARTED, ends_at="2025-03-18T18:00:00Z"
    )

    delegate_user_id: uuid.UUID
    starts_at: AwareDatetime | None = None
    ends_at: AwareDatetime

    @model_validator(mode="after")
    def _a_real_period(self) -> DelegationIn:
        if self.starts_at is not None and self.starts_at >= self.ends_at:
            raise ValueError("starts_at must be before ends_at")
        return self


class DelegationOut(BaseModel):
    model_config = example(
        id=ex.DELEGATION_ID,
        delegator_user_id=ex.APPROVER_ID,
        delegate_user_id=ex.OPERATOR_ID,
        starts_at=ex.STARTED,
        ends_at="2025-03-18T18:00:00Z",
        revoked_at=None,
    )

    id: uuid.UUID
    delegator_user_id: uuid.UUID
    delegate_user_id: uuid.UUID
    starts_at: datetime
    ends_at: datetime
    revoked_at: datetime | None


def _out(delegation: Delegation) -> DelegationOut:
    return DelegationOut(
        id=delegation.id,
        delegator_user_id=delegation.delegator_id,
        delegate_user_id=delegation.delegate_id,
        starts_at=delegation.starts_at,
        ends_at=delegation.ends_at,
        revoked_at=delegation.revoked_at,
    )


@router.post(
    "",
    status_code=201,
    response_model=DelegationOut,
    summary="Let a member decide for you for a while",
)
async def delegate(
    body: DelegationIn, request: Request, ctx: CanDecide, session: DbSession
) -> DelegationOut:
    starts_at = body.starts_at or utcnow()
    if body.ends_at <= utcnow():
        raise invalid_field("ends_at", "must be in the future")
    if starts_at >= body.ends_at:
        raise invalid_field("starts_at", "must be before ends_at")
    if body.delegate_user_id == ctx.user_id:
        raise invalid_field("delegate_user_id", "cannot delegate to yourself")
    if not await is_member(ctx, session, body.delegate_user_id):
        raise not_found("member")
    delegation = await create_delegation(
        ctx, session, delegate_id=body.delegate_user_id, starts_at=starts_at, ends_at=body.ends_at
    )
    await append_events(
        ctx,
        session,
        [
            AuditRecord(
                action="delegation.created",
                target_type="delegation",
                target_id=str(delegation.id),
                data={
                    "delegate_user_id": str(delegation.delegate_id),
                    "starts_at": delegation.starts_at.isoformat(),
                    "ends_at": delegation.ends_at.isoformat(),
                },
                **request_audit_fields(request, ctx),
            )
        ],
    )
    return _out(delegation)


@router.get("", response_model=list[DelegationOut], summary="List delegations from you and to you")
async def list_delegations(ctx: CanDecide, session: DbSession) -> list[DelegationOut]:
    return [_out(d) for d in await my_delegations(ctx, session)]


@router.delete(
    "/{delegation_id}",
    response_model=DelegationOut,
    summary="Revoke a delegation",
    operation_id="revoke_delegation",
)
async def revoke(
    delegation_id: uuid.UUID, request: Request, ctx: CanDecide, session: DbSession
) -> DelegationOut:
    delegation = await revoke_delegation(ctx, session, delegation_id)
    if delegation is None:
        raise not_found("delegation")
    await append_events(
        ctx,
        session,
        [
            AuditRecord(
                action="delegation.revoked",
                target_type="delegation",
                target_id=str(delegation.id),
                data={"delegate_user_id": str(delegation.delegate_id)},
                **request_audit_fields(request, ctx),
            )
        ],
    )
    return _out(delegation)
