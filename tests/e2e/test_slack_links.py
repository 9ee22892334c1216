"""Slack links carry the member's own proof: no admin links a Slack account for someone else.

The member asks for a code in a session of their own (`POST /v1/me/slack-link`) and sends it from
Slack (`/blocks link <code>`, signed like Slack's requests, to the local API); only then do that
Slack user's clicks decide as them. The admin route that linked anyone to anyone refuses (403,
audited); a link made that way before decides nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import psycopg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment

from blocks.infra.embedded.postgres import PostgresCredentials
from tests.slack_api import (
    SlackStack,
    button,
    click_payload,
    command_form,
    install,
    link,
    link_code,
    org_events,
    posted,
    run_events,
    running_slack_stack,
    send,
    slack_denials,
    start_run,
)
from tests.support import (
    audit_actions,
    cookie_headers,
    make_org,
    run_sql,
    start_test_session,
    wait_for_status,
)

# Codes one Slack user may try per minute: the guessing test spends it, the others try one.
CODES_PER_SLACK_USER = "4/minute"
ADMIN_REFUSAL = "Slack users are linked by the member, with their own proof, not by an admin"


@pytest.fixture(scope="module")
async def slack_stack(
    engine: AsyncEngine, temporal_env: WorkflowEnvironment, postgres: PostgresCredentials
) -> AsyncIterator[SlackStack]:
    async with running_slack_stack(
        engine=engine,
        temporal=temporal_env.client,
        database_url=postgres.url(),
        extra_settings={"rate_limit_slack_link_user": CODES_PER_SLACK_USER},
    ) as running:
        yield running


async def test_an_admin_cannot_link_a_slack_account_to_an_approver(
    slack_stack: SlackStack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    stack = slack_stack.stack
    async with stack.http() as http:
        team, _ = await install(http, org, slack_stack.slack)
        run_id = await start_run(http, org, "operator")
        approve = button(await posted(slack_stack.slack, run_id), "blocks.approve")

        # The admin links their own Slack account to the approver: refused, audited. So is the
        # owner, and so is an admin linking a Slack account to themselves without its proof.
        attempts = [
            ("admin", "approver", "U0ADMIN"),
            ("owner", "approver", "U0OWNER"),
            ("admin", "admin", "U0ADMIN"),
        ]
        for who, member, slack_user in attempts:
            refused = await http.put(
                f"/v1/integrations/slack/users/{slack_user}",
                json={"user_id": str(org[member].user_id)},
                headers=org[who].headers,
            )
            assert refused.status_code == 403, refused.text
            assert refused.headers["content-type"] == "application/problem+json"
            assert "/v1/me/slack-link" in refused.json()["detail"]
        # An API key cannot start a link either: it acts for the organization, not as the person.
        by_key = await http.post("/v1/me/slack-link", headers=org["admin"].headers)
        assert by_key.status_code == 401, by_key.text

        # So the admin's click decides nothing.
        clicked = await send(http, click_payload(team, "U0ADMIN", approve))
        assert "not linked" in clicked.json()["text"]
        # A link made the old way (an admin's word, no proof from the member) decides nothing.
        await run_sql(
            engine,
            "INSERT INTO slack_user_links (org_id, slack_user_id, user_id, created_at) "
            "VALUES (:o, 'U0LEGACY', :user, now())",
            org.id,
            o=org.id,
            user=org["approver"].user_id,
        )
        legacy = await send(http, click_payload(team, "U0LEGACY", approve))
        assert "without your confirmation" in legacy.json()["text"]
        # The admin's own code links the admin's Slack account to the admin, and no one else.
        await link(http, stack, org, team, "U0ADMIN", "admin")
        as_admin = await send(http, click_payload(team, "U0ADMIN", approve))
        assert as_admin.json()["text"].startswith("Not recorded"), as_admin.text

        body = (await http.get(f"/v1/runs/{run_id}", headers=org["auditor"].headers)).json()
        assert [s["state"] for s in body["pending_steps"]] == ["pending"]
        assert "step.decided" not in [e["action"] for e in await run_events(http, org, run_id)]
        events = await org_events(http, org)

    refusals = [
        e for e in events if e["action"] == "access.denied" and e["reason"] == ADMIN_REFUSAL
    ]
    assert [e["actor_id"] for e in refusals] == [
        str(org["admin"].user_id),
        str(org["owner"].user_id),
        str(org["admin"].user_id),
    ]
    assert {e["target_id"] for e in refusals} == {
        "PUT /v1/integrations/slack/users/U0ADMIN",
        "PUT /v1/integrations/slack/users/U0OWNER",
    }
    reasons = [d["reason"] for d in slack_denials(events)]
    assert reasons[:2] == [
        "Slack user is not linked to a member",
        "Slack link was not confirmed by the member",
    ]
    (linked,) = [e for e in events if e["action"] == "integration.slack.user_linked"]
    assert linked["actor_id"] == str(org["admin"].user_id)
    assert linked["data"]["user_id"] == str(org["admin"].user_id)


async def test_a_member_links_their_own_slack_account_and_a_click_decides_as_them(
    slack_stack: SlackStack, engine: AsyncEngine, postgres: PostgresCredentials
) -> None:
    org = await make_org(engine)
    stack = slack_stack.stack
    async with stack.http() as http:
        team, _ = await install(http, org, slack_stack.slack)
        # A new code retires the member's unused one.
        retired = await link_code(http, stack, org, "approver")
        code = await link_code(http, stack, org, "approver")
        stale = await send(http, command_form(team, "U0APPROVER", f"link {retired}"))
        assert "not valid" in stale.json()["text"]
        # Typed as people type: lower case, a space instead of the dash.
        typed = code.lower().replace("-", " ")
        confirmed = await send(http, command_form(team, "U0APPROVER", f"link {typed}"))
        assert confirmed.status_code == 200, confirmed.text
        assert confirmed.json()["response_type"] == "ephemeral"
        assert confirmed.json()["text"].startswith("Linked")
        assert org["approver"].email in confirmed.json()["text"]
        # Single use: the same code from another Slack account links nothing.
        reused = await send(http, command_form(team, "U0SOMEONE", f"link {code}"))
        assert "not valid" in reused.json()["text"]

        run_id = await start_run(http, org, "operator")
        approve = button(await posted(slack_stack.slack, run_id), "blocks.approve")
        decided = await send(http, click_payload(team, "U0APPROVER", approve))
        assert "Approved" in decided.json()["text"], decided.text
        done = await wait_for_status(http, run_id, org["auditor"].headers, status="completed")
        assert done["result"]["status"] == "approved"
        (vote,) = [e for e in await run_events(http, org, run_id) if e["action"] == "step.decided"]
        assert vote["actor_id"] == str(org["approver"].user_id)
        assert vote["data"]["channel"] == "slack"
        events = await org_events(http, org)

    started = [e for e in events if e["action"] == "integration.slack.link_started"]
    assert [e["actor_id"] for e in started] == [str(org["approver"].user_id)] * 2
    (linked,) = [e for e in events if e["action"] == "integration.slack.user_linked"]
    assert linked["actor_id"] == str(org["approver"].user_id)
    assert linked["target_id"] == "U0APPROVER"
    assert linked["data"]["proof"] == "link_code"
    assert linked["data"]["link_code_id"] == started[1]["target_id"]
    assert linked["data"]["slack_team_id"] == team
    assert code not in str(events)

    # Stored hashed: the table holds the code's SHA-256, never the code.
    plain = code.replace("-", "")
    async with await psycopg.AsyncConnection.connect(postgres.url(superuser=True)) as conn:
        cursor = await conn.execute(
            "SELECT row_to_json(c)::text, code_hash, used_at IS NOT NULL FROM slack_link_codes c "
            "WHERE org_id = %s ORDER BY created_at",
            (org.id,),
        )
        rows = await cursor.fetchall()
    assert len(rows) == 2
    assert all(plain not in as_text and code not in as_text for as_text, _, _ in rows)
    assert rows[1][1] == hashlib.sha256(plain.encode()).hexdigest()
    assert all(used for _, _, used in rows)


async def test_wrong_expired_and_foreign_codes_are_refused_audited_and_cut_off(
    slack_stack: SlackStack, engine: AsyncEngine
) -> None:
    org, other = await make_org(engine), await make_org(engine)
    stack = slack_stack.stack
    async with stack.http() as http:
        team, _ = await install(http, org, slack_stack.slack)
        await install(http, other, slack_stack.slack)
        # A session without an organization, and an organization without Slack, get no code.
        bare = await start_test_session(engine, org["approver"].user_id, None)
        unpicked = await http.post(
            "/v1/me/slack-link", headers=cookie_headers(stack.settings, bare)
        )
        assert unpicked.status_code == 409, unpicked.text
        assert unpicked.json()["code"] == "organization_not_selected"
        no_slack = await make_org(engine)
        session = await start_test_session(engine, no_slack["approver"].user_id, no_slack.id)
        uninstalled = await http.post(
            "/v1/me/slack-link", headers=cookie_headers(stack.settings, session)
        )
        assert uninstalled.status_code == 409, uninstalled.text
        assert uninstalled.json()["code"] == "slack_not_installed"

        usage = await send(http, command_form(team, "U0GUESSER", "help"))
        assert "/v1/me/slack-link" in usage.json()["text"]
        foreign = await link_code(http, stack, other, "approver")  # another organization's
        expired = await link_code(http, stack, org, "approver2")
        await run_sql(
            engine,
            "UPDATE slack_link_codes SET expires_at = now() - interval '1 second' "
            "WHERE org_id = :o",
            org.id,
            o=org.id,
        )
        for guess in (foreign, expired, "NOT-A-CODE", "AAAAA-AAAAA"):
            answer = await send(http, command_form(team, "U0GUESSER", f"link {guess}"))
            assert answer.status_code == 200, answer.text
            assert "not valid" in answer.json()["text"]
        # The Slack user's budget is spent: even a good code is now refused, before it is read.
        good = await link_code(http, stack, org, "approver")
        cut_off = await send(http, command_form(team, "U0GUESSER", f"link {good}"))
        assert cut_off.status_code == 429, cut_off.text
        assert int(cut_off.headers["retry-after"]) >= 1
        # The budget is the Slack user's: another one sends the same code and is linked.
        linked = await send(http, command_form(team, "U0APPROVER", f"link {good}"))
        assert linked.json()["text"].startswith("Linked"), linked.text
        events = await org_events(http, org)

    denials = slack_denials(events)
    assert [d["reason"] for d in denials] == ["Slack link code not valid, used or expired"] * 4
    assert {d["data"]["slack_user_id"] for d in denials} == {"U0GUESSER"}
    assert all(d["actor_type"] == "anonymous" for d in denials)
    linked_events = [e for e in events if e["action"] == "integration.slack.user_linked"]
    assert [e["actor_id"] for e in linked_events] == [str(org["approver"].user_id)]
    # The other organization's member was linked to nothing, and its log saw no attempt.
    other_actions = [action for action, _, _ in await audit_actions(engine, other.id)]
    assert "access.denied" not in other_actions
    assert "integration.slack.user_linked" not in other_actions
