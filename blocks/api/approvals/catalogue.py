"""The workflow catalogue over HTTP: what can be started, and an organization's choice of it.

`GET /v1/workflows` lists what workers published (blocks.models.approvals.catalogue), with where
and when each was seen served; a start is validated here against the published JSON Schema, so
the API never imports an author's code. `PUT /v1/org/workflows` restricts which published
workflows the organization's members may start (default: all), audited.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from sqlmodel.ext.asyncio.session import AsyncSession

from blocks.api.deps import CanManageWorkflows, CanReadRuns, DbSession, record_change
from blocks.api.errors import Problem
from blocks.api.reference import examples as ex
from blocks.api.reference.examples import example
from blocks.api.schemas import StrictModel
from blocks.core.context import OrgContext
from blocks.models.approvals.catalogue import (
    PublishedWorkflow,
    published_workflow,
    published_workflows,
)
from blocks.models.identity.members import get_org, lock_org
from blocks.workflows.catalogue import MAX_INPUT_ERRORS, schema_errors

router = APIRouter(tags=["approvals"])

_EXPENSE_WORKFLOW = {
    "name": "expense_approval",
    "version": "1",
    "description": "An expense waits for one approver's decision within an SLA.",
    "input_schema": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "amount": {"anyOf": [{"type": "number", "exclusiveMinimum": 0}, {"type": "string"}]},
            "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
            "description": {"type": "string", "minLength": 1, "maxLength": 500},
            "sla_hours": {"type": "number", "exclusiveMinimum": 0, "default": 24.0},
        },
        "required": ["amount", "currency", "description"],
    },
    "forms": {},
    "allowed": True,
    "served_by": [
        {
            "version": "1",
            "task_queue": "blocks",
            "worker": "4242@worker-1",
            "first_seen_at": ex.CREATED,
            "last_seen_at": ex.STARTED,
        }
    ],
}


class ServedOut(BaseModel):
    version: str
    task_queue: str
    worker: str = Field(description="The worker's Temporal identity (process@host)")
    first_seen_at: datetime
    last_seen_at: datetime


class WorkflowOut(BaseModel):
    name: str
    version: str = Field(description="The newest version a worker serves; new runs start on it")
    description: str
    input_schema: dict[str, Any] = Field(description="JSON Schema of the run's `input`")
    forms: dict[str, dict[str, Any]] = Field(
        description="Step id -> JSON Schema of the form each decision of that step carries"
    )
    allowed: bool = Field(description="Whether this organization's members may start it")
    served_by: list[ServedOut]


class WorkflowListOut(BaseModel):
    model_config = example(workflows=[_EXPENSE_WORKFLOW], allowed_workflows=None)

    workflows: list[WorkflowOut]
    allowed_workflows: list[str] | None = Field(
        description="The organization's restriction (null: every published workflow)"
    )


class AllowedWorkflowsIn(StrictModel):
    model_config = example(allowed_workflows=["expense_approval", "purchase_approval"])

    allowed_workflows: list[str] | None = Field(
        max_length=500,
        description="Names members may start; null lifts the restriction (every published one)",
    )


@router.get("/v1/workflows", response_model=WorkflowListOut, summary="List startable workflows")
async def list_workflows(ctx: CanReadRuns, session: DbSession) -> WorkflowListOut:
    org = await get_org(ctx, session)
    allowed = org.allowed_workflows if org else None
    views = await published_workflows(session)
    return WorkflowListOut(
        allowed_workflows=allowed,
        workflows=[
            WorkflowOut(
                name=v.workflow.name,
                version=v.workflow.version,
                description=v.workflow.description,
                input_schema=v.workflow.input_schema,
                forms=v.workflow.forms,
                allowed=allowed is None or v.workflow.name in allowed,
                served_by=[ServedOut(**vars(s)) for s in v.servers],
            )
            for v in views
        ],
    )


@router.put(
    "/v1/org/workflows",
    response_model=WorkflowListOut,
    summary="Restrict which published workflows members may start",
)
async def set_allowed_workflows(
    body: AllowedWorkflowsIn, request: Request, ctx: CanManageWorkflows, session: DbSession
) -> WorkflowListOut:
    names: list[str] | None = None
    if body.allowed_workflows is not None:
        names = list(dict.fromkeys(body.allowed_workflows))
        known = {v.workflow.name for v in await published_workflows(session)}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise Problem(
                422,
                "Invalid Request",
                f"allowed_workflows: not published: {', '.join(map(repr, unknown[:5]))}",
                code="unknown_workflow",
                errors=[
                    {
                        "field": f"allowed_workflows.{body.allowed_workflows.index(n)}",
                        "reason": f"no worker has published a workflow named {n!r}",
                    }
                    for n in unknown[:MAX_INPUT_ERRORS]
                ],
            )
    org = await lock_org(ctx, session)
    before = org.allowed_workflows
    if before != names:
        org.allowed_workflows = names
        session.add(org)
        await session.flush()
        await record_change(
            request,
            ctx,
            session,
            "org.workflows_restricted",
            target_type="organization",
            target_id=str(ctx.org_id),
            data={"allowed_workflows": {"before": before, "after": names}},
        )
    return await list_workflows(ctx, session)


async def startable_workflow(
    ctx: OrgContext,
    session: AsyncSession,
    name: str,
    params: dict[str, Any],
    *,
    prefer_task_queue: str,
) -> tuple[PublishedWorkflow, str]:
    """The published workflow to start and its task queue, once `params` match its schema and
    the organization allows it; a 422 naming the field otherwise (nothing is written)."""
    found = await published_workflow(session, name, prefer_task_queue=prefer_task_queue)
    if found is None:
        raise Problem(
            422,
            "Invalid Request",
            f"workflow: no worker has published a workflow named {name!r}",
            code="unknown_workflow",
            errors=[{"field": "workflow", "reason": f"no published workflow is named {name!r}"}],
        )
    org = await get_org(ctx, session)
    if org is not None and org.allowed_workflows is not None and name not in org.allowed_workflows:
        raise Problem(
            422,
            "Invalid Request",
            f"workflow: this organization does not allow starting {name!r}",
            code="workflow_not_allowed",
            errors=[{"field": "workflow", "reason": "not allowed in this organization"}],
        )
    errors = schema_errors(found[0].input_schema, params)
    if errors:
        summary = "; ".join(f"{e['field']}: {e['reason']}" for e in errors)
        raise Problem(422, "Invalid Request", summary, code="validation_error", errors=errors)
    return found
