"""The audit side at scale: top the log up to N events, then time the SLA report and the export."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta
from time import perf_counter
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.scale.load import Tally, count_actions
from bench.scale.servers import BenchError, ProcessWatch
from bench.stats import Latency
from blocks.core.audit.records import ActorType, AuditRecord, Outcome
from blocks.core.context import AuthMethod, OrgContext, OrgId
from blocks.infra.db import bind_org, session_factory
from blocks.models.audit.events import append_events
from tests.support import Member, Org

BATCH = 500  # events per append_events transaction (100 runs' worth)
EXPORT_ROUNDS = 3
_SPACING = timedelta(minutes=7)  # synthetic run i opened i * 7 minutes before the template
_MB = 1_000_000

_TEMPLATE = text(
    "SELECT action, actor_type, actor_id, target_type, target_id, run_id, outcome, reason, data"
    " FROM audit_events WHERE org_id = :org AND run_id = (SELECT run_id FROM audit_events"
    " WHERE org_id = :org AND action = 'run.completed' ORDER BY seq LIMIT 1) ORDER BY seq"
)
# The SLA report's page query (models.approvals.sla_reports) and the export's (models.audit.reads).


def _shift(value: Any, by: timedelta) -> Any:
    """`value` with every ISO timestamp in it moved by `by` (the workflow's clock in event data)."""
    if isinstance(value, dict):
        return {k: _shift(v, by) for k, v in value.items()}
    if isinstance(value, list):
        return [_shift(v, by) for v in value]
    if isinstance(value, str) and len(value) >= 19 and value[10:11] == "T":
        try:
            return (datetime.fromisoformat(value) + by).isoformat()
        except ValueError:
            return value
    return value


async def _template(engine: AsyncEngine, org_id: uuid.UUID) -> list[dict[str, Any]]:
    """The events of one real completed run, in order: what each synthetic run is cloned from."""
    async with session_factory(engine)() as session, session.begin():
        await bind_org(session, org_id)
        rows = (await session.exec(_TEMPLATE.bindparams(org=org_id))).mappings().all()  # type: ignore[call-overload]
    if not rows:
        raise BenchError("no completed run to clone audit events from")
    return [dict(row) for row in rows]


def _clone(template: list[dict[str, Any]], index: int) -> list[AuditRecord]:
    """One synthetic run: the template's events under a new run id, opened earlier in time.

    The personal fields (email, address, user agent) are left out: sealing them would only add
    a key lookup per batch, and neither the report nor the export's speed depends on them."""
    old = str(template[0]["run_id"])
    new = str(uuid.uuid4())
    by = -_SPACING * (index + 1)
    records = []
    for row in template:
        data = _shift(json.loads(json.dumps(row["data"]).replace(old, new)), by)
        records.append(
            AuditRecord(
                action=row["action"],
                actor_type=ActorType(row["actor_type"]),
                actor_id=row["actor_id"],
                target_type=row["target_type"],
                target_id=(row["target_id"] or "").replace(old, new) or None,
                run_id=new,
                outcome=Outcome(row["outcome"]),
                reason=row["reason"],
                data=data,
                event_id=str(uuid.uuid4()),
            )
        )
    return records


async def top_up(engine: AsyncEngine, org_id: uuid.UUID, events: int) -> int:
    """Append about `events` synthetic events (whole runs), `BATCH` per transaction; how many."""
    template = await _template(engine, org_id)
    sessions = session_factory(engine)
    ctx = OrgContext(org_id=OrgId(org_id), user_id=None, roles=(), auth=AuthMethod.WORKFLOW)
    runs = -(-events // len(template))
    per_batch = max(1, BATCH // len(template))
    appended = 0
    for first in range(0, runs, per_batch):
        records = [
            r for i in range(first, min(first + per_batch, runs)) for r in _clone(template, i)
        ]
        async with sessions() as session, session.begin():
            await append_events(ctx, session, records)
        appended += len(records)
    return appended


async def _sla(
    http: httpx.AsyncClient, auditor: Member, requests: int, tally: Tally, watch: ProcessWatch
) -> dict[str, Any]:
    """`requests` SLA reports one after another (JSON, no filter), each walked to its last page
    by `next_cursor`: the first page's latency, the whole walk's, and what came back."""
    first: list[float] = []
    walks: list[float] = []
    rows = pages = size = 0
    body: dict[str, Any] = {}
    with watch.phase() as phase:
        for _ in range(requests):
            began = perf_counter()
            params: dict[str, str] = {}
            rows = pages = size = 0
            while True:
                response = await http.get("/v1/reports/sla", headers=auditor.headers, params=params)
                if response.status_code != 200:
                    tally.note("GET /v1/reports/sla", response)
                    raise BenchError(f"SLA report: {response.status_code} {response.text[:300]}")
                if not pages:
                    first.append(perf_counter() - began)
                body = response.json()
                pages, rows, size = (
                    pages + 1,
                    rows + len(body["steps"]),
                    size + len(response.content),
                )
                if not body.get("next_cursor"):
                    break
                params = {"cursor": body["next_cursor"]}
            walks.append(perf_counter() - began)
    return {
        "requests": requests,
        "latency_ms": Latency.of(first).as_dict(),
        "walk_ms": Latency.of(walks).as_dict(),
        "pages": pages,
        "response_mb": round(size / _MB, 2),
        "step_rows": rows,
        "through_seq": body["through_seq"],
        **phase.as_dict(requests),
    }


def _stages(real: int, target: int) -> list[int]:
    """Log sizes to measure at: as scenario A left it, then a quarter, half and all of `target`."""
    return [real, *sorted({s for s in (target // 4, target // 2, target) if s > real})]


async def audit_section(
    engine: AsyncEngine,
    http: httpx.AsyncClient,
    org: Org,
    *,
    target_events: int,
    sla_requests: int,
    watch: ProcessWatch,
    tally: Tally,
) -> dict[str, Any]:
    """The SLA report and the export at growing log sizes, fully measured at the last one."""
    real = await count_actions(engine, org.id, None)
    auditor = org["auditor"]
    stages = _stages(real, target_events)
    growth: list[dict[str, Any]] = []
    topup_seconds = 0.0
    events = real
    for stage in stages:
        if events < stage:
            began = perf_counter()
            await top_up(engine, org.id, stage - events)
            topup_seconds += perf_counter() - began
            events = await count_actions(engine, org.id, None)
        last = stage == stages[-1]
        sla = await _sla(http, auditor, sla_requests if last else 3, tally, watch)
        exports = [await _export(http, auditor, tally) for _ in range(EXPORT_ROUNDS if last else 1)]
        median = sorted(exports, key=lambda e: e["mb_per_s"])[len(exports) // 2]
        growth.append(
            {
                "events": events,
                "sla_p50_ms": sla["latency_ms"]["p50"],
                "sla_ms_per_1000_events": round(sla["latency_ms"]["p50"] * 1000 / events, 1),
                "export_seconds": median["seconds"],
                "export_events_per_s": median["events_per_s"],
            }
        )
    return {
        "events": events,
        "real_events": real,
        "synthetic_events": events - real,
        "topup_seconds": round(topup_seconds, 1),
        "sla": sla,
        "export_median": median,
        "exports": exports,
        "growth": growth,
    }


async def _export(http: httpx.AsyncClient, auditor: Member, tally: Tally) -> dict[str, Any]:
    """One JSON Lines export over HTTP, streamed: MB, seconds, MB/s and events/s."""
    size = events = 0
    began = perf_counter()
    async with http.stream(
        "GET", "/v1/audit/export", params={"format": "jsonl"}, headers=auditor.headers
    ) as response:
        if response.status_code != 200:
            await response.aread()
            tally.note("GET /v1/audit/export", response)
            raise BenchError(f"export: {response.status_code} {response.text[:300]}")
        async for line in response.aiter_lines():
            size += len(line) + 1
            events += line.startswith('{"type":"event"')
    seconds = perf_counter() - began
    return {
        "mb": round(size / _MB, 2),
        "events": events,
        "seconds": round(seconds, 2),
        "mb_per_s": round(size / _MB / seconds, 2),
        "events_per_s": round(events / seconds),
    }
