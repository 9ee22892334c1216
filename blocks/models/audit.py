"""The audit log: one append path for API and activities, a per-organization hash chain, reads."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, Column, String, UniqueConstraint, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel, select
from sqlmodel.ext.asyncio.session import AsyncSession

from blocks.core.audit import AuditRecord
from blocks.core.audit_chain import GENESIS_HASH, canonical_json
from blocks.core.context import OrgContext
from blocks.infra.db import bind_org, mark_bound
from blocks.models.base import new_id, org_fk_column, timestamp_column, utcnow
from blocks.models.personal_data import (
    STORED_LIMITS,
    SUBJECT_KEYS_QUERY,
    Sealer,
    check_personal_fields,
    key_request,
)


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
# process queue there and the chain stays linear, without gaps or forks), skips ids already in the
# log (retries), links and inserts the events and advances the head: one statement (migration 0006).
_APPEND = text(
    "SELECT seq, hash, written FROM blocks_audit_append(:org_id, :genesis, CAST(:rows AS jsonb))"
)
# A `seq` value that cannot occur in a real chain, to split the canonical payload around.
_SEQ_SENTINEL = 2**53 - 1
_SEQ_MARK = f',"seq":{_SEQ_SENTINEL},'.encode()


def _hash_parts(row: dict[str, Any]) -> tuple[str, str]:
    """The canonical payload's bytes before and after the value of `seq`, base64-encoded.

    `seq` is the only hashed field assigned under the chain lock, inside PostgreSQL. The top-level
    `seq` is the last `"seq":` in the canonical form: keys are sorted, the only members after it
    are strings (where a quote is always escaped), and nested `data` comes before it.
    """
    canonical = canonical_json(hashed_payload({**row, "seq": _SEQ_SENTINEL}))
    before, mark, after = canonical.rpartition(_SEQ_MARK)
    if not mark:
        raise RuntimeError("canonical audit payload without a top-level seq")
    return (
        base64.b64encode(before + b',"seq":').decode(),
        base64.b64encode(b"," + after).decode(),
    )


async def append_events(
    ctx: OrgContext, session: AsyncSession, records: Sequence[AuditRecord]
) -> list[uuid.UUID]:
    """Append in order to the org's chain; events whose id already exists are skipped (retries).

    One round trip (two when a batch carries a person's personal fields, which are stored and
    hashed encrypted under that person's data key, fetched first and outside the chain lock).
    Returns the ids of the events now in the log, written or found.
    """
    mark_bound(session, ctx.org_id)
    for record in records:
        check_personal_fields(record)
    keys = key_request(ctx, records)
    sealer: Sealer | None = None
    if keys is not None:
        found = await session.exec(  # type: ignore[call-overload]
            SUBJECT_KEYS_QUERY.bindparams(org_id=ctx.org_id, candidates=keys.candidates_json())
        )
        sealer = await keys.sealer(
            session,
            [
                {
                    "user_id": str(k.user_id),
                    "key_id": str(k.key_id),
                    "master_key_id": k.master_key_id,
                    "wrapped_key": bytes(k.wrapped_key).hex(),
                }
                for k in found.all()
            ],
        )

    rows: list[dict[str, Any]] = []
    ids: list[uuid.UUID] = []
    seen: set[uuid.UUID] = set()
    now = utcnow()
    for record in records:
        event_id = uuid.UUID(record.event_id) if record.event_id else new_id()
        ids.append(event_id)
        if event_id in seen:
            continue
        seen.add(event_id)
        row: dict[str, Any] = {
            "id": event_id,
            "org_id": ctx.org_id,
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
        row["hash_prefix"], row["hash_suffix"] = _hash_parts(row)
        rows.append(row)

    if rows:
        await session.exec(  # type: ignore[call-overload]
            _APPEND.bindparams(
                org_id=ctx.org_id,
                genesis=GENESIS_HASH,
                rows=json.dumps(rows, default=_json_default),
            )
        )
    return ids


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
    after_seq: int = 0,
    limit: int = 100,
) -> list[AuditEvent]:
    await bind_org(session, ctx.org_id)
    statement = (
        select(AuditEvent)
        .where(AuditEvent.org_id == ctx.org_id, AuditEvent.seq > after_seq)
        .order_by(AuditEvent.seq)  # type: ignore[arg-type]
        .limit(limit)
    )
    if run_id is not None:
        statement = statement.where(AuditEvent.run_id == run_id)
    return list((await session.exec(statement)).all())
