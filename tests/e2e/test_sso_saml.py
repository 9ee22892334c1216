"""SAML single sign-on end to end: the real API, and pysaml2's own IdP answering Blocks'
AuthnRequests with signed responses that a browser posts to the ACS. Shown: SP-initiated sign-in
(a session scoped to the organization), the same response posted again refused, an IdP-initiated
response refused unless the provider allows it (and then not twice), and every refusal a 400
problem+json audited `auth.sso_failed`, never a 500."""

from __future__ import annotations

import base64
import urllib.parse
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment

from blocks.api.identity.sessions import SESSION_COOKIE
from blocks.api.identity.sso.flow import SSO_BINDING_COOKIE
from blocks.core.context import AuthMethod, OrgContext, OrgId
from blocks.core.roles import Role
from blocks.infra.db import session_factory
from blocks.infra.embedded.postgres import PostgresCredentials
from blocks.models.identity.sso.domains import claim_domain, mark_verified
from blocks.models.identity.sso.providers import Protocol, create_provider
from tests.saml_idp import MFA_CONTEXT, LocalIdp, make_key_pair
from tests.support import Org, Stack, audit_actions, make_org, running_stack

PUBLIC_URL = "https://blocks.test"


@dataclass
class World:
    stack: Stack
    org: Org
    idp: LocalIdp
    providers: dict[str, uuid.UUID]

    def base(self, name: str) -> str:
        return f"/v1/sso/{self.org.slug}/{self.providers[name]}"

    def sp(self, name: str) -> tuple[str, str]:
        """(SP entity id, ACS URL) of a provider, as the IdP knows them."""
        base = f"{PUBLIC_URL}{self.base(name)}"
        return f"{base}/saml/metadata", f"{base}/saml/acs"


@pytest.fixture(scope="module")
async def world(
    engine: AsyncEngine,
    temporal_env: WorkflowEnvironment,
    postgres: PostgresCredentials,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[World]:
    key_file, cert_file = make_key_pair(Path(tmp_path_factory.mktemp("saml-idp")))
    idp = LocalIdp(key_file, cert_file, ())
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
        for name, idp_initiated in {"sp-only": False, "idp-initiated": True}.items():
            config = {
                "idp_metadata_xml": idp.metadata_xml(),
                "allow_idp_initiated": idp_initiated,
                "jit_provisioning": True,
            }
            provider = await create_provider(
                ctx, db, name=name, protocol=Protocol.SAML, config=config, secret=None
            )
            providers[name] = provider.id
    async with running_stack(
        engine=engine,
        temporal=temporal_env.client,
        database_url=postgres.url(),
        task_queue=f"blocks-saml-{uuid.uuid4().hex[:8]}",
        with_worker=False,
        extra_settings={"public_url": PUBLIC_URL},
    ) as stack:
        world = World(stack, org, idp, providers)
        # The IdP trusts each provider's SP as our published metadata describes it.
        async with stack.http() as http:
            published = [await http.get(f"{world.base(name)}/saml/metadata") for name in providers]
        for answer in published:
            assert answer.status_code == 200, answer.text
            assert answer.headers["content-type"] == "application/samlmetadata+xml"
        idp.sp_metadata = tuple(answer.text for answer in published)
        yield world


@dataclass
class Browser:
    """One browser. Blocks' cookies are kept by hand: they are `__Host-` (Secure) cookies, which
    an HTTP client will not send back over plain http to the test server."""

    world: World
    cookies: dict[str, str] = field(default_factory=dict)

    def _keep(self, response: httpx.Response) -> None:
        for header in response.headers.get_list("set-cookie"):
            parsed: SimpleCookie = SimpleCookie()
            parsed.load(header)
            for name, morsel in parsed.items():
                if morsel["max-age"] == "0" or not morsel.value or morsel.value == '""':
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value

    def _headers(self) -> dict[str, str]:
        cookie = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        return {"Cookie": cookie} if cookie else {}

    async def get(self, path: str) -> httpx.Response:
        async with self.world.stack.http() as http:
            response = await http.get(path, headers=self._headers())
        self._keep(response)
        return response

    async def start(self, provider: str) -> str:
        """Blocks' start: the IdP URL (with the AuthnRequest) it redirects the browser to."""
        response = await self.get(f"{self.world.base(provider)}/start?next=/runs")
        assert response.status_code == 303, response.text
        assert SSO_BINDING_COOKIE in self.cookies
        return response.headers["location"]

    def idp_answer(self, provider: str, redirect_url: str | None, **kwargs: Any) -> str:
        entity_id, acs_url = self.world.sp(provider)
        return self.world.idp.answer(
            redirect_url, acs_url=acs_url, sp_entity_id=entity_id, **kwargs
        )

    async def post(self, provider: str, saml_response: str, **form: str) -> httpx.Response:
        """The IdP's auto-submitting form: a cross-site POST to the ACS, from the IdP's origin."""
        async with self.world.stack.http() as http:
            response = await http.post(
                f"{self.world.base(provider)}/saml/acs",
                data={"SAMLResponse": saml_response, **form},
                headers={**self._headers(), "Origin": "https://idp.example.test"},
            )
        self._keep(response)
        return response


async def _refused(world: World, response: httpx.Response, reason: str) -> None:
    """A 400 problem+json, no session, and `auth.sso_failed` audited with `reason`."""
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "sso_failed"
    assert SESSION_COOKIE not in response.headers.get("set-cookie", "")
    events = await audit_actions(world.stack.engine, world.org.id)
    failed = [r for action, _, r in events if action == "auth.sso_failed"]
    assert any(r is not None and reason in r for r in failed), failed


async def test_sp_initiated_sign_in_opens_a_session_of_the_organization(world: World) -> None:
    browser = Browser(world)
    url = await browser.start("sp-only")
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
    assert url.startswith("https://idp.example.test/saml/sso?")
    assert set(query) == {"SAMLRequest"}  # no RelayState, no signature: nothing secret travels
    email = world.org["operator"].email  # an existing member, linked (verified domain)
    answer = browser.idp_answer(
        "sp-only", url, subject="operator-01", email=email, name="Op", context=MFA_CONTEXT
    )
    response = await browser.post("sp-only", answer, RelayState="ignored")
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/runs"
    assert SESSION_COOKIE in browser.cookies
    assert SSO_BINDING_COOKIE not in browser.cookies  # spent
    me = await browser.get("/v1/me")
    assert me.status_code == 200, me.text
    assert me.json()["email"] == email
    assert me.json()["org_id"] == str(world.org.id)
    actions = [action for action, _, _ in await audit_actions(world.stack.engine, world.org.id)]
    assert "auth.signin" in actions


async def test_the_same_response_posted_twice_is_refused_the_second_time(world: World) -> None:
    browser = Browser(world)
    url = await browser.start("sp-only")
    answer = browser.idp_answer(
        "sp-only", url, subject="approver-01", email=world.org["approver"].email
    )
    binding = browser.cookies[SSO_BINDING_COOKIE]
    first = await browser.post("sp-only", answer)
    assert first.status_code == 303, first.text
    browser.cookies[SSO_BINDING_COOKIE] = binding  # the attacker has the cookie too
    second = await browser.post("sp-only", answer)
    await _refused(world, second, "unknown, already used or expired")


async def test_a_response_posted_by_another_browser_is_refused(world: World) -> None:
    url = await Browser(world).start("sp-only")
    stranger = Browser(world)  # no binding cookie: not the browser that started
    answer = stranger.idp_answer("sp-only", url, subject="csrf-01")
    response = await stranger.post("sp-only", answer)
    await _refused(world, response, "another browser than the one that started")


async def test_idp_initiated_is_refused_unless_the_provider_allows_it(world: World) -> None:
    browser = Browser(world)
    email = world.org["auditor"].email
    refused = await browser.post(
        "sp-only", browser.idp_answer("sp-only", None, subject="ida-01", email=email)
    )
    await _refused(world, refused, "unsolicited (IdP-initiated)")
    assert SESSION_COOKIE not in browser.cookies

    answer = browser.idp_answer("idp-initiated", None, subject="ida-01", email=email)
    accepted = await browser.post("idp-initiated", answer)
    assert accepted.status_code == 303, accepted.text
    assert SESSION_COOKIE in browser.cookies
    replayed = await Browser(world).post("idp-initiated", answer)
    await _refused(world, replayed, "already used (replayed)")


async def test_forged_and_hostile_posts_are_400s_not_500s(world: World) -> None:
    browser = Browser(world)
    url = await browser.start("sp-only")
    answer = base64.b64decode(browser.idp_answer("sp-only", url, subject="eve-01"))
    forged = base64.b64encode(answer.replace(b"eve-01", b"admin-01")).decode()
    await _refused(world, await browser.post("sp-only", forged), "signature does not verify")
    lol = '<!ENTITY lol "lol">' + "".join(
        f'<!ENTITY lol{n} "{("&lol" + (str(n - 1) if n > 1 else "") + ";") * 10}">'
        for n in range(1, 10)
    )
    laughs = f"<!DOCTYPE r [{lol}]><r>&lol9;</r>"
    response = await browser.post("sp-only", base64.b64encode(laughs.encode()).decode())
    await _refused(world, response, "DOCTYPE")
    await _refused(world, await browser.post("sp-only", "not base64!"), "not base64")
