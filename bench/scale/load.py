"""HTTP load for the scale benchmark: starts, decisions, timed reads, and counts read from SQL."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.scale.servers import BenchError
from bench.stats import Latency
from blocks.core.context import AuthMethod, OrgContext, OrgId
from blocks.core.roles import Role
from blocks.infra.db import bind_org, session_factory
from blocks.models.identity.api_keys import create_api_key
from blocks.models.identity.orgs import add_member
from tests.support import EXPENSE, Member, Org

WORKFLOW = "expense_approval"
_RETRIED = frozenset({429, 502, 503, 504})  # what a client retries; counted all the same
_RETRIES = 8
_KEEP_BODIES = 5
_POLL = 0.5


@dataclass
class Tally:
    """Every non-2xx answer by what was asked and its status, with the first few bodies."""

    non_2xx: Counter[str] = field(default_factory=Counter)
    bodies: list[str] = field(default_factory=list)

    def note(self, what: str, response: httpx.Response) -> None:
        self.non_2xx[f"{what} {response.status_code}"] += 1
        if len(self.bodies) < _KEEP_BODIES:
            self.bodies.append(f"{what} {response.status_code}: {response.text[:300]}")

    def as_dict(self) -> dict[str, Any]:
        return {"non_2xx": dict(self.non_2xx), "first_bodies": self.bodies}


async def add_approvers(engine: AsyncEngine, org: Org, count: int) -> list[Member]:
    """`count` approvers, each with a key: make_org's two, then more made the same way."""
    members = [org["approver"], org["approver2"]][:count]
    owner = org["owner"]
    ctx = OrgContext(
        org_id=OrgId(org.id), user_id=owner.user_id, roles=(Role.OWNER,), auth=AuthMethod.SYSTEM
    )
    async with session_factory(engine)() as session, session.begin():
        for index in range(len(members), count):
            name = f"approver{index + 1}"
            user, _ = await add_member(
                ctx, session, email=f"{name}@{org.slug}.test", display_name=name,
                roles=[Role.APPROVER],
            )  # fmt: skip
            _, key = await create_api_key(
                ctx, session, user_id=user.id, name=name, roles=[Role.APPROVER]
            )
            members.append(Member(user.id, user.email, key))
    return members


async def wait_for_catalogue(http: httpx.AsyncClient, member: Member, within: float) -> None:
    """Until the worker has published `expense_approval` (as `blocks dev` waits before its banner)."""
    deadline = asyncio.get_running_loop().time() + within
    while asyncio.get_running_loop().time() < deadline:
        response = await http.get("/v1/workflows", headers=member.headers)
        if response.status_code == 200 and any(
            w["name"] == WORKFLOW and w["served_by"] for w in response.json()["workflows"]
        ):
            return
        await asyncio.sleep(_POLL)
    raise BenchError(f"the worker did not publish {WORKFLOW} within {within:.0f}s")


async def start_run(http: httpx.AsyncClient, operator: Member, tally: Tally) -> str | None:
    """One start: its run id, or None (counted) if refused or not running (a start that outlived
    BLOCKS_RUN_START_BOUND_SECONDS is abandoned by the reconciler and answered `abandoned`).
    A 429 or 5xx (`starts_busy` when the API's start slots stay full) is sent again with the
    same Idempotency-Key, as a client would: the same key is the same run."""
    headers = {**operator.headers, "Idempotency-Key": str(uuid.uuid4())}
    for attempt in range(_RETRIES):
        response = await http.post(
            "/v1/runs", json={"workflow": WORKFLOW, "input": EXPENSE}, headers=headers
        )
        if response.status_code in (200, 201):
            break
        tally.note("POST /v1/runs", response)
        if response.status_code not in _RETRIED or attempt == _RETRIES - 1:
            return None
        await asyncio.sleep(0.5 * (attempt + 1))
    body = response.json()
    if body["status"] != "running":
        tally.note(f"POST /v1/runs answered {body['status']}:", response)
        return None
    return str(body["id"])


async def decide_run(
    http: httpx.AsyncClient, run_id: str, approver: Member, tally: Tally
) -> float | None:
    """Approve a run's step: seconds to its 200, or None (counted) if refused. A 429 or 5xx is
    retried, as a client would: the same approver's decision on a step is idempotent."""
    began = perf_counter()
    for attempt in range(_RETRIES):
        response = await http.post(
            f"/v1/runs/{run_id}/steps/approve/decisions",
            json={"decision": "approve"},
            headers=approver.headers,
        )
        if response.status_code == 200:
            return perf_counter() - began
        tally.note("POST decisions", response)
        if response.status_code not in _RETRIED or attempt == _RETRIES - 1:
            break
        await asyncio.sleep(0.5 * (attempt + 1))
    return None


@dataclass(frozen=True)
class ReadTimes:
    """Sequential requests to one read route: latency, and what its page held."""

    path: str
    latency: Latency
    page_items: int
    more_pages: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "latency_ms": self.latency.as_dict(),
            "page_items": self.page_items,
            "more_pages": self.more_pages,
        }


async def timed_reads(
    http: httpx.AsyncClient, path: str, member: Member, requests: int, tally: Tally
) -> ReadTimes:
    """`requests` GETs one after another (no other load), first page, default limit."""
    times: list[float] = []
    body: dict[str, Any] = {}
    for _ in range(requests):
        began = perf_counter()
        response = await http.get(path, headers=member.headers)
        times.append(perf_counter() - began)
        if response.status_code != 200:
            tally.note(f"GET {path}", response)
            raise BenchError(f"GET {path}: {response.status_code} {response.text[:300]}")
        body = response.json()
    items = body.get("items", body.get("runs", []))
    more = bool(body.get("next_cursor"))
    return ReadTimes(path, Latency.of(times), len(items), more)


async def count_actions(engine: AsyncEngine, org_id: uuid.UUID, action: str | None) -> int:
    """Audit events of one organization (of one action, if given), read under its RLS binding."""
    sql = "SELECT count(*) FROM audit_events WHERE org_id = :org"
    if action is not None:
        sql += " AND action = :action"
    async with session_factory(engine)() as session, session.begin():
        await bind_org(session, org_id)
        statement = text(sql).bindparams(org=org_id, **({"action": action} if action else {}))
        return int((await session.exec(statement)).one()[0])  # type: ignore[call-overload]


async def wait_for_counts(
    engine: AsyncEngine,
    orgs: Sequence[uuid.UUID],
    action: str,
    expected: Sequence[int],
    stall: float,
) -> int:
    """Until each org holds its `expected` events of `action` (runs parked, or completed), or
    no new one has come for `stall` seconds; the total reached either way."""
    loop = asyncio.get_running_loop()
    best, deadline = -1, 0.0
    while True:
        counts = [await count_actions(engine, org, action) for org in orgs]
        if all(count >= want for count, want in zip(counts, expected, strict=True)):
            return sum(counts)
        if sum(counts) > best:
            best, deadline = sum(counts), loop.time() + stall
        elif loop.time() > deadline:
            return best
        await asyncio.sleep(_POLL)


async def run_ids_with(engine: AsyncEngine, org_id: uuid.UUID, action: str) -> set[str]:
    """The runs of one organization that have an event of `action` (e.g. parked: step.opened)."""
    async with session_factory(engine)() as session, session.begin():
        await bind_org(session, org_id)
        statement = text(
            "SELECT DISTINCT run_id FROM audit_events WHERE org_id = :org AND action = :action"
        ).bindparams(org=org_id, action=action)
        return {str(row[0]) for row in (await session.exec(statement)).all()}  # type: ignore[call-overload]


async def start_states(engine: AsyncEngine, org_id: uuid.UUID) -> dict[str, int]:
    """The organization's run rows by start state (started, abandoned by the reconciler, ...)."""
    async with session_factory(engine)() as session, session.begin():
        await bind_org(session, org_id)
        statement = text(
            "SELECT start_state, count(*) FROM runs WHERE org_id = :org GROUP BY start_state"
        ).bindparams(org=org_id)
        return {str(r[0]): int(r[1]) for r in (await session.exec(statement)).all()}  # type: ignore[call-overload]


async def wait_for_inbox(
    http: httpx.AsyncClient, approver: Member, expected: int, within: float
) -> bool:
    """Until the approver's inbox shows a full first page (visibility is eventually consistent);
    False if it did not within `within` seconds."""
    deadline = asyncio.get_running_loop().time() + within
    while asyncio.get_running_loop().time() < deadline:
        response = await http.get("/v1/inbox", headers=approver.headers)
        if response.status_code == 200 and len(response.json()["items"]) >= expected:
            return True
        await asyncio.sleep(_POLL)
    return False


async def running_listed(http: httpx.AsyncClient, member: Member) -> int:
    """Runs on the first page of `GET /v1/runs?status=running` (0 once all have completed)."""
    response = await http.get("/v1/runs?status=running", headers=member.headers)
    if response.status_code != 200:
        raise BenchError(f"GET /v1/runs: {response.status_code} {response.text[:300]}")
    return len(response.json()["runs"])
