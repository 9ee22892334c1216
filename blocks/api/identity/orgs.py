"""Creating an organization: a signed-in person with a verified address becomes its first owner."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from sqlalchemy.exc import IntegrityError

from blocks.api.deps import DbSession, Person
from blocks.api.errors import Problem
from blocks.api.reference import examples as ex
from blocks.api.reference.examples import example
from blocks.api.schemas import StrictModel
from blocks.api.security_audit import record_security_event
from blocks.core.audit.records import Outcome
from blocks.infra.settings import Settings
from blocks.models.identity.orgs import create_org_with_owner, get_org_by_slug

router = APIRouter(prefix="/v1/orgs", tags=["identity"])


class NewOrgIn(StrictModel):
    model_config = example(slug=ex.ORG_SLUG, name=ex.ORG_NAME)

    slug: str = Field(min_length=2, max_length=63, pattern=r"^[a-z0-9][a-z0-9-]*[a-z0-9]$")
    name: str = Field(min_length=1, max_length=200)


class NewOrgOut(BaseModel):
    model_config = example(id=ex.ORG_ID, slug=ex.ORG_SLUG, name=ex.ORG_NAME)

    id: uuid.UUID
    slug: str
    name: str


@router.post(
    "", status_code=201, response_model=NewOrgOut, summary="Create an organization you own"
)
async def create_organization(
    signed: Person, body: NewOrgIn, request: Request, db: DbSession
) -> NewOrgOut:
    user = signed.user
    settings: Settings = request.app.state.settings
    if not settings.open_signup:
        await record_security_event(
            request,
            action="access.denied",
            outcome=Outcome.DENIED,
            reason="organizations are created by operators on this deployment",
            user_id=user.id,
            email=user.email,
            target_type="route",
            target_id=f"{request.method} {request.url.path}",
        )
        raise Problem(
            403, "Forbidden", "organizations are created by operators here", code="forbidden"
        )
    if user.email_verified_at is None:
        raise Problem(403, "Forbidden", "verify your email address first", code="unverified")
    if await get_org_by_slug(db, body.slug) is not None:
        raise Problem(
            409,
            "Conflict",
            "this slug is taken",
            code="slug_taken",
            errors=[{"field": "slug", "reason": "is taken"}],
        )
    try:
        org, _, _ = await create_org_with_owner(
            db, slug=body.slug, name=body.name, owner_email=user.email, owner_name=user.display_name
        )
    except IntegrityError:
        raise Problem(409, "Conflict", "this slug is taken", code="slug_taken") from None
    await record_security_event(
        request,
        action="org.created",
        user_id=user.id,
        email=user.email,
        target_type="organization",
        target_id=str(org.id),
        org_ids=[org.id],
        db=db,  # the organization exists only in this transaction until it commits
    )
    return NewOrgOut(id=org.id, slug=org.slug, name=org.name)
