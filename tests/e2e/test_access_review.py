"""Access reviews end to end on the real stack: the organization's quarterly schedule (triggered
now) starts a review of two admins, three API keys (one whose owner is deactivated) and an LLM
credential; the reviewer keeps everything but the orphaned key, which stops working at once; the
signed report is in the audit chain, which verifies, and its CSV lists every item with its
decision. Plus the refusals: a non-admin cannot start a review, bad settings are a 422."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import uuid
from dataclasses import dataclass
from datetime import UTC
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import ScheduleHandle
from temporalio.service import RPCError, RPCStatusCode

from blocks.core.audit.chain import canonical_json
from blocks.core.context import AuthMethod, OrgContext, OrgId
from blocks.core.roles import Role
from blocks.infra.db import bind_org, session_factory
from blocks.infra.temporal.schedules import access_review_schedule_id
from blocks.models.identity.api_keys import create_api_key
from blocks.models.identity.orgs import add_member, create_org_with_owner
from blocks.models.llm.credentials import create_credential
from tests.support import Member, Org, Stack, audit_actions, make_org, run_sql


@dataclass
class ReviewedOrg:
    org: Org
    key_ids: dict[str, uuid.UUID]  # member name -> their key's id
    credential_id: uuid.UUID  # the integration: an LLM credential


async def _org_to_review(engine: AsyncEngine) -> ReviewedOrg:
    """An owner and an admin (two admins), and a member who left: one key each."""
    slug = f"org-{uuid.uuid4().hex[:12]}"
    async with session_factory(engine)() as session, session.begin():
        row, owner, _ = await create_org_with_owner(
            session, slug=slug, name=slug, owner_email=f"owner@{slug}.test", owner_name="Owner"
        )
        ctx = OrgContext(
            org_id=OrgId(row.id), user_id=owner.id, roles=(Role.OWNER,), auth=AuthMethod.SYSTEM
        )
        org, key_ids = Org(id=row.id, slug=slug), {}
        people = {"owner": (owner, [Role.OWNER])}
        for name, roles in {"admin": [Role.ADMIN], "leaver": [Role.APPROVER]}.items():
            user, _ = await add_member(
                ctx, session, email=f"{name}@{slug}.test", display_name=name, roles=roles
            )
            people[name] = (user, roles)
        for name, (user, roles) in people.items():
            key, plaintext = await create_api_key(
                ctx, session, user_id=user.id, name=f"{name}-key", roles=roles
            )
            org.members[name] = Member(user.id, user.email, plaintext)
            key_ids[name] = key.id
        # Through the model: the API's SSRF guard would resolve the provider's host.
        credential = await create_credential(
            ctx,
            session,
            name="assistant",
            provider="openai",
            base_url="https://api.openai.com/v1",
            api="chat",
            allowed_models=["gpt-4o"],
            api_key="sk-test-1234",
        )
    return ReviewedOrg(org, key_ids, credential.id)


async def poll(
    http: httpx.AsyncClient, path: str, headers: dict[str, str], done: Any, within: float = 30
) -> Any:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        response = await http.get(path, headers=headers)
        if response.status_code == 200 and done(response.json()):
            return response.json()
        assert response.status_code in (200, 503), response.text
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{path} never got there: {response.text[:2000]}")
        await asyncio.sleep(0.1)


async def test_a_scheduled_review_revokes_the_orphaned_key_and_signs_its_report(
    stack: Stack,
) -> None:
    reviewed = await _org_to_review(stack.engine)
    org, owner, admin, leaver = (
        reviewed.org,
        reviewed.org["owner"],
        reviewed.org["admin"],
        reviewed.org["leaver"],
    )
    # The leaver's membership ended without their key being revoked (as an offboarding done
    # elsewhere leaves it): the key is refused while they are deactivated, but it is live.
    await run_sql(
        stack.engine,
        "UPDATE memberships SET deactivated_at = now() WHERE user_id = :user",
        org.id,
        user=leaver.user_id,
    )
    async with stack.http() as http:
        assert (await http.get("/v1/org", headers=leaver.headers)).status_code == 401
        credential_id = reviewed.credential_id
        saved = await http.put(
            "/v1/org/access-review-settings",
            headers=owner.headers,
            json={"reviewers": [str(admin.user_id)], "sla_hours": 48, "schedule_enabled": True},
        )
        assert saved.status_code == 200, saved.text
        assert saved.json()["schedule_id"] == access_review_schedule_id(org.id)

        schedule = stack.temporal.get_schedule_handle(access_review_schedule_id(org.id))
        described = await schedule.describe()
        # Quarterly: 09:00 UTC on the first day of January, April, July and October.
        upcoming = described.info.next_action_times[:4]
        assert len(upcoming) == 4
        assert {(t.astimezone(UTC).day, t.astimezone(UTC).hour) for t in upcoming} == {(1, 9)}
        assert sorted(t.month for t in upcoming) == [1, 4, 7, 10]
        await schedule.trigger()  # rather than waiting for the quarter

        reviews = await poll(
            http, "/v1/access-reviews", owner.headers, lambda body: len(body["reviews"]) == 1
        )
        review = reviews["reviews"][0]
        assert review["trigger"] == "schedule"
        assert review["started_by"] is None
        run_id = review["run_id"]
        expected_steps = {
            f"admin-{owner.user_id}",
            f"admin-{admin.user_id}",
            *(f"api_key-{key_id}" for key_id in reviewed.key_ids.values()),
            f"llm_credential-{credential_id}",
        }
        run = await poll(
            http,
            f"/v1/runs/{run_id}",
            admin.headers,
            lambda body: (
                {s["step_id"] for s in body["steps"] if s["state"] == "pending"} == expected_steps
            ),
        )
        for step in run["steps"]:
            assert step["approvers"] == [f"user:{admin.user_id}"]
            assert step["deadline"] is not None  # the SLA

        orphan = f"api_key-{reviewed.key_ids['leaver']}"
        rejected = await http.post(
            f"/v1/runs/{run_id}/steps/{orphan}/decisions",
            headers=admin.headers,
            json={"decision": "reject"},
        )
        assert rejected.status_code == 200, rejected.text
        # Applied when decided, not when the review ends: the revocation commits with its event.
        await _wait_for_action(stack.engine, org.id, "access_review.revoked")
        # Revoked, not merely refused while its owner is away: with the owner reactivated, a key
        # of theirs made after the listing works again, the revoked one does not.
        reactivated = await http.post(
            f"/v1/members/{leaver.user_id}/reactivate", headers=owner.headers
        )
        assert reactivated.status_code == 200, reactivated.text
        control = await _new_key(stack.engine, org.id, leaver.user_id)
        assert (await http.get("/v1/org", headers=control)).status_code == 200
        assert (await http.get("/v1/org", headers=leaver.headers)).status_code == 401

        for step_id in sorted(expected_steps - {orphan}):
            decided = await http.post(
                f"/v1/runs/{run_id}/steps/{step_id}/decisions",
                headers=admin.headers,
                json={"decision": "approve"},
            )
            assert decided.status_code == 200, decided.text
        finished = await poll(
            http,
            f"/v1/access-reviews/{review['id']}",
            owner.headers,
            lambda body: body["status"] == "completed",
        )
        assert finished["summary"] == {
            "items": 6,
            "omitted": 0,
            "admin_count": 2,
            "warnings": [],
            "kept": 5,
            "revoked": 1,
            "already_gone": 0,
            "refused": 0,
            "no_decision": 0,
        }
        # The keys the reviewer kept still work; the revoked one stays refused.
        assert (await http.get("/v1/org", headers=leaver.headers)).status_code == 401
        assert (await http.get("/v1/org", headers=admin.headers)).status_code == 200
        assert (await http.get("/v1/org", headers=owner.headers)).status_code == 200

        # The report's event is in the chain, with the hash of the report kept, and the chain
        # (checkpoint-signed as any) verifies.
        report_event = await _event(stack.engine, org.id, "access_review.report")
        assert report_event["run_id"] == run_id
        assert report_event["data"]["report_sha256"] == finished["report_sha256"]
        assert report_event["data"]["summary"] == finished["summary"]
        started_event = await _event(stack.engine, org.id, "access_review.started")
        assert started_event["target_id"] == run_id
        assert started_event["data"]["trigger"] == "schedule"
        revoked_event = await _event(stack.engine, org.id, "access_review.revoked")
        assert revoked_event["target_id"] == str(reviewed.key_ids["leaver"])
        assert revoked_event["actor_id"] == str(admin.user_id)
        verified = await http.get("/v1/audit/verify", headers=owner.headers)
        assert verified.status_code == 200, verified.text
        assert verified.json()["ok"] is True, verified.text
        # Signed at once: a checkpoint (the worker's Ed25519 key) over a head at or past the
        # report's event, which the verification above checked.
        assert verified.json()["checkpoints_checked"] >= 1
        checkpoints = await http.get("/v1/audit/checkpoints", headers=owner.headers)
        assert checkpoints.status_code == 200, checkpoints.text
        assert max(c["seq"] for c in checkpoints.json()) >= report_event["seq"]

        exported = await http.get(
            f"/v1/access-reviews/{review['id']}/report.csv", headers=owner.headers
        )
        assert exported.status_code == 200, exported.text
        assert exported.headers["content-type"].startswith("text/csv")
        assert exported.headers["x-report-sha256"] == finished["report_sha256"]
        rows = list(csv.DictReader(io.StringIO(exported.text)))
        assert {row["step_id"] for row in rows} == expected_steps
        by_step = {row["step_id"]: row for row in rows}
        assert (by_step[orphan]["decision"], by_step[orphan]["applied"]) == ("revoke", "revoked")
        assert "owner_deactivated" in by_step[orphan]["flags"]
        assert "owner_deactivated=yes" in by_step[orphan]["facts"]
        for step_id in expected_steps - {orphan}:
            assert (by_step[step_id]["decision"], by_step[step_id]["applied"]) == ("keep", "kept")
            assert by_step[step_id]["decided_by"] == str(admin.user_id)
        # The stored report is what the event's hash covers.
        stored = await _stored_report(stack.engine, org.id, uuid.UUID(review["id"]))
        assert hashlib.sha256(canonical_json(stored)).hexdigest() == finished["report_sha256"]

        turned_off = await http.put(
            "/v1/org/access-review-settings",
            headers=owner.headers,
            json={"reviewers": [str(admin.user_id)], "sla_hours": 48, "schedule_enabled": False},
        )
        assert turned_off.status_code == 200
        assert turned_off.json()["schedule_id"] is None
        await _schedule_gone(schedule)


async def test_a_non_admin_cannot_start_a_review_and_is_audited(stack: Stack) -> None:
    org = await make_org(stack.engine)
    async with stack.http() as http:
        for who in ("approver", "operator", "auditor"):
            refused = await http.post("/v1/access-reviews", headers=org[who].headers)
            assert refused.status_code == 403, refused.text
            assert refused.headers["content-type"].startswith("application/problem+json")
        settings = await http.put(
            "/v1/org/access-review-settings",
            headers=org["approver"].headers,
            json={"reviewers": [], "sla_hours": 48, "schedule_enabled": True},
        )
        assert settings.status_code == 403
    denied = [a for a in await audit_actions(stack.engine, org.id) if a[0] == "access.denied"]
    assert denied == [("access.denied", "denied", "missing permission org:security")] * 4


async def test_bad_settings_are_422_problems(stack: Stack) -> None:
    org = await make_org(stack.engine)
    good = {"reviewers": [str(org["admin"].user_id)], "sla_hours": 48, "schedule_enabled": False}
    bad: list[tuple[dict[str, Any], str]] = [
        ({**good, "sla_hours": 0}, "sla_hours"),
        ({**good, "sla_hours": 24 * 91}, "sla_hours"),
        ({**good, "schedule_enabled": "yes"}, "schedule_enabled"),
        ({**good, "reviewers": ["not-a-uuid"]}, "reviewers"),
        ({**good, "reviewers": [str(uuid.uuid4())]}, "reviewers.0"),
        ({**good, "reviewers": [str(org["auditor"].user_id)]}, "reviewers.0"),
        ({**good, "reviewer_group": "nobody-here"}, "reviewer_group"),
        ({**good, "surprise": True}, "surprise"),
    ]
    async with stack.http() as http:
        for body, field in bad:
            answer = await http.put(
                "/v1/org/access-review-settings", headers=org["owner"].headers, json=body
            )
            assert answer.status_code == 422, (body, answer.text)
            assert answer.headers["content-type"].startswith("application/problem+json")
            fields = [e["field"] for e in answer.json()["errors"]]
            assert any(f == field or f.startswith(f"{field}.") for f in fields), (body, fields)
        # Nothing was saved: the defaults still stand (the owners review).
        current = await http.get("/v1/org/access-review-settings", headers=org["owner"].headers)
        assert current.status_code == 200
        assert current.json()["saved"] is False
        assert current.json()["default_reviewer_roles"] == ["owner"]


async def _schedule_gone(schedule: ScheduleHandle, within: float = 20) -> None:
    """Deleted: Temporal answers NOT_FOUND once the deletion has gone through."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        try:
            await schedule.describe()
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                return
            raise
        assert asyncio.get_running_loop().time() < deadline, "the schedule is still there"
        await asyncio.sleep(0.2)


async def _new_key(engine: AsyncEngine, org_id: uuid.UUID, user_id: uuid.UUID) -> dict[str, str]:
    ctx = OrgContext(org_id=OrgId(org_id), user_id=None, roles=(), auth=AuthMethod.SYSTEM)
    async with session_factory(engine)() as session, session.begin():
        _, key = await create_api_key(
            ctx, session, user_id=user_id, name="control", roles=[Role.APPROVER]
        )
    return {"Authorization": f"Bearer {key}"}


async def _wait_for_action(
    engine: AsyncEngine, org_id: uuid.UUID, action: str, within: float = 20
) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while action not in {a for a, _, _ in await audit_actions(engine, org_id)}:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"no {action} event within {within} s")
        await asyncio.sleep(0.05)


async def _event(engine: AsyncEngine, org_id: uuid.UUID, action: str) -> dict[str, Any]:
    async with session_factory(engine)() as session, session.begin():
        await bind_org(session, org_id)
        row = (
            await session.exec(  # type: ignore[call-overload]
                text(
                    "SELECT run_id, target_id, actor_id, data, seq FROM audit_events "
                    "WHERE action = :action ORDER BY seq"
                ).bindparams(action=action)
            )
        ).one()
    data = row[3] if isinstance(row[3], dict) else json.loads(row[3])
    return {
        "run_id": str(row[0]) if row[0] else None,
        "target_id": row[1],
        "actor_id": str(row[2]) if row[2] else None,
        "data": data,
        "seq": int(row[4]),
    }


async def _stored_report(engine: AsyncEngine, org_id: uuid.UUID, review_id: uuid.UUID) -> Any:
    async with session_factory(engine)() as session, session.begin():
        await bind_org(session, org_id)
        row = (
            await session.exec(  # type: ignore[call-overload]
                text("SELECT report FROM access_reviews WHERE id = :id").bindparams(id=review_id)
            )
        ).one()
    return row[0]
