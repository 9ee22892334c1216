"""Tampering with the audit table as a superuser is caught, live and offline, naming the event."""

from __future__ import annotations

import asyncio
import sys
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from sqlalchemy.ext.asyncio import AsyncEngine

from blocks.core.audit.chain import chain_hash
from blocks.core.audit.records import ActorType, AuditRecord
from blocks.core.context import AuthMethod, OrgContext, OrgId
from blocks.infra.db import session_factory
from blocks.infra.embedded.postgres import PostgresCredentials
from blocks.models.audit.events import AuditEvent, append_events, hashed_payload, list_events
from tests.support import Org, Stack, make_org

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Seeded:
    org: Org
    events: list[AuditEvent]  # the whole chain of the org, in seq order

    def by_action(self, action: str) -> AuditEvent:
        return next(e for e in self.events if e.action == action)


def _ctx(org_id: uuid.UUID) -> OrgContext:
    return OrgContext(org_id=OrgId(org_id), user_id=None, roles=(), auth=AuthMethod.SYSTEM)


async def _seed(engine: AsyncEngine) -> Seeded:
    """A fresh organization with eight events of our own after whatever creating it logged."""
    org = await make_org(engine)
    records = [
        AuditRecord(
            action=f"tamper.test.{i}",
            actor_type=ActorType.SYSTEM,
            target_type="invoice",
            target_id=f"inv-{i}",
            data={"amount": f"{100 + i}.00", "lines": [i, i + 1]},
        )
        for i in range(8)
    ]
    async with session_factory(engine)() as session, session.begin():
        await append_events(_ctx(org.id), session, records)
    async with session_factory(engine)() as session, session.begin():
        events = await list_events(_ctx(org.id), session, limit=10_000)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    return Seeded(org, events)


async def _as_superuser(postgres: PostgresCredentials, *statements: tuple[str, Any]) -> None:
    """Run statements as `postgres` with triggers off (replica role): what an attacker with the
    database's keys could do. Superusers also bypass the forced row-level security."""

    def run() -> None:
        with psycopg.connect(postgres.url(superuser=True)) as conn:
            conn.execute("SET session_replication_role = replica")
            for statement, params in statements:
                conn.execute(statement, params)

    await asyncio.to_thread(run)


async def _live(stack: Stack, org: Org) -> dict[str, Any]:
    async with stack.http() as http:
        response = await http.get("/v1/audit/verify", headers=org["auditor"].headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def _offline(stack: Stack, org: Org, tmp_path: Path) -> tuple[int, str]:
    """Export over HTTP, then `blocks audit verify FILE` in its own process."""
    path = tmp_path / f"export-{org.slug}.jsonl"
    async with (
        stack.http() as http,
        http.stream("GET", "/v1/audit/export", headers=org["auditor"].headers) as response,
    ):
        assert response.status_code == 200
        with path.open("wb") as handle:
            async for chunk in response.aiter_bytes():
                handle.write(chunk)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "blocks.cli",
        "audit",
        "verify",
        str(path),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, output.decode()


async def _assert_caught(
    stack: Stack,
    seeded: Seeded,
    tmp_path: Path,
    *,
    kind: str,
    seq: int | None,
    event_id: uuid.UUID | None,
) -> dict[str, Any]:
    live = await _live(stack, seeded.org)
    assert live["ok"] is False, live
    problem = live["problem"]
    assert (problem["kind"], problem["seq"], problem["id"]) == (
        kind,
        seq,
        str(event_id) if event_id else None,
    ), problem

    code, output = await _offline(stack, seeded.org, tmp_path)
    assert code == 1, output
    assert f"TAMPERED: {kind} at seq {seq}, event id {event_id or '-'}" in output, output
    return dict(problem)


async def test_an_untouched_chain_verifies_live_and_offline(
    stack: Stack, engine: AsyncEngine, tmp_path: Path
) -> None:
    seeded = await _seed(engine)
    live = await _live(stack, seeded.org)
    assert live["ok"] is True, live
    assert live["events_checked"] == len(seeded.events)
    code, output = await _offline(stack, seeded.org, tmp_path)
    assert code == 0, output
    assert "INTACT" in output


async def test_a_changed_field_is_named(
    stack: Stack, engine: AsyncEngine, postgres: PostgresCredentials, tmp_path: Path
) -> None:
    seeded = await _seed(engine)
    target = seeded.by_action("tamper.test.3")
    await _as_superuser(
        postgres,
        ("UPDATE audit_events SET target_id = 'inv-forged' WHERE id = %s", (target.id,)),
    )
    await _assert_caught(
        stack, seeded, tmp_path, kind="changed", seq=target.seq, event_id=target.id
    )


async def test_a_changed_data_field_is_named(
    stack: Stack, engine: AsyncEngine, postgres: PostgresCredentials, tmp_path: Path
) -> None:
    seeded = await _seed(engine)
    target = seeded.by_action("tamper.test.5")
    await _as_superuser(
        postgres,
        (
            "UPDATE audit_events SET data = jsonb_set(data, '{amount}', '\"1.00\"') WHERE id = %s",
            (target.id,),
        ),
    )
    await _assert_caught(
        stack, seeded, tmp_path, kind="changed", seq=target.seq, event_id=target.id
    )


async def test_a_deleted_event_is_named_by_the_one_after_the_gap(
    stack: Stack, engine: AsyncEngine, postgres: PostgresCredentials, tmp_path: Path
) -> None:
    seeded = await _seed(engine)
    gone = seeded.by_action("tamper.test.2")
    after = seeded.events[seeded.events.index(gone) + 1]
    await _as_superuser(postgres, ("DELETE FROM audit_events WHERE id = %s", (gone.id,)))
    problem = await _assert_caught(
        stack, seeded, tmp_path, kind="deleted", seq=after.seq, event_id=after.id
    )
    assert f"seq {gone.seq} is missing" in problem["message"]


async def test_a_deleted_last_event_is_caught_by_the_chain_head(
    stack: Stack, engine: AsyncEngine, postgres: PostgresCredentials, tmp_path: Path
) -> None:
    seeded = await _seed(engine)
    last = seeded.events[-1]
    await _as_superuser(postgres, ("DELETE FROM audit_events WHERE id = %s", (last.id,)))
    await _assert_caught(stack, seeded, tmp_path, kind="deleted", seq=last.seq, event_id=None)


async def test_an_inserted_forged_event_is_named(
    stack: Stack, engine: AsyncEngine, postgres: PostgresCredentials, tmp_path: Path
) -> None:
    seeded = await _seed(engine)
    last = seeded.events[-1]
    # A forgery by someone who knows the scheme: self-consistent hash, linked to the real last
    # event. Only the chain head (which the append path moves in the same statement) tells.
    row: dict[str, Any] = {
        "id": uuid.uuid4(),
        "org_id": seeded.org.id,
        "seq": last.seq + 1,
        "occurred_at": datetime.now(UTC),
        "action": "payment.approved",
        "actor_type": "system",
        "actor_id": None,
        "actor_email": None,
        "target_type": "invoice",
        "target_id": "inv-999",
        "run_id": None,
        "outcome": "success",
        "reason": None,
        "ip": None,
        "user_agent": None,
        "data": {"amount": "99999.00"},
        "prev_hash": last.hash,
    }
    row["hash"] = chain_hash(last.hash, hashed_payload(row))
    columns = ", ".join(row)
    values = ", ".join(["%s"] * len(row))
    params = tuple(Jsonb(v) if isinstance(v, dict) else v for v in row.values())
    await _as_superuser(
        postgres,
        (f"INSERT INTO audit_events ({columns}) VALUES ({values})", params),
    )
    await _assert_caught(
        stack, seeded, tmp_path, kind="inserted", seq=row["seq"], event_id=row["id"]
    )


async def test_two_swapped_events_are_named(
    stack: Stack, engine: AsyncEngine, postgres: PostgresCredentials, tmp_path: Path
) -> None:
    seeded = await _seed(engine)
    first, second = seeded.by_action("tamper.test.4"), seeded.by_action("tamper.test.5")
    swap = "UPDATE audit_events SET seq = %s WHERE id = %s"
    await _as_superuser(
        postgres,
        (swap, (-1, first.id)),  # (org_id, seq) is unique, even with triggers off
        (swap, (first.seq, second.id)),
        (swap, (second.seq, first.id)),
    )
    # The event now at the lower seq is the first one out of place; its partner is related.
    problem = await _assert_caught(
        stack, seeded, tmp_path, kind="reordered", seq=first.seq, event_id=second.id
    )
    assert (problem["related_seq"], problem["related_id"]) == (second.seq, str(first.id))
