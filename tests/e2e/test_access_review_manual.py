"""Access reviews an admin starts: with no settings saved the owners review; demoting an admin
applies at once, the last owner keeps the role; a running review has no CSV yet, and a cancelled
one reports what was decided before it was cancelled; undecided items escalate, then expire."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import timedelta

from temporalio.testing import WorkflowEnvironment

from blocks.activities.access_review import AccessReviewActivities
from blocks.core.identity.access_review import (
    Applied,
    ItemKind,
    RevocationRequest,
    RevocationResult,
)
from blocks.infra.db import session_factory
from tests.e2e.test_access_review import poll
from tests.support import Stack, audit_actions, make_org


async def test_an_admin_starts_a_review_the_owners_decide_and_the_last_owner_stays(
    stack: Stack,
) -> None:
    """With no settings saved the owners review; rejecting an admin demotes them at once, and
    rejecting the last owner's membership is refused (and said in the report)."""
    org = await make_org(stack.engine)
    owner, admin = org["owner"], org["admin"]
    async with stack.http() as http:
        started = await http.post("/v1/access-reviews", headers=admin.headers)
        assert started.status_code == 201, started.text
        review = started.json()
        assert (review["trigger"], review["started_by"]) == ("manual", str(admin.user_id))
        run_id = review["run_id"]
        run = await poll(
            http,
            f"/v1/runs/{run_id}",
            owner.headers,
            lambda body: len([s for s in body["steps"] if s["state"] == "pending"]) == 10,
        )
        assert {tuple(s["approvers"]) for s in run["steps"]} == {("role:owner",)}
        # Not a reviewer: an approver of the organization cannot decide an item.
        step_ids = [s["step_id"] for s in run["steps"]]
        refused = await http.post(
            f"/v1/runs/{run_id}/steps/{step_ids[0]}/decisions",
            headers=org["approver"].headers,
            json={"decision": "approve"},
        )
        assert refused.status_code == 403, refused.text
        rejected = {f"admin-{admin.user_id}", f"admin-{owner.user_id}"}
        for step_id in step_ids:
            decided = await http.post(
                f"/v1/runs/{run_id}/steps/{step_id}/decisions",
                headers=owner.headers,
                json={"decision": "reject" if step_id in rejected else "approve"},
            )
            assert decided.status_code == 200, decided.text
        finished = await poll(
            http,
            f"/v1/access-reviews/{review['id']}",
            owner.headers,
            lambda body: body["status"] == "completed",
        )
        assert finished["summary"]["revoked"] == 1
        assert finished["summary"]["refused"] == 1
        assert finished["summary"]["kept"] == 8
        # The admin lost the role at once: their key now carries no admin permission.
        assert (await http.get("/v1/access-reviews", headers=admin.headers)).status_code == 403
        assert (await http.get("/v1/access-reviews", headers=owner.headers)).status_code == 200
        exported = await http.get(
            f"/v1/access-reviews/{review['id']}/report.csv", headers=org["auditor"].headers
        )
        assert exported.status_code == 200, exported.text
        by_step = {r["step_id"]: r for r in csv.DictReader(io.StringIO(exported.text))}
        assert by_step[f"admin-{owner.user_id}"]["applied"] == "refused"
        assert "last active owner" in by_step[f"admin-{owner.user_id}"]["note"]
        assert by_step[f"admin-{admin.user_id}"]["applied"] == "revoked"
    actions = [a for a, _, _ in await audit_actions(stack.engine, org.id)]
    assert "access_review.started" in actions
    assert "access_review.revocation_refused" in actions
    assert actions.count("access_review.report") == 1


async def test_a_running_review_has_no_csv_and_a_cancelled_one_reports_what_was_decided(
    stack: Stack,
) -> None:
    org = await make_org(stack.engine)
    owner = org["owner"]
    async with stack.http() as http:
        started = await http.post("/v1/access-reviews", headers=owner.headers)
        assert started.status_code == 201, started.text
        review, run_id = started.json(), started.json()["run_id"]
        early = await http.get(
            f"/v1/access-reviews/{review['id']}/report.csv", headers=owner.headers
        )
        assert early.status_code == 409
        assert early.json()["code"] == "review_running"
        missing = await http.get(
            f"/v1/access-reviews/{uuid.uuid4()}/report.csv", headers=owner.headers
        )
        assert missing.status_code == 404
        run = await poll(
            http,
            f"/v1/runs/{run_id}",
            owner.headers,
            lambda body: len([s for s in body["steps"] if s["state"] == "pending"]) == 10,
        )
        first = sorted(s["step_id"] for s in run["steps"])[0]
        decided = await http.post(
            f"/v1/runs/{run_id}/steps/{first}/decisions",
            headers=owner.headers,
            json={"decision": "approve"},
        )
        assert decided.status_code == 200, decided.text
        cancelled = await http.post(
            f"/v1/runs/{run_id}/cancel", headers=owner.headers, json={"reason": "test over"}
        )
        assert cancelled.status_code == 202, cancelled.text
        finished = await poll(
            http,
            f"/v1/access-reviews/{review['id']}",
            owner.headers,
            lambda body: body["status"] == "cancelled",
        )
        assert finished["summary"]["kept"] == 1
        assert finished["summary"]["no_decision"] == 9
        exported = await http.get(
            f"/v1/access-reviews/{review['id']}/report.csv", headers=owner.headers
        )
        assert exported.status_code == 200
        rows = {r["step_id"]: r for r in csv.DictReader(io.StringIO(exported.text))}
        assert rows.pop(first)["applied"] == "kept"
        assert {(r["step_state"], r["applied"]) for r in rows.values()} == {
            ("cancelled", "no_decision")
        }


async def test_items_nobody_decides_escalate_to_the_owners_then_expire_unchanged(
    skipping_stack: Stack, time_skipping_env: WorkflowEnvironment
) -> None:
    """The SLA and escalation of any step: a quarter of the SLA before the deadline the owners
    are added; at the deadline an undecided item closes as expired and nothing is revoked."""
    org = await make_org(skipping_stack.engine)
    owner, reviewer = org["owner"], org["approver"]
    async with skipping_stack.http() as http:
        saved = await http.put(
            "/v1/org/access-review-settings",
            headers=owner.headers,
            json={"reviewers": [str(reviewer.user_id)], "sla_hours": 24, "schedule_enabled": False},
        )
        assert saved.status_code == 200, saved.text
        started = await http.post("/v1/access-reviews", headers=owner.headers)
        assert started.status_code == 201, started.text
        review, run_id = started.json(), started.json()["run_id"]
        run = await poll(
            http,
            f"/v1/runs/{run_id}",
            owner.headers,
            lambda body: len([s for s in body["steps"] if s["state"] == "pending"]) == 10,
        )
        kept = sorted(s["step_id"] for s in run["steps"])[0]
        decided = await http.post(
            f"/v1/runs/{run_id}/steps/{kept}/decisions",
            headers=reviewer.headers,
            json={"decision": "approve"},
        )
        assert decided.status_code == 200, decided.text

        await time_skipping_env.sleep(timedelta(hours=25))

        finished = await poll(
            http,
            f"/v1/access-reviews/{review['id']}",
            owner.headers,
            lambda body: body["status"] == "completed",
        )
        assert (finished["summary"]["kept"], finished["summary"]["no_decision"]) == (1, 9)
        assert finished["summary"]["revoked"] == 0
    actions = [a for a, _, _ in await audit_actions(skipping_stack.engine, org.id)]
    assert actions.count("step.escalated") == 9
    assert actions.count("step.sla_breached") == 9
    assert "access_review.revoked" not in actions


async def test_a_retried_revocation_reports_what_the_first_attempt_did(stack: Stack) -> None:
    """The activity may run again after its transaction committed (a worker lost before it
    answered): the second attempt writes nothing and answers `revoked`, not `already_gone`."""
    org = await make_org(stack.engine)
    activities = AccessReviewActivities(session_factory(stack.engine))
    items = await activities.list_items(str(org.id))
    key_item = next(i for i in items.items if i.kind is ItemKind.API_KEY and "operator@" in i.label)
    request = RevocationRequest(
        org_id=str(org.id),
        run_id=str(uuid.uuid4()),
        item=key_item,
        decided_by=str(org["owner"].user_id),
    )
    first = await activities.revoke(request)
    again = await activities.revoke(request)
    assert first == again == RevocationResult(Applied.REVOKED)
    actions = [a for a, _, _ in await audit_actions(stack.engine, org.id)]
    assert actions.count("access_review.revoked") == 1
    async with stack.http() as http:
        assert (await http.get("/v1/org", headers=org["operator"].headers)).status_code == 401
