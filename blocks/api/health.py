"""Liveness and readiness: ready only when PostgreSQL and Temporal both answer; when not, the
answer names the dependency that is down."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import text
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest

from blocks.api.errors import RETRY_AFTER_SECONDS
from blocks.api.reference.examples import example

router = APIRouter(tags=["health"])

_CHECK_TIMEOUT = 3.0


class HealthOut(BaseModel):
    model_config = example(status="ok")

    status: str


class ReadinessOut(BaseModel):
    model_config = example(status="ready", checks={"postgres": "ok", "temporal": "ok"})

    status: str = Field(description="ready, or unavailable (then the answer is a 503)")
    checks: dict[str, str] = Field(description="Each dependency: ok, or the error met")


@router.get("/healthz", summary="Liveness: the process answers", response_model=HealthOut)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz", summary="Readiness: PostgreSQL and Temporal answer", response_model=ReadinessOut
)
async def readyz(request: Request) -> JSONResponse:
    checks = {"postgres": await _postgres(request), "temporal": await _temporal(request)}
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "unavailable", "checks": checks},
        status_code=200 if ready else 503,
        headers=None if ready else {"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


async def _postgres(request: Request) -> str:
    try:
        async with asyncio.timeout(_CHECK_TIMEOUT), request.app.state.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception as err:
        return f"error: {type(err).__name__}"
    return "ok"


async def _temporal(request: Request) -> str:
    try:
        async with asyncio.timeout(_CHECK_TIMEOUT):
            await request.app.state.temporal.workflow_service.get_system_info(
                GetSystemInfoRequest()
            )
    except Exception as err:
        return f"error: {type(err).__name__}"
    return "ok"
