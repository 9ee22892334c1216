"""What the API logs of an unexpected database error carries neither the statement's parameters
nor the failing row PostgreSQL quotes back (password hashes, token hashes, sealed secrets)."""

from __future__ import annotations

import uuid

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from blocks.api.error_handlers import install_error_handlers
from blocks.api.errors import loggable_error
from blocks.infra.db import session_factory


async def test_a_database_error_is_logged_without_its_values(engine: AsyncEngine) -> None:
    secret = f"argon2-hash-{uuid.uuid4().hex}"
    async with session_factory(engine)() as session:
        with pytest.raises(IntegrityError) as raised:
            await session.exec(  # type: ignore[call-overload]
                text(
                    "INSERT INTO users (id, email, display_name, created_at, password_hash)"
                    " VALUES (:id, NULL, 'x', now(), :hash)"
                ).bindparams(id=uuid.uuid4(), hash=secret)
            )
        await session.rollback()
    logged = loggable_error(raised.value)
    assert "NotNullViolation (SQLSTATE 23502)" in logged
    assert secret not in logged
    assert "test_a_database_error_is_logged_without_its_values" in logged  # where it happened


async def test_an_unexpected_error_is_a_logged_500_problem(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("kaboom")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=True)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        response = await http.get("/boom")
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "internal"
    assert "kaboom" not in response.text
    assert any("RuntimeError: kaboom" in r.getMessage() for r in caplog.records)
