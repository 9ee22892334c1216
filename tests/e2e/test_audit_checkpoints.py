"""Signed checkpoints: published key, on-demand and scheduled signing, append-only storage."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment

from blocks.core.audit.checkpoints import CheckpointClaim
from blocks.infra.crypto.signing import (
    SigningKeyError,
    load_public_keys,
    new_signing_key_spec,
    parse_signing_key,
    verify_signature,
)
from blocks.infra.db import bind_org, session_factory
from blocks.infra.embedded.postgres import PostgresCredentials
from blocks.infra.settings import Environment, Settings
from blocks.infra.temporal.schedules import CHECKPOINT_SCHEDULE_ID, ensure_checkpoint_schedule
from blocks.workflows.checkpoints import CHECKPOINT_WORKFLOW
from tests.support import (
    EXPENSE,
    PAYLOAD_KEYS,
    SIGNING_KEY,
    Stack,
    make_org,
    running_stack,
    wait_for_status,
)


def _claim(body: dict[str, object]) -> CheckpointClaim:
    return CheckpointClaim(
        org_id=str(body["org_id"]),
        seq=int(body["seq"]),  # type: ignore[call-overload]
        hash=str(body["hash"]),
        signed_at=datetime.fromisoformat(str(body["signed_at"])),
        key_id=str(body["key_id"]),
    )


async def test_on_demand_checkpoint_verifies_with_the_published_key(
    stack: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    async with stack.http() as http:
        published = (await http.get("/v1/audit/public-key")).json()  # no credentials needed
        assert published["public_key"] == parse_signing_key(SIGNING_KEY).public().b64()
        assert published["jwk"]["crv"] == "Ed25519"
        run = await http.post(
            "/v1/runs",
            json={"workflow": "expense_approval", "input": EXPENSE},
            headers=org["operator"].headers,
        )
        await wait_for_status(
            http,
            run.json()["id"],
            org["operator"].headers,
            status="running",
            stage="awaiting_approval",
        )

        # Signing writes to the log: auditors read it (audit:read), admins sign it.
        refused = await http.post("/v1/audit/checkpoints", headers=org["auditor"].headers)
        assert refused.status_code == 403
        made = await http.post("/v1/audit/checkpoints", headers=org["admin"].headers)
        assert made.status_code == 201, made.text
        checkpoint = made.json()
        events = (await http.get("/v1/audit-events", headers=org["auditor"].headers)).json()[
            "events"
        ]
        # The refused request above was audited too, so the head is the last event listed.
        assert checkpoint["seq"] == events[-1]["seq"]
        assert checkpoint["hash"] == events[-1]["hash"]
        message = _claim(checkpoint).message()
        assert verify_signature(published["public_key"], message, checkpoint["signature"])
        forged = _claim({**checkpoint, "seq": checkpoint["seq"] - 1}).message()
        assert not verify_signature(published["public_key"], forged, checkpoint["signature"])
        listed = (await http.get("/v1/audit/checkpoints", headers=org["auditor"].headers)).json()
        assert [c["id"] for c in listed] == [checkpoint["id"]]


async def test_the_scheduled_workflow_signs_only_organizations_with_new_events(
    stack: Stack, engine: AsyncEngine
) -> None:
    org, quiet = await make_org(engine), await make_org(engine)
    async with stack.http() as http:
        started = await http.post(
            "/v1/runs",
            json={"workflow": "expense_approval", "input": EXPENSE},
            headers=org["operator"].headers,
        )
        # The run appends nothing more once its step waits: no event lands between two rounds.
        await wait_for_status(
            http,
            started.json()["id"],
            org["operator"].headers,
            status="running",
            stage="awaiting_approval",
        )

        async def round_of_checkpoints() -> int:
            return await stack.temporal.execute_workflow(
                CHECKPOINT_WORKFLOW,
                id=f"checkpoints-{uuid.uuid4()}",
                task_queue=stack.settings.task_queue,
                result_type=int,
            )

        assert await round_of_checkpoints() >= 1
        first = (await http.get("/v1/audit/checkpoints", headers=org["auditor"].headers)).json()
        assert len(first) == 1
        assert (
            await http.get("/v1/audit/checkpoints", headers=quiet["auditor"].headers)
        ).json() == []
        await round_of_checkpoints()
        # Nothing new was appended for the org in between (listing reads nothing into the log).
        assert (
            await http.get("/v1/audit/checkpoints", headers=org["auditor"].headers)
        ).json() == first


async def test_checkpoint_schedule_is_created_and_updated_idempotently(stack: Stack) -> None:
    settings = stack.settings.model_copy(update={"audit_checkpoint_minutes": 7})
    await ensure_checkpoint_schedule(stack.temporal, settings, CHECKPOINT_WORKFLOW)
    await ensure_checkpoint_schedule(stack.temporal, settings, CHECKPOINT_WORKFLOW)
    settings = stack.settings.model_copy(update={"audit_checkpoint_minutes": 9})
    await ensure_checkpoint_schedule(stack.temporal, settings, CHECKPOINT_WORKFLOW)
    handle = stack.temporal.get_schedule_handle(CHECKPOINT_SCHEDULE_ID)
    description = await handle.describe()
    assert description.schedule.spec.intervals[0].every == timedelta(minutes=9)
    await handle.delete()


async def test_checkpoints_are_append_only(stack: Stack, engine: AsyncEngine) -> None:
    org = await make_org(engine)
    async with stack.http() as http:
        assert (
            await http.post("/v1/audit/checkpoints", headers=org["admin"].headers)
        ).status_code == 201

    async def attempt(statement: str) -> None:
        async with session_factory(engine)() as session, session.begin():
            await bind_org(session, org.id)
            await session.exec(text(statement))  # type: ignore[call-overload]

    for statement in ("UPDATE audit_checkpoints SET seq = 0", "DELETE FROM audit_checkpoints"):
        with pytest.raises(DBAPIError, match="permission denied"):
            await attempt(statement)


async def test_the_api_holds_no_signing_key_and_the_worker_signs(
    engine: AsyncEngine, temporal_env: WorkflowEnvironment, postgres: PostgresCredentials
) -> None:
    """An API configured with public keys only (as in production) makes checkpoints through the
    worker, which has the key, and publishes the retired key beside the current one."""
    retired = parse_signing_key(new_signing_key_spec("retired")).public()
    current = parse_signing_key(SIGNING_KEY).public()
    org = await make_org(engine)
    async with running_stack(
        engine=engine,
        temporal=temporal_env.client,
        database_url=postgres.url(),
        task_queue=f"keys-{uuid.uuid4().hex[:8]}",
        extra_settings={
            "audit_signing_key": None,
            "audit_public_keys": (
                f"{current.key_id}:{current.b64()},{retired.key_id}:{retired.b64()}"
            ),
        },
    ) as stack:
        assert stack.settings.audit_signing_key is None
        async with stack.http() as http:
            made = await http.post("/v1/audit/checkpoints", headers=org["admin"].headers)
            published = await http.get("/v1/audit/public-key")
            exported = await http.get("/v1/audit/export", headers=org["auditor"].headers)
    assert made.status_code == 201, made.text
    checkpoint = made.json()
    claim = CheckpointClaim(
        org_id=checkpoint["org_id"],
        seq=checkpoint["seq"],
        hash=checkpoint["hash"],
        signed_at=datetime.fromisoformat(checkpoint["signed_at"]),
        key_id=checkpoint["key_id"],
    )
    assert published.json()["key_id"] == current.key_id
    assert verify_signature(
        published.json()["public_key"], claim.message(), checkpoint["signature"]
    )
    header = json.loads(exported.text.splitlines()[0])
    assert header["public_keys"] == {current.key_id: current.b64(), retired.key_id: retired.b64()}


def test_production_refuses_an_api_without_public_keys() -> None:
    settings = Settings(
        env="test", payload_keys=PAYLOAD_KEYS, audit_signing_key=SIGNING_KEY
    ).model_copy(update={"env": Environment.PROD})
    with pytest.raises(SigningKeyError, match="BLOCKS_AUDIT_PUBLIC_KEYS must be set"):
        load_public_keys(settings)
    current = parse_signing_key(SIGNING_KEY).public()
    with_keys = settings.model_copy(update={"audit_public_keys": f"k:{current.b64()}"})
    assert load_public_keys(with_keys).current.b64() == current.b64()
