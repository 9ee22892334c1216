"""Routes for audit export (JSON Lines, CSV), live chain verification and a run's chain of custody.

The JSON Lines export is the verifiable one; its format is described in `core.audit_verify` and
`blocks audit verify FILE` checks it offline. The CSV export is for spreadsheets, one row per
line of the JSON Lines export, with these columns:

    type         "event" or "checkpoint"
    seq          the event's seq, or the seq a checkpoint certifies
    id           event id (empty for checkpoints)
    org_id       organization id
    occurred_at  ISO 8601, UTC, microseconds, exactly as hashed
    action, actor_type, actor_id, actor_email, target_type, target_id, run_id, outcome,
    reason, ip, user_agent
                 as stored; empty for null
    data         the event's data as JSON text (keys sorted)
    prev_hash    hash of the previous event in the chain (events)
    hash         the event's hash, or the chain hash a checkpoint certifies
    signed_at    when a checkpoint was signed (checkpoints)
    key_id       id of the key that signed it (checkpoints)
    signature    base64 Ed25519 signature (checkpoints)

Text cells that a spreadsheet would run as a formula (starting with = + - @ tab or CR) get a
leading apostrophe (OWASP CSV injection guidance), so CSV cells are not byte-exact: verify the
JSON Lines export.

Every read happens in one REPEATABLE READ, read-only transaction bound to the caller's
organization, so the header, the events and the checkpoints describe the same moment while
appends go on; events are read in pages of `PAGE` by seq, never all at once.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from sqlalchemy import Table, bindparam, func, select, text, tuple_
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from blocks.api.deps import CanReadAudit, DbSession
from blocks.api.errors import Problem, not_found
from blocks.core.audit_chain import GENESIS_HASH
from blocks.core.audit_verify import (
    ChainVerifier,
    Link,
    SignedCheckpoint,
    VerificationReport,
    event_hash,
    event_line,
    format_signed_at,
    header_line,
)
from blocks.core.context import OrgContext
from blocks.infra.db import bind_org
from blocks.infra.signing import CheckpointSigner
from blocks.models.audit import AuditEvent, hashed_payload
from blocks.models.checkpoints import AuditCheckpoint
from blocks.models.runs import get_run

router = APIRouter(prefix="/v1", tags=["audit"])

PAGE = 1000
_EVENTS: Table = AuditEvent.__table__  # type: ignore[attr-defined]
_CHECKPOINTS: Table = AuditCheckpoint.__table__  # type: ignore[attr-defined]
_HEAD = text("SELECT seq, hash FROM audit_chain_heads WHERE org_id = :org_id")

CSV_COLUMNS = (
    "type",
    "seq",
    "id",
    "org_id",
    "occurred_at",
    "action",
    "actor_type",
    "actor_id",
    "actor_email",
    "target_type",
    "target_id",
    "run_id",
    "outcome",
    "reason",
    "ip",
    "user_agent",
    "data",
    "prev_hash",
    "hash",
    "signed_at",
    "key_id",
    "signature",
)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class ExportFilters:
    occurred_from: datetime | None = None
    occurred_to: datetime | None = None
    actor_id: str | None = None
    action: str | None = None
    run_id: str | None = None

    @property
    def complete(self) -> bool:
        return not any(
            v is not None
            for v in (self.occurred_from, self.occurred_to, self.actor_id, self.action, self.run_id)
        )

    def as_header(self) -> dict[str, str | None]:
        return {
            "from": self.occurred_from.isoformat() if self.occurred_from else None,
            "to": self.occurred_to.isoformat() if self.occurred_to else None,
            "actor_id": self.actor_id,
            "action": self.action,
            "run_id": self.run_id,
        }

    def where(self) -> list[Any]:
        clauses: list[Any] = []
        if self.occurred_from is not None:
            clauses.append(_EVENTS.c.occurred_at >= self.occurred_from)
        if self.occurred_to is not None:
            clauses.append(_EVENTS.c.occurred_at < self.occurred_to)
        if self.actor_id is not None:
            clauses.append(_EVENTS.c.actor_id == self.actor_id)
        if self.action is not None:
            clauses.append(_EVENTS.c.action == self.action)
        if self.run_id is not None:
            clauses.append(_EVENTS.c.run_id == self.run_id)
        return clauses


# ---------------------------------------------------------------------------------- data access


@asynccontextmanager
async def snapshot(request: Request, ctx: OrgContext) -> AsyncIterator[AsyncSession]:
    """A session of its own (a streamed body outlives the request's session), bound to the
    caller's organization, in one REPEATABLE READ read-only transaction."""
    sessions: async_sessionmaker[AsyncSession] = request.app.state.sessions
    async with sessions() as session:
        await session.connection(
            execution_options={"isolation_level": "REPEATABLE READ", "postgresql_readonly": True}
        )
        await bind_org(session, ctx.org_id)
        try:
            yield session
        finally:
            await session.rollback()


async def chain_head(session: AsyncSession, ctx: OrgContext) -> tuple[int, str]:
    await bind_org(session, ctx.org_id)
    row = (await session.exec(_HEAD.bindparams(org_id=ctx.org_id))).first()  # type: ignore[call-overload]
    return (int(row.seq), str(row.hash)) if row is not None else (0, GENESIS_HASH)


async def event_pages(
    session: AsyncSession, ctx: OrgContext, filters: ExportFilters
) -> AsyncIterator[Sequence[RowMapping]]:
    """The org's events in seq order, `PAGE` at a time (keyset pagination on seq)."""
    await bind_org(session, ctx.org_id)
    after = -(2**63)
    while True:
        statement = (
            select(_EVENTS)
            .where(_EVENTS.c.org_id == ctx.org_id, _EVENTS.c.seq > after, *filters.where())
            .order_by(_EVENTS.c.seq)
            .limit(PAGE)
        )
        rows = (await session.exec(statement)).mappings().all()  # type: ignore[call-overload]
        if rows:
            yield rows
        if len(rows) < PAGE:
            return
        after = rows[-1]["seq"]


async def seq_range(
    session: AsyncSession, ctx: OrgContext, filters: ExportFilters
) -> tuple[int | None, int | None]:
    await bind_org(session, ctx.org_id)
    statement = select(func.min(_EVENTS.c.seq), func.max(_EVENTS.c.seq)).where(
        _EVENTS.c.org_id == ctx.org_id, *filters.where()
    )
    low, high = (await session.exec(statement)).one()  # type: ignore[call-overload]
    return low, high


async def checkpoint_pages(
    session: AsyncSession, ctx: OrgContext, *, above: int, up_to: int | None
) -> AsyncIterator[list[SignedCheckpoint]]:
    """Checkpoints with `above < seq <= up_to`, in seq order, paged on (seq, id)."""
    await bind_org(session, ctx.org_id)
    after: tuple[int, uuid.UUID] = (above, uuid.UUID(int=(1 << 128) - 1))
    while True:
        statement = (
            select(_CHECKPOINTS)
            .where(
                _CHECKPOINTS.c.org_id == ctx.org_id,
                tuple_(_CHECKPOINTS.c.seq, _CHECKPOINTS.c.id) > tuple_(*after),
            )
            .order_by(_CHECKPOINTS.c.seq, _CHECKPOINTS.c.id)
            .limit(PAGE)
        )
        if up_to is not None:
            statement = statement.where(_CHECKPOINTS.c.seq <= up_to)
        rows = (await session.exec(statement)).mappings().all()  # type: ignore[call-overload]
        if rows:
            yield [_signed(row) for row in rows]
        if len(rows) < PAGE:
            return
        after = (rows[-1]["seq"], rows[-1]["id"])


def _signed(row: Mapping[str, Any]) -> SignedCheckpoint:
    return SignedCheckpoint(
        org_id=str(row["org_id"]),
        seq=int(row["seq"]),
        hash=str(row["hash"]),
        signed_at=format_signed_at(row["signed_at"]),
        key_id=str(row["key_id"]),
        signature=str(row["signature"]),
    )


def _link(row: Mapping[str, Any]) -> Link:
    return hashed_payload(dict(row)), row["prev_hash"], row["hash"]


def _signer(request: Request) -> CheckpointSigner:
    return request.app.state.signer  # type: ignore[no-any-return]


def _public_keys(request: Request) -> dict[str, str]:
    # Only the current key is published; checkpoints signed before a key rotation show up as
    # signed by an unknown key until older public keys are kept and listed here.
    signer = _signer(request)
    return {signer.key_id: signer.public_key_b64()}


async def verify_chain(
    session: AsyncSession, ctx: OrgContext, public_keys: Mapping[str, str]
) -> VerificationReport:
    """The live chain, streamed page by page through the verifier the offline tool uses."""
    verifier = ChainVerifier(
        org_id=str(ctx.org_id),
        complete=True,
        head=await chain_head(session, ctx),
        public_keys=public_keys,
        remember_hashes=False,
    )
    checked_up_to = -1
    async for rows in event_pages(session, ctx, ExportFilters()):
        # Checkpoints go in before the events they certify, so they are matched as those pass.
        up_to = int(rows[-1]["seq"])
        async for checkpoints in checkpoint_pages(session, ctx, above=checked_up_to, up_to=up_to):
            for checkpoint in checkpoints:
                verifier.add_checkpoint(checkpoint)
        checked_up_to = max(checked_up_to, up_to)
        verifier.feed(_link(row) for row in rows)
        if verifier.settled:
            break
    else:
        # Checkpoints beyond the last event certify events that are no longer there.
        async for checkpoints in checkpoint_pages(session, ctx, above=checked_up_to, up_to=None):
            for checkpoint in checkpoints:
                verifier.add_checkpoint(checkpoint)
    return verifier.finish()


# ---------------------------------------------------------------------------------- responses


class ProblemOut(BaseModel):
    kind: str
    seq: int | None
    id: str | None
    message: str
    related_seq: int | None = None
    related_id: str | None = None
    line: int | None = None


class VerificationOut(BaseModel):
    ok: bool
    events_checked: int
    checkpoints_checked: int
    problem: ProblemOut | None
    complete: bool
    last_seq: int | None
    last_hash: str | None
    verified_at: datetime


class CheckpointRefOut(BaseModel):
    seq: int
    signed_at: datetime
    key_id: str


class CustodyEventOut(BaseModel):
    id: str
    seq: int
    occurred_at: str
    action: str
    actor_type: str
    actor_id: str | None
    actor_email: str | None
    target_type: str | None
    target_id: str | None
    run_id: str | None
    outcome: str
    reason: str | None
    ip: str | None
    user_agent: str | None
    data: dict[str, Any]
    prev_hash: str
    hash: str
    hash_ok: bool
    # The first signed checkpoint at or after this event: it certifies the chain through it.
    certified_by: CheckpointRefOut | None


class CustodyOut(BaseModel):
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
        problem=ProblemOut(**report.problem.as_dict()) if report.problem else None,
        complete=report.complete,
        last_seq=report.last_seq,
        last_hash=report.last_hash,
        verified_at=datetime.now(UTC),
    )


# ------------------------------------------------------------------------------------- export


def _filters(
    occurred_from: datetime | None,
    occurred_to: datetime | None,
    actor_id: str | None,
    action: str | None,
    run_id: uuid.UUID | None,
) -> ExportFilters:
    # A time without a zone is taken as UTC.
    start = (
        occurred_from.replace(tzinfo=UTC)
        if occurred_from and not occurred_from.tzinfo
        else occurred_from
    )
    end = occurred_to.replace(tzinfo=UTC) if occurred_to and not occurred_to.tzinfo else occurred_to
    if start is not None and end is not None and end <= start:
        raise Problem(
            422,
            "Invalid Request",
            "to: must be later than from",
            code="validation_error",
            errors=[{"field": "to", "reason": "must be later than from"}],
        )
    return ExportFilters(start, end, actor_id, action, str(run_id) if run_id else None)


async def _jsonl(request: Request, ctx: OrgContext, filters: ExportFilters) -> AsyncIterator[str]:
    async with snapshot(request, ctx) as session:
        head = await chain_head(session, ctx)
        first_seq, last_seq = await seq_range(session, ctx, filters)
        yield header_line(
            org_id=str(ctx.org_id),
            exported_at=datetime.now(UTC),
            filters=filters.as_header(),
            complete=filters.complete,
            first_seq=first_seq,
            last_seq=last_seq,
            head=head,
            public_keys=_public_keys(request),
        )
        async for rows in event_pages(session, ctx, filters):
            yield "".join(event_line(*_link(row)) for row in rows)
        async for checkpoints in _export_checkpoints(session, ctx, filters, first_seq, last_seq):
            yield "".join(checkpoint.line() for checkpoint in checkpoints)


def _export_checkpoints(
    session: AsyncSession,
    ctx: OrgContext,
    filters: ExportFilters,
    first_seq: int | None,
    last_seq: int | None,
) -> AsyncIterator[list[SignedCheckpoint]]:
    if filters.complete:
        # All of them: one past the last event shows that events at the end were removed.
        return checkpoint_pages(session, ctx, above=-1, up_to=None)
    if first_seq is None or last_seq is None:
        return _no_checkpoints()
    return checkpoint_pages(session, ctx, above=first_seq - 1, up_to=last_seq)


async def _no_checkpoints() -> AsyncIterator[list[SignedCheckpoint]]:
    return
    yield


def _cell(value: Any) -> str | int:
    if value is None:
        return ""
    if isinstance(value, int):
        return value
    text_value = str(value)
    return "'" + text_value if text_value.startswith(_FORMULA_START) else text_value


async def _csv(request: Request, ctx: OrgContext, filters: ExportFilters) -> AsyncIterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")

    def flush() -> str:
        chunk = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return chunk

    writer.writerow(CSV_COLUMNS)
    yield flush()
    async with snapshot(request, ctx) as session:
        first_seq, last_seq = await seq_range(session, ctx, filters)
        async for rows in event_pages(session, ctx, filters):
            for row in rows:
                payload = hashed_payload(dict(row))
                data = json.dumps(payload["data"], ensure_ascii=False, sort_keys=True)
                cells = {
                    **payload,
                    "data": data,
                    "prev_hash": row["prev_hash"],
                    "hash": row["hash"],
                }
                writer.writerow(
                    ["event", *(_cell(cells.get(column)) for column in CSV_COLUMNS[1:])]
                )
            yield flush()
        async for checkpoints in _export_checkpoints(session, ctx, filters, first_seq, last_seq):
            for checkpoint in checkpoints:
                cells = {**checkpoint.__dict__}
                writer.writerow(
                    ["checkpoint", *(_cell(cells.get(column)) for column in CSV_COLUMNS[1:])]
                )
            yield flush()


@router.get(
    "/audit/export",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {}, "text/csv": {}}}},
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
) -> StreamingResponse:
    """Stream the audit log: JSON Lines (verifiable offline) or CSV. `complete` in the header is
    true only without filters; `from` is inclusive, `to` exclusive (occurred_at)."""
    filters = _filters(occurred_from, occurred_to, actor_id, action, run_id)
    if run_id is not None and await get_run(ctx, session, run_id) is None:
        raise not_found("run")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    name = f"audit-{ctx.org_id}-{stamp}.{format}"
    headers = {"Content-Disposition": f'attachment; filename="{name}"'}
    if format == "csv":
        return StreamingResponse(
            _csv(request, ctx, filters), media_type="text/csv; charset=utf-8", headers=headers
        )
    return StreamingResponse(
        _jsonl(request, ctx, filters), media_type="application/x-ndjson", headers=headers
    )


# --------------------------------------------------------------------------- verify, custody


@router.get("/audit/verify", response_model=VerificationOut)
async def verify_audit(request: Request, ctx: CanReadAudit) -> VerificationOut:
    """Verify the organization's whole chain and its checkpoints now; 200 whether it holds or not
    (`ok` and `problem` say)."""
    async with snapshot(request, ctx) as session:
        return _report_out(await verify_chain(session, ctx, _public_keys(request)))


_CERTIFIED_BY = text(
    "SELECT e.seq AS event_seq, c.seq, c.signed_at, c.key_id "
    "FROM unnest(CAST(:seqs AS bigint[])) AS e(seq) "
    "LEFT JOIN LATERAL (SELECT seq, signed_at, key_id FROM audit_checkpoints "
    "WHERE org_id = :org_id AND seq >= e.seq ORDER BY seq, signed_at LIMIT 1) c ON true"
).bindparams(bindparam("seqs"), bindparam("org_id"))


@router.get("/runs/{run_id}/custody", response_model=CustodyOut)
async def run_custody(
    run_id: uuid.UUID, request: Request, ctx: CanReadAudit, session: DbSession
) -> CustodyOut:
    """Every audit event of one run in order, each with its own hash checked and the signed
    checkpoint that certifies it, and the verification of the whole chain they belong to."""
    if await get_run(ctx, session, run_id) is None:
        raise not_found("run")
    async with snapshot(request, ctx) as snap:
        events: list[CustodyEventOut] = []
        async for rows in event_pages(snap, ctx, ExportFilters(run_id=str(run_id))):
            for row in rows:
                payload, prev_hash, stored = _link(row)
                events.append(
                    CustodyEventOut(
                        **payload,
                        prev_hash=prev_hash,
                        hash=stored,
                        hash_ok=event_hash(prev_hash, payload) == stored,
                        certified_by=None,
                    )
                )
        if events:
            certified = await snap.exec(  # type: ignore[call-overload]
                _CERTIFIED_BY.bindparams(seqs=[e.seq for e in events], org_id=ctx.org_id)
            )
            by_seq = {row.event_seq: row for row in certified.all()}
            for event in events:
                found = by_seq.get(event.seq)
                if found is not None and found.seq is not None:
                    event.certified_by = CheckpointRefOut(
                        seq=found.seq, signed_at=found.signed_at, key_id=found.key_id
                    )
        report = _report_out(await verify_chain(snap, ctx, _public_keys(request)))
    return CustodyOut(
        run_id=str(run_id),
        org_id=str(ctx.org_id),
        intact=report.ok and all(event.hash_ok for event in events),
        events=events,
        verification=report,
    )
