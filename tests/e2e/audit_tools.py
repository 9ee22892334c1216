"""Audit tools the witness and stream tests share: append events, sign a checkpoint, export,
run `blocks audit verify`, and rewrite the chain as a database superuser would."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row
from sqlalchemy.ext.asyncio import AsyncEngine

from blocks.core.audit.chain import GENESIS_HASH, chain_hash
from blocks.core.audit.records import ActorType, AuditRecord
from blocks.core.context import AuthMethod, OrgContext, OrgId
from blocks.infra.db import session_factory
from blocks.infra.embedded.postgres import PostgresCredentials
from blocks.models.audit.events import append_events, hashed_payload
from tests.support import Org, Stack

ROOT = Path(__file__).resolve().parents[2]


async def append(engine: AsyncEngine, org: Org, *actions: str) -> None:
    ctx = OrgContext(org_id=OrgId(org.id), user_id=None, roles=(), auth=AuthMethod.SYSTEM)
    records = [
        AuditRecord(
            action=action,
            actor_type=ActorType.SYSTEM,
            target_type="invoice",
            target_id=f"inv-{action}",
            data={"amount": "120.00"},
        )
        for action in actions
    ]
    async with session_factory(engine)() as session, session.begin():
        await append_events(ctx, session, records)


async def checkpoint(stack: Stack, org: Org) -> dict[str, Any]:
    """Sign the chain head now, as the API returns it: what a witness receives and keeps."""
    async with stack.http() as http:
        made = await http.post("/v1/audit/checkpoints", headers=org["admin"].headers)
    assert made.status_code == 201, made.text
    return dict(made.json())


async def export(stack: Stack, org: Org, path: Path) -> Path:
    async with (
        stack.http() as http,
        http.stream("GET", "/v1/audit/export", headers=org["auditor"].headers) as response,
    ):
        assert response.status_code == 200
        with path.open("wb") as handle:
            async for chunk in response.aiter_bytes():
                handle.write(chunk)
    return path


async def verify(path: Path, *args: str) -> tuple[int, str]:
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
        # A wide terminal: the verdict lines are asserted whole.
        env={**os.environ, "COLUMNS": "400"},
    )
    output, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, output.decode()


async def rewrite_and_rehash(postgres: PostgresCredentials, org: Org, seq: int) -> str:
    """What a superuser who knows the scheme does: change event `seq`, recompute every later
    hash and the chain head, and delete the checkpoints that would give it away. Returns the
    rewritten event's id."""

    def run() -> str:
        with psycopg.connect(postgres.url(superuser=True), row_factory=dict_row) as conn:
            conn.execute("SET session_replication_role = replica")
            rows = conn.execute(
                "SELECT * FROM audit_events WHERE org_id = %s ORDER BY seq", (org.id,)
            ).fetchall()
            prev = GENESIS_HASH
            for row in rows:
                if row["seq"] == seq:
                    row["target_id"] = "inv-forged"
                row["hash"] = chain_hash(prev, hashed_payload(row))
                conn.execute(
                    "UPDATE audit_events SET target_id = %s, prev_hash = %s, hash = %s "
                    "WHERE id = %s",
                    (row["target_id"], prev, row["hash"], row["id"]),
                )
                prev = row["hash"]
            conn.execute("UPDATE audit_chain_heads SET hash = %s WHERE org_id = %s", (prev, org.id))
            conn.execute("DELETE FROM audit_checkpoints WHERE org_id = %s", (org.id,))
            return str(next(r["id"] for r in rows if r["seq"] == seq))

    return await asyncio.to_thread(run)
