"""The console's sign-in pages over real HTTP: password, second factor, the organization picker,
sign-out, SSO by organization name; refusals in the API's words; no open redirect; a sign-in form
posted from another site refused and audited."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from http.cookies import SimpleCookie

import httpx
import pyotp
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment

from blocks.api.identity.sessions import SESSION_COOKIE
from blocks.core.context import AuthMethod, OrgContext, OrgId
from blocks.core.roles import Role
from blocks.infra.crypto.passwords import hash_password
from blocks.infra.db import session_factory
from blocks.infra.embedded.postgres import PostgresCredentials
from blocks.models.identity.orgs import User, add_member
from tests.mail import SmtpServer
from tests.support import Stack, audit_actions, make_org, run_sql, running_stack

STRONG = "correct horse battery staple violet quarry"
PLATFORM = uuid.UUID(int=0)
EVIL = "https://evil.example"


async def set_password(engine: AsyncEngine, user_id: uuid.UUID) -> None:
    """The member's password, hashed as the API's password routes hash it."""
    async with session_factory(engine)() as session, session.begin():
        user = await session.get(User, user_id)
        assert user is not None
        user.password_hash = hash_password(STRONG)
        session.add(user)


def _token(response: httpx.Response) -> str | None:
    found = None
    for header in response.headers.get_list("set-cookie"):
        cookie: SimpleCookie = SimpleCookie(header)
        if SESSION_COOKIE in cookie:
            found = cookie[SESSION_COOKIE].value
    return found


def _site(stack: Stack, token: str | None = None) -> dict[str, str]:
    headers = {"Origin": stack.settings.public_url}
    if token:
        headers["Cookie"] = f"{SESSION_COOKIE}={token}"
    return headers


async def _sign_in(
    http: httpx.AsyncClient,
    stack: Stack,
    email: str,
    *,
    next_path: str = "",
    password: str = STRONG,
) -> httpx.Response:
    return await http.post(
        "/console/sign-in",
        data={"email": email, "password": password, "next": next_path},
        headers=_site(stack),
    )


async def test_a_member_signs_in_with_a_password_into_their_organization(
    stack: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    await set_password(engine, org["approver"].user_id)
    async with stack.http() as http:
        page = await http.get("/console/sign-in", params={"next": "/console/runs"})
        assert page.status_code == 200
        assert '<label for="sign-in-password">' in page.text
        assert 'name="next" value="/console/runs"' in page.text

        wrong = await _sign_in(http, stack, org["approver"].email, password="not it at all")
        assert wrong.status_code == 401
        assert "the email or the password is wrong" in wrong.text
        assert _token(wrong) is None
        assert f'value="{org["approver"].email}"' in wrong.text  # the address stays filled in

        signed = await _sign_in(http, stack, org["approver"].email, next_path="/console/runs")
        # One organization: entered at once, and on to where the person was going.
        assert signed.status_code == 303, signed.text
        assert signed.headers["location"] == "/console/runs"
        token = _token(signed)
        assert token
        inbox = await http.get("/console/inbox", headers={"Cookie": f"{SESSION_COOKIE}={token}"})
        assert inbox.status_code == 200
        assert "<h1>Inbox</h1>" in inbox.text
        assert org["approver"].email in inbox.text

        out = await http.post("/console/sign-out", headers=_site(stack, token))
        assert out.status_code == 303
        assert out.headers["location"] == "/console/sign-in?done=signed-out"
        assert "max-age=0" in out.headers["set-cookie"].lower()
        after = await http.get("/console/inbox", headers={"Cookie": f"{SESSION_COOKIE}={token}"})
        assert after.status_code == 303
        assert after.headers["location"] == "/console/sign-in?next=/console/inbox"
        notice = await http.get("/console/sign-in?done=signed-out")
        assert "You are signed out." in notice.text


async def test_a_sign_in_form_from_another_site_is_refused_and_audited(
    stack: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    await set_password(engine, org["approver"].user_id)
    before = len(await audit_actions(engine, PLATFORM))
    async with stack.http() as http:
        evil = await http.post(
            "/console/sign-in",
            data={"email": org["approver"].email, "password": STRONG},
            headers={"Origin": EVIL},
        )
        bare = await http.post(
            "/console/sign-in", data={"email": org["approver"].email, "password": STRONG}
        )
    for refused in (evil, bare):
        assert refused.status_code == 403
        assert refused.headers["content-type"].startswith("text/html")
        assert "must come from this site" in refused.text
        assert _token(refused) is None  # right password, still no session
    denied = [
        reason
        for action, _, reason in (await audit_actions(engine, PLATFORM))[before:]
        if action == "access.denied"
    ]
    assert any(reason and reason.startswith("csrf: cross-origin") for reason in denied)
    assert any(reason and reason.startswith("csrf: request without Origin") for reason in denied)


async def test_next_never_leaves_the_console(stack: Stack, engine: AsyncEngine) -> None:
    org = await make_org(engine)
    await set_password(engine, org["approver"].user_id)
    async with stack.http() as http:
        for hostile in (
            f"{EVIL}/console/inbox",
            "//evil.example/console",
            "/\\evil.example",
            "/auth/signin",
            "/console/../v1/me",
        ):
            page = await http.get("/console/sign-in", params={"next": hostile})
            assert 'name="next" value="/console/inbox"' in page.text, hostile
            signed = await _sign_in(http, stack, org["approver"].email, next_path=hostile)
            assert signed.status_code == 303, hostile
            assert signed.headers["location"] == "/console/inbox", hostile


async def test_the_second_factor_then_the_picker_for_a_member_of_two(
    stack: Stack, engine: AsyncEngine
) -> None:
    first, second = await make_org(engine), await make_org(engine)
    member = first["approver"]
    await set_password(engine, member.user_id)
    async with session_factory(engine)() as session, session.begin():
        ctx = OrgContext(
            org_id=OrgId(second.id),
            user_id=second["owner"].user_id,
            roles=(Role.OWNER,),
            auth=AuthMethod.SYSTEM,
        )
        await add_member(ctx, session, email=member.email, display_name="Two", roles=[Role.AUDITOR])
    async with stack.http() as http:
        api = await http.post(
            "/v1/auth/signin",
            json={"email": member.email, "password": STRONG},
            headers=_site(stack),
        )
        token = _token(api)
        setup = await http.post(
            "/v1/me/2fa/setup", json={"password": STRONG}, headers=_site(stack, token)
        )
        assert setup.status_code == 200, setup.text
        totp = pyotp.TOTP(setup.json()["secret"])
        enabled = await http.post(
            "/v1/me/2fa/enable", json={"code": totp.now()}, headers=_site(stack, token)
        )
        assert enabled.status_code == 200, enabled.text
        backup = enabled.json()["backup_codes"]

        signed = await _sign_in(http, stack, member.email, next_path="/console/inbox")
        assert signed.status_code == 303
        assert signed.headers["location"] == "/console/two-factor"
        pending = _token(signed)
        # Half signed in: a console page sends the person back to the second factor.
        early = await http.get("/console/inbox", headers=_site(stack, pending))
        assert early.headers["location"] == "/console/two-factor?next=/console/inbox"
        form = await http.get("/console/two-factor", headers=_site(stack, pending))
        assert '<label for="two-factor-code">' in form.text
        wrong = await http.post(
            "/console/two-factor", data={"code": "000000"}, headers=_site(stack, pending)
        )
        assert wrong.status_code == 401
        assert "the code is wrong or was already used" in wrong.text
        ok = await http.post(
            "/console/two-factor", data={"code": backup[0]}, headers=_site(stack, pending)
        )
        assert ok.status_code == 303, ok.text
        assert ok.headers["location"] == "/console/orgs"  # two organizations: the picker
        token = _token(ok)

        picker = await http.get("/console/orgs", headers=_site(stack, token))
        assert picker.status_code == 200
        assert first.slug in picker.text
        assert second.slug in picker.text
        unknown = await http.post(
            "/console/orgs", data={"org_id": str(uuid.uuid4())}, headers=_site(stack, token)
        )
        assert unknown.status_code == 404
        assert "organization not found" in unknown.text
        evil = await http.post(
            "/console/orgs",
            data={"org_id": str(first.id)},
            headers={**_site(stack, token), "Origin": EVIL},
        )
        assert evil.status_code == 403
        entered = await http.post(
            "/console/orgs",
            data={"org_id": str(first.id), "next": "/console/inbox"},
            headers=_site(stack, token),
        )
        assert entered.status_code == 303
        assert entered.headers["location"] == "/console/inbox"
        inbox = await http.get("/console/inbox", headers=_site(stack, _token(entered)))
        assert inbox.status_code == 200


async def test_single_sign_on_starts_from_the_organization_name(
    stack: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    async with stack.http() as http:
        unknown = await http.get(
            "/console/sign-in/sso", params={"organization": f"no-{uuid.uuid4().hex[:8]}"}
        )
        assert unknown.status_code == 404
        assert "no such sign-in provider" in unknown.text
        none = await http.get("/console/sign-in/sso", params={"organization": org.slug})
        assert none.status_code == 404
        assert "no single sign-on provider" in none.text
        empty = await http.get("/console/sign-in/sso", params={"organization": " "})
        assert empty.status_code == 422


async def test_an_emailed_link_lands_on_the_console_and_signs_in(
    identity_stack: Stack, smtp_server: SmtpServer, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    email = org["approver"].email
    async with identity_stack.http() as http:
        evil = await http.post(
            "/console/sign-in/link", data={"email": email}, headers={"Origin": EVIL}
        )
        assert evil.status_code == 403
        asked = await http.post(
            "/console/sign-in/link", data={"email": email}, headers=_site(identity_stack)
        )
        assert asked.status_code == 200, asked.text
        assert "a sign-in link is on its way" in asked.text
        token = await smtp_server.inbox.token_for(
            email, r"https://blocks\.test/console/sign-in/link\?token=(\S+)"
        )
        # Opening the link (a mail scanner does too) only shows a button.
        landing = await http.get("/console/sign-in/link", params={"token": token})
        assert landing.status_code == 200
        assert f'name="token" value="{token}"' in landing.text
        assert _token(landing) is None
        signed = await http.post(
            "/console/sign-in/link",
            data={"token": token, "next": "/console/inbox"},
            headers=_site(identity_stack),
        )
        assert signed.status_code == 303, signed.text
        assert signed.headers["location"] == "/console/inbox"
        assert _token(signed)
        again = await http.post(
            "/console/sign-in/link", data={"token": token}, headers=_site(identity_stack)
        )
        assert again.status_code == 400
        assert "already been used" in again.text


@pytest.fixture(scope="module")
async def limited(
    engine: AsyncEngine, temporal_env: WorkflowEnvironment, postgres: PostgresCredentials
) -> AsyncIterator[Stack]:
    """Low limits on wrong passwords per account, to meet them from the console's form."""
    async with running_stack(
        engine=engine,
        temporal=temporal_env.client,
        database_url=postgres.url(),
        task_queue=f"blocks-console-limits-{uuid.uuid4().hex[:8]}",
        with_worker=False,
        extra_settings={"rate_limit_signin_account": "2/minute"},
    ) as running:
        yield running


async def test_a_rate_limit_and_a_two_factor_rule_are_shown_in_the_api_words(
    limited: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    member = org["approver"]
    await set_password(engine, member.user_id)
    async with limited.http() as http:
        for _ in range(2):
            wrong = await _sign_in(http, limited, member.email, password="not the password")
            assert wrong.status_code == 401
        limit = await _sign_in(http, limited, member.email, password="not the password")
        assert limit.status_code == 429
        assert int(limit.headers["retry-after"]) > 0
        assert "too many" in limit.text.lower()
        assert '<label for="sign-in-email">' in limit.text  # the form, to try again later

    other = await make_org(engine)
    await set_password(engine, other["approver"].user_id)
    await run_sql(engine, "UPDATE organizations SET require_2fa = true WHERE id = :id", id=other.id)
    async with limited.http() as http:
        signed = await _sign_in(http, limited, other["approver"].email)
        # Its one organization requires two-factor sign-in: not entered, the picker says why.
        assert signed.status_code == 303
        assert signed.headers["location"] == "/console/orgs"
        token = _token(signed)
        refused = await http.post(
            "/console/orgs", data={"org_id": str(other.id)}, headers=_site(limited, token)
        )
        assert refused.status_code == 403
        assert "this organization requires two-factor sign-in" in refused.text
        assert other.slug in refused.text
