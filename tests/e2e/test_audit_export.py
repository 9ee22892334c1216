"""Audit export over HTTP: JSON Lines and CSV with filters, checkpoints, custody, offline verify."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import sys
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from blocks.api.audit.export_csv import CSV_COLUMNS
from blocks.core.audit.records import ActorType, AuditRecord
from blocks.core.audit.verify import verify_export
from blocks.core.context import AuthMethod, OrgContext, OrgId
from blocks.infra.crypto.signing import new_signing_key_spec, parse_signing_key
from blocks.infra.db import session_factory
from blocks.models.audit.events import append_events
from tests.support import EXPENSE, Org, Stack, make_org, wait_for_status

ROOT = Path(__file__).resolve().parents[2]
RUN_ACTIONS = ["run.started", "step.opened", "step.decided", "step.closed", "run.completed"]


async def _approved_run(http: httpx.AsyncClient, org: Org) -> str:
    started = await http.post(
        "/v1/runs",
        json={"workflow": "expense_approval", "input": EXPENSE},
        headers=org["operator"].headers,
    )
    assert started.status_code == 201, started.text
    run_id = str(started.json()["id"])
    await wait_for_status(
        http, run_id, org["operator"].headers, status="running", stage="awaiting_approval"
    )
    decided = await http.post(
        f"/v1/runs/{run_id}/steps/approve/decisions",
        json={"decision": "approve", "comment": '=HYPERLINK("http://evil")'},
        headers=org["approver"].headers,
    )
    assert decided.status_code == 200, decided.text
    await wait_for_status(http, run_id, org["operator"].headers, status="completed")
    return run_id


async def _export(
    http: httpx.AsyncClient, org: Org, **params: str
) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    response = await http.get("/v1/audit/export", params=params, headers=org["auditor"].headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/x-ndjson")
    assert "attachment" in response.headers["content-disposition"]
    lines = response.text.splitlines(keepends=True)
    parsed = [json.loads(line) for line in lines]
    assert parsed[0]["type"] == "header"
    events = [p for p in parsed if p["type"] == "event"]
    checkpoints = [p for p in parsed if p["type"] == "checkpoint"]
    assert len(parsed) == 1 + len(events) + len(checkpoints)
    return parsed[0], events, checkpoints, lines


async def _cli_verify(path: Path, *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "blocks.cli",
        "audit",
        "verify",
        str(path),
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, output.decode()


async def test_a_run_exports_as_jsonl_and_csv_with_filters_and_verifies(
    stack: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    async with stack.http() as http:
        run_id = await _approved_run(http, org)

        header, events, _, lines = await _export(http, org, run_id=run_id)
        assert header["format"] == "blocks.audit.export.v1"
        assert header["org_id"] == str(org.id)
        assert header["complete"] is False
        assert header["filters"]["run_id"] == run_id
        assert [e["action"] for e in events] == RUN_ACTIONS
        assert (header["first_seq"], header["last_seq"]) == (events[0]["seq"], events[-1]["seq"])
        report = verify_export(lines)
        assert report.ok, report.problem
        assert (report.events_checked, report.complete) == (len(RUN_ACTIONS), False)

        decided = events[2]
        _, only, _, lines = await _export(http, org, run_id=run_id, action="step.decided")
        assert [e["id"] for e in only] == [decided["id"]]
        assert verify_export(lines).ok

        _, by_actor, _, _ = await _export(http, org, actor_id=str(org["approver"].user_id))
        assert decided["id"] in [e["id"] for e in by_actor]
        assert {e["actor_id"] for e in by_actor} == {str(org["approver"].user_id)}

        since = decided["occurred_at"]
        _, later, _, lines = await _export(http, org, run_id=run_id, **{"from": since})
        assert decided["id"] in [e["id"] for e in later]
        assert events[0]["id"] not in [e["id"] for e in later]
        assert all(
            datetime.fromisoformat(e["occurred_at"]) >= datetime.fromisoformat(since) for e in later
        )
        assert verify_export(lines).ok
        _, before, _, _ = await _export(http, org, run_id=run_id, to=since)
        assert decided["id"] not in [e["id"] for e in before]

        # A value a spreadsheet would run as a formula, in a column the CSV carries as text.
        async with session_factory(engine)() as session, session.begin():
            ctx = OrgContext(org_id=OrgId(org.id), user_id=None, roles=(), auth=AuthMethod.SYSTEM)
            record = AuditRecord(
                action="note.added", actor_type=ActorType.SYSTEM, run_id=run_id, reason="=1+2"
            )
            await append_events(ctx, session, [record])
        response = await http.get(
            "/v1/audit/export",
            params={"format": "csv", "run_id": run_id},
            headers=org["auditor"].headers,
        )
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(response.text)))
        assert tuple(rows[0].keys()) == CSV_COLUMNS
        assert [r["type"] for r in rows] == ["event"] * (len(RUN_ACTIONS) + 1)
        assert [r["action"] for r in rows] == [*RUN_ACTIONS, "note.added"]
        assert [r["id"] for r in rows[: len(RUN_ACTIONS)]] == [e["id"] for e in events]
        assert [int(r["seq"]) for r in rows[: len(RUN_ACTIONS)]] == [e["seq"] for e in events]
        assert [r["hash"] for r in rows[: len(RUN_ACTIONS)]] == [e["hash"] for e in events]
        assert [json.loads(r["data"]) for r in rows[: len(RUN_ACTIONS)]] == [
            e["data"] for e in events
        ]
        # The comment is run content: the export carries it sealed, as hashed, never in clear.
        assert json.loads(rows[2]["data"])["comment"].startswith("enc:c1:")
        assert "HYPERLINK" not in response.text
        assert (rows[0]["reason"], rows[-1]["reason"]) == ("", "'=1+2")  # null; defused formula


async def test_a_checkpoint_is_exported_and_verified_and_a_forged_signature_caught(
    stack: Stack, engine: AsyncEngine, tmp_path: Path
) -> None:
    org = await make_org(engine)
    async with stack.http() as http:
        await _approved_run(http, org)
        made = await http.post("/v1/audit/checkpoints", headers=org["admin"].headers)
        assert made.status_code == 201, made.text
        checkpoint = made.json()
        published = (await http.get("/v1/audit/public-key")).json()

        header, events, checkpoints, lines = await _export(http, org)
        assert header["complete"] is True
        assert header["head"]["seq"] == events[-1]["seq"]
        assert header["public_keys"] == {published["key_id"]: published["public_key"]}
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        [exported] = checkpoints
        assert {k: exported[k] for k in ("seq", "hash", "key_id", "signature")} == {
            k: checkpoint[k] for k in ("seq", "hash", "key_id", "signature")
        }
        report = verify_export(lines)
        assert report.ok, report.problem
        assert report.checkpoints_checked == 1

    good = tmp_path / "good.jsonl"
    good.write_text("".join(lines))
    code, output = await _cli_verify(good, "--public-key", published["public_key"])
    assert code == 0, output
    stranger = parse_signing_key(new_signing_key_spec()).public().b64()
    code, output = await _cli_verify(good, "--public-key", stranger)
    assert code == 1, output
    assert f"TAMPERED: bad_checkpoint at seq {checkpoint['seq']}" in output

    # Someone re-signs the checkpoint with a key of their own, or edits what it certifies.
    forger = parse_signing_key(new_signing_key_spec(published["key_id"]))
    for change in (
        {"signature": forger.sign(b"anything")},
        {"hash": events[0]["hash"]},
        {"seq": checkpoint["seq"] - 1},
    ):
        tampered = [*lines[:-1], json.dumps({**exported, **change}) + "\n"]
        report = verify_export(tampered)
        assert not report.ok, change
        assert report.problem is not None
        assert report.problem.kind == "bad_checkpoint", report.problem
        path = tmp_path / "tampered.jsonl"
        path.write_text("".join(tampered))
        code, output = await _cli_verify(path)
        assert code == 1, output
        assert "TAMPERED: bad_checkpoint" in output


async def test_custody_of_a_run_lists_its_events_verified_and_is_private(
    stack: Stack, engine: AsyncEngine
) -> None:
    org, other = await make_org(engine), await make_org(engine)
    async with stack.http() as http:
        run_id = await _approved_run(http, org)
        made = await http.post("/v1/audit/checkpoints", headers=org["admin"].headers)
        assert made.status_code == 201, made.text

        custody = await http.get(f"/v1/runs/{run_id}/custody", headers=org["auditor"].headers)
        assert custody.status_code == 200, custody.text
        body = custody.json()
        assert body["intact"] is True
        assert body["verification"]["ok"] is True, body["verification"]
        assert [e["action"] for e in body["events"]] == RUN_ACTIONS
        assert all(e["hash_ok"] for e in body["events"])
        assert all(e["run_id"] == run_id for e in body["events"])
        assert all(e["certified_by"]["seq"] == made.json()["seq"] for e in body["events"])

        live = await http.get("/v1/audit/verify", headers=org["auditor"].headers)
        assert live.status_code == 200
        assert live.json()["ok"] is True
        assert live.json()["checkpoints_checked"] == 1

        for path in (f"/v1/runs/{run_id}/custody", f"/v1/audit/export?run_id={run_id}"):
            response = await http.get(path, headers=other["auditor"].headers)
            assert response.status_code == 404, response.text
            assert response.headers["content-type"] == "application/problem+json"
        unknown = await http.get(f"/v1/runs/{uuid.uuid4()}/custody", headers=org["auditor"].headers)
        assert unknown.status_code == 404
        for path in ("/v1/audit/export", "/v1/audit/verify", f"/v1/runs/{run_id}/custody"):
            refused = await http.get(path, headers=org["operator"].headers)
            assert refused.status_code == 403, path


async def test_bad_export_parameters_are_problems_naming_the_field(
    stack: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    async with stack.http() as http:
        for params, field in (
            ({"format": "xml"}, "format"),
            ({"from": "last tuesday"}, "from"),
            ({"to": "2026-13-45"}, "to"),
            ({"run_id": "not-a-uuid"}, "run_id"),
            ({"from": "2026-11-24T12:00:00Z", "to": "2026-11-24T11:00:00Z"}, "to"),
            ({"action": "x" * 101}, "action"),
        ):
            response = await http.get(
                "/v1/audit/export", params=params, headers=org["auditor"].headers
            )
            assert response.status_code == 422, (params, response.text)
            assert response.headers["content-type"] == "application/problem+json"
            assert [e["field"] for e in response.json()["errors"]] == [field], response.json()


async def test_revealed_content_is_checked_against_the_chain_and_a_forgery_is_caught(
    stack: Stack, engine: AsyncEngine, tmp_path: Path
) -> None:
    org = await make_org(engine)
    async with stack.http() as http:
        run_id = await _approved_run(http, org)
        sealed = await http.get(
            "/v1/audit/export", params={"run_id": run_id}, headers=org["auditor"].headers
        )
        assert "HYPERLINK" not in sealed.text  # the comment is sealed, as hashed
        refused = await http.get(
            "/v1/audit/export",
            params={"run_id": run_id, "format": "csv", "content": "revealed"},
            headers=org["auditor"].headers,
        )
        assert refused.status_code == 422
        assert refused.json()["errors"][0]["field"] == "content"
        response = await http.get(
            "/v1/audit/export",
            params={"run_id": run_id, "content": "revealed"},
            headers=org["auditor"].headers,
        )
        assert response.status_code == 200, response.text
        revealed = await http.get(
            "/v1/audit-events", params={"limit": 1000}, headers=org["auditor"].headers
        )
    lines = response.text.splitlines(keepends=True)
    parsed = [json.loads(line) for line in lines]
    assert parsed[0]["content"] == "revealed"
    contents = {p["id"]: p for p in parsed if p["type"] == "content"}
    decided = next(p for p in parsed if p.get("action") == "step.decided")
    assert contents[decided["id"]]["data"]["comment"] == '=HYPERLINK("http://evil")'
    report = verify_export(lines)
    assert report.ok, report.problem
    assert report.content_checked >= 3  # the title, the comment, the run's result

    path = tmp_path / "revealed.jsonl"
    path.write_text(response.text)
    code, output = await _cli_verify(path)
    assert code == 0, output

    forged = [
        line.replace('=HYPERLINK(\\"http://evil\\")', "harmless")
        if '"type":"content"' in line
        else line
        for line in lines
    ]
    assert forged != lines
    report = verify_export(forged)
    assert not report.ok
    assert report.problem is not None
    assert (report.problem.kind, report.problem.id) == ("content_mismatch", decided["id"])
    assert revealed.status_code == 200
    assert any(e["action"] == "audit.content_revealed" for e in revealed.json()["events"])
