"""Privacy erasure on real PostgreSQL: personal fields sealed per person, erased, chain intact."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, replace
from typing import Any

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from blocks.core.audit.chain import first_broken_link
from blocks.core.audit.records import ActorType, AuditRecord
from blocks.core.context import AuthMethod, OrgContext, OrgId
from blocks.core.roles import Role
from blocks.infra.db import bind_org, session_factory
from blocks.infra.embedded.postgres import PostgresCredentials
from blocks.models.audit.events import AuditEvent, append_events, hashed_payload, list_events
from blocks.models.audit.personal_data import ERASED, UNREADABLE, reveal
from blocks.models.identity.orgs import add_member
from tests.support import EXPENSE, Member, Org, Stack, audit_actions, make_org, wait_for_audit

UA = "ErasureTest/1.0 (personal)"
CONFIRM = {"confirm": True}


def _ctx(org_id: uuid.UUID) -> OrgContext:
    return OrgContext(org_id=OrgId(org_id), user_id=None, roles=(), auth=AuthMethod.SYSTEM)


def _headers(member: Member) -> dict[str, str]:
    return {**member.headers, "User-Agent": UA}


def _erase_path(user_id: uuid.UUID) -> str:
    return f"/v1/members/{user_id}/erase-personal-data"


async def _start_run(stack: Stack, member: Member, org: Org) -> str:
    async with stack.http() as http:
        response = await http.post(
            "/v1/runs",
            json={"workflow": "expense_approval", "input": EXPENSE},
            headers=_headers(member),
        )
    assert response.status_code == 201, response.text
    run_id = str(response.json()["id"])
    # The workflow writes run.started itself, at its first flush.
    await wait_for_audit(stack.engine, org.id, "run.started", run_id=run_id)
    return run_id


async def _api_events(stack: Stack, org: Org) -> list[dict[str, Any]]:
    async with stack.http() as http:
        response = await http.get("/v1/audit-events?limit=1000", headers=_headers(org["auditor"]))
    assert response.status_code == 200, response.text
    return list(response.json()["events"])


async def _stored(engine: AsyncEngine, org_id: uuid.UUID) -> list[AuditEvent]:
    async with session_factory(engine)() as session, session.begin():
        return await list_events(_ctx(org_id), session, limit=100_000)


def _chain_breaks_at(events: list[AuditEvent]) -> int | None:
    return first_broken_link(
        [(hashed_payload(e.model_dump()), e.prev_hash, e.hash) for e in events]
    )


@dataclass(frozen=True)
class RawRow:
    id: uuid.UUID
    action: str
    actor_id: str | None
    actor_email: str | None
    ip: str | None
    user_agent: str | None
    hash: str


async def _raw_rows(postgres: PostgresCredentials, org_id: uuid.UUID) -> list[RawRow]:
    """The table as stored, read as the superuser (no row-level security, no Blocks code)."""
    async with await psycopg.AsyncConnection.connect(postgres.url(superuser=True)) as conn:
        cursor = await conn.execute(
            "SELECT id, action, actor_id, actor_email, ip, user_agent, hash FROM audit_events "
            "WHERE org_id = %s ORDER BY seq",
            (org_id,),
        )
        return [RawRow(*row) for row in await cursor.fetchall()]


async def _raw_keys(
    postgres: PostgresCredentials, org_id: uuid.UUID, user_id: uuid.UUID
) -> list[tuple[uuid.UUID, bytes | None, Any]]:
    async with await psycopg.AsyncConnection.connect(postgres.url(superuser=True)) as conn:
        cursor = await conn.execute(
            "SELECT key_id, wrapped_key, erased_at FROM audit_subject_keys "
            "WHERE org_id = %s AND user_id = %s ORDER BY created_at",
            (org_id, user_id),
        )
        return list(await cursor.fetchall())


@dataclass(frozen=True)
class Shown:
    """What `reveal` reads of a stored row, so a test can move values between rows."""

    id: uuid.UUID
    actor_type: str
    actor_id: str | None
    actor_email: str | None
    ip: str | None
    user_agent: str | None

    @classmethod
    def of(cls, event: AuditEvent) -> Shown:
        return cls(
            event.id,
            event.actor_type,
            event.actor_id,
            event.actor_email,
            event.ip,
            event.user_agent,
        )


def _by(events: list[dict[str, Any]], action: str, actor: Member) -> list[dict[str, Any]]:
    return [e for e in events if e["action"] == action and e["actor_id"] == str(actor.user_id)]


def _key_id(stored: str) -> str:
    assert stored.startswith("enc:v1:"), stored
    return stored.split(":")[2]


async def test_personal_fields_are_ciphertext_in_the_table_and_plaintext_through_the_api(
    stack: Stack, postgres: PostgresCredentials
) -> None:
    org = await make_org(stack.engine)
    operator = org["operator"]
    run_id = await _start_run(stack, operator, org)

    raw = [r for r in await _raw_rows(postgres, org.id) if r.actor_id == str(operator.user_id)]
    assert [r.action for r in raw] == ["run.started"]
    for value in (raw[0].actor_email, raw[0].ip, raw[0].user_agent):
        assert str(value).startswith("enc:v1:"), value
    assert operator.email not in str(raw[0])
    assert UA not in str(raw[0])
    assert "127.0.0.1" not in str(raw[0])
    # One key per person: the three fields name the same key, each with its own nonce.
    assert len({_key_id(v) for v in (raw[0].actor_email, raw[0].ip, raw[0].user_agent)}) == 1
    # Workflow events carry no personal fields and stay plain.
    assert all(
        r.actor_email is None
        for r in await _raw_rows(postgres, org.id)
        if r.actor_id != str(operator.user_id)
    )

    [shown] = _by(await _api_events(stack, org), "run.started", operator)
    assert shown["run_id"] == run_id
    assert (shown["actor_email"], shown["ip"], shown["user_agent"]) == (
        operator.email,
        "127.0.0.1",
        UA,
    )
    assert shown["personal_data_erased"] is False
    # The API shows the stored row's hash; the hash covers the ciphertext, so rows verify alone.
    assert shown["hash"] == raw[0].hash
    assert _chain_breaks_at(await _stored(stack.engine, org.id)) is None


async def test_erasure_makes_past_fields_read_erased_and_leaves_rows_and_chain_intact(
    stack: Stack, postgres: PostgresCredentials
) -> None:
    org = await make_org(stack.engine)
    operator, approver, admin = org["operator"], org["approver"], org["admin"]
    await _start_run(stack, operator, org)
    async with stack.http() as http:
        # An approver may not read the audit log: a denial, audited with the approver's fields.
        denied = await http.get("/v1/audit-events", headers=_headers(approver))
        assert denied.status_code == 403
    before = await _raw_rows(postgres, org.id)
    [old_key] = await _raw_keys(postgres, org.id, operator.user_id)

    async with stack.http() as http:
        response = await http.post(
            _erase_path(operator.user_id), json=CONFIRM, headers=_headers(admin)
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["user_id"] == str(operator.user_id)
    assert (body["keys_erased"], body["events_unreadable"], body["events_in_plaintext"]) == (
        1,
        1,
        0,
    )

    # Not one stored byte of the earlier rows changed; the key is a tombstone.
    after = await _raw_rows(postgres, org.id)
    assert after[: len(before)] == before
    [tombstone] = await _raw_keys(postgres, org.id, operator.user_id)
    assert tombstone[0] == old_key[0]
    assert tombstone[1] is None
    assert tombstone[2] is not None

    events = await _api_events(stack, org)
    [started] = _by(events, "run.started", operator)
    assert (started["actor_email"], started["ip"], started["user_agent"]) == (ERASED,) * 3
    assert started["personal_data_erased"] is True
    assert started["actor_id"] == str(operator.user_id)  # the pseudonymous id stays
    # Someone else's fields still decrypt.
    [denial] = _by(events, "access.denied", approver)
    assert (denial["actor_email"], denial["user_agent"]) == (approver.email, UA)
    assert denial["personal_data_erased"] is False
    # The erasure is audited, by the admin, without the erased person's personal data.
    [erased] = _by(events, "privacy.erased", admin)
    assert erased["target_id"] == str(operator.user_id)
    assert erased["actor_email"] == admin.email
    assert erased["data"] == {
        "keys_erased": 1,
        "events_unreadable": 1,
        "events_in_plaintext": 0,
        "identity_provider_records_cleared": 0,
    }
    raw_erased = next(r for r in after if r.action == "privacy.erased")
    assert operator.email not in str(raw_erased)

    # The person's next event gets a fresh key and reads in plain through the API.
    await _start_run(stack, operator, org)
    keys = await _raw_keys(postgres, org.id, operator.user_id)
    assert len(keys) == 2
    assert keys[0][1] is None
    assert keys[1][1] is not None
    assert keys[1][2] is None
    assert keys[1][0] != old_key[0]
    newest = [r for r in await _raw_rows(postgres, org.id) if r.actor_id == str(operator.user_id)]
    assert _key_id(str(newest[-1].actor_email)) == keys[1][0].hex
    started_events = _by(await _api_events(stack, org), "run.started", operator)
    assert [e["actor_email"] for e in started_events] == [ERASED, operator.email]

    # The chain verifies from stored rows, with no key, and still catches a changed ciphertext.
    stored = await _stored(stack.engine, org.id)
    assert _chain_breaks_at(stored) is None
    links = [(hashed_payload(e.model_dump()), e.prev_hash, e.hash) for e in stored]
    index = next(i for i, e in enumerate(stored) if e.action == "run.started")
    swapped = {**links[index][0], "actor_email": stored[-1].actor_email}
    assert (
        first_broken_link([*links[:index], (swapped, *links[index][1:]), *links[index + 1 :]])
        == index
    )

    # Erasure is idempotent: a second request finds no live key and destroys nothing.
    async with stack.http() as http:
        again = await http.post(
            _erase_path(approver.user_id), json=CONFIRM, headers=_headers(org["owner"])
        )
        assert again.status_code == 200
        assert again.json()["keys_erased"] == 1
        again = await http.post(
            _erase_path(approver.user_id), json=CONFIRM, headers=_headers(org["owner"])
        )
        assert again.status_code == 200
        assert again.json()["keys_erased"] == 0


async def test_erasure_is_per_organization_and_never_reaches_another(
    stack: Stack, engine: AsyncEngine
) -> None:
    org_a, org_b = await make_org(engine), await make_org(engine)
    # One person, a member of both organizations.
    person = org_a["operator"]
    async with session_factory(engine)() as session, session.begin():
        ctx_b = OrgContext(
            org_id=OrgId(org_b.id), user_id=None, roles=(Role.OWNER,), auth=AuthMethod.SYSTEM
        )
        user, _ = await add_member(
            ctx_b, session, email=person.email, display_name="twice", roles=[Role.OPERATOR]
        )
        assert user.id == person.user_id
        await append_events(
            ctx_b,
            session,
            [
                AuditRecord(
                    action="member.signed_in",
                    actor_type=ActorType.USER,
                    actor_id=str(person.user_id),
                    actor_email=person.email,
                    ip="10.0.0.9",
                    user_agent=UA,
                )
            ],
        )
    await _start_run(stack, person, org_a)

    async with stack.http() as http:
        # B's admin cannot reach A's people (nor anyone unknown): the same 404 for all.
        for user_id in (org_a["approver"].user_id, org_a["owner"].user_id):
            response = await http.post(
                _erase_path(user_id), json=CONFIRM, headers=_headers(org_b["admin"])
            )
            assert response.status_code == 404, response.text
            assert response.json()["code"] == "not_found"
        unknown = await http.post(
            _erase_path(uuid.uuid4()), json=CONFIRM, headers=_headers(org_b["admin"])
        )
        assert unknown.status_code == 404
        # A's admin erases the shared person in A only.
        erased = await http.post(
            _erase_path(person.user_id), json=CONFIRM, headers=_headers(org_a["admin"])
        )
        assert erased.status_code == 200, erased.text

    [in_a] = _by(await _api_events(stack, org_a), "run.started", person)
    assert in_a["actor_email"] == ERASED
    [in_b] = _by(await _api_events(stack, org_b), "member.signed_in", person)
    assert (in_b["actor_email"], in_b["ip"], in_b["user_agent"]) == (person.email, "10.0.0.9", UA)
    # A's approver, whom B's admin tried to erase, is untouched.
    async with stack.http() as http:
        await http.get("/v1/audit-events", headers=_headers(org_a["approver"]))
    [denial] = _by(await _api_events(stack, org_a), "access.denied", org_a["approver"])
    assert denial["actor_email"] == org_a["approver"].email


async def test_only_owners_and_admins_may_erase_and_a_refusal_is_audited(stack: Stack) -> None:
    org = await make_org(stack.engine)
    target = org["operator"]
    await _start_run(stack, target, org)
    async with stack.http() as http:
        for name in ("approver", "auditor", "operator"):
            response = await http.post(
                _erase_path(target.user_id), json=CONFIRM, headers=_headers(org[name])
            )
            assert response.status_code == 403, f"{name}: {response.text}"
    denials = [a for a in await audit_actions(stack.engine, org.id) if a[0] == "access.denied"]
    assert ("access.denied", "denied", "missing permission privacy:erase") in denials
    assert len(denials) == 3
    [started] = _by(await _api_events(stack, org), "run.started", target)
    assert started["actor_email"] == target.email
    assert not any(a[0] == "privacy.erased" for a in await audit_actions(stack.engine, org.id))


@pytest.mark.parametrize(
    "body",
    [None, {}, {"confirm": False}, {"confirm": "true"}, {"confirm": 1}, {**CONFIRM, "also": 1}],
)
async def test_erasure_needs_an_explicit_confirmation(
    stack: Stack, postgres: PostgresCredentials, body: dict[str, Any] | None
) -> None:
    org = await make_org(stack.engine)
    target = org["operator"]
    await _start_run(stack, target, org)
    async with stack.http() as http:
        response = await http.post(
            _erase_path(target.user_id), json=body, headers=_headers(org["admin"])
        )
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_error"
    [(_, wrapped, erased_at)] = await _raw_keys(postgres, org.id, target.user_id)
    assert wrapped is not None
    assert erased_at is None


async def test_concurrent_first_events_of_a_person_share_one_key(engine: AsyncEngine) -> None:
    """Keys are created lazily; racing first appends must agree on one key, not fail or fork."""
    org = await make_org(engine)
    person = org["approver2"]
    writers = 8  # within the session engine's pool, so all of them hold a connection at once
    ready = asyncio.Barrier(writers)

    async def first_event(n: int) -> None:
        async with session_factory(engine)() as session, session.begin():
            await bind_org(session, org.id)  # connected and in a transaction before the race
            await ready.wait()
            await append_events(
                _ctx(org.id),
                session,
                [
                    AuditRecord(
                        action=f"probe.{n}",
                        actor_type=ActorType.USER,
                        actor_id=str(person.user_id),
                        actor_email=person.email,
                    )
                ],
            )

    await asyncio.gather(*(first_event(n) for n in range(writers)))
    stored = await _stored(engine, org.id)
    assert len(stored) == writers
    assert _chain_breaks_at(stored) is None
    assert len({_key_id(str(e.actor_email)) for e in stored}) == 1
    async with session_factory(engine)() as session, session.begin():
        shown = await reveal(_ctx(org.id), session, stored)
    assert {s.actor_email for s in shown} == {person.email}


async def test_a_ciphertext_moved_to_another_event_or_field_does_not_open(
    engine: AsyncEngine,
) -> None:
    org = await make_org(engine)
    person = org["approver"]
    records = [
        AuditRecord(
            action=f"probe.{n}",
            actor_type=ActorType.USER,
            actor_id=str(person.user_id),
            actor_email=f"{n}-{person.email}",
            ip=f"10.0.0.{n}",
        )
        for n in range(2)
    ]
    async with session_factory(engine)() as session, session.begin():
        await append_events(_ctx(org.id), session, records)
    first, second = (Shown.of(e) for e in await _stored(engine, org.id))
    moved = [
        replace(first, actor_email=second.actor_email),  # another event's
        replace(first, actor_email=first.ip),  # another field's
        replace(first, actor_id=str(org["operator"].user_id)),  # claimed by another person
    ]
    async with session_factory(engine)() as session, session.begin():
        shown = await reveal(_ctx(org.id), session, [first, *moved])
    assert shown[0].actor_email == f"0-{person.email}"
    assert shown[0].ip == "10.0.0.0"
    assert [s.actor_email for s in shown[1:]] == [UNREADABLE] * 3


async def test_a_user_actor_with_personal_fields_but_no_user_id_is_refused(
    engine: AsyncEngine,
) -> None:
    org = await make_org(engine)
    async with session_factory(engine)() as session, session.begin():
        with pytest.raises(ValueError, match=r"users\.id"):
            await append_events(
                _ctx(org.id),
                session,
                [AuditRecord(action="x", actor_type=ActorType.USER, actor_id="bob", ip="1.2.3.4")],
            )
        with pytest.raises(ValueError, match="longer than 320"):
            await append_events(
                _ctx(org.id),
                session,
                [AuditRecord(action="x", actor_type=ActorType.SYSTEM, actor_email="a" * 321)],
            )


async def test_the_key_table_allows_erasure_only(engine: AsyncEngine) -> None:
    org = await make_org(engine)
    person = org["approver"]
    async with session_factory(engine)() as session, session.begin():
        await append_events(
            _ctx(org.id),
            session,
            [
                AuditRecord(
                    action="probe",
                    actor_type=ActorType.USER,
                    actor_id=str(person.user_id),
                    ip="10.1.1.1",
                )
            ],
        )

    async def attempt(statement: str) -> None:
        async with session_factory(engine)() as session, session.begin():
            await bind_org(session, org.id)
            await session.exec(  # type: ignore[call-overload]
                text(statement).bindparams(user_id=person.user_id)
            )

    for statement in (
        "UPDATE audit_subject_keys SET user_id = gen_random_uuid() WHERE user_id = :user_id",
        "DELETE FROM audit_subject_keys WHERE user_id = :user_id",
    ):
        with pytest.raises(DBAPIError, match="allows only erasure"):
            await attempt(statement)
    await attempt(
        "UPDATE audit_subject_keys SET wrapped_key = NULL, erased_at = now() WHERE user_id = :user_id"
    )
    with pytest.raises(DBAPIError, match="allows only erasure"):
        await attempt(  # no resurrection of an erased key
            "UPDATE audit_subject_keys SET wrapped_key = '\\x00', erased_at = NULL "
            "WHERE user_id = :user_id"
        )
