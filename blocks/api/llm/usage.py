"""Route for the LLM usage report: the model calls of an organization's runs, with totals per
model, as JSON or CSV (`Accept: text/csv` or `?format=csv`).

Read from `llm_usage` (models.llm.usage), which the LLM activity writes once per call: tokens,
latency, outcome and SHA-256 of prompt and completion, never their text. CSV cells a
spreadsheet would run as a formula start with an apostrophe (core.spreadsheet).
"""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field

from blocks.api.deps import CanReadAudit, DbSession
from blocks.api.params import time_window
from blocks.api.reference import examples as ex
from blocks.api.reference.examples import example
from blocks.core.spreadsheet import defuse_formula
from blocks.models.base import utcnow
from blocks.models.llm.usage import (
    REPORT_ROW_LIMIT,
    LlmUsage,
    UsageFilters,
    usage_rows,
    usage_totals,
)

router = APIRouter(prefix="/v1/reports", tags=["integrations"])

CSV_COLUMNS = (
    "created_at",
    "run_id",
    "step",
    "credential",
    "model",
    "served_model",
    "outcome",
    "input_tokens",
    "output_tokens",
    "latency_ms",
    "prompt_sha256",
    "completion_sha256",
)
_CALL = {
    "created_at": ex.STARTED,
    "run_id": ex.RUN_ID,
    "step": "draft",
    "credential": "default",
    "model": "gpt-4.1-mini",
    "served_model": "gpt-4.1-mini-2025-04-14",
    "outcome": "ok",
    "input_tokens": 412,
    "output_tokens": 96,
    "latency_ms": 1840,
    "prompt_sha256": ex.HASH,
    "completion_sha256": ex.PREV_HASH,
}
_TOTAL = {
    "model": "gpt-4.1-mini",
    "calls": 1,
    "failed_calls": 0,
    "input_tokens": 412,
    "output_tokens": 96,
    "latency_ms": 1840,
}
_CSV_EXAMPLE = (
    ",".join(CSV_COLUMNS) + "\r\n" + ",".join(str(_CALL[c]) for c in CSV_COLUMNS) + "\r\n"
)


class UsageCallOut(BaseModel):
    model_config = example(**_CALL)

    created_at: datetime
    run_id: str
    step: str
    credential: str
    model: str = Field(description="The model the step asked for")
    served_model: str | None = Field(description="The model the server said it used")
    outcome: Literal["ok", "failed", "refused"]
    input_tokens: int
    output_tokens: int
    latency_ms: int
    prompt_sha256: str
    completion_sha256: str | None


class ModelTotalOut(BaseModel):
    model_config = example(**_TOTAL)

    model: str
    calls: int
    failed_calls: int
    input_tokens: int
    output_tokens: int
    latency_ms: int


class UsageReportOut(BaseModel):
    model_config = example(
        generated_at=ex.LATER,
        totals=[_TOTAL],
        calls=[_CALL],
        truncated=False,
    )

    generated_at: datetime
    totals: list[ModelTotalOut] = Field(description="Per model, over every call in the window")
    calls: list[UsageCallOut] = Field(description=f"Oldest first, at most {REPORT_ROW_LIMIT}")
    truncated: bool = Field(description="More calls matched than `calls` holds: narrow the window")


def _call_out(row: LlmUsage) -> UsageCallOut:
    return UsageCallOut(
        created_at=row.created_at,
        run_id=row.run_id,
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
    )


def _csv(calls: Sequence[UsageCallOut]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for call in calls:
        values = call.model_dump(mode="json")
        writer.writerow(
            [defuse_formula("" if values[c] is None else str(values[c])) for c in CSV_COLUMNS]
        )
    return out.getvalue()


def _wants_csv(request: Request, format: str | None) -> bool:
    if format is not None:
        return format == "csv"
    accept = request.headers.get("accept", "")
    return "text/csv" in accept and "application/json" not in accept


@router.get(
    "/llm-usage",
    response_model=UsageReportOut,
    responses={200: {"content": {"text/csv": {"example": _CSV_EXAMPLE}}}},
    summary="Report the usage of LLM steps",
)
async def llm_usage_report(
    request: Request,
    ctx: CanReadAudit,
    session: DbSession,
    format: Annotated[Literal["json", "csv"] | None, Query()] = None,
    called_from: Annotated[datetime | None, Query(alias="from")] = None,
    called_to: Annotated[datetime | None, Query(alias="to")] = None,
    run_id: Annotated[uuid.UUID | None, Query()] = None,
    model: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
) -> Response:
    """Every model call of the organization's LLM steps, oldest first, with totals per model
    (calls, failed calls, input and output tokens, latency). `from` (inclusive) and `to`
    (exclusive) filter by when the call was made; `run_id` and `model` (as the step asked for
    it) narrow further. JSON by default; CSV with `Accept: text/csv` or `format=csv`. No prompt
    or completion text is kept: each call carries their SHA-256."""
    start, end = time_window(called_from, called_to)
    filters = UsageFilters(
        start=start, end=end, run_id=str(run_id) if run_id else None, model=model
    )
    rows = await usage_rows(ctx, session, filters, limit=REPORT_ROW_LIMIT + 1)
    calls = [_call_out(r) for r in rows[:REPORT_ROW_LIMIT]]
    generated_at = utcnow()
    if _wants_csv(request, format):
        stamp = generated_at.strftime("%Y%m%dT%H%M%SZ")
        headers = {"Content-Disposition": f'attachment; filename="llm-usage-{stamp}.csv"'}
        return Response(_csv(calls), media_type="text/csv; charset=utf-8", headers=headers)
    totals = await usage_totals(ctx, session, filters)
    report = UsageReportOut(
        generated_at=generated_at,
        totals=[ModelTotalOut(**t.__dict__) for t in totals],
        calls=calls,
        truncated=len(rows) > REPORT_ROW_LIMIT,
    )
    return Response(report.model_dump_json(), media_type="application/json")
