"""LLM usage: one row per model call an LLM step made, and the usage report read from them.

Rows hold metadata (tokens, latency, outcome, SHA-256 of prompt and completion); the text only
when the organization turned prompt retention on, and then sealed (models.llm.retention). A call is recorded once: (org, run, step, call id) is unique and a second insert of the
same call is skipped, so an activity retried after it recorded does not count twice.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Column, LargeBinary, UniqueConstraint, func
from sqlalchemy.dialects.postgresql import insert
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from blocks.core.context import OrgContext
from blocks.infra.db import bind_org
from blocks.models.base import new_id, org_fk_column, timestamp_column, utcnow

OUTCOME_OK = "ok"
OUTCOME_FAILED = "failed"  # the server could not answer (retried while attempts last)
OUTCOME_REFUSED = "refused"  # a refusal no retry changes (a bad key, a model not allowed)
REPORT_ROW_LIMIT = 100_000


class LlmUsage(SQLModel, table=True):
    __tablename__ = "llm_usage"
    __table_args__ = (
        UniqueConstraint("org_id", "run_id", "step", "call_id", name="llm_usage_call_key"),
    )

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    org_id: uuid.UUID = Field(sa_column=org_fk_column(index=False))
    run_id: str = Field(max_length=200)
    step: str = Field(max_length=200)
    call_id: str = Field(max_length=200)
    credential_id: uuid.UUID
    credential_name: str = Field(max_length=100)
    model: str = Field(max_length=200)
    served_model: str | None = Field(default=None, max_length=200)
    input_tokens: int = 0
    output_tokens: int = 0
    latency_ms: int = 0
    outcome: str = Field(max_length=16)
    prompt_sha256: str = Field(max_length=64)
    completion_sha256: str | None = Field(default=None, max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    # Prompt retention on: the conversation and completion, sealed under this org key.
    content_key_id: uuid.UUID | None = None
    prompt_sealed: bytes | None = Field(
        default=None, sa_column=Column(LargeBinary, nullable=True), repr=False
    )
    completion_sealed: bytes | None = Field(
        default=None, sa_column=Column(LargeBinary, nullable=True), repr=False
    )


@dataclass(frozen=True)
class UsageCall:
    """What one model call used, as the LLM activity reports it."""

    run_id: str
    step: str
    call_id: str
    credential_id: uuid.UUID
    credential_name: str
    model: str
    outcome: str
    prompt_sha256: str
    served_model: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    latency_ms: int = 0
    completion_sha256: str | None = None
    # The sealed transcript, when the organization retains prompts (models.llm.retention).
    content_key_id: uuid.UUID | None = None
    prompt_sealed: bytes | None = None
    completion_sealed: bytes | None = None


async def record_usage(ctx: OrgContext, session: AsyncSession, call: UsageCall) -> bool:
    """Record one call; False if this call was recorded already (nothing changes)."""
    await bind_org(session, ctx.org_id)
    statement = (
        insert(LlmUsage)
        .values(
            id=new_id(),
            org_id=ctx.org_id,
            created_at=utcnow(),
            run_id=call.run_id,
            step=call.step,
            call_id=call.call_id,
            credential_id=call.credential_id,
            credential_name=call.credential_name,
            model=call.model,
            served_model=call.served_model,
            input_tokens=call.input_tokens,
            output_tokens=call.output_tokens,
            latency_ms=call.latency_ms,
            outcome=call.outcome,
            prompt_sha256=call.prompt_sha256,
            completion_sha256=call.completion_sha256,
            content_key_id=call.content_key_id,
            prompt_sealed=call.prompt_sealed,
            completion_sealed=call.completion_sealed,
        )
        .on_conflict_do_nothing(constraint="llm_usage_call_key")
        .returning(col(LlmUsage.id))
    )
    result = await session.exec(statement)  # type: ignore[call-overload]
    return result.first() is not None


@dataclass(frozen=True)
class UsageFilters:
    start: datetime | None = None
    end: datetime | None = None
    run_id: str | None = None
    model: str | None = None


@dataclass(frozen=True)
class ModelTotals:
    model: str
    calls: int
    failed_calls: int
    input_tokens: int
    output_tokens: int
    latency_ms: int


def _where(ctx: OrgContext, filters: UsageFilters) -> list[object]:
    conditions: list[object] = [LlmUsage.org_id == ctx.org_id]
    if filters.start is not None:
        conditions.append(LlmUsage.created_at >= filters.start)
    if filters.end is not None:
        conditions.append(LlmUsage.created_at < filters.end)
    if filters.run_id is not None:
        conditions.append(LlmUsage.run_id == filters.run_id)
    if filters.model is not None:
        conditions.append(LlmUsage.model == filters.model)
    return conditions


async def usage_rows(
    ctx: OrgContext, session: AsyncSession, filters: UsageFilters, *, limit: int
) -> list[LlmUsage]:
    """The calls in the window, oldest first, at most `limit`."""
    await bind_org(session, ctx.org_id)
    statement = (
        select(LlmUsage)
        .where(*_where(ctx, filters))  # type: ignore[arg-type]
        .order_by(col(LlmUsage.created_at), col(LlmUsage.id))
        .limit(limit)
    )
    return list((await session.exec(statement)).all())


async def usage_totals(
    ctx: OrgContext, session: AsyncSession, filters: UsageFilters
) -> list[ModelTotals]:
    """Per model (as asked for): calls, failed calls, tokens and latency over the whole window."""
    await bind_org(session, ctx.org_id)
    failed = func.count().filter(col(LlmUsage.outcome) != OUTCOME_OK)
    statement = (
        select(
            LlmUsage.model,
            func.count(),
            failed,
            func.coalesce(func.sum(LlmUsage.input_tokens), 0),
            func.coalesce(func.sum(LlmUsage.output_tokens), 0),
            func.coalesce(func.sum(LlmUsage.latency_ms), 0),
        )
        .where(*_where(ctx, filters))  # type: ignore[arg-type]
        .group_by(col(LlmUsage.model))
        .order_by(col(LlmUsage.model))
    )
    return [
        ModelTotals(
            model=row[0],
            calls=int(row[1]),
            failed_calls=int(row[2]),
            input_tokens=int(row[3]),
            output_tokens=int(row[4]),
            latency_ms=int(row[5]),
        )
        for row in (await session.exec(statement)).all()  # type: ignore[call-overload]
    ]
