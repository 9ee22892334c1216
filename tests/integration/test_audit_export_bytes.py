"""The JSON Lines export read from PostgreSQL by one server-side cursor and written by the fast
writer is, byte for byte, the export the reference path writes (SQLAlchemy rows, `hashed_payload`,
`event_line`): the ids and the time as PostgreSQL writes them as text, and data as jsonb holds it,
including what only a superuser could put there (integers beyond 64 bits, tiny floats).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from sqlalchemy.ext.asyncio import AsyncEngine

from blocks.core.audit.export_format import event_line
from blocks.core.audit.records import ActorType, AuditRecord
from blocks.core.audit.verify import verify_export
from blocks.core.context import AuthMethod, OrgContext, OrgId
from blocks.infra.db import session_factory
from blocks.infra.embedded.postgres import PostgresCredentials
from blocks.models.audit import reads
from blocks.models.audit.events import append_events
from blocks.models.audit.reads import ExportFilters, event_pages, export_chunks, export_lines
from tests.support import make_org

DATA: list[dict[str, Any]] = [
    {"title": "Spesen für Mittagessen — 120,50 €", "emoji": "😀", "sep": "a\u2028b\x7fc"},
    {"amount": 120.5, "sla_seconds": 86400.0, "ratio": 0.1, "neg": -0.0},
    {"nested": {"groups": [{"users": [], "required": 1, "roles": ["approver"]}]}, "ok": True},
    {"quote": 'say "hi"\\', "ctl": "\x01\t\n", "none": None, "list": [1, "two", 3.0, [], {}]},
    {"looks": ["0.00001", "1e-7,", "e+12", "1234567890123456789012"]},
]
# Only a superuser can store these (the chain's RFC 8785 hash refuses them when appending), and
# 1e21, which jsonb gives back as an integer (so its event no longer verifies; exported as read).
TAMPERED: list[dict[str, Any]] = [
    {"huge": 2**64 + 1, "low": -(2**63) - 5, "u64": 2**64 - 1, "big": 1e21},
    {"tiny": 1e-5, "tinier": 1.5e-7, "list": [2e-6, 1e-10]},
]


def _ctx(org_id: uuid.UUID) -> OrgContext:
    return OrgContext(org_id=OrgId(org_id), user_id=None, roles=(), auth=AuthMethod.SYSTEM)


async def _reference(ctx: OrgContext, engine: AsyncEngine, filters: ExportFilters) -> bytes:
    lines: list[str] = []
    async with reads.snapshot(ctx, session_factory(engine)) as session:
        async for links in event_pages(ctx, session, filters):
            lines.extend(event_line(*link) for link in links)
    return "".join(lines).encode("ascii")


async def _export(ctx: OrgContext, engine: AsyncEngine, filters: ExportFilters) -> list[bytes]:
    chunks = export_chunks(ctx, session_factory(engine), filters, {})
    return [chunk async for chunk in chunks]


async def test_the_export_is_the_reference_byte_for_byte_in_batches(
    engine: AsyncEngine, postgres: PostgresCredentials, monkeypatch: Any
) -> None:
    org = await make_org(engine)
    ctx = _ctx(org.id)
    records = [
        AuditRecord(
            action="note.added",
            actor_type=ActorType.SYSTEM,
            target_type="note",
            target_id=f"n-{i}",
            run_id=str(uuid.UUID(int=i % 3 + 1)),
            reason="Grüße 🎉" if i % 2 else None,
            data=DATA[i % len(DATA)],
        )
        for i in range(23)
    ]
    async with session_factory(engine)() as session, session.begin():
        await append_events(ctx, session, records)

    def tamper() -> None:
        with psycopg.connect(postgres.url(superuser=True)) as conn:
            conn.execute("SET session_replication_role = replica")
            for offset, data in enumerate(TAMPERED):
                conn.execute(
                    "UPDATE audit_events SET data = %s WHERE org_id = %s AND target_id = %s",
                    (Jsonb(data), org.id, f"n-{offset}"),
                )

    await asyncio.to_thread(tamper)
    monkeypatch.setattr(reads, "BATCH", 5)  # many batches, and one short last one
    bodies = []
    for filters in (ExportFilters(), ExportFilters(run_id=str(uuid.UUID(int=2)))):
        chunks = await _export(ctx, engine, filters)
        assert len(chunks) >= 3  # the header, then batches of five events
        _, body = b"".join(chunks).split(b"\n", 1)
        assert body == await _reference(ctx, engine, filters)
        assert body.isascii()
        bodies.append(body)
    everything, run_two = bodies
    for written in (b'"huge":18446744073709551617', b'"tiny":1e-05', b"\\u00fc", b"\\ud83d"):
        assert written in everything, written
    assert b'"tiny":1e-05' in run_two
    assert len(run_two) < len(everything)


async def test_an_untampered_export_verifies_and_the_text_form_is_the_same(
    engine: AsyncEngine,
) -> None:
    org = await make_org(engine)
    ctx = _ctx(org.id)
    records = [
        AuditRecord(action="note.added", actor_type=ActorType.SYSTEM, data=DATA[i % len(DATA)])
        for i in range(12)
    ]
    async with session_factory(engine)() as session, session.begin():
        await append_events(ctx, session, records)
    chunks = await _export(ctx, engine, ExportFilters())
    text = [
        chunk async for chunk in export_lines(ctx, session_factory(engine), ExportFilters(), {})
    ]
    assert b"".join(chunks).split(b"\n", 1)[1] == "".join(text).encode().split(b"\n", 1)[1]
    report = verify_export(b"".join(chunks).decode().splitlines(keepends=True))
    assert report.ok, report.problem
    assert report.events_checked == await _count(ctx, engine)


async def _count(ctx: OrgContext, engine: AsyncEngine) -> int:
    async with reads.snapshot(ctx, session_factory(engine)) as session:
        first, last = await reads.seq_range(ctx, session, ExportFilters())
    return 0 if last is None else last - (first or 1) + 1
