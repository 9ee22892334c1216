"""Prompt retention: whether an organization keeps its LLM steps' prompts and completions, and
the sealed transcripts it keeps when it does.

Off by default: a call's prompt and completion are then never written to PostgreSQL (only their
SHA-256, in `llm_usage` and the `llm.called` audit event); they live in the run's Temporal
history under the run's own key, destroyed after the run closes. On, each successful call's
`llm_usage` row also holds the conversation and the completion, sealed with AES-256-GCM under
the organization's live data key (associated data binds organization, run, step and call id, so
a transcript moved to another row does not open), and shredded with the organization's keys.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from blocks.core.context import OrgContext
from blocks.infra.crypto.org_keys import OrgDataKey, OrgKeyUnavailable
from blocks.infra.db import bind_org
from blocks.models.base import org_fk_column, timestamp_column, utcnow
from blocks.models.keys.org_keys import live_org_key, org_key_by_id
from blocks.models.llm.usage import LlmUsage


@dataclass(frozen=True)
class SealedTranscript:
    content_key_id: uuid.UUID
    prompt_sealed: bytes
    completion_sealed: bytes


@dataclass(frozen=True)
class RetainedCall:
    """One model call of a run as an auditor reads it: the transcript when it was retained."""

    usage: LlmUsage
    retained: bool
    messages: list[dict[str, str]] | None = None
    completion: str | None = None
    # Why a retained transcript does not open (its organization key was destroyed).
    unreadable: str | None = None


class LlmSettings(SQLModel, table=True):
    """An organization's LLM settings; no row means the defaults (retention off)."""

    __tablename__ = "llm_settings"

    org_id: uuid.UUID = Field(sa_column=org_fk_column(index=False, primary_key=True))
    prompt_retention: bool = False
    updated_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())


async def prompt_retention(ctx: OrgContext, session: AsyncSession) -> bool:
    """Whether the organization keeps prompts and completions (off unless it said so)."""
    await bind_org(session, ctx.org_id)
    found = (
        await session.exec(
            select(LlmSettings.prompt_retention).where(LlmSettings.org_id == ctx.org_id)
        )
    ).first()
    return bool(found)


async def set_prompt_retention(ctx: OrgContext, session: AsyncSession, on: bool) -> bool:
    """Turn prompt retention on or off (row locked); what it was before."""
    await bind_org(session, ctx.org_id)
    settings = await session.get(LlmSettings, ctx.org_id, with_for_update=True)
    before = settings.prompt_retention if settings is not None else False
    if settings is None:
        settings = LlmSettings(org_id=ctx.org_id)
    settings.prompt_retention = on
    settings.updated_at = utcnow()
    session.add(settings)
    await session.flush()
    return before


def _aad(org_id: uuid.UUID, run_id: str, step: str, call_id: str, part: str) -> bytes:
    return json.dumps(
        ["blocks.llm-transcript.v1", str(org_id), run_id, step, call_id, part]
    ).encode()


def _seal(key: OrgDataKey, plaintext: str, aad: bytes) -> bytes:
    return key.seal(plaintext.encode(), aad)


async def seal_transcript(
    ctx: OrgContext,
    session: AsyncSession,
    *,
    run_id: str,
    step: str,
    call_id: str,
    messages: list[dict[str, str]],
    completion: str,
) -> SealedTranscript:
    """The call's conversation and completion sealed under the organization's live key."""
    await bind_org(session, ctx.org_id)
    key = await live_org_key(session, ctx.org_id)
    prompt = json.dumps(messages, ensure_ascii=False, separators=(",", ":"))
    return SealedTranscript(
        content_key_id=key.key_id,
        prompt_sealed=_seal(key, prompt, _aad(ctx.org_id, run_id, step, call_id, "prompt")),
        completion_sealed=_seal(
            key, completion, _aad(ctx.org_id, run_id, step, call_id, "completion")
        ),
    )


async def run_calls(ctx: OrgContext, session: AsyncSession, run_id: str) -> list[RetainedCall]:
    """Every model call of a run in order, each with its transcript opened when it was kept."""
    await bind_org(session, ctx.org_id)
    rows = (
        await session.exec(
            select(LlmUsage)
            .where(LlmUsage.org_id == ctx.org_id, LlmUsage.run_id == run_id)
            .order_by(col(LlmUsage.created_at), col(LlmUsage.id))
        )
    ).all()
    keys: dict[uuid.UUID, OrgDataKey | str] = {}
    calls: list[RetainedCall] = []
    for row in rows:
        if row.content_key_id is None or row.prompt_sealed is None:
            calls.append(RetainedCall(usage=row, retained=False))
            continue
        key = keys.get(row.content_key_id)
        if key is None:
            try:
                key = await org_key_by_id(session, ctx.org_id, row.content_key_id)
            except OrgKeyUnavailable as gone:
                key = str(gone)
            keys[row.content_key_id] = key
        if isinstance(key, str):
            calls.append(RetainedCall(usage=row, retained=True, unreadable=key))
            continue
        calls.append(_opened(key, row))
    return calls


def _opened(key: OrgDataKey, row: LlmUsage) -> RetainedCall:
    def open_part(sealed: bytes | None, part: str) -> str | None:
        if sealed is None:
            return None
        aad = _aad(row.org_id, row.run_id, row.step, row.call_id, part)
        return key.open_sealed(sealed, aad).decode()

    prompt = open_part(row.prompt_sealed, "prompt")
    return RetainedCall(
        usage=row,
        retained=True,
        messages=json.loads(prompt) if prompt is not None else None,
        completion=open_part(row.completion_sealed, "completion"),
    )
