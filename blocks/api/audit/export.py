"""Routes for audit export (JSON Lines, CSV), live chain verification and a run's chain of custody.

The JSON Lines export is the verifiable one; its format is described in
`core.audit.export_format` and `blocks audit verify FILE` checks it offline. The CSV export is for
spreadsheets; its columns are described in `api.audit.export_csv`. Both are read from one snapshot
(`models.audit.reads`): the JSON Lines from one server-side cursor, the CSV in pages.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from blocks.api.audit.export_csv import csv_checkpoint_rows, csv_event_rows, csv_header
from blocks.api.deps import CanReadAudit, DbSession, record_change
from blocks.api.errors import invalid_field, not_found
from blocks.api.params import time_window
from blocks.api.reference import examples as ex
from blocks.api.reference.examples import example
from blocks.api.schemas import AUDIT_EVENT, AuditEventFields
from blocks.core.audit.chain_verifier import VerificationReport
from blocks.core.audit.event_hash import event_hash
from blocks.core.context import OrgContext
from blocks.infra.crypto.signing import CheckpointPublicKeys
from blocks.models.approvals.runs import get_run
from blocks.models.audit.reads import (
    ExportFilters,
    certifying_checkpoints,
    event_pages,
    export_checkpoint_pages,
    export_chunks,
    seq_range,
    snapshot,
    verify_chain,
)

router = APIRouter(prefix="/v1", tags=["audit"])


# ---------------------------------------------------------------------------------- responses


class ChainProblemOut(BaseModel):
    """The first thing found wrong with the chain (not an HTTP problem: the check succeeded)."""

    model_config = example(
        kind="changed",
        seq=41,
        id=ex.EVENT_ID,
        message="event 41 was changed after it was written: its hash does not match",
    )

    kind: str
    seq: int | None
    id: str | None
    message: str
    related_seq: int | None = None
    related_id: str | None = None
    line: int | None = None


_VERIFIED = {
    "ok": True,
    "events_checked": 42,
    "checkpoints_checked": 3,
    "problem": None,
    "complete": True,
    "last_seq": 42,
    "last_hash": ex.HASH,
    "verified_at": "2025-03-04T11:00:00Z",
}


class VerificationOut(BaseModel):
    model_config = example(**_VERIFIED)

    ok: bool
    events_checked: int
    checkpoints_checked: int
    problem: ChainProblemOut | None
    complete: bool
    last_seq: int | None
    last_hash: str | None
    verified_at: datetime


_CHECKPOINT_REF = {"seq": 42, "signed_at": "2025-03-04T11:00:00Z", "key_id": ex.SIGNING_KEY_ID}


class CheckpointRefOut(BaseModel):
    model_config = example(**_CHECKPOINT_REF)

    seq: int
    signed_at: datetime
    key_id: str


_CUSTODY_EVENT = AUDIT_EVENT | {
    "occurred_at": "2025-03-04T10:02:41.118204+00:00",
    "hash_ok": True,
    "certified_by": _CHECKPOINT_REF,
}


class CustodyEventOut(AuditEventFields[str, str]):
    model_config = example(**_CUSTODY_EVENT)

    hash_ok: bool
    # The first signed checkpoint at or after this event: it certifies the chain through it.
    certified_by: CheckpointRefOut | None


class CustodyOut(BaseModel):
    model_config = example(
        run_id=ex.RUN_ID,
        org_id=ex.ORG_ID,
        intact=True,
        events=[_CUSTODY_EVENT],
        verification=_VERIFIED,
    )

    run_id: str
    org_id: str
    intact: bool  # every event of the run hashes right and the whole chain verifies
    events: list[CustodyEventOut]
    verification: VerificationOut


def _report_out(report: VerificationReport) -> VerificationOut:
    return VerificationOut(
        ok=report.ok,
        events_checked=report.events_checked,
        checkpoints_checked=report.checkpoints_checked,
        problem=ChainProblemOut(**report.problem.as_dict()) if report.problem else None,
        complete=report.complete,
        last_seq=report.last_seq,
        last_hash=report.last_hash,
        verified_at=datetime.now(UTC),
    )


def _sessions(request: Request) -> async_sessionmaker[AsyncSession]:
    return request.app.state.sessions  # type: ignore[no-any-return]


def _public_keys(request: Request) -> dict[str, str]:
    """Every key checkpoints may be signed with, the retired ones too (BLOCKS_AUDIT_PUBLIC_KEYS),
    so checkpoints from before a key rotation still verify."""
    keys: CheckpointPublicKeys = request.app.state.public_keys
    return keys.by_id()


# ------------------------------------------------------------------------------------- export


def _filters(
    occurred_from: datetime | None,
    occurred_to: datetime | None,
    actor_id: str | None,
    action: str | None,
    run_id: uuid.UUID | None,
) -> ExportFilters:
    start, end = time_window(occurred_from, occurred_to)
    return ExportFilters(start, end, actor_id, action, str(run_id) if run_id else None)


async def _csv(request: Request, ctx: OrgContext, filters: ExportFilters) -> AsyncIterator[str]:
    yield csv_header()
    async with snapshot(ctx, _sessions(request)) as session:
        first_seq, last_seq = await seq_range(ctx, session, filters)
        async for links in event_pages(ctx, session, filters):
            yield csv_event_rows(links)
        checkpoint_pages = export_checkpoint_pages(ctx, session, filters, first_seq, last_seq)
        async for checkpoints in checkpoint_pages:
            yield csv_checkpoint_rows(checkpoints)


@router.get(
    "/audit/export",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {}, "text/csv": {}}}},
    summary="Export the audit log",
)
async def export_audit(
    request: Request,
    ctx: CanReadAudit,
    session: DbSession,
    format: Annotated[Literal["jsonl", "csv"], Query()] = "jsonl",
    occurred_from: Annotated[datetime | None, Query(alias="from")] = None,
    occurred_to: Annotated[datetime | None, Query(alias="to")] = None,
    actor_id: Annotated[str | None, Query(max_length=100)] = None,
    action: Annotated[str | None, Query(max_length=100)] = None,
    run_id: Annotated[uuid.UUID | None, Query()] = None,
    content: Annotated[Literal["sealed", "revealed"], Query()] = "sealed",
) -> StreamingResponse:
    """Stream the audit log: JSON Lines (verifiable offline) or CSV. `complete` in the header is
    true only without filters; `from` is inclusive, `to` exclusive (occurred_at).

    Run content (step titles, comments, forms, results) is sealed in the log and exported as
    hashed. `content=revealed` (JSON Lines) adds, after each batch of events, a `content` line
    per event holding sealed content: its fields in clear and that one event's key, so
    `blocks audit verify` checks the clear text against what the chain hashed. Revealing is
    itself recorded in the audit log."""
    filters = _filters(occurred_from, occurred_to, actor_id, action, run_id)
    if run_id is not None and await get_run(ctx, session, run_id) is None:
        raise not_found("run")
    if content == "revealed":
        if format != "jsonl":
            raise invalid_field("content", "content is revealed in the JSON Lines export only")
        await record_change(
            request,
            ctx,
            session,
            "audit.content_revealed",
            target_type="audit_log",
            target_id=str(ctx.org_id),
            data={"filters": filters.as_header()},
        )
        # The record commits before the stream starts: revealing is never left unrecorded.
        await session.commit()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    name = f"audit-{ctx.org_id}-{stamp}.{format}"
    headers = {"Content-Disposition": f'attachment; filename="{name}"'}
    if format == "csv":
        return StreamingResponse(
            _csv(request, ctx, filters), media_type="text/csv; charset=utf-8", headers=headers
        )
    # Bytes in chunks of thousands of lines, read from one server-side cursor (models.audit.reads).
    return StreamingResponse(
        export_chunks(
            ctx,
            _sessions(request),
            filters,
            _public_keys(request),
            reveal_content=content == "revealed",
        ),
        media_type="application/x-ndjson",
        headers=headers,
    )


# --------------------------------------------------------------------------- verify, custody


@router.get(
    "/audit/verify", response_model=VerificationOut, summary="Verify the whole audit chain now"
)
async def verify_audit(request: Request, ctx: CanReadAudit) -> VerificationOut:
    """Verify the organization's whole chain and its checkpoints now; 200 whether it holds or not
    (`ok` and `problem` say)."""
    async with snapshot(ctx, _sessions(request)) as session:
        return _report_out(await verify_chain(ctx, session, _public_keys(request)))


@router.get(
    "/runs/{run_id}/custody", response_model=CustodyOut, summary="Read a run's chain of custody"
)
async def run_custody(
    run_id: uuid.UUID, request: Request, ctx: CanReadAudit, session: DbSession
) -> CustodyOut:
    """Every audit event of one run in order, each with its own hash checked and the signed
    checkpoint that certifies it, and the verification of the whole chain they belong to."""
    if await get_run(ctx, session, run_id) is None:
        raise not_found("run")
    async with snapshot(ctx, _sessions(request)) as snap:
        events: list[CustodyEventOut] = []
        async for links in event_pages(ctx, snap, ExportFilters(run_id=str(run_id))):
            for payload, prev_hash, stored in links:
                events.append(
                    CustodyEventOut(
                        **payload,
                        prev_hash=prev_hash,
                        hash=stored,
                        hash_ok=event_hash(prev_hash, payload) == stored,
                        certified_by=None,
                    )
                )
        certified = await certifying_checkpoints(ctx, snap, [e.seq for e in events])
        for event in events:
            found = certified.get(event.seq)
            if found is not None:
                event.certified_by = CheckpointRefOut(
                    seq=found.seq, signed_at=found.signed_at, key_id=found.key_id
                )
        report = _report_out(await verify_chain(ctx, snap, _public_keys(request)))
    return CustodyOut(
        run_id=str(run_id),
        org_id=str(ctx.org_id),
        intact=report.ok and all(event.hash_ok for event in events),
        events=events,
        verification=report,
    )
