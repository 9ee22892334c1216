"""Webhook destinations through the real API: the signing secret shown once (at creation and at
each rotation) and otherwise in no answer, no audit event and not in clear in PostgreSQL;
`live_secrets` gives both secrets during a rotation's overlap and only the new one after it; a
URL that is not public refused with a 422 naming `url`, an unknown event type with one naming
`event_types`, each leaving nothing behind; a member without `integration:manage` refused (403,
audited); another organization's destination a 404; the delivery log paged newest first."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from blocks.core.context import AuthMethod, OrgContext, OrgId
from blocks.infra.db import bind_org, session_factory
from blocks.models.base import utcnow
from blocks.models.integrations.webhooks import DestinationNotFound, live_secrets
from tests.support import Org, Stack, audit_actions, make_org, run_sql

HOOKS = "/v1/integrations/webhooks"
# A public address literal: the SSRF guard admits it without a DNS lookup, and nothing here
# connects to it (deliveries are next session's).
PUBLIC_URL = "https://8.8.8.8/hooks/T0KEN-IN-THE-PATH?sig=query-token"


def _body(**overrides: Any) -> dict[str, Any]:
    return {
        "url": PUBLIC_URL,
        "description": "ledger sync",
        "event_types": ["run.completed", "step.opened"],
        **overrides,
    }


def _ctx(org: Org) -> OrgContext:
    return OrgContext(org_id=OrgId(org.id), user_id=None, roles=(), auth=AuthMethod.WORKFLOW)


async def _live(engine: AsyncEngine, org: Org, destination_id: str, **later: float) -> list[str]:
    async with session_factory(engine)() as session, session.begin():
        now = utcnow() + timedelta(**later)
        return await live_secrets(_ctx(org), session, uuid.UUID(destination_id), now)


async def _rows(engine: AsyncEngine, org: Org) -> list[tuple[str, bytes, bytes]]:
    """Each destination row of the organization as JSON text, and its two sealed columns."""
    async with session_factory(engine)() as session, session.begin():
        await bind_org(session, org.id)
        rows = await session.exec(  # type: ignore[call-overload]
            text(
                "SELECT row_to_json(d)::text, secret_sealed, previous_sealed "
                "FROM webhook_destinations d"
            )
        )
        return [(r[0], bytes(r[1] or b""), bytes(r[2] or b"")) for r in rows.all()]


async def _events(engine: AsyncEngine, org: Org) -> list[dict[str, Any]]:
    async with session_factory(engine)() as session, session.begin():
        await bind_org(session, org.id)
        rows = await session.exec(  # type: ignore[call-overload]
            text("SELECT row_to_json(e)::text FROM audit_events e ORDER BY seq")
        )
        return [json.loads(r[0]) for r in rows.all()]


def _field(response: httpx.Response) -> list[str]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    return [e["field"] for e in response.json()["errors"]]


async def test_the_secret_is_shown_once_sealed_rotated_with_an_overlap_and_never_audited(
    stack: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    admin = org["admin"].headers
    answers: list[httpx.Response] = []
    async with stack.http() as http:
        created = await http.post(HOOKS, json=_body(), headers=admin)
        assert created.status_code == 201, created.text
        body = created.json()
        first = body["secret"]
        destination_id = body["id"]
        assert first.startswith("whsec_")
        assert len(base64.b64decode(first.removeprefix("whsec_"))) == 32
        assert body["secret_last4"] == first[-4:]
        assert body["url"] == PUBLIC_URL
        assert body["event_types"] == ["run.completed", "step.opened"]
        assert body["enabled"] is True
        assert body["disabled_reason"] is None
        assert body["previous_secret_expires_at"] is None

        read = await http.get(f"{HOOKS}/{destination_id}", headers=admin)
        listed = await http.get(HOOKS, headers=admin)
        answers += [read, listed]
        assert read.status_code == 200, read.text
        assert "secret" not in read.json()
        assert read.json() == {k: v for k, v in body.items() if k != "secret"}
        assert [d["id"] for d in listed.json()] == [destination_id]
        assert await _live(engine, org, destination_id) == [first]

        # Rotation: the new secret shown once; the old one signs on for the default 24 hours.
        rotated = await http.post(f"{HOOKS}/{destination_id}/rotate-secret", headers=admin)
        assert rotated.status_code == 200, rotated.text
        second = rotated.json()["secret"]
        assert second.startswith("whsec_")
        assert second != first
        assert rotated.json()["previous_secret_expires_at"] is not None
        assert await _live(engine, org, destination_id) == [second, first]
        assert await _live(engine, org, destination_id, hours=23) == [second, first]
        assert await _live(engine, org, destination_id, hours=25) == [second]
        # The window ended (set in the past, as time passing would): the old secret is gone.
        await run_sql(
            engine,
            "UPDATE webhook_destinations SET previous_expires_at = now() - interval '1 minute' "
            "WHERE id = :d",
            org.id,
            d=uuid.UUID(destination_id),
        )
        assert await _live(engine, org, destination_id) == [second]
        read = await http.get(f"{HOOKS}/{destination_id}", headers=admin)
        answers.append(read)
        assert read.json()["previous_secret_expires_at"] is None

        # An overlap outside 0..168 hours is refused and changes nothing.
        too_long = await http.post(
            f"{HOOKS}/{destination_id}/rotate-secret", json={"overlap_hours": 169}, headers=admin
        )
        assert _field(too_long) == ["overlap_hours"]
        assert await _live(engine, org, destination_id) == [second]
        # With no overlap, the old secret stops at once.
        third = (
            await http.post(
                f"{HOOKS}/{destination_id}/rotate-secret",
                json={"overlap_hours": 0},
                headers=admin,
            )
        ).json()["secret"]
        assert await _live(engine, org, destination_id) == [third]
        fourth = (
            await http.post(
                f"{HOOKS}/{destination_id}/rotate-secret",
                json={"overlap_hours": 2},
                headers=admin,
            )
        ).json()["secret"]
        assert await _live(engine, org, destination_id) == [fourth, third]
        assert await _live(engine, org, destination_id, hours=3) == [fourth]

        changed = await http.patch(
            f"{HOOKS}/{destination_id}", json={"event_types": ["audit.*"]}, headers=admin
        )
        answers.append(changed)
        assert changed.status_code == 200, changed.text
        assert changed.json()["event_types"] == ["audit.*"]

        rows = await _rows(engine, org)
        deleted = await http.delete(f"{HOOKS}/{destination_id}", headers=admin)
        answers.append(deleted)
        assert deleted.status_code == 200, deleted.text
        assert (await http.get(f"{HOOKS}/{destination_id}", headers=admin)).status_code == 404
        assert (await http.get(HOOKS, headers=admin)).json() == []
    with pytest.raises(DestinationNotFound):
        await _live(engine, org, destination_id)
    # A deleted destination keeps its row but neither secret.
    [(_, sealed_after, previous_after)] = await _rows(engine, org)
    assert sealed_after == previous_after == b""

    events = [e for e in await _events(engine, org) if e["action"].startswith("webhook.")]
    assert [e["action"] for e in events] == [
        "webhook.destination.created",
        "webhook.destination.secret_rotated",
        "webhook.destination.secret_rotated",
        "webhook.destination.secret_rotated",
        "webhook.destination.changed",
        "webhook.destination.deleted",
    ]
    assert {e["target_id"] for e in events} == {destination_id}
    assert events[0]["data"]["url_origin"] == "https://8.8.8.8"
    assert events[1]["data"]["previous_secret_last4"] == first[-4:]
    assert events[4]["data"]["changed"] == ["event_types"]
    # No secret in any answer but the one that issued it, in any audit event, or in clear in the
    # table; nor the URL's path or query (where receivers keep their tokens) in the audit log.
    audit = json.dumps(await _events(engine, org))
    assert "whsec_" not in audit
    assert "T0KEN-IN-THE-PATH" not in audit
    assert "query-token" not in audit
    for secret in (first, second, third, fourth):
        raw = base64.b64decode(secret.removeprefix("whsec_"))
        for answer in answers:
            assert secret not in answer.text
        assert secret.removeprefix("whsec_") not in audit
        for row, sealed, previous in rows:
            assert secret.removeprefix("whsec_") not in row
            for column in (sealed, previous):
                assert secret.encode() not in column
                assert raw not in column
    assert rows[0][1]
    assert rows[0][2]


NON_PUBLIC = [
    "https://127.0.0.1/hook",
    "https://[::1]/hook",
    "https://[::ffff:127.0.0.1]/hook",
    "https://0x7f000001/hook",
    "https://localhost/hook",
    "https://169.254.169.254/latest/meta-data",
    "https://10.0.0.8/hook",
    "http://8.8.8.8/hook",  # plain http, even to a public address
    "ftp://8.8.8.8/hook",
    "https://user:pw@8.8.8.8/hook",
]


async def test_bad_urls_and_event_types_are_refused_naming_the_field_and_leave_nothing(
    stack: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    admin = org["admin"].headers
    async with stack.http() as http:
        for url in NON_PUBLIC:
            refused = await http.post(HOOKS, json=_body(url=url), headers=admin)
            assert _field(refused) == ["url"], url
            assert "pw" not in refused.text
        for event_types in (["run.started", "run.exploded"], [], ["audit"], ["step.*"]):
            refused = await http.post(HOOKS, json=_body(event_types=event_types), headers=admin)
            assert _field(refused) == ["event_types"], event_types
        assert _field(await http.post(HOOKS, json=_body(kind="syslog"), headers=admin)) == ["kind"]
        # A stream is sent every event: naming types, or a start seq for a witness, is refused.
        siem_with_types = await http.post(HOOKS, json=_body(kind="siem"), headers=admin)
        assert _field(siem_with_types) == ["event_types"]
        assert "every event" in siem_with_types.json()["detail"]
        webhook_without = {"url": _body()["url"]}
        assert _field(await http.post(HOOKS, json=webhook_without, headers=admin)) == [
            "event_types"
        ]
        witness_from = {"url": _body()["url"], "kind": "witness", "from_seq": 3}
        assert _field(await http.post(HOOKS, json=witness_from, headers=admin)) == ["from_seq"]
        assert (await http.get(HOOKS, headers=admin)).json() == []
        assert await _rows(engine, org) == []

        # A change is checked as a creation is, and a refused one changes nothing.
        created = await http.post(HOOKS, json=_body(), headers=admin)
        destination_id = created.json()["id"]
        moved = await http.patch(
            f"{HOOKS}/{destination_id}",
            json={"url": "https://127.0.0.1/hook", "description": "moved"},
            headers=admin,
        )
        assert _field(moved) == ["url"]
        unknown = await http.patch(
            f"{HOOKS}/{destination_id}",
            json={"event_types": ["run.nope"], "description": "moved"},
            headers=admin,
        )
        assert _field(unknown) == ["event_types"]
        read = (await http.get(f"{HOOKS}/{destination_id}", headers=admin)).json()
        assert read["url"] == PUBLIC_URL
        assert read["description"] == "ledger sync"
    actions = [a for a, _, _ in await audit_actions(engine, org.id) if a.startswith("webhook.")]
    assert actions == ["webhook.destination.created"]


async def test_disabling_and_enabling_sets_and_clears_the_reason(
    stack: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    owner = org["owner"].headers
    async with stack.http() as http:
        destination_id = (await http.post(HOOKS, json=_body(), headers=owner)).json()["id"]
        off = await http.patch(f"{HOOKS}/{destination_id}", json={"enabled": False}, headers=owner)
        assert off.status_code == 200, off.text
        assert off.json()["enabled"] is False
        assert off.json()["disabled_reason"] == "admin"
        assert off.json()["disabled_at"] is not None
        # As a 410 from the receiver will leave it (next session's delivery activity).
        await run_sql(
            engine,
            "UPDATE webhook_destinations SET disabled_reason = 'gone' WHERE id = :d",
            org.id,
            d=uuid.UUID(destination_id),
        )
        gone = (await http.get(f"{HOOKS}/{destination_id}", headers=owner)).json()
        assert gone["disabled_reason"] == "gone"
        on = await http.patch(f"{HOOKS}/{destination_id}", json={"enabled": True}, headers=owner)
        assert on.json()["enabled"] is True
        assert on.json()["disabled_reason"] is None
        assert on.json()["disabled_at"] is None
    changes = [
        e for e in await _events(engine, org) if e["action"] == "webhook.destination.changed"
    ]
    assert [e["data"]["before"] for e in changes] == [
        {"enabled": True, "disabled_reason": None},
        {"enabled": False, "disabled_reason": "gone"},
    ]


async def test_without_integration_manage_it_is_403_and_audited_and_another_org_gets_404(
    stack: Stack, engine: AsyncEngine
) -> None:
    org, other = await make_org(engine), await make_org(engine)
    async with stack.http() as http:
        destination_id = (
            await http.post(HOOKS, json=_body(), headers=org["admin"].headers)
        ).json()["id"]
        for who in ("approver", "operator", "auditor"):
            headers = org[who].headers
            for method, path, body in (
                ("POST", HOOKS, _body()),
                ("GET", HOOKS, None),
                ("GET", f"{HOOKS}/{destination_id}", None),
                ("POST", f"{HOOKS}/{destination_id}/rotate-secret", None),
                ("DELETE", f"{HOOKS}/{destination_id}", None),
            ):
                refused = await http.request(method, path, json=body, headers=headers)
                assert refused.status_code == 403, f"{who} {method} {path}: {refused.text}"
                assert refused.headers["content-type"] == "application/problem+json"
                assert "whsec_" not in refused.text
        denials = [
            reason
            for action, outcome, reason in await audit_actions(engine, org.id)
            if action == "access.denied" and outcome == "denied"
        ]
        assert denials == ["missing permission integration:manage"] * 15

        # Another organization's owner sees none of it, by any route.
        owner_b = other["owner"].headers
        for method, path, body in (
            ("GET", f"{HOOKS}/{destination_id}", None),
            ("PATCH", f"{HOOKS}/{destination_id}", {"enabled": False}),
            ("POST", f"{HOOKS}/{destination_id}/rotate-secret", None),
            ("GET", f"{HOOKS}/{destination_id}/deliveries", None),
            ("DELETE", f"{HOOKS}/{destination_id}", None),
        ):
            response = await http.request(method, path, json=body, headers=owner_b)
            assert response.status_code == 404, f"{method} {path}: {response.text}"
            assert response.json()["code"] == "not_found"
            assert "8.8.8.8" not in response.text
        assert (await http.get(HOOKS, headers=owner_b)).json() == []
        still = (await http.get(f"{HOOKS}/{destination_id}", headers=org["admin"].headers)).json()
        assert still["enabled"] is True
        assert still["rotated_at"] is None
    with pytest.raises(DestinationNotFound):
        await _live(engine, other, destination_id)


async def test_the_delivery_log_is_paged_newest_first_without_bodies(
    stack: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    admin = org["admin"].headers
    async with stack.http() as http:
        destination_id = (await http.post(HOOKS, json=_body(), headers=admin)).json()["id"]
        other_id = (await http.post(HOOKS, json=_body(), headers=admin)).json()["id"]
        for minutes, status, target in (
            (3, "delivered", destination_id),
            (2, "failed", destination_id),
            (1, "pending", destination_id),
            (0, "delivered", other_id),
        ):
            await run_sql(
                engine,
                "INSERT INTO webhook_deliveries (id, org_id, destination_id, message_id, "
                "event_type, event_seq, status, attempts, last_status_code, last_latency_ms, "
                "created_at) VALUES (gen_random_uuid(), :o, :d, :m, 'run.completed', :s, :st, 1, "
                "200, 42, now() - make_interval(mins => :ago))",
                org.id,
                o=org.id,
                d=uuid.UUID(target),
                m=f"msg_{uuid.uuid4().hex}",
                s=10 - minutes,
                st=status,
                ago=minutes,
            )
        first = await http.get(f"{HOOKS}/{destination_id}/deliveries?limit=2", headers=admin)
        assert first.status_code == 200, first.text
        page = first.json()
        assert [d["status"] for d in page["deliveries"]] == ["pending", "failed"]
        assert [d["event_seq"] for d in page["deliveries"]] == [9, 8]
        assert all("body" not in d for d in page["deliveries"])
        assert page["next_cursor"] == page["deliveries"][-1]["id"]
        second = await http.get(
            f"{HOOKS}/{destination_id}/deliveries",
            params={"limit": 2, "cursor": page["next_cursor"]},
            headers=admin,
        )
        assert [d["status"] for d in second.json()["deliveries"]] == ["delivered"]
        assert second.json()["next_cursor"] is None
        # A cursor from another destination's log is not one of this log's.
        theirs = (await http.get(f"{HOOKS}/{other_id}/deliveries", headers=admin)).json()
        assert len(theirs["deliveries"]) == 1
        crossed = await http.get(
            f"{HOOKS}/{destination_id}/deliveries",
            params={"cursor": theirs["deliveries"][0]["id"]},
            headers=admin,
        )
        assert _field(crossed) == ["cursor"]
