"""Per-run history keys in PostgreSQL: created on a run's first model call, destroyed after it closes.

`run_data_keys` (migration 0019) holds each run's key wrapped by its organization's data key
(`infra.crypto.run_keys`). One key per run is live (get-or-create in one statement, race-safe
through the live-key unique index). The run's `run.completed` audit event marks its key closed (a
trigger on `audit_events`, in the append's own transaction); `destroy_closed_run_keys` destroys,
across organizations, every key closed longer than the grace period, keeping tombstones. The
worker's sweeper (`workers.run_key_sweeper`) calls it.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Column, Index, LargeBinary, String, text
from sqlalchemy.dialects.postgresql import UUID
from sqlmodel import Field, SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from blocks.infra.crypto.field_crypto import new_data_key
from blocks.infra.crypto.org_keys import OrgDataKey, OrgKeyUnavailable
from blocks.infra.crypto.run_keys import wrap_run_key
from blocks.models.base import org_fk_column, timestamp_column


class RunDataKeyRow(SQLModel, table=True):
    """A run's history key, wrapped; `wrapped_key` is NULL once destroyed (a tombstone)."""

    __tablename__ = "run_data_keys"
    __table_args__ = (
        Index(
            "ux_run_data_keys_live",
            "workflow_id",
            unique=True,
            postgresql_where=text("destroyed_at IS NULL"),
        ),
        Index("ix_run_data_keys_run", "org_id", "run_id"),
    )

    key_id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), primary_key=True))
    org_id: uuid.UUID = Field(sa_column=org_fk_column(index=False))
    workflow_id: str = Field(sa_column=Column(String(200), nullable=False))
    run_id: str = Field(sa_column=Column(String(100), nullable=False))
    org_key_id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), nullable=False))
    wrapped_key: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    created_at: datetime = Field(sa_column=timestamp_column())
    closed_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))
    destroyed_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))


_RUN_PREFIX = "run-"
_CREATE_LIVE_KEY = text(
    "INSERT INTO run_data_keys "
    "(key_id, org_id, workflow_id, run_id, org_key_id, wrapped_key, created_at) "
    "VALUES (:key_id, :org_id, :workflow_id, :run_id, :org_key_id, :wrapped_key, now()) "
    "ON CONFLICT (workflow_id) WHERE destroyed_at IS NULL DO NOTHING"
)
_LIVE_KEY = text(
    "SELECT key_id, org_key_id, wrapped_key FROM run_data_keys "
    "WHERE org_id = :org_id AND workflow_id = :workflow_id AND destroyed_at IS NULL"
)
# Only a destroyed key counts (a live one a concurrent first use committed is found below).
_DESTROYED_KEY = text(
    "SELECT 1 FROM run_data_keys WHERE org_id = :org_id AND workflow_id = :workflow_id"
    " AND destroyed_at IS NOT NULL LIMIT 1"
)
_KEY_BY_ID = text(
    "SELECT workflow_id, org_key_id, wrapped_key FROM run_data_keys "
    "WHERE org_id = :org_id AND key_id = :key_id"
)
_DESTROY_CLOSED = text("SELECT blocks_destroy_closed_run_keys(:grace_seconds, :limit)")


def run_id_of(workflow_id: str) -> str:
    """The Blocks run id a run's workflow id carries (`run-<uuid>`); the id itself otherwise."""
    return workflow_id.removeprefix(_RUN_PREFIX)


async def live_run_key(
    session: AsyncSession, org_key: OrgDataKey, workflow_id: str
) -> tuple[uuid.UUID, bytes, uuid.UUID]:
    """(key id, wrapped key, wrapping org key id) of the run's live key, created under `org_key`
    if it has none. A run whose key was already destroyed gets none: what it seals now would
    outlive the promise (the session must be bound to the organization)."""
    org_id = org_key.org_id
    params = {"org_id": org_id, "workflow_id": workflow_id}
    row = (await session.exec(_LIVE_KEY.bindparams(**params))).first()  # type: ignore[call-overload]
    if row is None:
        if (await session.exec(_DESTROYED_KEY.bindparams(**params))).first() is not None:  # type: ignore[call-overload]
            raise OrgKeyUnavailable(
                f"run {workflow_id}'s history key was destroyed after it closed; it seals no more"
            )
        key_id = uuid.uuid4()
        await session.exec(  # type: ignore[call-overload]
            _CREATE_LIVE_KEY.bindparams(
                key_id=key_id,
                org_id=org_id,
                workflow_id=workflow_id,
                run_id=run_id_of(workflow_id),
                org_key_id=org_key.key_id,
                wrapped_key=wrap_run_key(org_key, workflow_id, key_id, new_data_key()),
            )
        )
        # Ours, or the one a concurrent first use inserted: either way the one live key.
        row = (await session.exec(_LIVE_KEY.bindparams(**params))).one()  # type: ignore[call-overload]
    return row.key_id, row.wrapped_key, row.org_key_id


async def wrapped_run_key(
    session: AsyncSession, org_id: uuid.UUID, key_id: uuid.UUID
) -> tuple[str, bytes, uuid.UUID]:
    """(workflow id, wrapped key, wrapping org key id) of a run key by id; OrgKeyUnavailable
    once destroyed or if unknown."""
    row = (await session.exec(_KEY_BY_ID.bindparams(org_id=org_id, key_id=key_id))).first()  # type: ignore[call-overload]
    if row is None:
        raise OrgKeyUnavailable(f"organization {org_id} has no run history key {key_id}")
    if row.wrapped_key is None:
        raise OrgKeyUnavailable(
            f"run {row.workflow_id}'s history key was destroyed after the run closed:"
            " its prompts and model replies cannot be read"
        )
    return row.workflow_id, row.wrapped_key, row.org_key_id


async def destroy_closed_run_keys(
    session: AsyncSession, *, grace_seconds: float, limit: int = 1000
) -> int:
    """Destroy, in every organization, up to `limit` run keys whose run closed more than
    `grace_seconds` ago by the database's clock; how many."""
    destroyed = await session.exec(  # type: ignore[call-overload]
        _DESTROY_CLOSED.bindparams(grace_seconds=grace_seconds, limit=limit)
    )
    return int(destroyed.scalar() or 0)
