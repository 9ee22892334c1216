"""LLM credentials through the real API: add, list, read, change, rotate, delete, with the key
write-only (last four characters shown, the key itself in no answer, no audit event and not in
clear in PostgreSQL); a base URL that is not public refused with a 422 naming `base_url` in
every spelling tried; a member without `integration:manage` refused (403, audited); a sealed key
copied to another credential's row does not open there."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment

from blocks.core.context import AuthMethod, OrgContext, OrgId
from blocks.infra.db import bind_org, session_factory
from blocks.infra.embedded.postgres import PostgresCredentials
from blocks.models.llm.credentials import CredentialKeyUnavailable, get_credential, open_api_key
from tests.e2e.llm_stack import allowed_pair, llm_stack
from tests.support import Org, Stack, audit_actions, make_org


@pytest.fixture(scope="module")
async def api(
    engine: AsyncEngine,
    temporal_env: WorkflowEnvironment,
    postgres: PostgresCredentials,
    llm_server: str,
) -> AsyncIterator[Stack]:
    async with llm_stack(
        engine=engine,
        temporal=temporal_env.client,
        database_url=postgres.url(),
        llm_base_url=llm_server,
        with_worker=False,
    ) as stack:
        yield stack


def _key() -> str:
    return f"sk-ok-{uuid.uuid4().hex}{uuid.uuid4().hex}"


def _body(base_url: str, key: str, **overrides: Any) -> dict[str, Any]:
    return {
        "name": "default",
        "provider": "openai-compatible",
        "base_url": base_url,
        "allowed_models": ["gpt-test", "gpt-test-mini"],
        "api_key": key,
        **overrides,
    }


async def _audit_texts(engine: AsyncEngine, org: Org) -> list[str]:
    """Every audit event of the organization as stored, each row as JSON text."""
    async with session_factory(engine)() as session, session.begin():
        await bind_org(session, org.id)
        rows = await session.exec(  # type: ignore[call-overload]
            text("SELECT row_to_json(e)::text FROM audit_events e ORDER BY seq")
        )
        return [r[0] for r in rows.all()]


async def _events(engine: AsyncEngine, org: Org, prefix: str) -> list[dict[str, Any]]:
    found = [json.loads(t) for t in await _audit_texts(engine, org)]
    return [e for e in found if e["action"].startswith(prefix)]


async def test_a_credential_is_added_listed_changed_rotated_and_deleted_with_the_key_write_only(
    api: Stack, engine: AsyncEngine, llm_server: str
) -> None:
    org = await make_org(engine)
    admin = org["admin"].headers
    first, second = _key(), _key()
    answers: list[httpx.Response] = []
    async with api.http() as http:
        created = await http.post(
            "/v1/llm/credentials", json=_body(llm_server, first), headers=admin
        )
        answers.append(created)
        assert created.status_code == 201, created.text
        body = created.json()
        credential_id = body["id"]
        assert body["key_last4"] == first[-4:]
        assert body["base_url"] == llm_server
        assert body["api"] == "chat"
        assert body["allowed_models"] == ["gpt-test", "gpt-test-mini"]
        assert "api_key" not in body

        # The name is taken among live credentials.
        again = await http.post(
            "/v1/llm/credentials", json=_body(llm_server, _key()), headers=admin
        )
        answers.append(again)
        assert again.status_code == 422, again.text
        assert [e["field"] for e in again.json()["errors"]] == ["name"]

        listed = await http.get("/v1/llm/credentials", headers=admin)
        answers.append(listed)
        assert [c["id"] for c in listed.json()] == [credential_id]
        read = await http.get(f"/v1/llm/credentials/{credential_id}", headers=admin)
        answers.append(read)
        assert read.json() == body

        changed = await http.patch(
            f"/v1/llm/credentials/{credential_id}",
            json={"allowed_models": ["gpt-test"], "api": "responses"},
            headers=admin,
        )
        answers.append(changed)
        assert changed.status_code == 200, changed.text
        assert changed.json()["allowed_models"] == ["gpt-test"]
        assert changed.json()["api"] == "responses"
        # A new base URL is checked as when the credential was added.
        moved = await http.patch(
            f"/v1/llm/credentials/{credential_id}",
            json={"base_url": "https://169.254.169.254/v1"},
            headers=admin,
        )
        answers.append(moved)
        assert moved.status_code == 422, moved.text
        assert moved.json()["errors"][0]["field"] == "base_url"

        rotated = await http.put(
            f"/v1/llm/credentials/{credential_id}/key", json={"api_key": second}, headers=admin
        )
        answers.append(rotated)
        assert rotated.status_code == 200, rotated.text
        assert rotated.json()["key_last4"] == second[-4:]
        assert rotated.json()["rotated_at"] is not None
        assert rotated.json()["base_url"] == llm_server  # the refused move changed nothing

        ctx = OrgContext(org_id=OrgId(org.id), user_id=None, roles=(), auth=AuthMethod.WORKFLOW)
        async with session_factory(engine)() as session, session.begin():
            credential = await get_credential(ctx, session, uuid.UUID(credential_id))
            assert credential is not None
            assert await open_api_key(ctx, session, credential) == second

        deleted = await http.delete(f"/v1/llm/credentials/{credential_id}", headers=admin)
        answers.append(deleted)
        assert deleted.status_code == 200, deleted.text
        assert deleted.json()["deleted_at"] is not None
        gone = await http.get(f"/v1/llm/credentials/{credential_id}", headers=admin)
        assert gone.status_code == 404
        assert (await http.get("/v1/llm/credentials", headers=admin)).json() == []
        # The name is free again once its credential is deleted.
        reused = await http.post(
            "/v1/llm/credentials", json=_body(llm_server, _key()), headers=admin
        )
        assert reused.status_code == 201, reused.text

    actions = [e["action"] for e in await _events(engine, org, "llm.credential.")]
    assert actions == [
        "llm.credential.created",
        "llm.credential.changed",
        "llm.credential.key_rotated",
        "llm.credential.deleted",
        "llm.credential.created",
    ]
    events = await _events(engine, org, "llm.credential.")
    assert events[0]["data"]["key_last4"] == first[-4:]
    assert events[0]["data"]["base_url"] == llm_server
    assert events[1]["data"]["changed"] == ["allowed_models", "api"]
    assert events[2]["data"]["previous_key_last4"] == first[-4:]
    # Neither key in any answer, any audit event, or in clear in any credential row.
    audit = "\n".join(await _audit_texts(engine, org))
    async with session_factory(engine)() as session, session.begin():
        await bind_org(session, org.id)
        rows = await session.exec(  # type: ignore[call-overload]
            text("SELECT row_to_json(c)::text, key_sealed FROM llm_credentials c")
        )
        stored = [(r[0], bytes(r[1] or b"")) for r in rows.all()]
    assert len(stored) == 2
    deleted_row = next(row for row in stored if '"deleted_at":null' not in row[0])
    assert deleted_row[1] == b""  # a deleted credential keeps no sealed key
    for key in (first, second):
        for answer in answers:
            assert key not in answer.text
        assert key not in audit
        for row, sealed in stored:
            assert key not in row
            assert key.encode() not in sealed


# Each spelling, and what the refusal must say of it.
NON_PUBLIC = [
    ("https://127.0.0.1/v1", "loopback"),
    ("https://2130706433/v1", "resolves to 127.0.0.1"),  # one decimal number
    ("https://0x7f000001/v1", "resolves to 127.0.0.1"),  # hex
    ("https://127.1/v1", "resolves to 127.0.0.1"),  # short form
    ("https://[::1]/v1", "loopback"),
    ("https://[::ffff:127.0.0.1]/v1", "IPv4-mapped"),
    ("https://[::ffff:7f00:1]/v1", "IPv4-mapped"),
    ("https://localhost/v1", "names this machine"),
    ("https://169.254.169.254/latest/meta-data", "link-local"),  # cloud metadata
    ("https://10.0.0.7/v1", "private"),
    ("https://192.168.1.20/v1", "private"),
    ("https://100.64.0.1/v1", "carrier-grade NAT"),
    ("https://224.0.0.1/v1", "multicast"),
    ("https://0.0.0.0/v1", "unspecified"),
    ("https://user:pass@api.openai.com/v1", "user name or password"),
    ("file:///etc/passwd", "uses file://"),
]


async def test_a_base_url_that_is_not_public_is_refused_naming_the_field(
    api: Stack, engine: AsyncEngine, llm_server: str
) -> None:
    org = await make_org(engine)
    admin = org["admin"].headers
    pair = allowed_pair(llm_server)
    other_port = f"http://127.0.0.1:{int(pair.rsplit(':', 1)[1]) + 1}/v1"
    async with api.http() as http:
        for url, says in [*NON_PUBLIC, (other_port, "plain http://")]:
            refused = await http.post(
                "/v1/llm/credentials", json=_body(url, _key(), name="x"), headers=admin
            )
            assert refused.status_code == 422, (url, refused.text)
            problem = refused.json()
            assert problem["errors"][0]["field"] == "base_url", (url, problem)
            assert says in problem["errors"][0]["reason"], (url, problem)
            assert problem["detail"].startswith("base_url: "), url
        # The allowed loopback pair is accepted, exactly that one.
        accepted = await http.post(
            "/v1/llm/credentials", json=_body(llm_server, _key()), headers=admin
        )
        assert accepted.status_code == 201, accepted.text
        listed = (await http.get("/v1/llm/credentials", headers=admin)).json()
    assert [c["name"] for c in listed] == ["default"]  # nothing was created by a refusal
    assert await _events(engine, org, "llm.credential.") != []
    assert len(await _events(engine, org, "llm.credential.")) == 1


async def test_members_without_integration_manage_are_refused_and_audited(
    api: Stack, engine: AsyncEngine, llm_server: str
) -> None:
    org, other = await make_org(engine), await make_org(engine)
    key = _key()
    async with api.http() as http:
        created = await http.post(
            "/v1/llm/credentials", json=_body(llm_server, key), headers=org["owner"].headers
        )
        assert created.status_code == 201, created.text
        credential_id = created.json()["id"]
        for who in ("approver", "auditor", "operator"):
            headers = org[who].headers
            calls = [
                await http.get("/v1/llm/credentials", headers=headers),
                await http.get(f"/v1/llm/credentials/{credential_id}", headers=headers),
                await http.post(
                    "/v1/llm/credentials", json=_body(llm_server, _key(), name="b"), headers=headers
                ),
                await http.put(
                    f"/v1/llm/credentials/{credential_id}/key",
                    json={"api_key": _key()},
                    headers=headers,
                ),
                await http.delete(f"/v1/llm/credentials/{credential_id}", headers=headers),
            ]
            for call in calls:
                assert call.status_code == 403, (who, call.request.method, call.text)
                assert key not in call.text
        # Another organization's admin does not see it at all.
        foreign = await http.get(
            f"/v1/llm/credentials/{credential_id}", headers=other["admin"].headers
        )
        assert foreign.status_code == 404
        assert (await http.get("/v1/llm/credentials", headers=other["admin"].headers)).json() == []
        still = await http.get(f"/v1/llm/credentials/{credential_id}", headers=org["admin"].headers)
        assert still.json()["key_last4"] == key[-4:]
    denials = [
        reason
        for action, outcome, reason in await audit_actions(engine, org.id)
        if action == "access.denied" and outcome == "denied"
    ]
    assert len(denials) == 15
    assert set(denials) == {"missing permission integration:manage"}


async def test_a_sealed_key_moved_to_another_credential_does_not_open(
    api: Stack, engine: AsyncEngine, llm_server: str
) -> None:
    org = await make_org(engine)
    first, second = _key(), _key()
    async with api.http() as http:
        ids = []
        for name, key in (("one", first), ("two", second)):
            created = await http.post(
                "/v1/llm/credentials",
                json=_body(llm_server, key, name=name),
                headers=org["admin"].headers,
            )
            assert created.status_code == 201, created.text
            ids.append(uuid.UUID(created.json()["id"]))
    async with session_factory(engine)() as session, session.begin():
        await bind_org(session, org.id)
        await session.exec(  # type: ignore[call-overload]
            text(
                "UPDATE llm_credentials SET key_sealed = "
                "(SELECT key_sealed FROM llm_credentials WHERE id = :one) WHERE id = :two"
            ).bindparams(one=ids[0], two=ids[1])
        )
    ctx = OrgContext(org_id=OrgId(org.id), user_id=None, roles=(), auth=AuthMethod.WORKFLOW)
    async with session_factory(engine)() as session, session.begin():
        one = await get_credential(ctx, session, ids[0])
        two = await get_credential(ctx, session, ids[1])
        assert one is not None
        assert two is not None
        assert await open_api_key(ctx, session, one) == first
        with pytest.raises(CredentialKeyUnavailable, match="does not open"):
            await open_api_key(ctx, session, two)
