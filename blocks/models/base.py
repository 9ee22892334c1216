"""Column helpers shared by the tables: UUID keys, timezone-aware timestamps, text arrays."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Column, DateTime, ForeignKey, String
from sqlalchemy.dialects.postgresql import ARRAY, UUID


def utcnow() -> datetime:
    return datetime.now(UTC)


def timestamp_column(*, nullable: bool = False, index: bool = False) -> Any:
    return Column(DateTime(timezone=True), nullable=nullable, index=index)


def text_array_column() -> Any:
    return Column(ARRAY(String), nullable=False)


def org_fk_column(*, index: bool = True, primary_key: bool = False) -> Any:
    # RESTRICT: an organization with history cannot be deleted out from under its audit trail.
    return Column(
        UUID(as_uuid=True),
        ForeignKey("organizations.id", ondelete="RESTRICT"),
        nullable=False,
        index=index,
        primary_key=primary_key,
    )


def user_fk_column(*, nullable: bool = False) -> Any:
    return Column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="RESTRICT"), nullable=nullable
    )


def new_id() -> uuid.UUID:
    return uuid.uuid4()
