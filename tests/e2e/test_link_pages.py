"""The pages behind emailed links: GET shows a form and changes nothing; the form's POST does what
the JSON API does (same checks), sets the session cookie, and answers with a page."""

from __future__ import annotations

import re
import uuid

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from blocks.api.identity.sessions import SESSION_COOKIE
from blocks.infra.db import session_factory
from tests.mail import SmtpServer
from tests.support import Stack

_LINK = r"(https://blocks\.test/auth/\w+\?token=\S+)"


async def _unused_tokens(engine: AsyncEngine, email: str) -> int:
    async with session_factory(engine)() as session, session.begin():
        result = await session.exec(  # type: ignore[call-overload]
            text(
                "SELECT count(*) FROM auth_tokens WHERE email = :e AND used_at IS NULL"
            ).bindparams(e=email)
        )
        return int(result.one()[0])


async def test_sign_up_through_the_pages(
    identity_stack: Stack, smtp_server: SmtpServer, engine: AsyncEngine
) -> None:
    email = f"page-{uuid.uuid4().hex[:8]}@example.com"
    origin = {"Origin": identity_stack.settings.public_url}
    async with identity_stack.http() as http:
        start = await http.get("/auth/signup")
        assert start.status_code == 200
        assert "<form method='post'>" in start.text
        assert start.headers["content-security-policy"].startswith("default-src 'none'")
        asked = await http.post(
            "/auth/signup",
            data={"email": email, "display_name": "Page <b>Person</b>"},
            headers=origin,
        )
        assert asked.status_code == 200, asked.text
        assert "Check your email" in asked.text

        link = await smtp_server.inbox.token_for(email, _LINK)
        path = link.removeprefix("https://blocks.test")
        shown = await http.get(path)
        assert shown.status_code == 200
        assert "Create my account" in shown.text
        assert await _unused_tokens(engine, email) == 1  # opening the link used nothing
        token = re.search(r"token=(\S+)", link).group(1)  # type: ignore[union-attr]
        made = await http.post("/auth/signup", data={"token": token}, headers=origin)
        assert made.status_code == 200, made.text
        assert "You are signed in" in made.text
        assert f"{SESSION_COOKIE}=" in made.headers["set-cookie"]
        assert "HttpOnly" in made.headers["set-cookie"]
        assert await _unused_tokens(engine, email) == 0

        again = await http.post("/auth/signup", data={"token": token}, headers=origin)
        assert again.status_code == 400
        assert "already been used" in again.text
        assert "set-cookie" not in again.headers


async def test_reset_and_invite_pages_apply_the_api_checks(
    identity_stack: Stack, smtp_server: SmtpServer
) -> None:
    email = f"nobody-{uuid.uuid4().hex[:8]}@example.com"
    origin = {"Origin": identity_stack.settings.public_url}
    async with identity_stack.http() as http:
        # The same answer for an unknown address as for a known one.
        asked = await http.post("/auth/reset", data={"email": email}, headers=origin)
        assert asked.status_code == 200
        assert "if this address has an account" in asked.text
        forged = await http.post(
            "/auth/reset", data={"token": "brs_nope_nope", "password": "x" * 20}, headers=origin
        )
        assert forged.status_code == 400
        assert "not valid" in forged.text
        invalid = await http.post("/auth/reset", data={"email": "not an address"}, headers=origin)
        assert invalid.status_code == 422
        # Accepting an invite needs a signed-in person; a cross-site form is refused first.
        anonymous = await http.post("/auth/invite", data={"token": "inv_x_y"}, headers=origin)
        assert anonymous.status_code == 401
        cross_site = await http.post(
            "/auth/signin", data={"email": email}, headers={"Origin": "https://evil.example"}
        )
        assert cross_site.status_code == 403
