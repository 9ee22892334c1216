"""OpenID Connect single sign-on end to end, against a real OpenID Provider (oidc-provider on
127.0.0.1): sign-in and just-in-time members with roles from groups, and every forged, replayed
or mismatched callback refused (400 problem+json, audited `auth.sso_failed`), never a 500."""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import select
from temporalio.testing import WorkflowEnvironment

from blocks.api.identity.sessions import SESSION_COOKIE
from blocks.core.context import AuthMethod, OrgContext, OrgId
from blocks.core.roles import Role
from blocks.infra.db import session_factory
from blocks.infra.embedded.postgres import PostgresCredentials
from blocks.models.identity.members import get_member
from blocks.models.identity.orgs import add_member, find_user_by_email
from blocks.models.identity.sso.accounts import ExternalIdentity
from blocks.models.identity.sso.domains import claim_domain, mark_verified
from blocks.models.identity.sso.idp_groups import replace_mappings
from blocks.models.identity.sso.providers import Protocol, create_provider
from tests.e2e.oidc_stack import (
    Browser,
    OpenIdProvider,
    install_op,
    query_of,
    running_op,
    with_query,
)
from tests.support import Org, Stack, audit_actions, free_port, make_org, running_stack

PUBLIC_URL = "https://blocks.test"
SECRET = "test-client-secret-0123456789"
# provider name -> (client id at the OP, its id_token_patch, with a client secret)
CLIENTS: dict[str, tuple[str, dict[str, Any] | None, bool]] = {
    "main": ("blocks-main", None, True),
    "public": ("blocks-public", None, False),
    "audience": ("blocks-audience", {"aud": "someone-else"}, True),
    "expired": ("blocks-expired", {"exp": {"from_now": -3600}, "iat": {"from_now": -7200}}, True),
    "stranger": ("blocks-stranger", {"sign_with": "stranger"}, True),
}


@dataclass
class World:
    stack: Stack
    org: Org
    ctx: OrgContext
    op: OpenIdProvider
    providers: dict[str, uuid.UUID]

    @property
    def issuer(self) -> str:
        return self.op.issuer


def _callback(org: Org, provider_id: uuid.UUID) -> str:
    return f"{PUBLIC_URL}/v1/sso/{org.slug}/{provider_id}/oidc/callback"


@pytest.fixture(scope="session")
def op_installed() -> None:
    """The provider's npm packages (`npm ci`), if this checkout has not installed them yet."""
    install_op()


@pytest.fixture(scope="module")
async def world(
    op_installed: None,
    engine: AsyncEngine,
    temporal_env: WorkflowEnvironment,
    postgres: PostgresCredentials,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[World]:
    op_port, dead_port = free_port(), free_port()  # nothing listens on the second
    issuer = f"http://127.0.0.1:{op_port}"
    org = await make_org(engine)
    ctx = OrgContext(
        org_id=OrgId(org.id),
        user_id=org["owner"].user_id,
        roles=(Role.OWNER,),
        auth=AuthMethod.SYSTEM,
    )
    providers: dict[str, uuid.UUID] = {}
    async with session_factory(engine)() as db, db.begin():
        domain = await claim_domain(ctx, db, f"{org.slug}.test")
        await mark_verified(ctx, db, domain, by="operator")
        for name, (client_id, _, confidential) in CLIENTS.items():
            config = {"issuer": issuer, "client_id": client_id, "jit_provisioning": True}
            provider = await create_provider(
                ctx,
                db,
                name=name,
                protocol=Protocol.OIDC,
                config=config,
                secret=SECRET if confidential else None,
            )
            providers[name] = provider.id
        # Same client as "main", but its own callback URL, which the OP has not registered.
        for name, config in {
            "unregistered": {"issuer": issuer, "client_id": "blocks-main"},
            "down": {"issuer": f"http://127.0.0.1:{dead_port}", "client_id": "blocks-main"},
        }.items():
            provider = await create_provider(
                ctx, db, name=name, protocol=Protocol.OIDC, config=config, secret=SECRET
            )
            providers[name] = provider.id
        await replace_mappings(ctx, db, [("blocks-operators", [Role.OPERATOR], None)])
        # Bob is a member already: his sign-ins link to (then find) his account.
        await add_member(ctx, db, email=f"bob@{org.slug}.test", display_name="Bob", roles=[])
    clients = [
        {
            "client_id": client_id,
            "redirect_uris": [_callback(org, providers[name])],
            **({"client_secret": SECRET} if confidential else {}),
            **({"id_token_patch": patch} if patch else {}),
        }
        for name, (client_id, patch, confidential) in CLIENTS.items()
    ]
    domain_name = f"{org.slug}.test"
    users = {
        "alice": {
            "email": f"alice@{domain_name}",
            "email_verified": True,
            "name": "Alice Example",
            "groups": ["blocks-operators", "unmapped"],
            "amr": ["pwd", "mfa"],
        },
        "bob": {"email": f"bob@{domain_name}", "email_verified": True, "name": "Bob"},
        # The email of an existing member (make_org's operator), not verified by the provider.
        "mallory": {"email": org["operator"].email, "email_verified": False, "name": "M"},
    }
    workdir = tmp_path_factory.mktemp("oidc-op")
    with running_op({"port": op_port, "clients": clients, "users": users}, workdir) as op:
        assert op.issuer == issuer
        async with running_stack(
            engine=engine,
            temporal=temporal_env.client,
            database_url=postgres.url(),
            task_queue=f"blocks-oidc-{uuid.uuid4().hex[:8]}",
            with_worker=False,
            extra_settings={
                "public_url": PUBLIC_URL,
                "outbound_allow_private": f"127.0.0.1:{op_port},127.0.0.1:{dead_port}",
            },
        ) as stack:
            yield World(stack, org, ctx, op, providers)


@pytest.fixture
async def browser(world: World) -> AsyncIterator[Browser]:
    browser = Browser(world.stack)
    yield browser
    await browser.aclose()


async def _refused(world: World, response: Any, status: int, reason: str) -> None:
    """The answer is a problem+json refusal, and `auth.sso_failed` is audited with `reason`."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "sso_failed"
    events = await audit_actions(world.stack.engine, world.org.id)
    failed = [r for action, _, r in events if action == "auth.sso_failed"]
    assert any(r is not None and reason in r for r in failed), failed
    assert SESSION_COOKIE not in response.headers.get("set-cookie", "")


async def test_sign_in_creates_the_member_with_roles_from_groups(
    world: World, browser: Browser
) -> None:
    response = await browser.sign_in(world.org.slug, world.providers["main"], "alice")
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/runs"
    assert SESSION_COOKIE in browser.cookies
    me = await browser.blocks("/v1/me")
    assert me.status_code == 200, me.text
    assert me.json()["email"] == f"alice@{world.org.slug}.test"
    assert me.json()["org_id"] == str(world.org.id)  # the session is the organization's
    async with session_factory(world.stack.engine)() as db, db.begin():
        user = await find_user_by_email(db, f"alice@{world.org.slug}.test")
        assert user is not None
        member = await get_member(world.ctx, db, user.id)
        assert member is not None
        assert member.membership.roles == [Role.OPERATOR.value]
        assert member.membership.managed_by == "idp"
    actions = {action for action, _, _ in await audit_actions(world.stack.engine, world.org.id)}
    assert {"sso.member_provisioned", "auth.signin"} <= actions

    # Signing in again is the same account (the key is the provider's subject).
    again = await Browser(world.stack).sign_in(world.org.slug, world.providers["main"], "alice")
    assert again.status_code == 303, again.text


async def test_a_public_client_signs_in_with_pkce_alone(world: World, browser: Browser) -> None:
    response = await browser.sign_in(world.org.slug, world.providers["public"], "bob")
    assert response.status_code == 303, response.text
    assert SESSION_COOKIE in browser.cookies
    # Bob's account existed: the provider's verified email in the verified domain linked it.
    actions = {action for action, _, _ in await audit_actions(world.stack.engine, world.org.id)}
    assert "sso.account_linked" in actions


async def test_start_always_sends_pkce_and_the_provider_requires_it(
    world: World, browser: Browser
) -> None:
    url = await browser.start(world.org.slug, world.providers["main"])
    sent = query_of(url)
    assert url.startswith(f"{world.issuer}/")
    assert sent["code_challenge_method"] == "S256"
    assert len(sent["code_challenge"]) == 43
    assert sent["response_type"] == "code"
    assert sent["state"]
    assert sent["nonce"]
    assert sent["redirect_uri"] == _callback(world.org, world.providers["main"])
    # Without the challenge the provider refuses, back to our callback with an error.
    refused = await browser.through_op(
        with_query(url, code_challenge=None, code_challenge_method=None)
    )
    assert refused.status_code == 303
    error = query_of(refused.headers["location"])
    assert error["error"] == "invalid_request"
    assert "PKCE" in error["error_description"]
    response = await browser.callback(refused.headers["location"].removeprefix(PUBLIC_URL))
    await _refused(world, response, 400, "the provider answered invalid_request")


async def test_an_injected_code_fails_pkce(world: World, browser: Browser) -> None:
    """A code obtained with another verifier (an attacker's) does not redeem for this browser."""
    url = await browser.start(world.org.slug, world.providers["main"], login_hint="bob")
    other = base64.urlsafe_b64encode(hashlib.sha256(b"x" * 43).digest()).rstrip(b"=").decode()
    callback = await browser.callback_url(with_query(url, code_challenge=other))
    response = await browser.callback(callback)
    await _refused(world, response, 400, "refused the code: invalid_grant")


async def test_an_unregistered_redirect_uri_is_refused_by_the_provider(
    world: World, browser: Browser
) -> None:
    url = await browser.start(world.org.slug, world.providers["unregistered"], login_hint="bob")
    response = await browser.through_op(url)
    assert response.status_code == 400
    assert "redirect_uri" in response.text
    assert "location" not in response.headers


async def test_a_replayed_callback_is_refused(world: World, browser: Browser) -> None:
    first = await browser.sign_in(world.org.slug, world.providers["main"], "bob")
    assert first.status_code == 303, first.text
    assert browser.last_callback is not None
    browser.cookies.update({"__Host-blocks_sso": "replayed"})
    replay = await browser.callback(browser.last_callback)
    await _refused(world, replay, 400, "state is missing, unknown, already used or expired")


async def test_a_callback_in_another_browser_is_refused(world: World, browser: Browser) -> None:
    url = await browser.start(world.org.slug, world.providers["main"], login_hint="bob")
    callback = await browser.callback_url(url)
    response = await Browser(world.stack).callback(callback)
    await _refused(world, response, 400, "another browser than the one that started")


@pytest.mark.parametrize(
    ("provider", "reason"),
    [
        ("audience", "the id_token's aud does not name this client"),
        ("expired", "the id_token has expired"),
        ("stranger", "signed with a key the provider does not publish"),
    ],
)
async def test_a_bad_id_token_is_refused(
    world: World, browser: Browser, provider: str, reason: str
) -> None:
    response = await browser.sign_in(world.org.slug, world.providers[provider], "bob")
    await _refused(world, response, 400, reason)


async def test_an_unverified_email_is_not_linked_to_an_existing_account(
    world: World, browser: Browser
) -> None:
    response = await browser.sign_in(world.org.slug, world.providers["main"], "mallory")
    await _refused(world, response, 403, "the provider did not verify the email")
    async with session_factory(world.stack.engine)() as db, db.begin():
        user = await find_user_by_email(db, world.org["operator"].email)
        assert user is not None
        assert user.id == world.org["operator"].user_id
        linked = (
            await db.exec(select(ExternalIdentity).where(ExternalIdentity.user_id == user.id))
        ).all()
    assert linked == []


@pytest.mark.parametrize("iss", ["http://127.0.0.1:1/", None])
async def test_the_callback_iss_must_be_the_issuer(
    world: World, browser: Browser, iss: str | None
) -> None:
    url = await browser.start(world.org.slug, world.providers["main"], login_hint="bob")
    callback = await browser.callback_url(url)
    assert query_of(callback)["iss"] == world.issuer
    response = await browser.callback(with_query(callback, iss=iss))
    reason = "is not the issuer" if iss else "has no iss although the provider sends it"
    await _refused(world, response, 400, reason)
    # The refusal spent the state: the genuine callback, after it, is refused too.
    genuine = await browser.callback(callback)
    await _refused(world, genuine, 400, "state is missing, unknown, already used or expired")


async def test_new_signing_keys_are_fetched_once_on_an_unknown_key(
    world: World, browser: Browser
) -> None:
    """Keys are kept a while; a token signed with a new key (the provider rotated its keys)
    fetches them again rather than failing."""
    first = await browser.sign_in(world.org.slug, world.providers["main"], "bob")
    assert first.status_code == 303, first.text
    world.op.restart()  # new signing keys, same issuer
    second = await Browser(world.stack).sign_in(world.org.slug, world.providers["main"], "bob")
    assert second.status_code == 303, second.text


async def test_the_provider_error_is_refused(world: World, browser: Browser) -> None:
    url = await browser.start(world.org.slug, world.providers["main"])
    state = query_of(url)["state"]
    path = f"/v1/sso/{world.org.slug}/{world.providers['main']}/oidc/callback"
    response = await browser.callback(
        f"{path}?error=access_denied&error_description=user+cancelled&state={state}"
    )
    await _refused(world, response, 400, "the provider answered access_denied (user cancelled)")


async def test_an_unreachable_provider_is_a_503(world: World, browser: Browser) -> None:
    path = f"/v1/sso/{world.org.slug}/{world.providers['down']}/start"
    response = await browser.blocks(path)
    await _refused(world, response, 503, "did not answer")
