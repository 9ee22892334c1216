"""Single use holds under concurrency: two requests presenting the same TOTP code, backup code
or reset token at the same moment, each in its own transaction, and exactly one succeeds."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pyotp
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession

from blocks.infra.db import session_factory
from blocks.models.identity.auth_tokens import (
    TokenProblem,
    TokenPurpose,
    issue_auth_token,
    redeem_auth_token,
)
from blocks.models.identity.orgs import User
from blocks.models.identity.two_factor import begin_setup, confirm_setup, verify_second_factor


async def _both(
    engine: AsyncEngine, attempt: Callable[[AsyncSession], Awaitable[bool]]
) -> list[bool]:
    """Run `attempt` twice at once, each in a transaction of its own that commits."""
    sessions = session_factory(engine)

    async def one() -> bool:
        async with sessions() as db, db.begin():
            return await attempt(db)

    return list(await asyncio.gather(one(), one()))


async def _user_with_2fa(engine: AsyncEngine) -> tuple[uuid.UUID, str, list[str]]:
    async with session_factory(engine)() as db, db.begin():
        user = User(email=f"race-{uuid.uuid4().hex[:8]}@example.com", display_name="Race")
        db.add(user)
        await db.flush()
        secret, _ = await begin_setup(db, user)
        # Enable with the code of a past step, so the current step's code is still unused.
        earlier = datetime.now(UTC) - timedelta(seconds=30)
        codes = await confirm_setup(db, user, pyotp.TOTP(secret).at(earlier), earlier)
        assert codes is not None
        return user.id, secret, codes


async def test_one_totp_code_twice_at_once_passes_once(engine: AsyncEngine) -> None:
    user_id, secret, _ = await _user_with_2fa(engine)
    now = datetime.now(UTC)
    code = pyotp.TOTP(secret).at(now)

    async def attempt(db: AsyncSession) -> bool:
        user = await db.get(User, user_id)
        assert user is not None
        return await verify_second_factor(db, user, code, now) is not None

    assert sorted(await _both(engine, attempt)) == [False, True]


async def test_one_backup_code_twice_at_once_passes_once(engine: AsyncEngine) -> None:
    user_id, _, codes = await _user_with_2fa(engine)

    async def attempt(db: AsyncSession) -> bool:
        user = await db.get(User, user_id)
        assert user is not None
        return await verify_second_factor(db, user, codes[3], datetime.now(UTC)) == "backup_code"

    assert sorted(await _both(engine, attempt)) == [False, True]


async def test_one_reset_token_twice_at_once_is_redeemed_once(engine: AsyncEngine) -> None:
    email = f"race-{uuid.uuid4().hex[:8]}@example.com"
    async with session_factory(engine)() as db, db.begin():
        token = await issue_auth_token(
            db, purpose=TokenPurpose.PASSWORD_RESET, email=email, user_id=None,
            lifetime=timedelta(minutes=5),
        )  # fmt: skip

    async def attempt(db: AsyncSession) -> bool:
        try:
            await redeem_auth_token(db, token, TokenPurpose.PASSWORD_RESET)
        except TokenProblem:
            return False
        return True

    assert sorted(await _both(engine, attempt)) == [False, True]
