"""The audit log: one append path for API and activities, a per-organization hash chain, reads."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, Column, String, UniqueConstraint, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel, select
from sqlmodel.ext.asyncio.session import AsyncSession

from blocks.core.audit.chain import GENESIS_HASH, chain_hash
from blocks.core.audit.event_hash import event_hash
from blocks.core.audit.records import AuditRecord
from blocks.core.context import OrgContext
from blocks.infra.db import bind_org, mark_bound
from blocks.models.audit.content import ContentSealer, content_sealer, has_content
from blocks.models.audit.personal_data import (
    STORED_LIMITS,
    Sealer,
    check_personal_fields,
    key_request,
)
from blocks.models.base import new_id, org_fk_column, timestamp_column, utcnow


class AuditEvent(SQLModel, table=True):
    __tablename__ = "audit_events"
    __table_args__ = (UniqueConstraint("org_id", "seq"),)

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    org_id: uuid.UUID = Field(sa_column=org_fk_column(index=False))
    seq: int = Field(sa_column=Column(BigInteger, nullable=False))
    occurred_at: datetime = Field(sa_column=timestamp_column())
    action: str = Field(max_length=100)
    actor_type: str = Field(max_length=20)
    actor_id: str | None = Field(default=None, max_length=100)
    # The personal fields hold `enc:v1:...` ciphertext for user actors (models.personal_data).
    actor_email: str | None = Field(default=None, max_length=STORED_LIMITS["actor_email"])
    target_type: str | None = Field(default=None, max_length=50)
    target_id: str | None = Field(default=None, max_length=200)
    run_id: str | None = Field(default=None, max_length=100, index=True)
    outcome: str = Field(max_length=20)
    reason: str | None = Field(default=None, max_length=500)
    ip: str | None = Field(default=None, max_length=STORED_LIMITS["ip"])
    user_agent: str | None = Field(default=None, max_length=STORED_LIMITS["user_agent"])
    data: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONB, nullable=False))
    prev_hash: str = Field(sa_column=Column(String(64), nullable=False))
    hash: str = Field(sa_column=Column(String(64), nullable=False))


class AuditChainHead(SQLModel, table=True):
    """The last link of each organization's chain; its row lock serialises appends per org."""

    __tablename__ = "audit_chain_heads"

    org_id: uuid.UUID = Field(sa_column=org_fk_column(index=False, primary_key=True))
    seq: int = Field(sa_column=Column(BigInteger, nullable=False))
    hash: str = Field(sa_column=Column(String(64), nullable=False))


def hashed_payload(row: dict[str, Any]) -> dict[str, Any]:
    """The fields the hash covers, in the encoding the verifier recomputes."""
    return {
        "id": str(row["id"]),
        "org_id": str(row["org_id"]),
        "seq": row["seq"],
        "occurred_at": row["occurred_at"].astimezone(UTC).isoformat(timespec="microseconds"),
        "action": row["action"],
        "actor_type": row["actor_type"],
        "actor_id": row["actor_id"],
        "actor_email": row["actor_email"],
        "target_type": row["target_type"],
        "target_id": row["target_id"],
        "run_id": row["run_id"],
        "outcome": row["outcome"],
        "reason": row["reason"],
        "ip": row["ip"],
        "user_agent": row["user_agent"],
        "data": row["data"],
    }


# Binds the transaction to the org, takes the head's row lock (so concurrent appends from any
# process queue here and the chain stays linear, without gaps or forks) and finds retried ids.
_LOCK_HEAD = text(
    "SELECT seq, hash, existing FROM blocks_audit_lock_head(:org_id, :genesis, CAST(:ids AS uuid[]))"
)
# The same, after fetching (creating where missing) the data keys of the batch's people.
_LOCK_HEAD_WITH_KEYS = text(
    "SELECT seq, hash, existing, keys FROM blocks_audit_lock_head_with_keys("
    ":org_id, :genesis, CAST(:ids AS uuid[]), CAST(:candidates AS jsonb))"
)
_COLUMNS = (
    "id uuid, org_id uuid, seq bigint, occurred_at timestamptz, action text, actor_type text, "
    "actor_id text, actor_email text, target_type text, target_id text, run_id text, "
    "outcome text, reason text, ip text, user_agent text, data jsonb, prev_hash text, hash text"
)
_NAMES = ", ".join(column.split()[0] for column in _COLUMNS.split(", "))
# Every new event and the new head in one statement, whatever the batch size. Built from the
# constants above only; values always travel as bound parameters.
_INSERT_AND_ADVANCE = text(
    f"WITH added AS (INSERT INTO audit_events ({_NAMES}) "  # noqa: S608
    f"SELECT {_NAMES} FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r({_COLUMNS})) "
    "UPDATE audit_chain_heads SET seq = :seq, hash = :hash WHERE org_id = :org_id"
)


# The last head this process wrote, per org: the next append can then be one statement that
# advances the head only if it is still that one (compare-and-set); otherwise it takes the lock.
_HEADS: dict[uuid.UUID, tuple[int, str]] = {}
_HEADS_LIMIT = 10_000
# Appends under way in this process, per org: when others are, the remembered head is about to
# be stale, and a failed compare-and-set would only add a round trip.
_IN_FLIGHT: dict[uuid.UUID, int] = {}
_APPEND_IF_HEAD = text(
    "SELECT blocks_audit_append_if_head(:org_id, :seq, :hash, :new_seq, :new_hash, "
    "CAST(:rows AS jsonb))"
)


async def append_events(
    ctx: OrgContext, session: AsyncSession, records: Sequence[AuditRecord]
) -> list[uuid.UUID]:
    """Append in order to the org's chain; events whose id already exists are skipped (retries).

    One round trip when this process wrote the org's head last and no record is a retry of an
    event already written; otherwise two. A user's personal fields are stored (and hashed)
    encrypted under that user's data key. Returns the ids of the events now in the log.
    """
    mark_bound(session, ctx.org_id)
    for record in records:
        check_personal_fields(record)
    _IN_FLIGHT[ctx.org_id] = _IN_FLIGHT.get(ctx.org_id, 0) + 1
    try:
        return await _append(ctx, session, records)
    finally:
        _IN_FLIGHT[ctx.org_id] -= 1
        if not _IN_FLIGHT[ctx.org_id]:
            del _IN_FLIGHT[ctx.org_id]


async def _append(
    ctx: OrgContext, session: AsyncSession, records: Sequence[AuditRecord]
) -> list[uuid.UUID]:
    keys = key_request(ctx, records)
    content = await content_sealer(session, ctx.org_id) if has_content(records) else None
    cached = _HEADS.get(ctx.org_id)
    if keys is None and cached is not None and _IN_FLIGHT[ctx.org_id] == 1:
        rows, ids, head = link_events(ctx, records, cached, set(), None, content)
        advanced = (
            await session.exec(  # type: ignore[call-overload]
                _APPEND_IF_HEAD.bindparams(
                    org_id=ctx.org_id,
                    seq=cached[0],
                    hash=cached[1],
                    new_seq=head[0],
                    new_hash=head[1],
                    rows=json.dumps(rows, default=_json_default),
                )
            )
        ).scalar_one()
        if advanced:
            _remember(ctx.org_id, head)
            return ids
        # Another writer moved the head: fall back to the lock, which reads the current one.

    wanted = [r.event_id for r in records if r.event_id is not None]
    sealer: Sealer | None = None
    if keys is None:
        locked = (
            await session.exec(  # type: ignore[call-overload]
                _LOCK_HEAD.bindparams(org_id=ctx.org_id, genesis=GENESIS_HASH, ids=wanted)
            )
        ).one()
    else:
        locked = (
            await session.exec(  # type: ignore[call-overload]
                _LOCK_HEAD_WITH_KEYS.bindparams(
                    org_id=ctx.org_id,
                    genesis=GENESIS_HASH,
                    ids=wanted,
                    candidates=keys.candidates_json(),
                )
            )
        ).one()
        sealer = await keys.sealer(session, locked.keys)
    rows, ids, head = link_events(
        ctx,
        records,
        (int(locked.seq), str(locked.hash)),
        set(locked.existing or ()),
        sealer,
        content,
    )
    if rows:
        await session.exec(  # type: ignore[call-overload]
            _INSERT_AND_ADVANCE.bindparams(
                rows=json.dumps(rows, default=_json_default),
                seq=head[0],
                hash=head[1],
                org_id=ctx.org_id,
            )
        )
    _remember(ctx.org_id, head)
    return ids


def _remember(org_id: uuid.UUID, head: tuple[int, str]) -> None:
    if len(_HEADS) >= _HEADS_LIMIT and org_id not in _HEADS:
        _HEADS.clear()  # a cache miss only costs the lock path
    _HEADS[org_id] = head


def link_events(
    ctx: OrgContext,
    records: Sequence[AuditRecord],
    head: tuple[int, str],
    existing: set[uuid.UUID],
    sealer: Sealer | None,
    content: ContentSealer | None = None,
) -> tuple[list[dict[str, Any]], list[uuid.UUID], tuple[int, str]]:
    """Number and hash the new events after `head`; returns the rows, all ids and the new head.
    Personal fields are sealed by `sealer`, run content by `content`, before hashing.

    These are exactly the rows an append writes (the benchmark inserts them into a plain table).
    """
    seq, prev_hash = head
    rows: list[dict[str, Any]] = []
    ids: list[uuid.UUID] = []
    now = utcnow()
    for record in records:
        event_id = uuid.UUID(record.event_id) if record.event_id else new_id()
        ids.append(event_id)
        if event_id in existing:
            continue
        existing.add(event_id)
        seq += 1
        row: dict[str, Any] = {
            "id": event_id,
            "org_id": ctx.org_id,
            "seq": seq,
            "occurred_at": now,
            "action": record.action,
            "actor_type": record.actor_type.value,
            "actor_id": record.actor_id,
            "actor_email": record.actor_email,
            "target_type": record.target_type,
            "target_id": record.target_id,
            "run_id": record.run_id,
            "outcome": record.outcome.value,
            "reason": record.reason,
            "ip": record.ip,
            "user_agent": record.user_agent,
            "data": record.data,
        }
        if sealer is not None:
            sealer.seal(record, row)
        if content is not None:
            content.seal(row)
        row["prev_hash"] = prev_hash
        payload = hashed_payload(row)
        # The fast encoder gives the same bytes; the reference one raises a clear error otherwise.
        row["hash"] = prev_hash = event_hash(prev_hash, payload) or chain_hash(prev_hash, payload)
        rows.append(row)
    return rows, ids, (seq, prev_hash)


def _json_default(value: object) -> str:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot encode {type(value).__name__} in an audit row")


async def list_events(
    ctx: OrgContext,
    session: AsyncSession,
    *,
    run_id: str | None = None,
    action: str | None = None,
    actor_id: str | None = None,
    occurred_from: datetime | None = None,
    occurred_to: datetime | None = None,
    after_seq: int = 0,
    limit: int = 100,
) -> list[AuditEvent]:
    """The organization's events after `after_seq` in chain order, those matching every filter
    given (`occurred_from` inclusive, `occurred_to` exclusive)."""
    await bind_org(session, ctx.org_id)
    statement = (
        select(AuditEvent)
        .where(AuditEvent.org_id == ctx.org_id, AuditEvent.seq > after_seq)
        .order_by(AuditEvent.seq)  # type: ignore[arg-type]
        .limit(limit)
    )
    if run_id is not None:
        statement = statement.where(AuditEvent.run_id == run_id)
    if action is not None:
        statement = statement.where(AuditEvent.action == action)
    if actor_id is not None:
        statement = statement.where(AuditEvent.actor_id == actor_id)
    if occurred_from is not None:
        statement = statement.where(AuditEvent.occurred_at >= occurred_from)
    if occurred_to is not None:
        statement = statement.where(AuditEvent.occurred_at < occurred_to)
    return list((await session.exec(statement)).all())
