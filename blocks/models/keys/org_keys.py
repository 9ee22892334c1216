"""Per-organization data keys in PostgreSQL, and the key source the payload codec uses.

`org_data_keys` (migration 0017) holds each organization's keys wrapped by the master keys. One
key per organization is live; a new organization gets its key on first use (get-or-create in one
statement, race-safe through the live-key unique index). Destroying an organization's keys
(`destroy_org_keys`) keeps tombstones: whatever the keys sealed stays unreadable for good.

`DatabaseOrgKeys` answers the codec: which organization a workflow id belongs to (runs never
change organization, so the answer is kept), and the unwrapped keys, kept for
`KEY_CACHE_SECONDS` so a destruction reaches every process within that time.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from datetime import datetime

from sqlalchemy import Column, Index, LargeBinary, String, text
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import Field, SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from blocks.core.context import OrgContext
from blocks.infra.crypto.field_crypto import MasterKeys, current_master_keys, new_data_key
from blocks.infra.crypto.org_keys import (
    OrgDataKey,
    OrgKeyUnavailable,
    installed_org_keys,
    unwrap_org_key,
    wrap_org_key,
)
from blocks.infra.crypto.run_keys import RunDataKey, unwrap_run_key
from blocks.infra.db import bind_org, session_factory
from blocks.models.base import org_fk_column, timestamp_column, utcnow
from blocks.models.keys.run_keys import live_run_key, wrapped_run_key

# How long a process keeps an unwrapped key: the delay before a destruction reaches it.
KEY_CACHE_SECONDS = 30.0
# Runs remembered per process (workflow id -> organization): a few MB at the most.
_RUN_CACHE_SIZE = 100_000
_RUN_PREFIX = "run-"


class OrgDataKeyRow(SQLModel, table=True):
    """An organization's data key, wrapped; `wrapped_key` is NULL once destroyed (a tombstone)."""

    __tablename__ = "org_data_keys"
    __table_args__ = (
        Index(
            "ux_org_data_keys_live",
            "org_id",
            unique=True,
            postgresql_where=text("destroyed_at IS NULL"),
        ),
        Index("ix_org_data_keys_org", "org_id"),
    )

    key_id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), primary_key=True))
    org_id: uuid.UUID = Field(sa_column=org_fk_column(index=False))
    master_key_id: str = Field(sa_column=Column(String(64), nullable=False))
    wrapped_key: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    created_at: datetime = Field(sa_column=timestamp_column())
    destroyed_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))


_CREATE_LIVE_KEY = text(
    "INSERT INTO org_data_keys (key_id, org_id, master_key_id, wrapped_key, created_at) "
    "VALUES (:key_id, :org_id, :master_key_id, :wrapped_key, now()) "
    "ON CONFLICT (org_id) WHERE destroyed_at IS NULL DO NOTHING"
)
_LIVE_KEY = text(
    "SELECT key_id, master_key_id, wrapped_key FROM org_data_keys "
    "WHERE org_id = :org_id AND destroyed_at IS NULL"
)
# Only a destroyed key counts: a live one a concurrent first use just committed is not a refusal
# (the insert below does nothing and the re-read finds it).
_DESTROYED_KEY = text(
    "SELECT 1 FROM org_data_keys WHERE org_id = :org_id AND destroyed_at IS NOT NULL LIMIT 1"
)
_KEY_BY_ID = text(
    "SELECT master_key_id, wrapped_key FROM org_data_keys WHERE org_id = :org_id AND key_id = :key_id"
)
_RUN_ORG = text("SELECT blocks_run_org(:workflow_id)")


def _unwrapped(
    master: MasterKeys, org_id: uuid.UUID, key_id: uuid.UUID, master_key_id: str, wrapped: bytes
) -> OrgDataKey:
    raw = unwrap_org_key(master, master_key_id, org_id, key_id, wrapped)
    return OrgDataKey(key_id=key_id, org_id=org_id, secret=raw)


async def live_org_key(session: AsyncSession, org_id: uuid.UUID) -> OrgDataKey:
    """`org_id`'s live data key, created if it has none yet (the session must be bound to it);
    OrgKeyUnavailable once its keys were destroyed."""
    master = current_master_keys()
    row = (await session.exec(_LIVE_KEY.bindparams(org_id=org_id))).first()  # type: ignore[call-overload]
    if row is None:
        if (await session.exec(_DESTROYED_KEY.bindparams(org_id=org_id))).first() is not None:  # type: ignore[call-overload]
            # Destroyed (the organization was closed): a fresh key would let a straggler seal
            # new data that outlives the shredding.
            raise OrgKeyUnavailable(
                f"organization {org_id}'s data keys were destroyed: nothing more is sealed for it"
            )
        key_id = uuid.uuid4()
        wrapped = wrap_org_key(master, org_id, key_id, new_data_key())
        await session.exec(  # type: ignore[call-overload]
            _CREATE_LIVE_KEY.bindparams(
                key_id=key_id, org_id=org_id, master_key_id=master.active_id, wrapped_key=wrapped
            )
        )
        # Ours, or the one a concurrent first use inserted: either way the one live key.
        row = (await session.exec(_LIVE_KEY.bindparams(org_id=org_id))).one()  # type: ignore[call-overload]
    return _unwrapped(master, org_id, row.key_id, row.master_key_id, row.wrapped_key)


async def org_key_by_id(session: AsyncSession, org_id: uuid.UUID, key_id: uuid.UUID) -> OrgDataKey:
    """A key of `org_id` by id, live or not; OrgKeyUnavailable if destroyed or unknown."""
    row = (await session.exec(_KEY_BY_ID.bindparams(org_id=org_id, key_id=key_id))).first()  # type: ignore[call-overload]
    if row is None:
        raise OrgKeyUnavailable(f"organization {org_id} has no data key {key_id}")
    if row.wrapped_key is None:
        raise OrgKeyUnavailable(
            f"organization {org_id}'s data key {key_id} was destroyed: what it sealed cannot be read"
        )
    return _unwrapped(current_master_keys(), org_id, key_id, row.master_key_id, row.wrapped_key)


async def destroy_org_keys(ctx: OrgContext, session: AsyncSession) -> int:
    """Destroy every live data key of the organization (in the caller's transaction); how many."""
    org_id = ctx.org_id
    await bind_org(session, org_id)
    now = utcnow()
    # The runs' history keys are wrapped by the organization's: dead with them, marked so.
    await session.exec(  # type: ignore[call-overload]
        text(
            "UPDATE run_data_keys SET wrapped_key = NULL, destroyed_at = :now "
            "WHERE org_id = :org_id AND destroyed_at IS NULL"
        ).bindparams(org_id=org_id, now=now)
    )
    result = await session.exec(  # type: ignore[call-overload]
        text(
            "UPDATE org_data_keys SET wrapped_key = NULL, destroyed_at = :now "
            "WHERE org_id = :org_id AND destroyed_at IS NULL"
        ).bindparams(org_id=org_id, now=now)
    )
    return int(result.rowcount or 0)


class DatabaseOrgKeys:
    """The payload codec's key source for a process with database access (API, worker, CLI)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._url = engine.url
        self._sessions = session_factory(engine)
        self._runs: OrderedDict[str, uuid.UUID] = OrderedDict()
        self._live: dict[uuid.UUID, tuple[OrgDataKey, float]] = {}
        self._by_id: dict[tuple[uuid.UUID, uuid.UUID], tuple[OrgDataKey, float]] = {}
        self._run_keys: dict[tuple[uuid.UUID, str | uuid.UUID], tuple[RunDataKey, float]] = {}

    def serves(self, session: AsyncSession) -> bool:
        """Whether `session` is on this source's database (a tool or test may hold another)."""
        bind = session.bind
        return bind is not None and bind.url == self._url

    def remember_run(self, workflow_id: str, org_id: uuid.UUID) -> None:
        """Record a run's organization known already (the API starting it), sparing a lookup."""
        self._runs[workflow_id] = org_id
        self._runs.move_to_end(workflow_id)
        while len(self._runs) > _RUN_CACHE_SIZE:
            self._runs.popitem(last=False)

    def forget_org(self, org_id: uuid.UUID) -> None:
        """Drop `org_id`'s keys from this process at once (after destroying them)."""
        self._live.pop(org_id, None)
        for cached in [pair for pair in self._by_id if pair[0] == org_id]:
            del self._by_id[cached]
        for cached_run in [pair for pair in self._run_keys if pair[0] == org_id]:
            del self._run_keys[cached_run]

    async def run_org(self, workflow_id: str) -> uuid.UUID | None:
        org_id = self._runs.get(workflow_id)
        if org_id is not None:
            return org_id
        if not workflow_id.startswith(_RUN_PREFIX):
            return None  # Blocks' own workflows (checkpoints) belong to no organization
        async with self._sessions() as session, session.begin():
            org_id = (await session.exec(_RUN_ORG.bindparams(workflow_id=workflow_id))).scalar()  # type: ignore[call-overload]
        if org_id is not None:
            self.remember_run(workflow_id, org_id)
        return org_id

    async def active_key(self, org_id: uuid.UUID) -> OrgDataKey:
        cached = self._live.get(org_id)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        async with self._sessions() as session, session.begin():
            await bind_org(session, org_id)
            key = await live_org_key(session, org_id)
        expires = time.monotonic() + KEY_CACHE_SECONDS
        self._live[org_id] = (key, expires)
        self._by_id[(org_id, key.key_id)] = (key, expires)
        return key

    async def key(self, org_id: uuid.UUID, key_id: uuid.UUID) -> OrgDataKey:
        cached = self._by_id.get((org_id, key_id))
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        async with self._sessions() as session, session.begin():
            await bind_org(session, org_id)
            key = await org_key_by_id(session, org_id, key_id)
        self._by_id[(org_id, key_id)] = (key, time.monotonic() + KEY_CACHE_SECONDS)
        return key

    async def run_key(self, org_id: uuid.UUID, workflow_id: str) -> RunDataKey:
        cached = self._cached_run_key((org_id, workflow_id))
        if cached is not None:
            return cached
        org_key = await self.active_key(org_id)
        async with self._sessions() as session, session.begin():
            await bind_org(session, org_id)
            key_id, wrapped, org_key_id = await live_run_key(session, org_key, workflow_id)
        if org_key_id != org_key.key_id:  # made by another process under an older org key
            org_key = await self.key(org_id, org_key_id)
        return self._keep_run_key(unwrap_run_key(org_key, workflow_id, key_id, wrapped))

    async def run_key_by_id(self, org_id: uuid.UUID, key_id: uuid.UUID) -> RunDataKey:
        cached = self._cached_run_key((org_id, key_id))
        if cached is not None:
            return cached
        async with self._sessions() as session, session.begin():
            await bind_org(session, org_id)
            workflow_id, wrapped, org_key_id = await wrapped_run_key(session, org_id, key_id)
        org_key = await self.key(org_id, org_key_id)
        return self._keep_run_key(unwrap_run_key(org_key, workflow_id, key_id, wrapped))

    def _cached_run_key(self, handle: tuple[uuid.UUID, str | uuid.UUID]) -> RunDataKey | None:
        cached = self._run_keys.get(handle)
        return cached[0] if cached is not None and cached[1] > time.monotonic() else None

    def _keep_run_key(self, key: RunDataKey) -> RunDataKey:
        # Kept as briefly as organization keys: a destruction reaches every process as fast.
        if len(self._run_keys) >= _RUN_CACHE_SIZE:
            self._run_keys.clear()
        expires = time.monotonic() + KEY_CACHE_SECONDS
        self._run_keys[(key.org_id, key.workflow_id)] = (key, expires)
        self._run_keys[(key.org_id, key.key_id)] = (key, expires)
        return key


def process_org_keys() -> DatabaseOrgKeys | None:
    """The process's installed key source, when it is the database one (the API's, the
    worker's): what the start path tells runs to, closing makes forget, and reads reuse."""
    source = installed_org_keys()
    return source if isinstance(source, DatabaseOrgKeys) else None
