"""The bodies of the access review routes: review settings, a review and its summary."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, Field, StrictBool, StringConstraints

from blocks.api.reference import examples as ex
from blocks.api.reference.examples import example
from blocks.api.schemas import StrictModel
from blocks.core.identity.access_review import CSV_COLUMNS
from blocks.core.roles import Role

GroupName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]

_SETTINGS: dict[str, Any] = {
    "reviewers": [ex.OWNER_ID],
    "reviewer_group": None,
    "sla_hours": 336,
    "schedule_enabled": True,
}


class AccessReviewSettingsIn(StrictModel):
    model_config = example(**_SETTINGS)

    reviewers: list[uuid.UUID] = Field(
        default_factory=list,
        max_length=50,
        description="Members who review (any one decides an item): active, allowed to decide steps",
    )
    reviewer_group: GroupName | None = Field(
        default=None, description="A member group whose members review, beside `reviewers`"
    )
    sla_hours: int = Field(
        ge=1, le=2160, description="Time each item's step waits for a decision (at most 90 days)"
    )
    schedule_enabled: StrictBool = Field(
        description="Start a review every quarter (09:00 UTC on 1 January, April, July, October)"
    )


class AccessReviewSettingsOut(BaseModel):
    model_config = example(
        **_SETTINGS,
        default_reviewer_roles=[],
        schedule_id=f"blocks-access-review-{ex.ORG_ID}",
        saved=True,
        updated_at=ex.CREATED,
    )

    reviewers: list[uuid.UUID]
    reviewer_group: str | None
    sla_hours: int
    schedule_enabled: bool
    # Who reviews when neither reviewers nor a group are named: the owners.
    default_reviewer_roles: list[Role]
    schedule_id: str | None
    saved: bool = Field(description="False: nothing saved yet, these are the defaults")
    updated_at: datetime | None


class AccessReviewSummaryOut(BaseModel):
    model_config = example(
        items=6,
        omitted=0,
        admin_count=2,
        warnings=[],
        kept=5,
        revoked=1,
        already_gone=0,
        refused=0,
        no_decision=0,
    )

    items: int
    omitted: int = Field(description="Items beyond the cap of one review, left for another")
    admin_count: int
    warnings: list[str]
    kept: int
    revoked: int
    already_gone: int
    refused: int
    no_decision: int


_REVIEW: dict[str, Any] = {
    "id": ex.RUN_ID,
    "run_id": ex.RUN_ID,
    "trigger": "manual",
    "started_by": ex.OWNER_ID,
    "created_at": ex.STARTED,
    "finished_at": None,
    "status": "running",
    "report_sha256": None,
    "summary": None,
}


class AccessReviewOut(BaseModel):
    model_config = example(**_REVIEW)

    id: uuid.UUID
    run_id: uuid.UUID = Field(description="The review's run: decide its steps there")
    trigger: str = Field(description="manual or schedule")
    started_by: uuid.UUID | None
    created_at: datetime
    finished_at: datetime | None
    status: str = Field(
        description="running; completed or cancelled once the report is kept; not_started"
    )
    report_sha256: str | None = Field(
        description="SHA-256 of the report (RFC 8785 JSON), as the access_review.report event says"
    )
    summary: AccessReviewSummaryOut | None


class AccessReviewListOut(BaseModel):
    model_config = example(reviews=[_REVIEW])

    reviews: list[AccessReviewOut]


CSV_EXAMPLE = ",".join(CSV_COLUMNS) + "\r\n"
