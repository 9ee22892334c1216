"""The SSO admin API against the real API: identity providers (OIDC, SAML) with their save-time
checks and write-only secret, enforced SSO and its break-glass admins, the IdP group mappings,
and domains proved by a DNS TXT record served by a small DNS server of the test's own (dnspython's
message API over UDP on 127.0.0.1), or attested by the operator command."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment

from blocks.cli.domains import AttestRefused, attest_domain
from blocks.core.context import AuthMethod, OrgContext, OrgId
from blocks.infra.db import bind_org, session_factory
from blocks.infra.embedded.postgres import PostgresCredentials
from blocks.infra.settings import Settings
from blocks.models.approvals.groups import create_group
from tests.support import (
    audit_actions,
    blocks_process_env,
    cookie_headers,
    free_port,
    make_org,
    run_sql,
    running_process,
    running_stack,
    start_test_session,
)

PUBLIC_URL = "https://blocks.test"
PROBLEM = "application/problem+json"
SECRET = "s3cr3t-Client-Secret-zz9Q"


# --------------------------------------------------------------------------- the DNS server


@dataclass
class DnsServer:
    """Answers TXT questions from `records`; names in `failing` get SERVFAIL, others NXDOMAIN."""

    port: int = 0
    records: dict[str, list[list[bytes]]] = field(default_factory=dict)
    failing: set[str] = field(default_factory=set)
    asked: list[str] = field(default_factory=list)

    def answer(self, wire: bytes) -> bytes:
        query = dns.message.from_wire(wire)
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True).lower()
        self.asked.append(name)
        if name in self.failing:
            response.set_rcode(dns.rcode.SERVFAIL)
        elif name not in self.records:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif question.rdtype == dns.rdatatype.TXT:
            # Each record as character-strings of its own (a long value is split in two).
            texts = [" ".join(f'"{s.decode()}"' for s in strings) for strings in self.records[name]]
            response.answer.append(
                dns.rrset.from_text_list(question.name, 60, dns.rdataclass.IN, "TXT", texts)
            )
        return response.to_wire()  # type: ignore[no-any-return]

    def publish(self, name: str, value: str) -> None:
        # Split in two strings, as a DNS console does with a value past 255 characters.
        half = len(value) // 2
        self.records.setdefault(name, []).append([value[:half].encode(), value[half:].encode()])


class _DnsProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(self.server.answer(data), addr)


@pytest.fixture(scope="module")
async def dns_server() -> AsyncIterator[DnsServer]:
    server = DnsServer()
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: _DnsProtocol(server), local_addr=("127.0.0.1", 0)
    )
    server.port = transport.get_extra_info("sockname")[1]
    yield server
    transport.close()


# ------------------------------------------------------------------ the IdP metadata server


@dataclass
class MetadataServer:
    port: int
    documents: dict[str, tuple[int, bytes]]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture(scope="module")
def metadata_server() -> Iterator[MetadataServer]:
    documents: dict[str, tuple[int, bytes]] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body = documents.get(self.path, (404, b"not found"))
            self.send_response(status)
            self.send_header("Content-Type", "application/samlmetadata+xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield MetadataServer(httpd.server_address[1], documents)
    httpd.shutdown()
    thread.join()


def certificate_pem(common_name: str = "idp.acme.test") -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def idp_metadata(entity_id: str, pem: str) -> str:
    der = x509.load_pem_x509_certificate(pem.encode()).public_bytes(serialization.Encoding.DER)
    return f"""<?xml version="1.0"?>
<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata"
    xmlns:ds="http://www.w3.org/2000/09/xmldsig#" entityID="{entity_id}">
  <md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">
    <md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data>
      <ds:X509Certificate>{base64.b64encode(der).decode()}</ds:X509Certificate>
    </ds:X509Data></ds:KeyInfo></md:KeyDescriptor>
    <md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"
        Location="https://idp.acme.test/sso"/>
  </md:IDPSSODescriptor>
</md:EntityDescriptor>"""


# ------------------------------------------------------------------------------ the stack


@dataclass
class SsoStack:
    base_url: str
    settings: Settings
    engine: AsyncEngine
    metadata: MetadataServer

    def http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base_url, timeout=30)


@pytest.fixture(scope="module")
async def sso_stack(
    engine: AsyncEngine,
    postgres: PostgresCredentials,
    temporal_env: WorkflowEnvironment,
    dns_server: DnsServer,
    metadata_server: MetadataServer,
) -> AsyncIterator[SsoStack]:
    async with running_stack(
        engine=engine,
        temporal=temporal_env.client,
        database_url=postgres.url(),
        task_queue=f"blocks-sso-admin-{uuid.uuid4().hex[:8]}",
        with_worker=False,
        extra_settings={
            "public_url": PUBLIC_URL,
            "outbound_allow_private": f"127.0.0.1:{metadata_server.port}",
            "dns_resolver": f"127.0.0.1:{dns_server.port}",
        },
    ) as running:
        yield SsoStack(running.base_url, running.settings, engine, metadata_server)


async def audit_rows(engine: AsyncEngine, org_id: uuid.UUID) -> list[tuple[str, str, str | None]]:
    """(action, data as JSON text, actor_id) of every event of one organization."""
    async with session_factory(engine)() as session, session.begin():
        await bind_org(session, org_id)
        rows = await session.exec(  # type: ignore[call-overload]
            text("SELECT action, data::text, actor_id FROM audit_events ORDER BY seq")
        )
        return [(r[0], r[1], r[2]) for r in rows.all()]


def problem_fields(response: httpx.Response) -> dict[str, str]:
    assert response.headers["content-type"].startswith(PROBLEM), response.text
    return {e["field"]: e["reason"] for e in response.json().get("errors", [])}


def oidc_body(stack: SsoStack, **changes: Any) -> dict[str, Any]:
    # An issuer on the loopback port the stack allows (a public name would need real DNS).
    return {
        "name": "Okta",
        "protocol": "oidc",
        "config": {"issuer": stack.metadata.url("/oidc"), "client_id": "blocks"},
        "client_secret": SECRET,
        **changes,
    }


# ------------------------------------------------------------------------------ providers


async def test_an_oidc_provider_round_trip_never_shows_its_secret(
    sso_stack: SsoStack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    org = await make_org(sso_stack.engine)
    owner = org["owner"].headers
    async with sso_stack.http() as http:
        created = await http.post("/v1/org/sso/providers", json=oidc_body(sso_stack), headers=owner)
        assert created.status_code == 201, created.text
        body = created.json()
        base = f"{PUBLIC_URL}/v1/sso/{org.slug}/{body['id']}"
        assert body["client_secret_set"] is True
        assert body["client_secret_last4"] == SECRET[-4:]
        assert body["start_url"] == f"{base}/start"
        assert body["redirect_uri"] == f"{base}/oidc/callback"
        assert body["sp_entity_id"] is body["acs_url"] is None
        assert body["config"]["scopes"] == ["openid", "email", "profile"]
        provider = f"/v1/org/sso/providers/{body['id']}"

        listed = await http.get("/v1/org/sso/providers", headers=org["admin"].headers)
        assert [p["id"] for p in listed.json()] == [body["id"]]
        changed = await http.patch(
            provider,
            json={"name": "Okta EU", "client_secret": "another-Secret-value-8Kx2"},
            headers=owner,
        )
        assert changed.status_code == 200, changed.text
        assert changed.json()["client_secret_last4"] == "8Kx2"
        assert changed.json()["name"] == "Okta EU"
        # A PATCH of one config key keeps the others.
        merged = await http.patch(provider, json={"config": {"require_mfa": True}}, headers=owner)
        assert merged.json()["config"]["client_id"] == "blocks"
        assert merged.json()["config"]["require_mfa"] is True
        read = await http.get(provider, headers=owner)
        answers = [created, listed, changed, merged, read]

        deleted = await http.delete(provider, headers=owner)
        assert deleted.status_code == 204
        assert (await http.get(provider, headers=owner)).status_code == 404

    for answer in answers:
        assert SECRET not in answer.text
        assert "another-Secret-value" not in answer.text
    events = await audit_rows(sso_stack.engine, org.id)
    by_action = {action: json.loads(data) for action, data, _ in events}
    assert by_action["sso.provider_created"]["client_secret_changed"] is True
    assert by_action["sso.provider_created"]["config"]["client_id"] == "blocks"
    updates = [json.loads(d) for a, d, _ in events if a == "sso.provider_updated"]
    assert [u["client_secret_changed"] for u in updates] == [True, False]
    assert updates[0]["before"]["name"] == "Okta"
    assert "sso.provider_deleted" in by_action
    assert not any(SECRET in data or "another-Secret-value" in data for _, data, _ in events)
    assert SECRET not in caplog.text
    assert "another-Secret-value" not in caplog.text
    async with session_factory(sso_stack.engine)() as session, session.begin():
        await bind_org(session, org.id)
        sealed = (
            await session.exec(  # type: ignore[call-overload]
                text("SELECT secret_sealed, deleted_at FROM identity_providers")
            )
        ).one()
    assert sealed[0] is None
    assert sealed[1] is not None


async def test_a_bad_config_is_a_422_naming_the_field_and_saves_nothing(
    sso_stack: SsoStack,
) -> None:
    org = await make_org(sso_stack.engine)
    owner = org["owner"].headers
    pem = certificate_pem()
    cases: list[tuple[dict[str, Any], str, str]] = [
        (
            oidc_body(sso_stack, config={"issuer": sso_stack.metadata.url("/")}),
            "config.client_id",
            "Field required",
        ),
        (
            oidc_body(sso_stack, config={"issuer": "https://127.0.0.1:9/", "client_id": "x"}),
            "config.issuer",
            "Blocks only calls public addresses",
        ),
        (
            oidc_body(
                sso_stack,
                config={
                    "issuer": sso_stack.metadata.url("/"),
                    "client_id": "x",
                    "scopes": ["email"],
                },
            ),
            "config.scopes",
            "openid",
        ),
        (
            oidc_body(
                sso_stack,
                config={"issuer": sso_stack.metadata.url("/"), "client_id": "x", "colour": "blue"},
            ),
            "config.colour",
            "Extra inputs",
        ),
        (oidc_body(sso_stack, protocol="ldap"), "protocol", "'oidc' or 'saml'"),
        (oidc_body(sso_stack, client_secret="has spaces in it"), "client_secret", "printable"),
        (
            {"name": "x", "protocol": "saml", "config": {}, "client_secret": SECRET},
            "client_secret",
            "only an OIDC provider",
        ),
        ({"name": "x", "protocol": "saml", "config": {}}, "config", "exactly one IdP source"),
        (
            {
                "name": "x",
                "protocol": "saml",
                "config": {
                    "idp_metadata_xml": idp_metadata("https://idp.acme.test", pem),
                    "idp_metadata_url": sso_stack.metadata.url("/saml"),
                },
            },
            "config",
            "exactly one IdP source",
        ),
        (
            {
                "name": "x",
                "protocol": "saml",
                "config": {"idp_entity_id": "https://idp.acme.test", "idp_sso_url": "https://i/s"},
            },
            "config.idp_certificate",
            "is required",
        ),
        (
            {
                "name": "x",
                "protocol": "saml",
                "config": {
                    "idp_entity_id": "https://idp.acme.test",
                    "idp_sso_url": "https://idp.acme.test/sso",
                    "idp_certificate": "-----BEGIN CERTIFICATE-----\nbm9wZQ==\n-----END CERTIFICATE-----",
                },
            },
            "config.idp_certificate",
            "not a readable X.509 certificate",
        ),
        (
            {
                "name": "x",
                "protocol": "saml",
                "config": {
                    "idp_metadata_xml": '<!DOCTYPE x [<!ENTITY e "boom">]><x>&e;</x>',
                },
            },
            "config.idp_metadata_xml",
            "DOCTYPE",
        ),
        (
            {"name": "x", "protocol": "saml", "config": {"idp_metadata_xml": "<nope/>"}},
            "config.idp_metadata_xml",
            "EntityDescriptor",
        ),
    ]
    async with sso_stack.http() as http:
        for body, field_name, reason in cases:
            answer = await http.post("/v1/org/sso/providers", json=body, headers=owner)
            assert answer.status_code == 422, (field_name, answer.text)
            fields = problem_fields(answer)
            assert field_name in fields, (field_name, fields)
            assert reason in fields[field_name], (field_name, fields)
            assert SECRET not in answer.text
        assert (await http.get("/v1/org/sso/providers", headers=owner)).json() == []

        created = await http.post("/v1/org/sso/providers", json=oidc_body(sso_stack), headers=owner)
        provider = f"/v1/org/sso/providers/{created.json()['id']}"
        again = await http.post("/v1/org/sso/providers", json=oidc_body(sso_stack), headers=owner)
        assert problem_fields(again) == {"name": "an identity provider named 'Okta' exists"}
        fixed = await http.patch(provider, json={"protocol": "saml"}, headers=owner)
        assert "fixed once created" in problem_fields(fixed)["protocol"]
        bad = await http.patch(provider, json={"config": {"issuer": "ftp://x"}}, headers=owner)
        assert "config.issuer" in problem_fields(bad)
        # Nothing of the refused changes stuck.
        read = (await http.get(provider, headers=owner)).json()
        assert read["protocol"] == "oidc"
        assert read["config"]["issuer"] == sso_stack.metadata.url("/oidc")


async def test_a_saml_provider_from_a_metadata_url_or_typed_fields(sso_stack: SsoStack) -> None:
    org = await make_org(sso_stack.engine)
    owner = org["owner"].headers
    pem = certificate_pem()
    xml = idp_metadata("https://idp.acme.test/metadata", pem)
    path = f"/metadata/{org.slug}"
    sso_stack.metadata.documents[path] = (200, xml.encode())
    async with sso_stack.http() as http:
        missing = await http.post(
            "/v1/org/sso/providers",
            json={
                "name": "Entra",
                "protocol": "saml",
                "config": {"idp_metadata_url": sso_stack.metadata.url("/none")},
            },
            headers=owner,
        )
        assert "HTTP 404" in problem_fields(missing)["config.idp_metadata_url"]
        elsewhere = await http.post(
            "/v1/org/sso/providers",
            json={
                "name": "Entra",
                "protocol": "saml",
                "config": {"idp_metadata_url": f"http://127.0.0.1:{free_port()}/m"},
            },
            headers=owner,
        )
        assert "config.idp_metadata_url" in problem_fields(elsewhere)

        created = await http.post(
            "/v1/org/sso/providers",
            json={
                "name": "Entra",
                "protocol": "saml",
                "config": {"idp_metadata_url": sso_stack.metadata.url(path)},
            },
            headers=owner,
        )
        assert created.status_code == 201, created.text
        body = created.json()
        base = f"{PUBLIC_URL}/v1/sso/{org.slug}/{body['id']}"
        assert body["sp_entity_id"] == body["sp_metadata_url"] == f"{base}/saml/metadata"
        assert body["acs_url"] == f"{base}/saml/acs"
        assert body["redirect_uri"] is None
        assert body["client_secret_set"] is False
        assert "idp_metadata_xml" not in body["config"]  # the server's copy, not shown
        async with session_factory(sso_stack.engine)() as session, session.begin():
            await bind_org(session, org.id)
            stored = (
                await session.exec(  # type: ignore[call-overload]
                    text("SELECT config FROM identity_providers WHERE id = :id").bindparams(
                        id=uuid.UUID(body["id"])
                    )
                )
            ).one()[0]
        assert stored["idp_metadata_xml"] == xml  # fetched once, kept

        typed = await http.post(
            "/v1/org/sso/providers",
            json={
                "name": "Typed",
                "protocol": "saml",
                "config": {
                    "idp_entity_id": "https://idp.acme.test",
                    "idp_sso_url": "https://idp.acme.test/sso",
                    "idp_certificate": pem,
                },
            },
            headers=owner,
        )
        assert typed.status_code == 201, typed.text
        # A new certificate alone: the entity id and SSO URL stay.
        rotated = await http.patch(
            f"/v1/org/sso/providers/{typed.json()['id']}",
            json={"config": {"idp_certificate": certificate_pem("idp2.acme.test")}},
            headers=owner,
        )
        assert rotated.status_code == 200, rotated.text
        assert rotated.json()["config"]["idp_entity_id"] == "https://idp.acme.test"
        # Another source replaces the typed fields.
        switched = await http.patch(
            f"/v1/org/sso/providers/{typed.json()['id']}",
            json={"config": {"idp_metadata_xml": xml}},
            headers=owner,
        )
        assert switched.status_code == 200, switched.text
        assert switched.json()["config"]["idp_entity_id"] is None
        assert switched.json()["config"]["idp_metadata_xml"] == xml


# ----------------------------------------------------------------- permissions and tenants


async def test_members_without_org_security_get_403_and_an_audit_event(
    sso_stack: SsoStack,
) -> None:
    org = await make_org(sso_stack.engine)
    calls = [
        ("GET", "/v1/org/sso/providers", None),
        ("POST", "/v1/org/sso/providers", oidc_body(sso_stack)),
        ("PUT", "/v1/org/sso", {"enforced": False}),
        ("PUT", "/v1/org/sso/group-mappings", {"mappings": []}),
        ("POST", "/v1/org/domains", {"domain": "acme.test"}),
        ("GET", "/v1/org/domains", None),
    ]
    async with sso_stack.http() as http:
        for name in ("operator", "approver", "auditor", "nobody"):
            for method, path, body in calls:
                answer = await http.request(method, path, json=body, headers=org[name].headers)
                assert answer.status_code == 403, (name, method, path, answer.text)
                assert answer.json()["code"] == "forbidden"
        assert (await http.get("/v1/org/sso", headers=org["admin"].headers)).status_code == 200
    denied = [a for a in await audit_actions(sso_stack.engine, org.id) if a[0] == "access.denied"]
    assert len(denied) == 4 * len(calls)
    assert {reason for _, outcome, reason in denied} == {"missing permission org:security"}
    assert {outcome for _, outcome, _ in denied} == {"denied"}
    assert "sso.provider_created" not in {
        a[0] for a in await audit_actions(sso_stack.engine, org.id)
    }


async def test_another_organization_cannot_read_or_change_a_provider(sso_stack: SsoStack) -> None:
    a, b = await make_org(sso_stack.engine), await make_org(sso_stack.engine)
    async with sso_stack.http() as http:
        created = await http.post(
            "/v1/org/sso/providers", json=oidc_body(sso_stack), headers=a["owner"].headers
        )
        provider = f"/v1/org/sso/providers/{created.json()['id']}"
        other = b["owner"].headers
        assert (await http.get(provider, headers=other)).status_code == 404
        patched = await http.patch(provider, json={"enabled": False}, headers=other)
        assert patched.status_code == 404
        assert (await http.delete(provider, headers=other)).status_code == 404
        assert (await http.get("/v1/org/sso/providers", headers=other)).json() == []
        assert (await http.get(provider, headers=a["owner"].headers)).json()["enabled"] is True

        claimed = await http.post(
            "/v1/org/domains", json={"domain": f"{a.slug}.test"}, headers=a["owner"].headers
        )
        assert claimed.status_code == 201
        verify = await http.post(f"/v1/org/domains/{a.slug}.test/verify", headers=other)
        assert verify.status_code == 404
        assert (
            await http.delete(f"/v1/org/domains/{a.slug}.test", headers=other)
        ).status_code == 404
        assert (await http.get("/v1/org/domains", headers=other)).json() == []


# ----------------------------------------------------------------------------- enforcement


async def test_enforcing_sso_needs_a_provider_and_a_way_back_in(sso_stack: SsoStack) -> None:
    org = await make_org(sso_stack.engine)
    owner = org["owner"].headers
    admin_id = org["admin"].user_id
    async with sso_stack.http() as http:
        none = await http.put("/v1/org/sso", json={"enforced": True}, headers=owner)
        assert none.status_code == 409
        assert none.json()["code"] == "no_enabled_provider"
        created = await http.post("/v1/org/sso/providers", json=oidc_body(sso_stack), headers=owner)
        provider_id = created.json()["id"]
        provider = f"/v1/org/sso/providers/{provider_id}"

        # A session that signed in through the provider (as sso.flow would start it), and one
        # that did not.
        through = cookie_headers(
            sso_stack.settings,
            await start_test_session(sso_stack.engine, org["owner"].user_id, org.id),
        )
        await run_sql(
            sso_stack.engine,
            "UPDATE user_sessions SET sso_org_id = :o, sso_provider_id = :provider "
            "WHERE user_id = :user AND org_id = :o",
            o=org.id,
            provider=uuid.UUID(provider_id),
            user=org["owner"].user_id,
        )
        plain = cookie_headers(
            sso_stack.settings,
            await start_test_session(sso_stack.engine, org["owner"].user_id, org.id),
        )
        # No break-glass admin: only from a session that signed in through the provider.
        for unproven_caller in (owner, plain):
            unproven = await http.put(
                "/v1/org/sso", json={"enforced": True}, headers=unproven_caller
            )
            assert unproven.status_code == 409
            assert unproven.json()["code"] == "sso_unproven"
        for user_id, reason in [
            (uuid.uuid4(), "is not a member of this organization"),
            (org["operator"].user_id, "must be an owner or admin"),
            (admin_id, "has no two-factor sign-in"),
        ]:
            refused = await http.put(
                "/v1/org/sso",
                json={"enforced": True, "break_glass_user_ids": [str(user_id)]},
                headers=owner,
            )
            assert refused.status_code == 422, refused.text
            assert reason in problem_fields(refused)["break_glass_user_ids.0"]
        assert (await http.get("/v1/org/sso", headers=owner)).json()["enforced"] is False

        await run_sql(
            sso_stack.engine,
            "UPDATE users SET totp_enabled_at = now() WHERE id = :id",
            id=admin_id,
        )
        enforced = await http.put(
            "/v1/org/sso",
            json={"enforced": True, "break_glass_user_ids": [str(admin_id)]},
            headers=owner,
        )
        assert enforced.status_code == 200, enforced.text
        assert enforced.json() == {
            "enforced": True,
            "break_glass_user_ids": [str(admin_id)],
            "enabled_providers": 1,
        }
        # From now on the owner's key (the provider does not have them) is refused, not the
        # session that came through the provider.
        assert (await http.get("/v1/org/sso", headers=owner)).status_code == 403
        assert (await http.get("/v1/org/sso", headers=through)).json() == enforced.json()

        # The last enabled provider of an enforcing organization stays.
        disabled = await http.patch(provider, json={"enabled": False}, headers=through)
        assert disabled.status_code == 409
        assert disabled.json()["code"] == "sso_enforced"
        assert (await http.delete(provider, headers=through)).status_code == 409

        proven = await http.put(
            "/v1/org/sso", json={"enforced": True, "break_glass_user_ids": []}, headers=through
        )
        assert proven.status_code == 200, proven.text
        assert proven.json()["break_glass_user_ids"] == []

        off = await http.put("/v1/org/sso", json={"enforced": False}, headers=through)
        assert off.status_code == 200
        assert off.json()["enforced"] is False
        again = await http.patch(provider, json={"enabled": False}, headers=owner)
        assert again.status_code == 200

    events = [(a, json.loads(d)) for a, d, _ in await audit_rows(sso_stack.engine, org.id)]
    enforcement = [d for a, d in events if a == "org.sso_enforcement_changed"]
    assert enforcement == [
        {"enforced": {"before": False, "after": True}},
        {"enforced": {"before": True, "after": False}},
    ]
    glass = [d for a, d in events if a == "org.sso_break_glass_changed"]
    assert [g["added"] for g in glass] == [[str(admin_id)], []]
    assert [g["removed"] for g in glass] == [[], [str(admin_id)]]


# --------------------------------------------------------------------------- group mappings


async def test_group_mappings_are_replaced_whole_and_checked(sso_stack: SsoStack) -> None:
    org, other = await make_org(sso_stack.engine), await make_org(sso_stack.engine)
    groups = {}
    for target in (org, other):
        ctx = OrgContext(org_id=OrgId(target.id), user_id=None, roles=(), auth=AuthMethod.SYSTEM)
        async with session_factory(sso_stack.engine)() as session, session.begin():
            group = await create_group(ctx, session, "finance")
            assert group is not None
            groups[target.id] = str(group.id)
    owner, admin = org["owner"].headers, org["admin"].headers
    table = [
        {"idp_group": "eng", "roles": ["approver", "operator"], "member_group_id": None},
        {"idp_group": "Finance", "roles": [], "member_group_id": groups[org.id]},
    ]
    path = "/v1/org/sso/group-mappings"
    async with sso_stack.http() as http:
        assert (await http.get(path, headers=owner)).json() == {"mappings": []}
        saved = await http.put(path, json={"mappings": table}, headers=admin)
        assert saved.status_code == 200, saved.text
        # Roles in the table's canonical order; rows by group name.
        expected = sorted(
            [
                {"idp_group": "eng", "roles": ["operator", "approver"], "member_group_id": None},
                table[1],
            ],
            key=lambda r: r["idp_group"],
        )
        assert saved.json()["mappings"] == expected
        assert (await http.get(path, headers=owner)).json()["mappings"] == expected

        for rows, field_name, reason in [
            ([table[0], table[0]], "mappings.1.idp_group", "appears twice"),
            (
                [{"idp_group": "x", "member_group_id": groups[other.id]}],
                "mappings.0.member_group_id",
                "not a member group of this organization",
            ),
            ([{"idp_group": "x", "roles": ["superuser"]}], "mappings.0.roles.0", "Input should"),
            ([{"idp_group": "x"}], "mappings.0", "grants nothing"),
        ]:
            refused = await http.put(path, json={"mappings": rows}, headers=owner)
            assert refused.status_code == 422, refused.text
            assert reason in problem_fields(refused)[field_name]

        owners = {"mappings": [{"idp_group": "root", "roles": ["owner"]}]}
        by_admin = await http.put(path, json=owners, headers=admin)
        assert by_admin.status_code == 403, by_admin.text
        assert (await http.get(path, headers=owner)).json()["mappings"] == expected
        by_owner = await http.put(path, json=owners, headers=owner)
        assert by_owner.status_code == 200
        # The owner's row stays when an admin adds another.
        kept = {"mappings": [*owners["mappings"], {"idp_group": "ops", "roles": ["operator"]}]}
        assert (await http.put(path, json=kept, headers=admin)).status_code == 200
        assert (await http.put(path, json={"mappings": []}, headers=owner)).json() == {
            "mappings": []
        }

    actions = await audit_actions(sso_stack.engine, org.id)
    assert [a for a, _, _ in actions].count("sso.group_mappings_changed") == 4
    assert ("access.denied", "denied", "mapping an IdP group to the owner role needs org:own") in (
        actions
    )
    first = next(
        json.loads(d)
        for a, d, _ in await audit_rows(sso_stack.engine, org.id)
        if a == "sso.group_mappings_changed"
    )
    assert first == {"before": [], "after": expected}


# ---------------------------------------------------------------------------------- domains


async def test_a_domain_is_claimed_then_proved_by_its_txt_record(
    sso_stack: SsoStack, dns_server: DnsServer
) -> None:
    org = await make_org(sso_stack.engine)
    owner = org["owner"].headers
    domain = f"{org.slug}.example"
    async with sso_stack.http() as http:
        bad = await http.post("/v1/org/domains", json={"domain": "not a domain"}, headers=owner)
        assert "domain" in problem_fields(bad)
        claimed = await http.post("/v1/org/domains", json={"domain": domain.upper()}, headers=owner)
        assert claimed.status_code == 201, claimed.text
        body = claimed.json()
        assert body["domain"] == domain
        assert body["verified"] is False
        assert body["txt_record_name"] == f"_blocks-challenge.{domain}"
        assert body["txt_record_value"].startswith("blocks-domain-verification=")
        twice = await http.post("/v1/org/domains", json={"domain": domain}, headers=owner)
        assert twice.status_code == 409
        assert twice.json()["code"] == "domain_claimed"

        verify = f"/v1/org/domains/{domain}/verify"
        absent = await http.post(verify, headers=owner)  # NXDOMAIN
        assert absent.status_code == 409
        assert absent.json()["code"] == "domain_not_verified"
        assert body["txt_record_value"] in absent.json()["detail"]
        assert body["txt_record_name"] in absent.json()["detail"]
        # The record at the apex does not count: the convention is the _blocks-challenge name.
        dns_server.publish(domain, body["txt_record_value"])
        dns_server.publish(body["txt_record_name"], "v=spf1 -all")
        wrong = await http.post(verify, headers=owner)
        assert wrong.status_code == 409
        assert "1 other TXT record" in wrong.json()["detail"]

        dns_server.publish(body["txt_record_name"], body["txt_record_value"])
        verified = await http.post(verify, headers=owner)
        assert verified.status_code == 200, verified.text
        assert verified.json()["verified"] is True
        assert verified.json()["verified_by"] == "dns"
        assert (await http.get("/v1/org/domains", headers=owner)).json() == [verified.json()]

        failing = f"{org.slug}-down.example"
        await http.post("/v1/org/domains", json={"domain": failing}, headers=owner)
        dns_server.failing.add(f"_blocks-challenge.{failing}")
        down = await http.post(f"/v1/org/domains/{failing}/verify", headers=owner)
        assert down.status_code == 503
        assert down.json()["code"] == "dns_unavailable"
        assert "Retry-After" in down.headers
        removed = await http.delete(f"/v1/org/domains/{failing}", headers=owner)
        assert removed.status_code == 204
    assert f"_blocks-challenge.{domain}" in dns_server.asked
    actions = [a for a, _, _ in await audit_actions(sso_stack.engine, org.id)]
    assert actions.count("org.domain_claimed") == 2
    assert actions.count("org.domain_verified") == 1
    assert actions.count("org.domain_removed") == 1


async def test_a_domain_verified_by_one_organization_is_refused_to_another(
    sso_stack: SsoStack, dns_server: DnsServer
) -> None:
    a, b = await make_org(sso_stack.engine), await make_org(sso_stack.engine)
    domain = f"shared-{uuid.uuid4().hex[:8]}.example"
    async with sso_stack.http() as http:
        records = []
        for org in (a, b):
            claim = await http.post(
                "/v1/org/domains", json={"domain": domain}, headers=org["owner"].headers
            )
            assert claim.status_code == 201
            records.append(claim.json())
            dns_server.publish(claim.json()["txt_record_name"], claim.json()["txt_record_value"])
        verify = f"/v1/org/domains/{domain}/verify"
        assert (await http.post(verify, headers=a["owner"].headers)).status_code == 200
        refused = await http.post(verify, headers=b["owner"].headers)
        assert refused.status_code == 409, refused.text
        assert refused.json()["code"] == "domain_verified_elsewhere"
        listed = await http.get("/v1/org/domains", headers=b["owner"].headers)
        assert listed.json()[0]["verified"] is False

        # Once A lets it go, B proves it.
        assert (
            await http.delete(f"/v1/org/domains/{domain}", headers=a["owner"].headers)
        ).status_code == 204
        assert (await http.post(verify, headers=b["owner"].headers)).status_code == 200


async def test_the_operator_attests_a_domain_without_dns(
    sso_stack: SsoStack, postgres: PostgresCredentials
) -> None:
    a, b = await make_org(sso_stack.engine), await make_org(sso_stack.engine)
    domain = f"attested-{uuid.uuid4().hex[:8]}.example"
    env = blocks_process_env(postgres.url(), "127.0.0.1:1", "unused")
    command = [
        sys.executable,
        "-c",
        "from blocks.cli.domains import app; app()",
        "domains",
        "verify",
        a.slug,
        domain,
    ]
    with running_process(command, env=env) as process:
        assert await asyncio.to_thread(process.wait, 60) == 0
    async with sso_stack.http() as http:
        listed = (await http.get("/v1/org/domains", headers=a["owner"].headers)).json()
        assert [(d["domain"], d["verified_by"]) for d in listed] == [(domain, "operator")]
    events = [e for e in await audit_rows(sso_stack.engine, a.id) if e[0].startswith("org.domain")]
    assert [(action, actor) for action, _, actor in events] == [
        ("org.domain_claimed", "cli:domains-verify"),
        ("org.domain_verified", "cli:domains-verify"),
    ]
    async with session_factory(sso_stack.engine)() as session, session.begin():
        again = await attest_domain(session, org_slug=a.slug, domain=domain)
        assert again.already
    async with session_factory(sso_stack.engine)() as session, session.begin():
        with pytest.raises(AttestRefused, match="another organization holds"):
            await attest_domain(session, org_slug=b.slug, domain=domain)
    async with session_factory(sso_stack.engine)() as session, session.begin():
        with pytest.raises(AttestRefused, match="no open organization"):
            await attest_domain(session, org_slug="no-such-org", domain=domain)
