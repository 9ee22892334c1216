"""`blocks audit export --content revealed`: the API's revealed JSON Lines from the CLI, recorded
in the organization's chain, and checked field by field by `blocks audit verify`."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from blocks.core.audit.records import ActorType, AuditRecord
from blocks.core.audit.verify import verify_export
from blocks.core.context import AuthMethod, OrgContext, OrgId
from blocks.infra.db import session_factory
from blocks.infra.embedded.postgres import PostgresCredentials
from blocks.models.audit.events import append_events
from tests.support import SIGNING_KEY, audit_actions, blocks_process_env, make_org

ROOT = Path(__file__).resolve().parents[2]
COMMENT = '=HYPERLINK("http://evil")'


async def _blocks(env: dict[str, str], *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "blocks.cli",
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, output.decode()


def _env(postgres: PostgresCredentials) -> dict[str, str]:
    # The export needs the database, the master keys (to open content keys) and the public keys
    # (derived from the signing key outside production); Temporal is never reached.
    return blocks_process_env(
        postgres.url(), "127.0.0.1:1", "unused", BLOCKS_AUDIT_SIGNING_KEY=SIGNING_KEY
    )


async def _run_with_content(engine: AsyncEngine, org_id: uuid.UUID) -> None:
    """A step opened and decided, as a workflow records them: title, comment and form are run
    content, sealed on append."""
    run_id = str(uuid.uuid4())
    ctx = OrgContext(org_id=OrgId(org_id), user_id=None, roles=(), auth=AuthMethod.SYSTEM)
    records = [
        AuditRecord(
            action="step.opened",
            actor_type=ActorType.WORKFLOW,
            run_id=run_id,
            data={"step_id": "approve", "title": "Laptop for Ann"},
        ),
        AuditRecord(
            action="step.decided",
            actor_type=ActorType.WORKFLOW,
            run_id=run_id,
            data={"step_id": "approve", "comment": COMMENT, "form": {"budget": "FI-7"}},
        ),
    ]
    async with session_factory(engine)() as session, session.begin():
        await append_events(ctx, session, records)


async def test_a_revealed_cli_export_verifies_its_content_and_a_forgery_is_caught(
    engine: AsyncEngine, postgres: PostgresCredentials, tmp_path: Path
) -> None:
    org = await make_org(engine)
    await _run_with_content(engine, org.id)
    env = _env(postgres)
    path = tmp_path / "revealed.jsonl"

    code, output = await _blocks(
        env, "audit", "export", "--org", org.slug, "--out", str(path), "--content", "revealed"
    )
    assert code == 0, output

    lines = path.read_text().splitlines(keepends=True)
    parsed = [json.loads(line) for line in lines]
    header = parsed[0]
    assert (header["type"], header["content"], header["org_id"]) == (
        "header",
        "revealed",
        str(org.id),
    )
    assert {p["type"] for p in parsed} == {"header", "event", "content"}
    contents = {p["id"]: p for p in parsed if p["type"] == "content"}
    assert all(set(c) == {"type", "id", "key", "data"} and c["key"] for c in contents.values())
    decided = next(p for p in parsed if p.get("action") == "step.decided")
    assert decided["data"]["comment"].startswith("enc:")  # the event as the chain holds it
    assert contents[decided["id"]]["data"] == {"comment": COMMENT, "form": {"budget": "FI-7"}}
    # Revealing was recorded (and committed) before the export read the chain: it is in it.
    revealed = [p for p in parsed if p.get("action") == "audit.content_revealed"]
    assert [(e["actor_type"], e["actor_id"], e["target_id"]) for e in revealed] == [
        ("system", "cli:audit-export", str(org.id))
    ]
    assert ("audit.content_revealed", "success", None) in await audit_actions(engine, org.id)

    report = verify_export(lines)
    assert report.ok, report.problem
    assert report.content_checked == 3  # the title, the comment and the form
    code, output = await _blocks(env, "audit", "verify", str(path))
    assert code == 0, output
    assert "INTACT" in output
    assert "content checked" in output
    assert "3 revealed fields" in output

    forged = tmp_path / "forged.jsonl"
    forged.write_text(
        "".join(
            line.replace("FI-7", "FI-8") if '"type":"content"' in line else line for line in lines
        )
    )
    assert forged.read_text() != path.read_text()
    code, output = await _blocks(env, "audit", "verify", str(forged))
    assert code == 1, output
    assert "TAMPERED: content_mismatch" in output
    assert decided["id"] in output


async def test_a_sealed_export_reveals_nothing_and_the_platform_chain_cannot_be_revealed(
    engine: AsyncEngine, postgres: PostgresCredentials, tmp_path: Path
) -> None:
    org = await make_org(engine)
    await _run_with_content(engine, org.id)
    env = _env(postgres)
    path = tmp_path / "sealed.jsonl"

    code, output = await _blocks(env, "audit", "export", "--org", org.slug, "--out", str(path))
    assert code == 0, output
    parsed = [json.loads(line) for line in path.read_text().splitlines()]
    assert "content" not in parsed[0]
    assert {p["type"] for p in parsed} == {"header", "event"}
    assert "HYPERLINK" not in path.read_text()

    code, output = await _blocks(
        env, "audit", "export", "--platform", "--out", str(path), "--content", "revealed"
    )
    assert code == 2, output
    assert "--content revealed needs --org" in output
    actions = [a for a, _, _ in await audit_actions(engine, org.id)]
    assert "audit.content_revealed" not in actions
