"""The agent relay benchmark's two sides: how each starts a task and waits for its result, and
what one batch of tasks measured (start -> result, dispatch -> result, CPU per process)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from time import perf_counter
from typing import Any

import psutil
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy

from bench.agent_bare import BARE_SUM_ACTIVITY, BareAgentSum
from bench.agent_parts import NUMBERS
from bench.agent_procs import BenchError
from bench.agent_workflow import BLOCKS_AGENT_WORKFLOW
from bench.cpu import CpuProbe, tree_cpu_seconds
from bench.stats import in_flight, percentile
from blocks.activities.agents import DISPATCH
from blocks.core.approvals import search_attributes as sa
from blocks.core.context import AuthMethod, OrgContext, OrgId
from blocks.infra.db import session_factory
from blocks.models.approvals.runs import StartState, create_run, settle_start
from blocks.models.keys.org_keys import DatabaseOrgKeys
from blocks.workflows.types import RunInput, RunOutcome

PROCS = ("worker", "api", "agent", "postgres", "temporal")
_PCTS = (("p50", 50), ("p95", 95), ("p99", 99))


def pcts(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {p: round(percentile(ordered, q), 2) for p, q in _PCTS} if ordered else {}


@dataclass
class Segment:
    """Tasks of one side: start -> result (s), dispatch -> result (ms), wall, CPU per process."""

    samples: list[float] = field(default_factory=list)
    activity: list[float] = field(default_factory=list)
    wall: float = 0.0
    cpu: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PROCS, 0.0))
    busy: float = 0.0  # machine busy share x wall, summed
    rates: list[float] = field(default_factory=list)
    workflow_ids: list[str] = field(default_factory=list)

    def add(self, other: Segment) -> None:
        self.samples += other.samples
        self.activity += other.activity
        self.wall += other.wall
        self.cpu = {k: self.cpu[k] + other.cpu[k] for k in PROCS}
        self.busy += other.busy
        self.rates += other.rates
        self.workflow_ids += other.workflow_ids

    def as_dict(self) -> dict[str, Any]:
        tasks = len(self.samples)
        return {
            "tasks": tasks,
            "wall_seconds": round(self.wall, 3),
            "tasks_per_second": round(tasks / self.wall, 2),
            "rounds_tasks_per_second": [round(r, 2) for r in self.rates],
            "latency_ms": pcts([s * 1000 for s in self.samples]),
            "activity_ms": pcts(self.activity),
            "cpu_ms_per_task": {k: round(v * 1000 / tasks, 3) for k, v in self.cpu.items()},
            "machine_busy_pct": round(self.busy * 100 / self.wall, 1),
            # The share of the machine these five processes used: the rest of "busy" was others'.
            "ours_pct": round(sum(self.cpu.values()) * 100 / self.wall / (os.cpu_count() or 1), 1),
        }


@dataclass
class Sides:
    """What each side needs to make its tasks, and the processes whose CPU is counted."""

    blocks_client: Client
    bare_client: Client
    blocks_queue: str
    bare_queue: str
    org_id: uuid.UUID
    requester: uuid.UUID
    agent_name: str
    keys: DatabaseOrgKeys
    engine: AsyncEngine
    probe: CpuProbe
    api: psutil.Process
    agents: list[psutil.Process]  # one; more for the connections phase

    async def prepare_runs(self, count: int) -> list[uuid.UUID]:
        """Run rows, claimed and settled `started` as the API leaves them (not timed)."""
        ctx = OrgContext(
            org_id=OrgId(self.org_id), user_id=self.requester, roles=(), auth=AuthMethod.API_KEY
        )
        ids: list[uuid.UUID] = []
        async with session_factory(self.engine)() as session, session.begin():
            for _ in range(count):
                run = await create_run(
                    ctx, session, workflow_name=BLOCKS_AGENT_WORKFLOW, workflow_version="1"
                )
                assert run is not None
                await settle_start(ctx, session, run.id, StartState.STARTED)
                ids.append(run.id)
        return ids

    def blocks_call(self, run_ids: list[uuid.UUID]) -> Callable[[int], Awaitable[str]]:
        async def call(index: int) -> str:
            run_id = run_ids[index]
            workflow_id = f"run-{run_id}"
            self.keys.remember_run(workflow_id, self.org_id)  # as the API does before its start
            numbers = [*NUMBERS, index]
            handle = await self.blocks_client.start_workflow(
                BLOCKS_AGENT_WORKFLOW,
                RunInput(
                    org_id=str(self.org_id),
                    run_id=str(run_id),
                    workflow_name=BLOCKS_AGENT_WORKFLOW,
                    requested_by=str(self.requester),
                    params={"agent": self.agent_name, "numbers": numbers},
                ),
                id=workflow_id,
                task_queue=self.blocks_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                search_attributes=sa.at_start(
                    str(self.org_id), BLOCKS_AGENT_WORKFLOW, str(self.requester)
                ),
                result_type=RunOutcome,
            )
            outcome = await handle.result()
            if outcome.status != "done" or outcome.detail.get("total") != sum(numbers):
                raise BenchError(f"Blocks run {run_id} ended {outcome!r}")
            return workflow_id

        return call

    async def bare_call(self, index: int) -> str:
        workflow_id = f"bare-agent-{uuid.uuid4()}"
        numbers = [*NUMBERS, index]
        result = await self.bare_client.execute_workflow(
            BareAgentSum.run, {"numbers": numbers}, id=workflow_id, task_queue=self.bare_queue
        )
        if result != {"status": "done", "total": sum(numbers)}:
            raise BenchError(f"bare run ended {result!r}")
        return workflow_id

    def _cpu(self) -> dict[str, float]:
        return {
            "api": tree_cpu_seconds(self.api),
            "agent": sum(tree_cpu_seconds(agent) for agent in self.agents),
        }

    async def timed(self, name: str, tasks: int, concurrency: int) -> Segment:
        if name == "blocks":
            call = self.blocks_call(await self.prepare_runs(tasks))
        else:
            call = self.bare_call
        samples: list[float] = []

        async def one(index: int) -> str:
            began = perf_counter()
            workflow_id = await call(index)
            samples.append(perf_counter() - began)
            return workflow_id

        before = self._cpu()
        with self.probe.measure() as use:
            ids = await in_flight(range(tasks), concurrency, one)
        after = self._cpu()
        cpu = {
            "worker": use.python,
            "postgres": use.postgres,
            "temporal": use.temporal,
            **{k: after[k] - before[k] for k in after},
        }
        client = self.blocks_client if name == "blocks" else self.bare_client
        kind = DISPATCH if name == "blocks" else BARE_SUM_ACTIVITY
        activity = await in_flight(ids, 8, lambda wid: _activity_ms(client, wid, kind))
        return Segment(
            samples, activity, use.wall, cpu, use.machine_busy * use.wall, [tasks / use.wall], ids
        )


async def _activity_ms(client: Client, workflow_id: str, activity_type: str) -> float:
    """The activity's ActivityTaskScheduled -> ActivityTaskCompleted, from the history."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    scheduled: dict[int, datetime] = {}
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attrs = event.activity_task_scheduled_event_attributes
            if attrs.activity_type.name == activity_type:
                scheduled[event.event_id] = event.event_time.ToDatetime()
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            began = scheduled.get(event.activity_task_completed_event_attributes.scheduled_event_id)
            if began is not None:
                return (event.event_time.ToDatetime() - began).total_seconds() * 1000
    raise BenchError(f"{workflow_id}: no completed {activity_type} activity in its history")
