"""A task's input fetched by reference: `GET /v1/agents/tasks/{task_id}/input`, with the agent's token.

The PubNub transport sends a task whose sealed message would pass PubNub's 32 KiB cap with
`input_ref` naming this route instead of the input. It answers the input (a JSON object) to the
task's own agent only, over the API's TLS, while the task is delivered and not yet acknowledged
(the acknowledgement deletes the input) and for a few minutes after each delivery. Another
agent's task is a 403, audited as `agent.access_denied`.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request

from blocks.api.agents.auth import DENIED, AgentCaller
from blocks.api.deps import DbSession, forbidden
from blocks.api.errors import Problem, not_found
from blocks.api.security_audit import request_origin_fields
from blocks.core.audit.records import ActorType, AuditRecord, Outcome
from blocks.models.agents.pubnub_agents import task_input
from blocks.models.audit.events import append_events

router = APIRouter(tags=["integrations"])
INPUT_PATH = "/v1/agents/tasks/{task_id}/input"


@router.get(
    INPUT_PATH,
    summary="Fetch a task's input",
    operation_id="fetch_agent_task_input",
    responses={
        200: {
            "description": "The task's input, as the workflow gave it (a JSON object)",
            "content": {
                "application/json": {
                    "example": {"line_items": [{"description": "Paper", "unit_price": "4.20"}]}
                }
            },
        }
    },
)
async def fetch_task_input(
    task_id: uuid.UUID, request: Request, principal: AgentCaller, session: DbSession
) -> dict[str, Any]:
    """The input of a task delivered to this agent by reference (PubNub, over 32 KiB)."""
    found = await task_input(principal.context(), session, task_id, principal.agent_id)
    if found.refusal == "other_agent":
        record = AuditRecord(
            action=DENIED,
            actor_type=ActorType.AGENT,
            actor_id=str(principal.agent_id),
            target_type="agent_task",
            target_id=str(task_id),
            outcome=Outcome.DENIED,
            reason="the input of a task that is not this agent's",
            data={"agent": principal.agent_name, "token_id": str(principal.token_id)},
            **request_origin_fields(request),  # type: ignore[arg-type]
        )
        # Its own transaction: the request is refused, the refusal stays on record.
        async with request.app.state.sessions() as own, own.begin():
            await append_events(principal.context(), own, [record])
        raise forbidden("this task is not this agent's")
    if found.refusal == "gone":
        raise Problem(
            410,
            "Gone",
            "this task's input is no longer here: it was acknowledged, or the reference expired "
            "(it is delivered again if still due)",
            code="agent_task_input_gone",
        )
    if found.input is None:
        raise not_found("task")
    return found.input
