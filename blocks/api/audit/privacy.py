"""Privacy routes: erase a member's personal data from this organization's audit log.

Erasure destroys the person's data key in the caller's organization only (keys are per
organization and user; each organization is a separate controller). Their past events keep
their place and hash in the chain; the personal fields read "[erased]". What the organization's
identity providers sent about the person (sign-in identities, SCIM attributes) is cleared too.
Other organizations the person belongs to are untouched, and the person's account (users row) is
not part of this.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator

from blocks.api.deps import CanErase, DbSession
from blocks.api.errors import not_found
from blocks.api.reference import examples as ex
from blocks.api.reference.examples import example
from blocks.api.security_audit import request_audit_fields
from blocks.core.audit.records import AuditRecord
from blocks.models.audit.events import append_events
from blocks.models.audit.personal_data import erase_subject, holds_personal_data_of
from blocks.models.identity.sso.accounts import erase_provider_copies

router = APIRouter(prefix="/v1", tags=["audit"])


class EraseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"confirm": True}]})

    # Only JSON `true` confirms (not 1, not "true"): erasure cannot be undone.
    confirm: StrictBool = Field(description="must be true: erasure is irreversible")

    @field_validator("confirm")
    @classmethod
    def _must_confirm(cls, value: bool) -> bool:
        if value is not True:
            raise ValueError("must be true to erase: erasure cannot be undone")
        return value


class ErasureOut(BaseModel):
    model_config = example(
        user_id=ex.APPROVER_ID,
        keys_erased=1,
        events_unreadable=57,
        events_in_plaintext=0,
        erased_at=ex.LATER,
    )

    user_id: uuid.UUID
    keys_erased: int = Field(description="live data keys destroyed now (0 if already erased)")
    events_unreadable: int = Field(description="this person's events whose fields now read erased")
    events_in_plaintext: int = Field(
        description="this person's events written before field encryption, still in plain text"
    )
    erased_at: datetime


@router.post(
    "/members/{user_id}/erase-personal-data",
    response_model=ErasureOut,
    summary="Erase a member's personal data from the audit log",
)
async def erase_personal_data(
    user_id: uuid.UUID,
    body: EraseRequest,
    ctx: CanErase,
    session: DbSession,
    request: Request,
) -> ErasureOut:
    # The same 404 for a stranger and for a member of another organization.
    if not await holds_personal_data_of(ctx, session, user_id):
        raise not_found("member")
    erasure = await erase_subject(ctx, session, user_id)
    # What the organization's identity providers sent about the person is theirs too.
    provider_copies = await erase_provider_copies(ctx, session, user_id)
    # In the same transaction as the erasure, and free of the erased person's personal data.
    await append_events(
        ctx,
        session,
        [
            AuditRecord(
                action="privacy.erased",
                target_type="user",
                target_id=str(user_id),
                data={
                    "keys_erased": erasure.keys_erased,
                    "events_unreadable": erasure.events_unreadable,
                    "events_in_plaintext": erasure.events_in_plaintext,
                    "identity_provider_records_cleared": provider_copies,
                },
                **request_audit_fields(request, ctx),
            )
        ],
    )
    return ErasureOut(
        user_id=user_id,
        keys_erased=erasure.keys_erased,
        events_unreadable=erasure.events_unreadable,
        events_in_plaintext=erasure.events_in_plaintext,
        erased_at=erasure.erased_at,
    )
