"""Every token is compared in constant time, and a token whose lookup id matches nothing still
costs one comparison, so response time does not tell a known lookup from an unknown one."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from blocks.infra.crypto import hashing
from blocks.infra.db import session_factory
from blocks.models.approvals.decision_links import LinkProblem, open_link
from blocks.models.identity.api_keys import resolve_api_key
from blocks.models.identity.auth_tokens import TokenProblem, TokenPurpose, redeem_auth_token
from blocks.models.identity.invites import InviteProblem, find_invite
from blocks.models.identity.sessions import find_live_session

Lookup = Callable[[object, str], Awaitable[object]]


async def _session(db: object, token: str) -> object:
    return await find_live_session(db, token, idle=timedelta(minutes=30))  # type: ignore[arg-type]


async def _reset(db: object, token: str) -> object:
    try:
        return await redeem_auth_token(db, token, TokenPurpose.PASSWORD_RESET)  # type: ignore[arg-type]
    except TokenProblem:
        return None


async def _invite(db: object, token: str) -> object:
    try:
        return await find_invite(db, token)  # type: ignore[arg-type]
    except InviteProblem:
        return None


async def _link(db: object, token: str) -> object:
    try:
        return await open_link(db, token)  # type: ignore[arg-type]
    except LinkProblem:
        return None


async def _api_key(db: object, token: str) -> object:
    return await resolve_api_key(db, token)  # type: ignore[arg-type]


CASES = {
    "session": (_session, "bls"),
    "password reset": (_reset, "brs"),
    "invite": (_invite, "inv"),
    "decision link": (_link, "dl"),
    "api key": (_api_key, "blk"),
}


@pytest.mark.parametrize("kind", list(CASES))
@pytest.mark.parametrize("shape", ["unknown lookup", "malformed"])
async def test_a_miss_still_costs_one_constant_time_comparison(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch, kind: str, shape: str
) -> None:
    lookup, prefix = CASES[kind]
    calls: list[tuple[object, object]] = []
    real = hmac.compare_digest

    def spy(a: object, b: object) -> bool:
        calls.append((a, b))
        return real(a, b)  # type: ignore[arg-type]

    monkeypatch.setattr(hashing.hmac, "compare_digest", spy)
    token = f"{prefix}_00000000deadbeef_{'x' * 43}" if shape == "unknown lookup" else "garbage"
    async with session_factory(engine)() as db, db.begin():
        assert await lookup(db, token) is None
    assert len(calls) == 1, f"{kind}: {len(calls)} comparisons on a miss"
