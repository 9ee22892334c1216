"""Slack: buttons posted through slack-sdk to a local Slack Web API; signed clicks decide steps.

The local Slack and the signing of its requests are in tests/slack_api.py; linking Slack users
(the member's own proof) is tested in test_slack_links.py.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator

import psycopg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment

from blocks.infra.embedded.postgres import PostgresCredentials
from tests.slack_api import (
    CHANNEL,
    INTERACTIONS,
    SlackStack,
    button,
    click_payload,
    install,
    link,
    org_events,
    posted,
    run_events,
    running_slack_stack,
    send,
    signed,
    slack_denials,
    start_run,
)
from tests.support import make_org, wait_for_status

# Low enough that the flood test meets it, high enough for the other tests' few bad requests.
FORGED_PER_MINUTE = "30/minute"


@pytest.fixture(scope="module")
async def slack_stack(
    engine: AsyncEngine, temporal_env: WorkflowEnvironment, postgres: PostgresCredentials
) -> AsyncIterator[SlackStack]:
    async with running_slack_stack(
        engine=engine,
        temporal=temporal_env.client,
        database_url=postgres.url(),
        extra_settings={"rate_limit_invalid_ip": FORGED_PER_MINUTE},
    ) as running:
        yield running


# --- tests ---------------------------------------------------------------------------------


async def test_installation_is_admin_only_and_the_token_is_sealed(
    slack_stack: SlackStack, engine: AsyncEngine, postgres: PostgresCredentials
) -> None:
    org, other = await make_org(engine), await make_org(engine)
    slack = slack_stack.slack
    async with slack_stack.stack.http() as http:
        # An approver may not connect Slack (and the refusal is audited).
        team, token = slack.new_team()
        body = {"bot_token": token, "channel_id": CHANNEL}
        refused = await http.put(
            "/v1/integrations/slack", json=body, headers=org["approver"].headers
        )
        assert refused.status_code == 403, refused.text
        # A token Slack refuses is refused; no token at all cannot install.
        bad = await http.put(
            "/v1/integrations/slack",
            json={"bot_token": "xoxb-not-a-real-token", "channel_id": CHANNEL},
            headers=org["admin"].headers,
        )
        assert bad.status_code == 422, bad.text
        assert bad.json()["errors"][0]["field"] == "bot_token"
        assert "invalid_auth" in bad.text
        missing = await http.put(
            "/v1/integrations/slack", json={"channel_id": CHANNEL}, headers=org["admin"].headers
        )
        assert missing.status_code == 422, missing.text
        assert (
            await http.get("/v1/integrations/slack", headers=org["admin"].headers)
        ).status_code == 404

        installed = await http.put(
            "/v1/integrations/slack", json=body, headers=org["admin"].headers
        )
        assert installed.status_code == 200, installed.text
        assert installed.json()["team_id"] == team  # named by Slack (auth.test), not by the caller
        # The token is write-only: never in a response.
        read = await http.get("/v1/integrations/slack", headers=org["owner"].headers)
        assert read.status_code == 200
        assert read.json()["bot_token_set"] is True
        assert token not in read.text
        assert token not in installed.text
        # Moving the channel keeps the token.
        moved = await http.put(
            "/v1/integrations/slack", json={"channel_id": "C0OTHER"}, headers=org["admin"].headers
        )
        assert moved.json()["channel_id"] == "C0OTHER"
        # One organization per workspace.
        taken = await http.put("/v1/integrations/slack", json=body, headers=other["admin"].headers)
        assert taken.status_code == 409, taken.text

        # The member links their Slack account (tests below); an admin may unlink it.
        await link(http, slack_stack.stack, org, team, "U0APPROVER", "approver")
        unlinked = await http.delete(
            "/v1/integrations/slack/users/U0APPROVER", headers=org["owner"].headers
        )
        assert unlinked.status_code == 204
        gone = await http.delete(
            "/v1/integrations/slack/users/U0APPROVER", headers=org["owner"].headers
        )
        assert gone.status_code == 404
        events = await org_events(http, org)
        actions = [e["action"] for e in events]
        assert "integration.slack.installed" in actions
        assert "integration.slack.user_linked" in actions
        (removed,) = [e for e in events if e["action"] == "integration.slack.user_unlinked"]
        assert removed["actor_id"] == str(org["owner"].user_id)
        assert removed["target_id"] == "U0APPROVER"
        assert removed["data"]["user_id"] == str(org["approver"].user_id)
        assert token not in json.dumps(await org_events(http, org))

    # As stored: the sealed token, not the token.
    async with await psycopg.AsyncConnection.connect(postgres.url(superuser=True)) as conn:
        cursor = await conn.execute(
            "SELECT row_to_json(s)::text, bot_token_sealed FROM slack_installations s "
            "WHERE org_id = %s",
            (org.id,),
        )
        row = await cursor.fetchone()
    assert row is not None
    as_text, sealed = row
    assert team in as_text
    assert token not in as_text
    assert token.encode() not in bytes(sealed)
    assert len(bytes(sealed)) >= len(token) + 12 + 16  # nonce and tag: AES-GCM, not an encoding


async def test_a_step_posts_buttons_and_a_signed_click_decides_it(
    slack_stack: SlackStack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    slack = slack_stack.slack
    async with slack_stack.stack.http() as http:
        team, token = await install(http, org, slack)
        await link(http, slack_stack.stack, org, team, "U0APPROVER", "approver")
        run_id = await start_run(http, org, "operator")

        message = await posted(slack, run_id)
        (headers,) = [h for m, h, b in slack.calls if m == "chat.postMessage" and b is message]
        assert headers["authorization"] == f"Bearer {token}"
        assert message["channel"] == CHANNEL
        assert "Team lunch" in message["blocks"][0]["text"]["text"]
        fields = json.dumps(message["blocks"][1])
        assert "Deadline" in fields
        assert "role _approver_" in fields
        approve, reject = button(message, "blocks.approve"), button(message, "blocks.reject")
        assert json.loads(approve["value"]) == {"run_id": run_id, "step_id": "approve"}
        assert reject["value"] == approve["value"]

        response = await send(http, click_payload(team, "U0APPROVER", approve))
        assert response.status_code == 200, response.text
        assert response.json()["response_type"] == "ephemeral"
        assert "Approved" in response.json()["text"]
        done = await wait_for_status(http, run_id, org["auditor"].headers, status="completed")
        assert done["result"]["status"] == "approved"

        (decided,) = [
            e for e in await run_events(http, org, run_id) if e["action"] == "step.decided"
        ]
        assert decided["actor_id"] == str(org["approver"].user_id)
        assert decided["data"]["channel"] == "slack"
        assert decided["data"]["decision"] == "approve"


async def test_forged_stale_unlinked_and_self_approving_clicks_decide_nothing(
    slack_stack: SlackStack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    slack = slack_stack.slack
    async with slack_stack.stack.http() as http:
        team, _ = await install(http, org, slack)
        await link(http, slack_stack.stack, org, team, "U0APPROVER", "approver")
        await link(http, slack_stack.stack, org, team, "U0REQUESTER", "operator_approver")
        # The requester holds the approver role: only separation of duties stands in the way.
        run_id = await start_run(http, org, "operator_approver")
        approve = button(await posted(slack, run_id), "blocks.approve")
        click = click_payload(
            team, "U0APPROVER", approve
        )  # an eligible approver's click, if verified

        forged = await send(http, click, secret="not-the-signing-secret")
        assert forged.status_code == 401, forged.text
        assert forged.headers["content-type"].startswith("application/problem+json")
        stale = await send(http, click, at=int(time.time()) - 600)
        assert stale.status_code == 401, stale.text
        unsigned = await http.post(INTERACTIONS, content=signed(click)[0])
        assert unsigned.status_code == 401, unsigned.text

        unlinked = await send(http, click_payload(team, "U0NOBODY", approve))
        assert unlinked.status_code == 200
        assert "not linked" in unlinked.json()["text"]
        own = await send(http, click_payload(team, "U0REQUESTER", approve))
        assert own.status_code == 200
        assert "requester cannot approve" in own.json()["text"]

        # Nothing was decided: the step is still open and no vote is in the log.
        body = (await http.get(f"/v1/runs/{run_id}", headers=org["auditor"].headers)).json()
        assert body["stage"] == "awaiting_approval"
        assert [s["state"] for s in body["pending_steps"]] == ["pending"]
        run_actions = [e["action"] for e in await run_events(http, org, run_id)]
        assert "step.decided" not in run_actions

        denials = slack_denials(await org_events(http, org))
        reasons = [d["reason"] for d in denials]
        assert reasons == [
            "Slack request refused: bad signature",
            "Slack request refused: stale timestamp",
            "Slack request refused: missing Slack signature headers",
            "Slack user is not linked to a member",
            "decision refused: self_approval",
        ]
        for unverified in denials[:3]:
            assert unverified["data"]["unverified_team"] == team
            assert unverified["actor_type"] == "anonymous"
            assert unverified["outcome"] == "denied"
        assert denials[3]["data"]["slack_user_id"] == "U0NOBODY"
        assert denials[4]["actor_id"] == str(org["operator_approver"].user_id)

        # The same click, correctly signed and current, does decide: what was refused was only
        # the signature, the age, the link or the person.
        accepted = await send(http, click)
        assert accepted.status_code == 200, accepted.text
        assert "Approved" in accepted.json()["text"]
        await wait_for_status(http, run_id, org["auditor"].headers, status="completed")


async def test_clicks_from_a_workspace_no_organization_installed_decide_nothing(
    slack_stack: SlackStack,
) -> None:
    async with slack_stack.stack.http() as http:
        value = json.dumps({"run_id": str(uuid.uuid4()), "step_id": "approve"})
        click = click_payload(
            "T0NOWHERE", "U0APPROVER", {"action_id": "blocks.approve", "value": value}
        )
        forged = await send(http, click, secret="wrong")
        assert forged.status_code == 401, forged.text
        stray = await send(http, click)
        assert stray.status_code == 200, stray.text
        assert "not connected" in stray.json()["text"]
        # A verified request that is not a Blocks button is a bad request, not a decision.
        foreign = await send(
            http, click_payload("T0NOWHERE", "U0APPROVER", {"action_id": "other", "value": value})
        )
        assert foreign.status_code == 400, foreign.text


# Last in the module: it uses up this address's allowance of invalid requests.
async def test_a_flood_of_forged_clicks_is_cut_off_before_it_floods_the_log(
    slack_stack: SlackStack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    slack = slack_stack.slack
    async with slack_stack.stack.http() as http:
        team, _ = await install(http, org, slack)
        value = json.dumps({"run_id": str(uuid.uuid4()), "step_id": "approve"})
        click = click_payload(team, "U0APPROVER", {"action_id": "blocks.approve", "value": value})
        answers = [(await send(http, click, secret="forged")) for _ in range(45)]
        refused = [a for a in answers if a.status_code == 429]
        assert refused, "45 forged requests in a minute were all answered 401"
        assert int(refused[0].headers["retry-after"]) >= 1
        assert {a.status_code for a in answers} == {401, 429}
        forged_events = [
            d for d in slack_denials(await org_events(http, org)) if "unverified_team" in d["data"]
        ]
    # Each 401 left one event; the refused rest left none in this organization's log.
    assert len(forged_events) == sum(1 for a in answers if a.status_code == 401) < 45
