"""`GET /v1/runs`: the organization's runs from Temporal's visibility, filtered, a page at a time.

The visibility query is built only from values checked here — the organization's id from the
resolved context (always the first clause), enum members, UUIDs, a workflow name and approver
labels that match strict patterns, and times this module prints — never from the caller's text
as sent. Visibility is eventually consistent: a run started or decided a moment ago may show its
new state a moment later.

Pages are cut by Temporal: `cursor` is its page token, base64url-encoded behind a fingerprint of
the query, so a cursor is refused (422) with filters other than those that made it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import uuid
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated

from fastapi import APIRouter, Query
from temporalio.client import WorkflowExecution
from temporalio.service import RPCError, RPCStatusCode

from blocks.api.approvals.runs.detail import status_name
from blocks.api.deps import CanReadRuns, TemporalClient
from blocks.api.errors import invalid_field
from blocks.api.schemas import RunListOut, RunSummaryOut
from blocks.core.approvals import search_attributes as sa
from blocks.core.approvals.policy import GROUP_PREFIX
from blocks.core.roles import Role

router = APIRouter(prefix="/v1/runs", tags=["approvals"])


class RunStatusFilter(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"
    TERMINATED = "terminated"
    TIMED_OUT = "timed_out"
    # A stage, not a Temporal status: running, with at least one step waiting for a decision.
    AWAITING_APPROVAL = "awaiting_approval"


_CLAUSES: dict[RunStatusFilter, str] = {
    RunStatusFilter.RUNNING: 'ExecutionStatus = "Running"',
    RunStatusFilter.COMPLETED: 'ExecutionStatus = "Completed"',
    RunStatusFilter.FAILED: 'ExecutionStatus = "Failed"',
    RunStatusFilter.CANCELED: 'ExecutionStatus = "Canceled"',
    RunStatusFilter.TERMINATED: 'ExecutionStatus = "Terminated"',
    RunStatusFilter.TIMED_OUT: 'ExecutionStatus = "TimedOut"',
    RunStatusFilter.AWAITING_APPROVAL: (
        f'(ExecutionStatus = "Running" AND {sa.STATUS.name} = "awaiting_approval")'
    ),
}

# A workflow type name as Blocks workflows are named (`expense_approval`, `acme.payroll-v2`):
# nothing a visibility query could read as syntax.
WORKFLOW_NAME = r"^[A-Za-z_][A-Za-z0-9_.\-]{0,199}$"
_GROUP_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")  # as member groups are named
_CURSOR_MAX = 4096
_FINGERPRINT_BYTES = 8
_RPC_TIMEOUT = timedelta(seconds=10)


@router.get("", response_model=RunListOut, summary="List runs, newest first, with filters")
async def list_runs(
    ctx: CanReadRuns,
    client: TemporalClient,
    status: Annotated[
        list[RunStatusFilter] | None,
        Query(description="Any of these (repeat the parameter); `awaiting_approval` is a stage"),
    ] = None,
    workflow: Annotated[
        str | None, Query(pattern=WORKFLOW_NAME, description="The workflow's name")
    ] = None,
    requested_by: Annotated[
        uuid.UUID | None, Query(description="The member who started the run")
    ] = None,
    pending_approver: Annotated[
        str | None,
        Query(
            max_length=80,
            description="Runs with a step waiting for this approver: a member id (or "
            "`user:<id>`), `role:<role>` or `group:<member group>`, as the step's policy names "
            "them (a member's roles are not expanded: see /v1/inbox for that)",
        ),
    ] = None,
    sla_deadline_before: Annotated[
        datetime | None,
        Query(description="RFC 3339; the nearest deadline of a waiting step is before this"),
    ] = None,
    sla_deadline_after: Annotated[
        datetime | None,
        Query(description="RFC 3339; the nearest deadline of a waiting step is after this"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="Runs per page")] = 50,
    cursor: Annotated[
        str | None,
        Query(min_length=1, max_length=_CURSOR_MAX, description="`next_cursor` of the last page"),
    ] = None,
) -> RunListOut:
    query = visibility_query(
        ctx.org_id,
        statuses=status or [],
        workflow=workflow,
        requested_by=requested_by,
        pending_approver=_approver_label(pending_approver) if pending_approver else None,
        deadline_before=_utc("sla_deadline_before", sla_deadline_before),
        deadline_after=_utc("sla_deadline_after", sla_deadline_after),
    )
    fingerprint = hashlib.sha256(query.encode()).digest()[:_FINGERPRINT_BYTES]
    token = _page_token(cursor, fingerprint) if cursor is not None else None
    # Visibility returns newest first; ORDER BY is not supported by every visibility store.
    page = client.list_workflows(
        query, page_size=limit, next_page_token=token, rpc_timeout=_RPC_TIMEOUT
    )
    try:
        await page.fetch_next_page()
    except RPCError as err:
        if cursor is not None and err.status == RPCStatusCode.INVALID_ARGUMENT:
            raise invalid_field("cursor", "not a cursor of this list") from err
        raise
    next_token = page.next_page_token
    return RunListOut(
        runs=[_summary(execution) for execution in page.current_page or []],
        next_cursor=_cursor(fingerprint, next_token) if next_token else None,
    )


def visibility_query(
    org_id: uuid.UUID,
    *,
    statuses: list[RunStatusFilter],
    workflow: str | None,
    requested_by: uuid.UUID | None,
    pending_approver: str | None,
    deadline_before: datetime | None,
    deadline_after: datetime | None,
) -> str:
    """The list filter, from checked values only; the organization's clause comes first."""
    clauses = [f'{sa.ORG_ID.name} = "{org_id}"']
    if statuses:
        chosen = dict.fromkeys(statuses)
        clauses.append("(" + " OR ".join(_CLAUSES[s] for s in chosen) + ")")
    if workflow is not None:
        if not re.fullmatch(WORKFLOW_NAME, workflow):  # the route checked it; this is a guard
            raise invalid_field("workflow", "not a workflow name")
        clauses.append(f'{sa.WORKFLOW_NAME.name} = "{workflow}"')
    if requested_by is not None:
        clauses.append(f'{sa.REQUESTED_BY.name} = "{requested_by}"')
    if pending_approver is not None:
        clauses.append(f'{sa.PENDING_APPROVERS.name} = "{pending_approver}"')
    if (
        deadline_before is not None
        and deadline_after is not None
        and deadline_before <= deadline_after
    ):
        raise invalid_field("sla_deadline_before", "must be later than sla_deadline_after")
    if deadline_before is not None:
        clauses.append(f'{sa.SLA_DEADLINE.name} < "{_rfc3339(deadline_before)}"')
    if deadline_after is not None:
        clauses.append(f'{sa.SLA_DEADLINE.name} > "{_rfc3339(deadline_after)}"')
    return " AND ".join(clauses)


def _approver_label(value: str) -> str:
    """The label a step's policy gives this approver (`ApprovalPolicy.labels`), rebuilt from the
    parsed value (a UUID, a role, a group name), or a 422 naming `pending_approver`."""
    kind, _, name = value.partition(":")
    try:
        if not name:
            return f"user:{uuid.UUID(kind)}"
        if kind == "user":
            return f"user:{uuid.UUID(name)}"
        if kind == "role":
            return f"role:{Role(name).value}"
    except ValueError:
        pass
    else:
        if f"{kind}:" == GROUP_PREFIX and _GROUP_NAME.fullmatch(name):
            return f"{GROUP_PREFIX}{name}"
    raise invalid_field(
        "pending_approver", "a member id, user:<id>, role:<role> or group:<member group>"
    )


def _utc(name: str, moment: datetime | None) -> datetime | None:
    """In UTC; a time without a zone is taken as UTC."""
    if moment is None:
        return None
    try:
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00:00+01:00 is before the first year
        raise invalid_field(name, "out of range") from None


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _cursor(fingerprint: bytes, token: bytes) -> str:
    return base64.urlsafe_b64encode(fingerprint + token).decode().rstrip("=")


def _page_token(cursor: str, fingerprint: bytes) -> bytes:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError):
        raise invalid_field("cursor", "not a cursor of this list") from None
    if len(raw) <= _FINGERPRINT_BYTES or raw[:_FINGERPRINT_BYTES] != fingerprint:
        raise invalid_field("cursor", "made with other filters, or not a cursor of this list")
    return raw[_FINGERPRINT_BYTES:]


def _summary(execution: WorkflowExecution) -> RunSummaryOut:
    attributes = execution.typed_search_attributes
    requester = attributes.get(sa.REQUESTED_BY)
    return RunSummaryOut(
        id=uuid.UUID(execution.id.removeprefix("run-")),
        workflow=attributes.get(sa.WORKFLOW_NAME) or execution.workflow_type,
        status=status_name(execution.status),
        stage=attributes.get(sa.STATUS),
        requested_by=uuid.UUID(requester) if requester else None,
        pending_approvers=list(attributes.get(sa.PENDING_APPROVERS) or []),
        sla_deadline=attributes.get(sa.SLA_DEADLINE),
        started_at=execution.start_time,
        closed_at=execution.close_time,
    )
