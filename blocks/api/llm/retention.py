"""Routes for prompt retention: the organization's setting, and the model calls of one run with
their transcripts when they were kept (models.llm.retention).

Off by default. Turning it on or off needs `org:security` and is audited with before and after;
it applies to calls made from then on. Reading a run's calls needs `audit:read`; a read that
opens retained transcripts is audited (`llm.transcripts_read`), as a revealed export is.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field, StrictBool

from blocks.api.deps import CanManageSecurity, CanReadAudit, CanReadOrg, DbSession, record_change
from blocks.api.errors import not_found
from blocks.api.reference import examples as ex
from blocks.api.reference.examples import example
from blocks.api.schemas import StrictModel
from blocks.models.approvals.runs import get_run
from blocks.models.llm.retention import (
    RetainedCall,
    prompt_retention,
    run_calls,
    set_prompt_retention,
)

settings_router = APIRouter(prefix="/v1/org/llm", tags=["integrations"])
calls_router = APIRouter(prefix="/v1/runs", tags=["integrations"])

_RETENTION = (
    "Whether LLM steps' prompts and completions are kept, sealed under the organization's data "
    "key, readable by auditors after the run. Off (the default), they are never written to "
    "PostgreSQL: they stay in the run's Temporal history under a key destroyed after the run "
    "closes, and only their SHA-256 is kept"
)


class LlmSettingsIn(StrictModel):
    model_config = example(prompt_retention=True)

    prompt_retention: StrictBool = Field(description=_RETENTION)


class LlmSettingsOut(BaseModel):
    model_config = example(prompt_retention=False)

    prompt_retention: bool = Field(description=_RETENTION)


class LlmMessageOut(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


_CALL = dict(
    created_at=ex.STARTED,
    step="draft",
    credential="default",
    model="gpt-4.1-mini",
    served_model="gpt-4.1-mini-2025-04-14",
    outcome="ok",
    input_tokens=412,
    output_tokens=96,
    latency_ms=1840,
    prompt_sha256=ex.HASH,
    completion_sha256=ex.PREV_HASH,
    retained=True,
    messages=[{"role": "user", "content": "Summarise the contract's termination clause."}],
    completion="Either party may terminate on 30 days' written notice.",
    unreadable=None,
)


class RunLlmCallOut(BaseModel):
    model_config = example(**_CALL)

    created_at: datetime
    step: str
    credential: str
    model: str
    served_model: str | None
    outcome: Literal["ok", "failed", "refused"]
    input_tokens: int
    output_tokens: int
    latency_ms: int
    prompt_sha256: str
    completion_sha256: str | None
    retained: bool = Field(description="Whether the transcript was kept (prompt retention on)")
    messages: list[LlmMessageOut] | None = Field(description="The conversation sent, if kept")
    completion: str | None = Field(description="The model's reply, if kept")
    unreadable: str | None = Field(
        description="Why a kept transcript does not open (its organization key was destroyed)"
    )


class RunLlmCallsOut(BaseModel):
    model_config = example(run_id=ex.RUN_ID, calls=[_CALL])

    run_id: uuid.UUID
    calls: list[RunLlmCallOut] = Field(description="Oldest first; failed attempts included")


@settings_router.get(
    "", response_model=LlmSettingsOut, summary="Read the organization's LLM settings"
)
async def llm_settings(ctx: CanReadOrg, session: DbSession) -> LlmSettingsOut:
    return LlmSettingsOut(prompt_retention=await prompt_retention(ctx, session))


@settings_router.put("", response_model=LlmSettingsOut, summary="Turn prompt retention on or off")
async def set_llm_settings(
    body: LlmSettingsIn, request: Request, ctx: CanManageSecurity, session: DbSession
) -> LlmSettingsOut:
    """Applies to model calls made from now on; transcripts already kept stay until the
    organization's keys are destroyed."""
    before = await set_prompt_retention(ctx, session, body.prompt_retention)
    if before != body.prompt_retention:
        await record_change(
            request,
            ctx,
            session,
            "org.llm_retention_changed",
            target_type="organization",
            target_id=str(ctx.org_id),
            data={"prompt_retention": {"before": before, "after": body.prompt_retention}},
        )
    return LlmSettingsOut(prompt_retention=body.prompt_retention)


def _call_out(call: RetainedCall) -> RunLlmCallOut:
    row = call.usage
    return RunLlmCallOut(
        created_at=row.created_at,
        step=row.step,
        credential=row.credential_name,
        model=row.model,
        served_model=row.served_model,
        outcome=row.outcome,  # type: ignore[arg-type]
        input_tokens=row.input_tokens,
        output_tokens=row.output_tokens,
        latency_ms=row.latency_ms,
        prompt_sha256=row.prompt_sha256,
        completion_sha256=row.completion_sha256,
        retained=call.retained,
        messages=[LlmMessageOut(**m) for m in call.messages]  # type: ignore[arg-type]
        if call.messages is not None
        else None,
        completion=call.completion,
        unreadable=call.unreadable,
    )


@calls_router.get(
    "/{run_id}/llm-calls",
    response_model=RunLlmCallsOut,
    summary="Read a run's model calls, with their transcripts if kept",
)
async def run_llm_calls(
    run_id: uuid.UUID, request: Request, ctx: CanReadAudit, session: DbSession
) -> RunLlmCallsOut:
    """Each model call the run's LLM steps made: metadata always; the conversation and the
    reply only if the organization retained prompts when the call was made."""
    if await get_run(ctx, session, run_id) is None:
        raise not_found("run")
    calls = await run_calls(ctx, session, str(run_id))
    opened = sum(1 for c in calls if c.messages is not None)
    if opened:
        await record_change(
            request,
            ctx,
            session,
            "llm.transcripts_read",
            target_type="run",
            target_id=str(run_id),
            data={"transcripts": opened},
        )
    return RunLlmCallsOut(run_id=run_id, calls=[_call_out(c) for c in calls])
