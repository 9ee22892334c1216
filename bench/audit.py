"""Audit append: `append_events` (hash chain, one org) versus plain INSERTs into a twin table."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from time import perf_counter
from typing import Any

from sqlalchemy import Column, MetaData, Table, insert, text
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.cpu import CpuProbe, CpuUse
from bench.stats import Latency, in_flight
from blocks.core.audit.chain import GENESIS_HASH
from blocks.core.audit.records import ActorType, AuditRecord
from blocks.core.context import AuthMethod, OrgContext, OrgId
from blocks.infra.db import bind_org, session_factory
from blocks.models.audit.combining import CombiningAppender
from blocks.models.audit.events import AuditEvent, append_events, link_events

PLAIN_TABLE = "bench_plain_audit_events"

# Same columns, types, defaults, primary key, UNIQUE (org_id, seq) and run_id index as
# audit_events; LIKE copies none of its foreign key, triggers or row-level security.
_CREATE_PLAIN = text(f"CREATE TABLE IF NOT EXISTS {PLAIN_TABLE} (LIKE audit_events INCLUDING ALL)")

_plain = Table(
    PLAIN_TABLE,
    MetaData(),
    *(Column(c.name, c.type, primary_key=c.primary_key) for c in AuditEvent.__table__.columns),  # type: ignore[attr-defined]
)
_INSERT_PLAIN = insert(_plain)


@dataclass(frozen=True)
class AppendRun:
    side: str
    writers: int
    events: int
    seconds: float
    latency: Latency  # one append transaction, checkout to commit
    cpu: CpuUse

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds

    def as_dict(self) -> dict[str, Any]:
        return {
            "side": self.side,
            "writers": self.writers,
            "events": self.events,
            "seconds": round(self.seconds, 3),
            "events_per_second": round(self.events_per_second, 1),
            "append_latency_ms": self.latency.as_dict(),
            "cpu": self.cpu.as_dict(self.events),
        }


def make_records(count: int) -> list[AuditRecord]:
    """Events shaped like the workflow's `step.decided`, each with its deterministic-style id."""
    records = []
    for _ in range(count):
        run_id = str(uuid.uuid4())
        records.append(
            AuditRecord(
                action="step.decided",
                actor_type=ActorType.USER,
                actor_id=str(uuid.uuid4()),
                target_type="step",
                target_id="approve",
                run_id=run_id,
                data={
                    "decision": "approved",
                    "comment": "fine",
                    "channel": "api",
                    "policy": {"approvers": ["role:approver"], "quorum": "any"},
                    "workflow": "expense_approval",
                },
                event_id=str(uuid.uuid4()),
            )
        )
    return records


def make_plain_rows(
    records: list[AuditRecord], org_id: uuid.UUID, first_seq: int
) -> list[dict[str, Any]]:
    """The rows `append_events` would write for `records`, chain included, computed up front."""
    ctx = OrgContext(org_id=OrgId(org_id), user_id=None, roles=(), auth=AuthMethod.SYSTEM)
    rows, _, _ = link_events(ctx, records, (first_seq - 1, GENESIS_HASH), set(), None)
    return rows


async def create_plain_table(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(_CREATE_PLAIN)


async def _timed(
    side: str,
    items: list[Any],
    writers: int,
    probe: CpuProbe,
    append: Callable[[Any], Awaitable[None]],
) -> AppendRun:
    times: list[float] = []

    async def one(item: Any) -> None:
        began = perf_counter()
        await append(item)
        times.append(perf_counter() - began)

    with probe.measure() as cpu:
        await in_flight(items, writers, one)
    return AppendRun(side, writers, len(items), cpu.wall, Latency.of(times), cpu)


async def blocks_appends(
    engine: AsyncEngine,
    org_id: uuid.UUID,
    records: list[AuditRecord],
    writers: int,
    probe: CpuProbe,
    *,
    combining: bool = True,
) -> AppendRun:
    """One append of one record per call, as the audit activity makes them: through the
    combining appender (concurrent appends share a transaction), or with `combining=False`
    one `append_events` transaction per call (how every append was written before)."""
    sessions = session_factory(engine)
    appender = CombiningAppender(sessions)
    ctx = OrgContext(org_id=OrgId(org_id), user_id=None, roles=(), auth=AuthMethod.WORKFLOW)

    async def append(record: AuditRecord) -> None:
        if combining:
            await appender.append(ctx, [record])
            return
        async with sessions() as session, session.begin():
            await append_events(ctx, session, [record])

    return await _timed(
        "blocks" if combining else "blocks, one per transaction", records, writers, probe, append
    )


async def plain_inserts(
    engine: AsyncEngine, rows: list[dict[str, Any]], writers: int, probe: CpuProbe
) -> AppendRun:
    """One INSERT of one precomputed row per transaction, into the trigger-less twin table."""

    async def append(row: dict[str, Any]) -> None:
        async with engine.begin() as conn:
            await conn.execute(_INSERT_PLAIN, row)

    return await _timed("plain", rows, writers, probe, append)


async def chain_is_linear(engine: AsyncEngine, org_id: uuid.UUID, expected: int) -> bool:
    """The org's chain holds `expected` events numbered 1..expected, each linked to the last."""
    async with session_factory(engine)() as session, session.begin():
        await bind_org(session, org_id)
        row = (
            await session.exec(  # type: ignore[call-overload]
                text(
                    "SELECT count(*), count(DISTINCT seq), min(seq), max(seq), "
                    "count(*) FILTER (WHERE prev_hash <> before) FROM ("
                    "  SELECT seq, prev_hash, coalesce(lag(hash) OVER (ORDER BY seq), :genesis)"
                    "  AS before FROM audit_events WHERE org_id = :org_id) AS chain"
                ).bindparams(org_id=org_id, genesis=GENESIS_HASH)
            )
        ).one()
    count, distinct, low, high, broken = (int(v or 0) for v in row)
    return count == distinct == expected and low == 1 and high == expected and broken == 0
